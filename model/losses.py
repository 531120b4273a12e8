"""The joint objective of paper eq. 14: L_main = L_cls + L_feature + L_modal (weights 1:1:1)."""

from __future__ import annotations

from dataclasses import dataclass

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


def ada2i_loss(out: Ada2IOutput, labels: torch.Tensor) -> Losses:
    """labels: int64 [B, T] with IGNORE for padding/unlabelled. Means run over labelled utterances."""
    n_classes = out.logits.shape[-1]
    flat = labels.reshape(-1)  # [B*T]
    cls = F.cross_entropy(out.logits.reshape(-1, n_classes).float(), flat, ignore_index=IGNORE)
    if out.fused is not None:
        modal = F.cross_entropy(out.fused.reshape(-1, n_classes).float(), flat, ignore_index=IGNORE)
    else:
        modal = cls.new_zeros(())
    feature = out.feature_loss.float()
    return Losses(total=cls + modal + feature, cls=cls, modal=modal, feature=feature)


def unimodal_losses(out: Ada2IOutput, labels: torch.Tensor) -> dict[str, float]:
    """Per-modality cross-entropy of the unimodal scores on the utterances that have the modality:
    a diagnostic of how well each modality alone fits (not optimised)."""
    result = {}
    for m, scores in out.unimodal.items():
        keep = out.valid[m] & (labels != IGNORE)  # [B, T]
        if keep.any():
            result[m] = float(F.cross_entropy(scores[keep].float(), labels[keep]).detach())
    return result
