"""Dialogue batches from a FeatureSet: padded per-modality tensors plus masks.

Shape letters: B dialogues in the batch, T longest dialogue in the batch, D_m feature dim.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from pipeline.featureset import Dialogue, FeatureSet

IGNORE = -100  # must equal model.losses.IGNORE: padding and unlabelled utterances


@dataclass
class Batch:
    features: dict[str, torch.Tensor]  # m -> float32 [B, T, D_m]
    utterance_mask: torch.Tensor  # bool [B, T], True = a real utterance
    modality_mask: dict[str, torch.Tensor]  # m -> bool [B, T], True = modality m present
    labels: torch.Tensor  # int64 [B, T], IGNORE for padding / unlabelled
    speakers: torch.Tensor  # int64 [B, T], index into the batch's speaker list per dialogue
    dialogues: list[Dialogue]

    def to(self, device: torch.device | str) -> Batch:
        non_blocking = torch.device(device).type == "cuda"
        return Batch(
            features={m: x.to(device, non_blocking=non_blocking) for m, x in self.features.items()},
            utterance_mask=self.utterance_mask.to(device),
            modality_mask={m: x.to(device) for m, x in self.modality_mask.items()},
            labels=self.labels.to(device),
            speakers=self.speakers.to(device),
            dialogues=self.dialogues,
        )

    @property
    def n_labelled(self) -> int:
        return int((self.labels != IGNORE).sum())


def collate(fs: FeatureSet, dialogues: list[Dialogue]) -> Batch:
    b, t = len(dialogues), max(d.length for d in dialogues)
    features = {m: x.new_zeros(b, t, x.shape[1]) for m, x in fs.features.items()}  # [B, T, D_m]
    modality_mask = {m: torch.zeros(b, t, dtype=torch.bool) for m in fs.features}  # [B, T]
    utterance_mask = torch.zeros(b, t, dtype=torch.bool)  # [B, T]
    labels = torch.full((b, t), IGNORE, dtype=torch.int64)  # [B, T]
    speakers = torch.zeros(b, t, dtype=torch.int64)  # [B, T]
    for i, d in enumerate(dialogues):
        rows = slice(d.start, d.start + d.length)
        for m, x in fs.features.items():
            features[m][i, : d.length] = x[rows]
            modality_mask[m][i, : d.length] = fs.present[m][rows]
        utterance_mask[i, : d.length] = True
        y = fs.labels[rows]
        labels[i, : d.length] = torch.where(y >= 0, y, torch.full_like(y, IGNORE))
        names = list(dict.fromkeys(d.speakers))
        speakers[i, : d.length] = torch.tensor([names.index(s) for s in d.speakers])
    return Batch(features, utterance_mask, modality_mask, labels, speakers, list(dialogues))


def iter_batches(
    fs: FeatureSet,
    dialogues: list[Dialogue],
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Batches of `batch_size` dialogues; shuffled with `generator` for training, in order else."""
    order = (
        torch.randperm(len(dialogues), generator=generator).tolist()
        if shuffle
        else range(len(dialogues))
    )
    chosen = [dialogues[i] for i in order]
    for start in range(0, len(chosen), batch_size):
        yield collate(fs, chosen[start : start + batch_size])
