"""Gradient modulation over all present modalities (paper sec. 3.4, eqs. 16-19).

    s_m   = mean over labelled utterances of softmax(unimodal scores_m)[true class]      eq. 16
    rho_m = s_m / min_j s_j                                                               eq. 17
    k_m   = 1 - tanh(alpha * rho_m) if rho_m > 1 else 1                                   eq. 18
    theta_m <- theta_m - eta * k_m * update_m                                             eq. 18
    theta   <- theta + eta * h,  h ~ N(0, Sigma_sgd)   on every encoder, after the step   eq. 19

The paper sums s_m over the batch; the mean gives the same ratios when every utterance has every
modality, and stays fair when a modality is missing for some utterances (no face found).

Eq. 18 scales the *update*, so k_m goes to the optimiser as the step scale of modality m's
encoder parameter group (pipeline.training.optim.Adam's `update_scale`). Multiplying the gradient instead,
as OGM-GE does for SGD and the authors' code does under Adam, is a no-op: Adam's m / sqrt(v)
cancels any slowly varying factor of the gradient. The eq. 19 noise is likewise added to the
parameters after the step, with Sigma_sgd estimated per tensor as the variance of its
mini-batch gradient (isotropic, as the authors' code).
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


def set_update_scales(param_groups: list[dict], k: dict[str, float]) -> None:
    """Eq. 18: the step of modality m's encoder group is scaled by k_m; other groups by 1."""
    for group in param_groups:
        name = group.get("name", "")
        modality = name.removeprefix("encoder.") if name.startswith("encoder.") else None
        group["update_scale"] = float(k.get(modality, 1.0)) if modality else 1.0


@torch.no_grad()
def add_update_noise(
    encoder_params: dict[str, list[nn.Parameter]],
    lr: float,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Eq. 19's eta * h after the step: each encoder tensor gets N(0, (lr * std(grad))^2) noise,
    std(grad) being that tensor's mini-batch gradient spread (the authors' isotropic estimate of
    Sigma_sgd). Returns m -> the noise's RMS per element, for diagnostics."""
    rms = {}
    for m, params in encoder_params.items():
        total, count = 0.0, 0
        for p in params:
            if p.grad is None or p.grad.numel() < 2:
                continue
            std = p.grad.float().std()
            if not (torch.isfinite(std) and std > 0):
                continue
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            noise = (noise.to(p.device) * (lr * std)).to(p.dtype)
            p.add_(noise)
            total += float(noise.float().pow(2).sum())
            count += noise.numel()
        rms[m] = math.sqrt(total / count) if count else 0.0
    return rms
