"""Dialogue batches from a FeatureSet: padded per-modality tensors plus masks, and the training-only
context augmentation that replaces a dialogue by some of its utterances (crop_context).

Shape letters: B dialogues in the batch, T longest dialogue in the batch, D_m feature dim.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from model.objective import IGNORE, BatchCounts  # IGNORE labels padding and unlabelled utterances
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


@dataclass
class SubDialogue(Dialogue):
    """Some utterances of a dialogue, in dialogue order, seen by training as a dialogue of its
    own (crop_context). `rows` are their FeatureSet rows, increasing; `start` is the first and
    `length` their number, the per-utterance lists hold the kept utterances only."""

    rows: list[int] = field(default_factory=list)


def dialogue_rows(d: Dialogue) -> slice | torch.Tensor:
    """The FeatureSet rows of a dialogue's utterances, in order: a slice for a whole dialogue
    (contiguous), an index tensor for a SubDialogue."""
    if isinstance(d, SubDialogue):
        return torch.tensor(d.rows, dtype=torch.int64)
    return slice(d.start, d.start + d.length)


def collate(fs: FeatureSet, dialogues: list[Dialogue]) -> Batch:
    b, t = len(dialogues), max(d.length for d in dialogues)
    features = {m: x.new_zeros(b, t, x.shape[1]) for m, x in fs.features.items()}  # [B, T, D_m]
    modality_mask = {m: torch.zeros(b, t, dtype=torch.bool) for m in fs.features}  # [B, T]
    utterance_mask = torch.zeros(b, t, dtype=torch.bool)  # [B, T]
    labels = torch.full((b, t), IGNORE, dtype=torch.int64)  # [B, T]
    speakers = torch.zeros(b, t, dtype=torch.int64)  # [B, T]
    for i, d in enumerate(dialogues):
        rows = dialogue_rows(d)
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
    with their gradients summed is training on the batch (see model.objective.BatchCounts) with a
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
        rows = dialogue_rows(d)
        labelled += int((fs.labels[rows] >= 0).sum())
        for m in modalities:
            valid[m] += int(fs.present[m][rows].sum())
    return BatchCounts(labelled, valid)


def crop_context(
    dialogues: list[Dialogue],
    p: float,
    subset_share: float,
    subset_max: int,
    generator: torch.Generator,
) -> list[Dialogue]:
    """Context augmentation for training: each dialogue, with probability `p`, is replaced by
    some of its utterances in order, so the model also learns from the short or sparse
    dialogues it is asked to predict (one clip alone, a few clips of a long dialogue). With
    probability `subset_share` the kept utterances are a random subset (size uniform in
    1..min(L, subset_max), positions uniform), else a contiguous window (length uniform in
    1..L, start uniform). Labels, features and masks follow the kept rows (dialogue_rows).
    Draws come from `generator` only, so a seed gives the same crops; p == 0 draws nothing and
    returns the dialogues unchanged."""
    if p <= 0:
        return list(dialogues)
    out: list[Dialogue] = []
    for d in dialogues:
        augment, as_subset = torch.rand(2, generator=generator).tolist()
        if augment >= p:
            out.append(d)
            continue
        n = d.length
        if as_subset < subset_share:
            k = int(torch.randint(1, min(n, subset_max) + 1, (1,), generator=generator))
            keep = sorted(torch.randperm(n, generator=generator)[:k].tolist())  # k of 0..n-1
        else:
            k = int(torch.randint(1, n + 1, (1,), generator=generator))
            first = int(torch.randint(0, n - k + 1, (1,), generator=generator))
            keep = list(range(first, first + k))
        out.append(d if len(keep) == n else sub_dialogue(d, keep))
    return out


def sub_dialogue(d: Dialogue, keep: list[int]) -> SubDialogue:
    """`d` restricted to the positions `keep` (increasing); per-utterance extras follow."""
    extra = {
        k: [v[i] for i in keep] if isinstance(v, list) and len(v) == d.length else v
        for k, v in d.extra.items()
    }
    return SubDialogue(
        id=d.id,
        split=d.split,
        start=d.start + keep[0],
        length=len(keep),
        utterance_ids=[d.utterance_ids[i] for i in keep],
        speakers=[d.speakers[i] for i in keep],
        extra=extra,
        rows=[d.start + i for i in keep],
    )
