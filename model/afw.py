"""Adaptive Feature Weighting (paper sec. 3.2, eqs. 3-7, 11-12).

Per modality m and utterance, tensor-ring cores from two rank-R projections each:
    G_Q = (Z W_Q1) outer (Z W_Q2)                            [B, T, R, R]   eq. 5
    G_K = (Z W_K1) outer (Z W_K2)                            [B, T, R, R]
    Theta = softmax(G_Q * G_K / sqrt(R))                     [B, T, R, R]   eq. 4
    A = masked mean of Theta over the dialogue's utterances  [B, R, R]      "pooled A"
    Att = Linear(Theta x A^(o1) x A^(o2) ...)                [B, T, H]      eq. 6, mode-1 contraction
    Z' = Att * Z + beta * Z                                  [B, T, H]      eq. 7
and an attention-mapping network Phi(Z) -> Att_hat with L_feature = |Att - Att_hat| (eqs. 11-12).

The softmax runs over the last rank axis, so every Theta row sums to one; pooled A is then
row-stochastic too and the contracted product stays bounded however many modalities join.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.config import MODALITY_ORDER, Ada2IConfig


class AFWLayer(nn.Module):
    def __init__(self, cfg: Ada2IConfig):
        super().__init__()
        self.modalities = cfg.modalities
        self.rank = cfg.rank
        self.beta = cfg.beta
        self.theta_softmax = cfg.theta_softmax
        self.contract_self = cfg.contract_self
        self.mapping_detach = cfg.mapping_detach
        h, r = cfg.hidden, cfg.rank
        # W_Q1, W_Q2, W_K1, W_K2 of eq. 5 as one H -> 4R map per modality (one matmul, not four).
        self.qk = nn.ModuleDict({m: nn.Linear(h, 4 * r) for m in self.modalities})
        if cfg.qk_init_std > 0:  # unit-variance Z in: each projection has std qk_init_std
            for lin in self.qk.values():
                nn.init.normal_(lin.weight, std=cfg.qk_init_std / math.sqrt(h))
                nn.init.zeros_(lin.bias)
        self.att = nn.ModuleDict({m: nn.Linear(r * r, h) for m in self.modalities})  # eq. 6
        if cfg.afw_gate_init > 0:
            for lin in self.att.values():
                lin.weight.data.mul_(0.1)
                nn.init.constant_(lin.bias, cfg.afw_gate_init - cfg.beta)
        self.mapping = nn.ModuleDict({m: nn.Linear(h, h) for m in self.modalities})  # Phi_m, eq. 11
        self.dropout = nn.Dropout(cfg.afw_dropout)

    def forward(
        self, z: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """z: m -> [B, T, H]; valid: m -> bool [B, T] (real utterance with modality m present).
        Returns (m -> Z_m^{f-adapt} [B, T, H], m -> L_feature of modality m, scalar)."""
        theta, pooled = {}, {}
        for m in self.modalities:
            theta[m] = self._theta(m, z[m])  # [B, T, R, R]
            w = valid[m].to(theta[m].dtype)[..., None, None]  # [B, T, 1, 1]
            count = w.sum(dim=1)  # [B, 1, 1]
            pooled[m] = (theta[m] * w).sum(dim=1) / count.clamp_min(1.0)  # [B, R, R]
            # A dialogue without a single utterance of m (no face anywhere) has no A^(m): its
            # masked mean would be the zero matrix and wipe out every other modality's
            # contraction. Contracting with the identity skips it instead.
            eye = torch.eye(self.rank, dtype=theta[m].dtype, device=theta[m].device)
            pooled[m] = torch.where(count > 0, pooled[m], eye)  # [B, R, R]

        out, feature_loss = {}, {}
        for m in self.modalities:
            contracted = theta[m]  # [B, T, R, R]
            for o in MODALITY_ORDER:
                if o in self.modalities and (o != m or self.contract_self):
                    # Mode-1 contraction: sum_j Theta[b, t, i, j] * A^(o)[b, j, k]
                    contracted = contracted @ pooled[o][:, None]  # [B, T, R, R]
            att = self.att[m](contracted.flatten(-2))  # [B, T, H]
            out[m] = self.dropout(att * z[m] + self.beta * z[m])  # [B, T, H]  eq. 7
            # Phi_m reads Z_m; with mapping_detach, L_feature trains Phi_m and Att_m only, not
            # the encoder (docs/ada2i.md #12).
            att_hat = self.mapping[m](z[m].detach() if self.mapping_detach else z[m])  # eq. 11
            feature_loss[m] = _masked_l1(att, att_hat, valid[m])
        return out, feature_loss

    def _theta(self, m: str, z: torch.Tensor) -> torch.Tensor:
        q1, q2, k1, k2 = self.qk[m](z).chunk(4, dim=-1)  # 4 x [B, T, R]
        g_q = q1[..., :, None] * q2[..., None, :]  # [B, T, R, R]  mode-1 Khatri-Rao, reshaped
        g_k = k1[..., :, None] * k2[..., None, :]  # [B, T, R, R]
        scores = g_q * g_k / math.sqrt(self.rank)  # [B, T, R, R]
        if self.theta_softmax == "last":  # rows sum to 1
            return scores.softmax(dim=-1)
        if self.theta_softmax == "first":  # columns sum to 1
            return scores.softmax(dim=-2)
        if (
            self.theta_softmax == "joint"
        ):  # all R*R entries sum to 1, times R: rows sum to 1 on average
            b, t, r, _ = scores.shape
            return scores.reshape(b, t, r * r).softmax(dim=-1).reshape(b, t, r, r) * r
        return scores  # "none": the authors' code


def _masked_l1(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean |a - b| over the valid utterances' elements: [B, T, H] x2, [B, T] -> scalar.
    A per-element mean (not the eq. 12 sum over H) keeps the 1:1:1 loss weights meaningful
    whatever H is."""
    w = valid.to(a.dtype)[..., None]  # [B, T, 1]
    return ((a - b).abs() * w).sum() / (w.sum() * a.shape[-1]).clamp_min(1.0)


class AdaptiveFeatureWeighting(nn.Module):
    """cfg.afw_layers stacked AFW layers (the authors' code stacks two; the paper shows one)."""

    def __init__(self, cfg: Ada2IConfig):
        super().__init__()
        self.layers = nn.ModuleList(AFWLayer(cfg) for _ in range(cfg.afw_layers))

    def forward(
        self, z: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Returns (m -> Z_m^{f-adapt} [B, T, H], m -> L_feature of modality m summed over layers,
        as the authors' code). Kept per modality: each is a mean over that modality's valid
        utterances, which is what lets micro-batches be re-weighted into the whole batch's loss."""
        total = {m: z[m].new_zeros(()) for m in z}
        for layer in self.layers:
            z, losses = layer(z, valid)
            total = {m: total[m] + losses[m] for m in total}
        return z, total
