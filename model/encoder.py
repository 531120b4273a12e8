"""Per-modality dialogue encoder (paper sec. 3.1, eq. 2): utterance features -> Z^m [B, T, H].

Padding never leaks: padded utterances are excluded as attention keys, so a dialogue's encoding
is the same whatever else shares its batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.config import Ada2IConfig, heads_for


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
