"""Gradient modulation over all present modalities (paper sec. 3.4, eqs. 16-19).

    s_m   = mean over labelled utterances of softmax(unimodal scores_m)[true class]      eq. 16
    rho_m = s_m / min_j s_j                                                               eq. 17
    k_m   = 1 - tanh(alpha * rho_m) if rho_m > 1 else 1                                   eq. 18
    g     = k_m * g + N(0, std(k_m * g)^2)   on modality m's encoder parameters           eq. 19

The paper sums s_m over the batch; the mean gives the same ratios when every utterance has every
modality, and stays fair when a modality is missing for some utterances (no face found).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.ada2i import Ada2IOutput
from model.losses import IGNORE


@torch.no_grad()
def unimodal_score_totals(out: Ada2IOutput, labels: torch.Tensor) -> dict[str, tuple[float, int]]:
    """m -> (sum of true-class probabilities, number of utterances): s_m's numerator and
    denominator, which add up across the micro-batches of one batch."""
    totals = {}
    for m, logits in out.unimodal.items():
        keep = out.valid[m] & (labels != IGNORE)  # [B, T]
        if keep.any():
            p = logits[keep].float().softmax(dim=-1)  # [n, C]
            totals[m] = (float(p.gather(1, labels[keep][:, None]).sum()), int(keep.sum()))
    return totals


def unimodal_scores(out: Ada2IOutput, labels: torch.Tensor) -> dict[str, float]:
    """s_m of eq. 16 (as a mean, see above) for the modalities with a labelled utterance."""
    return {m: total / n for m, (total, n) in unimodal_score_totals(out, labels).items()}


def discrepancy_ratios(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    floor = max(min(scores.values()), 1e-12)
    return {m: s / floor for m, s in scores.items()}


def coefficients(ratios: dict[str, float], alpha: float) -> dict[str, float]:
    return {m: (1.0 - math.tanh(alpha * r)) if r > 1.0 else 1.0 for m, r in ratios.items()}


@torch.no_grad()
def modulate_gradients(
    encoder_params: dict[str, list[nn.Parameter]],
    k: dict[str, float],
    noise: bool = True,
    generator: torch.Generator | None = None,
) -> None:
    """Scale each modality's encoder gradients by k_m, then add Gaussian noise with the scaled
    gradient's own standard deviation per tensor (OGM-GE's generalisation enhancement)."""
    for m, params in encoder_params.items():
        coeff = k.get(m, 1.0)
        for p in params:
            if p.grad is None:
                continue
            p.grad.mul_(coeff)
            if noise and p.grad.numel() > 1:
                std = p.grad.std()
                if torch.isfinite(std) and std > 0:
                    p.grad.add_(
                        torch.randn(
                            p.grad.shape,
                            generator=generator,
                            device=p.grad.device,
                            dtype=p.grad.dtype,
                        )
                        * std
                    )
