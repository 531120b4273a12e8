"""The joint objective of paper eq. 14: L_main = L_cls + L_feature + L_modal (weights 1:1:1).

Each term is a mean: L_cls and L_modal over the labelled utterances, L_feature (per modality) over
the utterances that have the modality. A batch split into micro-batches gets exactly the whole
batch's loss (and so gradient) when each micro-batch's means are weighted by its share of those
counts: `ada2i_loss(out, labels, whole=BatchCounts.of(...))`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from model.ada2i import Ada2IOutput

IGNORE = -100  # label of padding and unlabelled utterances


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
