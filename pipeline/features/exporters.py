"""Export a FeatureSet for other ERC / multimodal baselines: the authors' per-dialogue pickle and
MMSA's per-split pickle. Writing a pickle is safe; reading one needs trust (pipeline.features.importers).

"authors-pickle" (pipeline.features.importers.authors_pickle reads it back): per dialogue id, speakers,
    integer labels, one 1-D float32 vector per utterance for text / audio / visual, the sentences,
    plus split id lists. layout "fields" is Ada2I's own dict (ids, speaker, label, text, audio,
    visual, sentence, trainVid, testVid, valVid = our dev split); layout "tuple" is the 9-tuple
    (videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence,
    trainVid, testVid) that DialogueGCN and MMGCN unpack, with dev folded into trainVid as their
    IEMOCAP/MELD pickles have it (those codes carve their own dev set from train). Speakers are
    written as stored (strings; DialogueGCN's IEMOCAP loader expects "M"/"F").

"mmsa" (thuiar/MMSA's data_loader, the layout MMSA-FET's run_dataset writes; read back by
    pipeline.features.importers.mmsa): {"train", "valid", "test"} -> {
        "id": list[str]             "<dialogue id>$_$<utterance id>" (MMSA's video$_$clip)
        "raw_text": list[str]
        "text", "audio", "vision":  float32 [N, 1, D]  one utterance vector as a 1-step sequence
        "audio_lengths", "vision_lengths": list[int]   1 per utterance
        "classification_labels": int64 [N]   our label ids
        "regression_labels": float32 [N]     MOSEI sentiment classes -> -3..3 (2-class: -1/1);
                                             emotion labels -> the label id (not a regression target)
        "annotations": list[str]             label names
        ours, which MMSA ignores: "dialogue_id", "utterance_id", "speaker" (list[str]) and
        "<text|audio|vision>_present" uint8 [N]
    }. What does not match: MMSA's datasets are word/frame sequences, ours one vector per
    utterance (sequence length 1); there is no "text_bert" (token ids), so models that run BERT
    on the text (use_bert=True) cannot use this export; MMSA has no unlabelled utterances, so
    those are left out (counted in the summary); dialogue context is dropped (MMSA classifies
    utterances alone), kept only in the extra keys.

Missing modality for an utterance (present = 0, e.g. no face): the vector is written as zeros in
both formats (neither has a mask), and the count per modality is in the summary and the sidecar.
The authors' pickle reader then sees a zero vector as present; MMSA export also writes the mask
as "<m>_present". A modality the FeatureSet lacks entirely is left out (Ada2I's and MMSA's
loaders read all three, so such an export needs their modality switch or a zero placeholder).

Every export also writes FILE.json (label names and order, feature spec, source, splits, the
zero-filled counts, notes), so the integer labels and features stay interpretable.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.features.featureset import FeatureSet
from pipeline.files import atomic_write

FORMATS = ("authors-pickle", "mmsa")
MMSA_NAMES = {"t": "text", "a": "audio", "v": "vision"}
MMSA_SPLITS = {"train": "train", "dev": "valid", "test": "test"}
ID_SEPARATOR = "$_$"  # MMSA's id = video_id + "$_$" + clip_id
# Sentiment label sets (pipeline.features.importers.authors_pickle.LABEL_NAMES) -> regression targets.
SENTIMENT_VALUES = {
    ("strong_neg", "neg", "weak_neg", "neutral", "weak_pos", "pos", "strong_pos"): [
        -3.0,
        -2.0,
        -1.0,
        0.0,
        1.0,
        2.0,
        3.0,
    ],
    ("neg", "pos"): [-1.0, 1.0],
}


@dataclass
class ExportSummary:
    out: Path
    format: str
    utterances: int
    dialogues: int
    splits: dict[str, int]  # dialogues per written split
    zero_filled: dict[str, int]  # modality -> utterances written as zeros (missing there)
    left_out: int = 0  # utterances not written (MMSA: unlabelled)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "format": self.format,
            "utterances": self.utterances,
            "dialogues": self.dialogues,
            "splits": self.splits,
            "zero_filled": self.zero_filled,
            "left_out": self.left_out,
            "notes": self.notes,
        }


def export_featureset(
    featureset: FeatureSet | str | Path, out: str | Path, fmt: str, layout: str = "fields"
) -> ExportSummary:
    """Write `featureset` (a FeatureSet or its directory) to `out` in format `fmt`
    ("authors-pickle" with layout "fields" or "tuple", or "mmsa"), plus the `out`.json sidecar."""
    fs = featureset if isinstance(featureset, FeatureSet) else FeatureSet.load(featureset)
    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    if out.is_dir():
        raise ValueError(f"{out}: is a directory; give the pickle file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    fs, zero_filled = zero_missing(fs)
    notes = []
    absent = [name for m, name in MMSA_NAMES.items() if m not in fs.features]
    if absent:
        notes.append(
            f"no {', '.join(absent)} features: left out (the target code needs its modality "
            "switch set accordingly)"
        )
    if any(zero_filled.values()):
        notes.append("missing modality vectors are written as zeros (the formats have no mask)")
    if fmt == "authors-pickle":
        summary = _write_authors(fs, out, layout, zero_filled, notes)
    else:
        summary = _write_mmsa(fs, out, zero_filled, notes)
    sidecar = {
        "format": fmt if fmt != "authors-pickle" else f"authors-pickle/{layout}",
        "label_names": fs.label_names,  # label id i = label_names[i]
        "feature_spec": fs.feature_spec,
        "source": fs.source,
        **{k: v for k, v in summary.to_dict().items() if k not in ("out", "format")},
    }
    atomic_write(
        sidecar_path(out), lambda p: Path(p).write_text(json.dumps(sidecar, indent=1) + "\n")
    )
    return summary


def sidecar_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".json")


def zero_missing(fs: FeatureSet) -> tuple[FeatureSet, dict[str, int]]:
    """The FeatureSet with every vector of a missing modality set to zero, and how many per
    modality (whatever a store kept for them is not written out)."""
    features, counts = {}, {}
    for m, x in fs.features.items():
        present = fs.present[m].bool()  # [N]
        features[m] = torch.where(present[:, None], x, torch.zeros_like(x))  # [N, D_m]
        counts[m] = int((~present).sum())
    return replace(fs, features=features), counts


# ---- writers ----------------------------------------------------------------------------------


def _write_authors(fs, out, layout, zero_filled, notes) -> ExportSummary:
    from pipeline.features.importers.authors_pickle import LABEL_NAMES, save_as_authors_pickle

    if layout not in ("fields", "tuple"):
        raise ValueError(f"layout must be 'fields' or 'tuple', not {layout!r}")
    if layout == "tuple" and not {"t", "a"} <= set(fs.features):
        raise ValueError(f"{fs.path or 'feature set'}: the tuple layout needs text and audio")
    include_dev = layout == "fields"
    if layout == "tuple" and "v" not in fs.features:
        notes.append(
            "tuple layout: no visual features, so videoVisual holds one zero (a 1-d vector) per "
            "utterance to keep the 9 positions; train text/audio models only"
        )
    if layout == "tuple" and fs.split("dev"):
        notes.append(
            "tuple layout: dev dialogues are part of trainVid (as in DialogueGCN's pickles)"
        )
    known = [name for name, labels in LABEL_NAMES.items() if labels == fs.label_names]
    if not known:
        notes.append(
            f"labels {fs.label_names} are not a label set the authors' code knows; label ids "
            f"follow this FeatureSet ({sidecar_path(out).name})"
        )
    atomic_write(out, lambda p: save_as_authors_pickle(fs, p, layout, include_dev))
    splits = {s: len(fs.split(s)) for s in ("train", "dev", "test")}
    if not include_dev:
        splits = {"train": splits["train"] + splits["dev"], "test": splits["test"]}
    return ExportSummary(
        out, "authors-pickle", len(fs), len(fs.dialogues), splits, zero_filled, 0, notes
    )


def _write_mmsa(fs: FeatureSet, out: Path, zero_filled, notes) -> ExportSummary:
    values = SENTIMENT_VALUES.get(tuple(fs.label_names))
    zero_filled = dict.fromkeys(zero_filled, 0)  # counted below over the written rows only
    data: dict[str, dict[str, Any]] = {}
    left_out, written, splits = 0, 0, {}
    for split, mmsa_split in MMSA_SPLITS.items():
        dialogues = fs.split(split)
        rows, ids, dids, uids, speakers, texts = [], [], [], [], [], []
        for d in dialogues:
            labels = fs.labels[d.start : d.start + d.length]
            for j in range(d.length):
                if int(labels[j]) < 0:
                    left_out += 1
                    continue
                uid = d.utterance_ids[j]
                if ID_SEPARATOR in d.id or ID_SEPARATOR in uid:
                    raise ValueError(
                        f"{fs.path or 'feature set'}: dialogue {d.id!r} utterance {uid!r} contains "
                        f"{ID_SEPARATOR!r}, MMSA's id separator"
                    )
                rows.append(d.start + j)
                ids.append(f"{d.id}{ID_SEPARATOR}{uid}")
                dids.append(d.id)
                uids.append(uid)
                speakers.append(d.speakers[j])
                texts.append(str(d.extra.get("texts", [""] * d.length)[j]))
        index = torch.tensor(rows, dtype=torch.long)
        y = fs.labels[index].numpy().astype(np.int64)  # [N]
        part: dict[str, Any] = {
            "id": ids,
            "raw_text": texts,
            "classification_labels": y,
            "regression_labels": (
                np.asarray(values, np.float32)[y] if values else y.astype(np.float32)
            ),
            "annotations": [fs.label_names[int(c)] for c in y],
            "dialogue_id": dids,
            "utterance_id": uids,
            "speaker": speakers,
        }
        for m, name in MMSA_NAMES.items():
            if m in fs.features:
                part[name] = fs.features[m][index].numpy().astype(np.float32)[:, None, :]
                part[f"{name}_present"] = fs.present[m][index].numpy().astype(np.uint8)
        for name in ("audio", "vision"):
            if name in part:
                part[f"{name}_lengths"] = [1] * len(rows)
        data[mmsa_split] = part
        for m in fs.features:
            zero_filled[m] += int((~fs.present[m][index]).sum())
        written += len(rows)
        splits[mmsa_split] = len({*dids})
    if not fs.split("dev"):
        notes.append("no dev split: 'valid' is empty (MMSA selects its model on 'valid')")
    if values is None:
        notes.append("regression_labels hold the label id: not a regression target")
    if left_out:
        notes.append(f"{left_out} unlabelled utterances left out (MMSA needs a label per sample)")

    def write(p):
        with open(p, "wb") as f:
            pickle.dump(data, f, protocol=4)

    atomic_write(out, write)
    return ExportSummary(
        out, "mmsa", written, sum(splits.values()), splits, zero_filled, left_out, notes
    )
