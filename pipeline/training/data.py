"""Dialogue batches from a FeatureSet: padded per-modality tensors plus masks.

Shape letters: B dialogues in the batch, T longest dialogue in the batch, D_m feature dim.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from model.losses import IGNORE, BatchCounts  # IGNORE: label of padding and unlabelled utterances
from pipeline.features.featureset import Dialogue, FeatureSet


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


def batch_dialogues(
    dialogues: list[Dialogue],
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[list[Dialogue]]:
    """Groups of `batch_size` dialogues; shuffled with `generator` for training, in order else."""
    order = (
        torch.randperm(len(dialogues), generator=generator).tolist()
        if shuffle
        else range(len(dialogues))
    )
    chosen = [dialogues[i] for i in order]
    for start in range(0, len(chosen), batch_size):
        yield chosen[start : start + batch_size]


def iter_batches(
    fs: FeatureSet,
    dialogues: list[Dialogue],
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Collated batches of `batch_size` dialogues (see batch_dialogues)."""
    for group in batch_dialogues(dialogues, batch_size, shuffle, generator):
        yield collate(fs, group)


def micro_batches(dialogues: list[Dialogue], max_utterances: int) -> list[list[Dialogue]]:
    """Split one batch's dialogues into micro-batches whose padded size (dialogues x longest
    dialogue) stays within `max_utterances`. Dialogues go longest first, so each micro-batch holds
    dialogues of similar length and pads little; one longer than the budget goes alone. A
    dialogue's outputs do not depend on what shares its batch, so training on the micro-batches
    with their gradients summed is training on the batch (see model.losses.BatchCounts) with a
    peak memory bounded by the budget. max_utterances <= 0: one micro-batch, the whole batch."""
    if max_utterances <= 0:
        return [list(dialogues)]
    groups: list[list[Dialogue]] = []
    for d in sorted(dialogues, key=lambda d: -d.length):  # stable: ties keep batch order
        current = groups[-1] if groups else None
        if current and (len(current) + 1) * current[0].length <= max_utterances:
            current.append(d)
        else:
            groups.append([d])
    return groups


def batch_counts(fs: FeatureSet, dialogues: list[Dialogue], modalities: str) -> BatchCounts:
    """The loss denominators of a batch of dialogues (labelled utterances; per modality, the
    utterances that have it), read from the FeatureSet without collating the batch."""
    labelled, valid = 0, dict.fromkeys(modalities, 0)
    for d in dialogues:
        rows = slice(d.start, d.start + d.length)
        labelled += int((fs.labels[rows] >= 0).sum())
        for m in modalities:
            valid[m] += int(fs.present[m][rows].sum())
    return BatchCounts(labelled, valid)
