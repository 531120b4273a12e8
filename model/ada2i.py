"""Ada2I (ACM MM 2024), the network: modality encoders -> AFW -> AMW -> MLP, for any modality
subset. In the paper's order:

- ModalityEncoder (sec. 3.1, eq. 2): one per modality, utterance features -> Z^m [B, T, H].
  Padding never leaks: padded utterances are excluded as attention keys, so a dialogue's
  encoding is the same whatever else shares its batch.
- AdaptiveFeatureWeighting (sec. 3.2, eqs. 3-7, 11-12): each modality's features re-weighted
  by tensor-ring attention, its cores contracted with the other modalities' pooled ones; an
  attention-mapping network gives L_feature (the equations are on AFWLayer).
- The classifier heads: AdaptiveModalityWeighting (sec. 3.3, eqs. 8-9) and the plain
  concatenation head of the baseline, ConcatHead. Both expose per-modality class scores, which
  the discrepancy ratio (eq. 16) and the weight-norm diagnostics (paper Fig. 5) read.
- Ada2I, the whole network, and Ada2IOutput, what its forward returns.

What training optimises with it (eqs. 10-14) and how the modalities are balanced (eqs. 16-19):
model/objective.py.

Shape letters: see model/config.py. Every modality subset (TAV, TA, TV, AV, T, A, V) is the same
network built from one config; a modality missing for one utterance (no face found) is masked,
not zero-filled into the fused scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import MODALITY_ORDER, Ada2IConfig, heads_for

# Sec. 3.1: the per-modality dialogue encoder.


class ModalityEncoder(nn.Module):
    def __init__(self, input_dim: int, cfg: Ada2IConfig):
        super().__init__()
        self.style = cfg.encoder_style
        width = cfg.hidden if self.style == "projected" else input_dim
        ff = cfg.encoder_ff or (2 * width if self.style == "projected" else 2048)
        layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=heads_for(width, cfg.encoder_heads),
            dim_feedforward=ff,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=self.style == "projected",  # pre-norm trains stably without warm-up
        )
        # The nested-tensor fast path changes numerics between train and eval; keep one path.
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=cfg.encoder_layers, enable_nested_tensor=False
        )
        if self.style == "projected":
            self.project_in = nn.Sequential(
                nn.Linear(input_dim, width), nn.LayerNorm(width), nn.Dropout(cfg.dropout)
            )
            self.project_out = nn.LayerNorm(width)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Linear(width, cfg.hidden)
        self.positional = cfg.positional
        self.width = width

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D_m]; key_mask: bool [B, T], True where the utterance may be attended to.
        Returns Z^m: [B, T, H]."""
        h = self.project_in(x)  # [B, T, W]
        if self.positional:
            h = h + sinusoid(h.shape[1], self.width, h.device, h.dtype)  # [B, T, W]
        h = self.transformer(h, src_key_padding_mask=~key_mask)  # [B, T, W]
        return self.project_out(h)  # [B, T, H]


def sinusoid(length: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Vaswani et al. positional encoding over utterance index: [T, W]."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # [T, 1]
    rate = torch.exp(
        torch.arange(0, width, 2, device=device, dtype=torch.float32)
        * (-math.log(10_000.0) / width)
    )  # [ceil(W/2)]
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: width // 2])
    return table.to(dtype)  # [T, W]


# Sec. 3.2: Adaptive Feature Weighting.


class AFWLayer(nn.Module):
    """One Adaptive Feature Weighting layer (paper sec. 3.2, eqs. 3-7, 11-12).

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


# Sec. 3.3: the classifier heads.


class AdaptiveModalityWeighting(nn.Module):
    """Per modality m: cos(W_k^m, Z_m) + b_k / M, with each class vector W_k^m and each feature
    Z_m L2-normalised (NormFace / MMCosine, cited by the paper), so no modality can dominate the
    fused scores through a larger norm. Fused Z^{m-adapt} = sum_m cos_m + b (eq. 8), then an MLP
    with ReLU gives y_hat (eq. 9)."""

    def __init__(self, cfg: Ada2IConfig):
        super().__init__()
        self.modalities = cfg.modalities
        h, c = cfg.hidden, cfg.n_classes
        self.weight = nn.ParameterDict(
            {
                m: nn.Parameter(torch.empty(c, h).uniform_(-(h**-0.5), h**-0.5))
                for m in self.modalities
            }
        )  # W^m as class vectors: [C, H]
        self.bias = nn.Parameter(torch.zeros(c))  # b: [C]
        self.scale = cfg.cosine_scale
        mlp_hidden = cfg.mlp_hidden or cfg.hidden
        self.mlp = nn.Sequential(
            nn.Linear(c, mlp_hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(mlp_hidden, c)
        )
        self.mlp_residual = cfg.mlp_residual
        if self.mlp_residual:  # starts as the identity on the fused scores
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(
        self, z: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """z: m -> [B, T, H]; present: m -> bool [B, T].
        Returns (y_hat [B, T, C], fused Z^{m-adapt} [B, T, C], m -> unimodal scores [B, T, C])."""
        n_mod = len(self.modalities)
        unimodal, fused = {}, self.bias  # [C], broadcast below
        for m in self.modalities:
            cos = F.normalize(z[m], dim=-1) @ F.normalize(self.weight[m], dim=-1).T  # [B, T, C]
            cos = self.scale * cos  # [B, T, C]
            unimodal[m] = cos + self.bias / n_mod  # [B, T, C]  eq. 16's unimodal logits
            fused = fused + cos * present[m][..., None].to(cos.dtype)  # [B, T, C]
        y_hat = fused + self.mlp(fused) if self.mlp_residual else self.mlp(fused)  # [B, T, C]
        return y_hat, fused, unimodal

    def class_weight_norms(self) -> dict[str, list[float]]:
        """Raw per-class norms ||W_k^m|| (paper Fig. 5)."""
        return {m: self.weight[m].detach().norm(dim=-1).tolist() for m in self.modalities}


class ConcatHead(nn.Module):
    """Baseline: concatenate the modalities' features, one linear layer. Its weight splits into
    per-modality blocks, so unimodal scores W^m Z_m + b/M stay available for diagnostics."""

    def __init__(self, cfg: Ada2IConfig):
        super().__init__()
        self.modalities = cfg.modalities
        self.hidden = cfg.hidden
        self.dropout = nn.Dropout(cfg.dropout)
        self.linear = nn.Linear(cfg.hidden * len(cfg.modalities), cfg.n_classes)

    def forward(
        self, z: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, None, dict[str, torch.Tensor]]:
        n_mod = len(self.modalities)
        zs = [self.dropout(z[m]) * present[m][..., None].to(z[m].dtype) for m in self.modalities]
        logits = self.linear(torch.cat(zs, dim=-1))  # [B, T, C]
        blocks = self.linear.weight.split(self.hidden, dim=1)  # M x [C, H]
        unimodal = {
            m: zs[i] @ blocks[i].T + self.linear.bias / n_mod  # [B, T, C]
            for i, m in enumerate(self.modalities)
        }
        return logits, None, unimodal

    def class_weight_norms(self) -> dict[str, list[float]]:
        blocks = self.linear.weight.detach().split(self.hidden, dim=1)
        return {m: blocks[i].norm(dim=-1).tolist() for i, m in enumerate(self.modalities)}


# The whole network.


@dataclass
class Ada2IOutput:
    logits: torch.Tensor  # [B, T, C]  y_hat (eq. 9), what predictions come from
    fused: torch.Tensor | None  # [B, T, C]  Z^{m-adapt} (eq. 8); None for the concat baseline
    unimodal: dict[str, torch.Tensor]  # m -> [B, T, C]  per-modality scores (eq. 16)
    feature_losses: dict[str, torch.Tensor]  # m -> scalar  L_feature (eq. 12) of m; {} without AFW
    valid: dict[str, torch.Tensor]  # m -> bool [B, T]  real utterance with modality m present

    @property
    def feature_loss(self) -> torch.Tensor:
        """L_feature summed over modalities (scalar; 0 without AFW)."""
        total = self.logits.new_zeros(())
        for loss in self.feature_losses.values():
            total = total + loss
        return total


class Ada2I(nn.Module):
    def __init__(self, cfg: Ada2IConfig):
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(cfg.input_dims[m], cfg) for m in cfg.modalities}
        )
        self.afw = AdaptiveFeatureWeighting(cfg) if cfg.use_afw and cfg.afw_layers > 0 else None
        self.head = AdaptiveModalityWeighting(cfg) if cfg.use_amw else ConcatHead(cfg)

    @property
    def modalities(self) -> str:
        return self.cfg.modalities

    def forward(
        self,
        features: dict[str, torch.Tensor],
        utterance_mask: torch.Tensor,
        modality_mask: dict[str, torch.Tensor] | None = None,
    ) -> Ada2IOutput:
        """features: m -> [B, T, D_m]; utterance_mask: bool [B, T] (False = padding);
        modality_mask: m -> bool [B, T] (False = this utterance lacks modality m)."""
        self._check_inputs(features, utterance_mask)
        valid, z = {}, {}
        for m in self.modalities:
            present = utterance_mask if modality_mask is None else utterance_mask & modality_mask[m]
            valid[m] = present  # [B, T]
            # A dialogue with no utterance of this modality still needs someone to attend to.
            key_mask = torch.where(present.any(dim=1, keepdim=True), present, utterance_mask)
            z[m] = self.encoders[m](features[m], key_mask)  # [B, T, H]

        feature_losses: dict[str, torch.Tensor] = {}
        if self.afw is not None:
            z, feature_losses = self.afw(z, valid)  # m -> [B, T, H], m -> scalar
        logits, fused, unimodal = self.head(z, valid)  # [B, T, C], [B, T, C] | None, m -> [B, T, C]
        return Ada2IOutput(logits, fused, unimodal, feature_losses, valid)

    def _check_inputs(
        self, features: dict[str, torch.Tensor], utterance_mask: torch.Tensor
    ) -> None:
        missing = [m for m in self.modalities if m not in features]
        if missing:
            raise ValueError(f"model expects modalities {self.modalities!r}; missing {missing}")
        for m in self.modalities:
            x, want = features[m], self.cfg.input_dims[m]
            if x.ndim != 3 or x.shape[:2] != utterance_mask.shape or x.shape[-1] != want:
                raise ValueError(
                    f"modality {m}: features of shape {tuple(x.shape)}, expected "
                    f"[{utterance_mask.shape[0]}, {utterance_mask.shape[1]}, {want}]"
                )

    def encoder_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameters gradient modulation scales, per modality (paper eq. 18)."""
        return {m: list(self.encoders[m].parameters()) for m in self.modalities}

    def parameter_groups(self) -> list[dict]:
        """Optimiser groups: one per modality encoder (named "encoder.<m>", whose step eq. 18
        scales), then everything else ("shared"). Flattened, they are model.parameters() in its
        order, so optimiser states saved with a single group still line up."""
        encoders = [
            {"name": f"encoder.{m}", "params": list(self.encoders[m].parameters())}
            for m in self.modalities
        ]
        inside = {id(p) for g in encoders for p in g["params"]}
        shared = [p for p in self.parameters() if id(p) not in inside]
        groups = encoders + ([{"name": "shared", "params": shared}] if shared else [])
        flat = [p for g in groups for p in g["params"]]
        assert [id(p) for p in flat] == [id(p) for p in self.parameters()]
        return groups

    def class_weight_norms(self) -> dict[str, list[float]]:
        return self.head.class_weight_norms()
