"""What training optimises, and how it keeps the modalities in balance.

The joint objective (paper eqs. 10-14): L_main = L_cls + L_feature + L_modal (weights 1:1:1).
Each term is a mean: L_cls and L_modal over the labelled utterances, L_feature (per modality) over
the utterances that have the modality. A batch split into micro-batches gets exactly the whole
batch's loss (and so gradient) when each micro-batch's means are weighted by its share of those
counts: `ada2i_loss(out, labels, whole=BatchCounts.of(...))`.

Gradient modulation over all present modalities (paper sec. 3.4, eqs. 16-19):

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
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from model.ada2i import Ada2IOutput

IGNORE = -100  # label of padding and unlabelled utterances


# The joint objective (eqs. 10-14).


@dataclass
class Losses:
    total: torch.Tensor
    cls: torch.Tensor  # eq. 10: cross-entropy of y_hat
    modal: torch.Tensor  # eq. 13: cross-entropy of the fused AMW scores Z^{m-adapt}
    feature: torch.Tensor  # eq. 12: AFW attention-mapping L1

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "cls", "modal", "feature")}


@dataclass(frozen=True)
class BatchCounts:
    """What the loss means divide by: labelled utterances, and per modality the utterances that
    have it (Ada2IOutput.valid)."""

    labelled: int
    valid: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, labels: torch.Tensor, valid: dict[str, torch.Tensor]) -> BatchCounts:
        """labels: int64 [B, T]; valid: m -> bool [B, T]."""
        return cls(int((labels != IGNORE).sum()), {m: int(v.sum()) for m, v in valid.items()})


def ada2i_loss(out: Ada2IOutput, labels: torch.Tensor, whole: BatchCounts | None = None) -> Losses:
    """labels: int64 [B, T] with IGNORE for padding/unlabelled. Means run over labelled utterances.
    whole: the counts of the batch this is a micro-batch of; each term is then weighted by this
    micro-batch's share, so the micro-batches' losses add up to the whole batch's."""
    n_classes = out.logits.shape[-1]
    flat = labels.reshape(-1)  # [B*T]
    share = 1.0
    if whole is not None:
        n_labelled = int((flat != IGNORE).sum())
        share = n_labelled / max(whole.labelled, 1)
    if share == 0.0:  # no labelled utterance here: the mean would be nan, the weight is zero
        cls = out.logits.new_zeros((), dtype=torch.float32)
        modal = cls.new_zeros(())
    else:
        logits = out.logits.reshape(-1, n_classes).float()
        cls = share * F.cross_entropy(logits, flat, ignore_index=IGNORE)
        modal = (
            share
            * F.cross_entropy(out.fused.reshape(-1, n_classes).float(), flat, ignore_index=IGNORE)
            if out.fused is not None
            else cls.new_zeros(())
        )
    feature = cls.new_zeros(())
    for m, loss in out.feature_losses.items():
        weight = 1.0 if whole is None else int(out.valid[m].sum()) / max(whole.valid.get(m, 0), 1)
        feature = feature + weight * loss.float()
    return Losses(total=cls + modal + feature, cls=cls, modal=modal, feature=feature)


def unimodal_loss_totals(out: Ada2IOutput, labels: torch.Tensor) -> dict[str, tuple[float, int]]:
    """m -> (summed cross-entropy of the unimodal scores, number of utterances) on the labelled
    utterances that have modality m: a diagnostic of how well each modality alone fits (not
    optimised); sums and counts so micro-batches add up."""
    result = {}
    for m, scores in out.unimodal.items():
        keep = out.valid[m] & (labels != IGNORE)  # [B, T]
        if keep.any():
            total = F.cross_entropy(scores[keep].float(), labels[keep], reduction="sum")
            result[m] = (float(total.detach()), int(keep.sum()))
    return result


def unimodal_losses(out: Ada2IOutput, labels: torch.Tensor) -> dict[str, float]:
    """Per-modality mean of unimodal_loss_totals."""
    return {m: total / n for m, (total, n) in unimodal_loss_totals(out, labels).items()}


# Gradient modulation (eqs. 16-19).


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
