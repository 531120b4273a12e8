"""Classifier heads: Adaptive Modality Weighting (paper sec. 3.3, eqs. 8-9) and the plain
concatenation head of the baseline. Both expose per-modality class scores, which the discrepancy
ratio (eq. 16) and the weight-norm diagnostics (paper Fig. 5) read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import Ada2IConfig


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
