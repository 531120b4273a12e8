"""Read an MMSA-layout feature pickle (thuiar/MMSA, MMSA-FET) into a FeatureSet.

The layout is described in pipeline/features/exporters.py, which writes it. Read here: per split "train",
"valid" (-> dev), "test": "id", "classification_labels", the feature arrays "text", "audio",
"vision" [N, L, D] and, when present, "raw_text", "audio_lengths"/"vision_lengths", and our extra
keys "dialogue_id", "utterance_id", "speaker", "<name>_present". A feature sequence (L > 1, as in
MMSA's own MOSI/MOSEI files) is mean-pooled over its first `<name>_lengths` steps (all L for text)
to one vector per utterance. Without "dialogue_id", the id's part before "$_$" (MMSA's video id)
is the dialogue. Label names come from `label_names`, else the export's FILE.json sidecar, else
the (classification_labels, annotations) pairs.

Unpickling can run code, so nothing is read without trust=True, and then only through
pipeline.features.importers.authors_pickle's restricted unpickler (containers and numpy arrays).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.features.featureset import FeatureSet, from_arrays
from pipeline.features.importers.safe_pickle import read_pickle_restricted

SPLITS = {"train": "train", "valid": "dev", "test": "test"}
NAMES = {"t": "text", "a": "audio", "v": "vision"}
ID_SEPARATOR = "$_$"


def load_mmsa_pickle(
    path: str | Path, trust: bool = False, label_names: list[str] | None = None
) -> FeatureSet:
    path = Path(path)
    if not trust:
        raise ValueError(
            f"{path}: refusing to read a pickle without trust: unpickling can run arbitrary code "
            "from the file. Pass trust=True only for a file from a source you trust; it is then "
            "read with a restricted unpickler (containers and numpy only)."
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pickle not found")
    data = read_pickle_restricted(path)
    if not isinstance(data, Mapping) or "train" not in data:
        keys = sorted(map(str, data))[:8] if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(
            f"{path}: not an MMSA pickle (expected train/valid/test dicts, got {keys})"
        )
    dialogues: dict[str, dict[str, Any]] = {}  # dialogue id -> rows, in order of appearance
    annotations: dict[int, str] = {}  # label id -> its name in "annotations"
    for mmsa_split, split in SPLITS.items():
        part = data.get(mmsa_split)
        if part is None:
            continue
        _read_split(part, split, path, dialogues, annotations)
    if not dialogues:
        raise ValueError(f"{path}: no utterances")
    mods = [m for m in NAMES if all(m in d["features"] for d in dialogues.values())]
    if not mods:
        raise ValueError(f"{path}: no text/audio/vision features")
    ordered = list(dialogues.values())
    features = {m: np.concatenate([np.stack(d["features"][m]) for d in ordered]) for m in mods}
    present = {m: np.concatenate([d["present"][m] for d in ordered]) for m in mods}
    labels = np.concatenate([d["labels"] for d in ordered])
    names = label_names or _label_names(path, labels, annotations)
    meta = [
        {
            "id": d["id"],
            "split": d["split"],
            "utterance_ids": d["utterance_ids"],
            "speakers": d["speakers"],
            "texts": d["texts"],
        }
        for d in ordered
    ]
    spec = {m: {"extractor": f"mmsa:{NAMES[m]}", "file": path.name} for m in mods}
    fs = from_arrays(meta, features, labels, names, present, spec, source=f"mmsa {path.name}")
    fs.path = path
    fs.validate()
    return fs


def _read_split(
    part: Mapping, split: str, path: Path, dialogues: dict[str, dict], annotations: dict[int, str]
) -> None:
    where = f"{path}: {split}"
    if "id" not in part or "classification_labels" not in part:
        raise ValueError(f"{where} has no 'id' or 'classification_labels'")
    ids = [str(i) for i in part["id"]]
    n = len(ids)
    labels = np.asarray(part["classification_labels"]).reshape(-1).astype(np.int64)
    if len(labels) != n:
        raise ValueError(f"{where}: {len(labels)} labels for {n} ids")

    def column(key: str, default: list) -> list:
        values = part.get(key)
        if values is None:
            return default
        if len(values) != n:
            raise ValueError(f"{where}: '{key}' has {len(values)} entries for {n} ids")
        return [str(v) for v in values]

    dids = column("dialogue_id", [i.split(ID_SEPARATOR)[0] for i in ids])
    uids = column("utterance_id", ids)
    speakers = column("speaker", ["?"] * n)
    texts = column("raw_text", [""] * n)
    for y, name in zip(labels, column("annotations", []), strict=False):
        annotations.setdefault(int(y), name)
    vectors, present = {}, {}
    for m, name in NAMES.items():
        if name not in part:
            continue
        x = np.asarray(part[name], dtype=np.float32)
        if x.ndim == 2:
            x = x[:, None, :]  # [N, 1, D]
        if x.ndim != 3 or x.shape[0] != n:
            raise ValueError(f"{where}: '{name}' has shape {x.shape}, expected [{n}, L, D]")
        lengths = np.asarray(part.get(f"{name}_lengths", [x.shape[1]] * n)).reshape(-1)
        lengths = np.clip(lengths.astype(np.int64), 1, x.shape[1])  # [N]
        steps = np.arange(x.shape[1])[None, :] < lengths[:, None]  # [N, L]
        vectors[m] = (x * steps[..., None]).sum(axis=1) / lengths[:, None]  # [N, D]
        present[m] = np.asarray(part.get(f"{name}_present", np.ones(n))).reshape(-1).astype(bool)
    for i in range(n):
        d = dialogues.get(dids[i])
        if d is None:
            d = dialogues[dids[i]] = {
                "id": dids[i],
                "split": split,
                "utterance_ids": [],
                "speakers": [],
                "texts": [],
                "labels": [],
                "features": {m: [] for m in vectors},
                "present": {m: [] for m in vectors},
            }
        elif d["split"] != split:
            raise ValueError(f"{path}: dialogue {dids[i]!r} is in both {d['split']} and {split}")
        d["utterance_ids"].append(uids[i])
        d["speakers"].append(speakers[i])
        d["texts"].append(texts[i])
        d["labels"].append(labels[i])
        for m in vectors:
            d["features"][m].append(vectors[m][i])
            d["present"][m].append(present[m][i])
    for d in dialogues.values():
        d["labels"] = np.asarray(d["labels"], dtype=np.int64)
        d["present"] = {m: np.asarray(v, dtype=bool) for m, v in d["present"].items()}


def _label_names(path: Path, labels: np.ndarray, annotations: dict[int, str]) -> list[str]:
    sidecar = path.with_name(path.name + ".json")
    if sidecar.is_file():
        try:
            return list(json.loads(sidecar.read_text())["label_names"])
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{sidecar}: no readable label_names ({exc})") from exc
    n_classes = int(labels.max()) + 1
    return [annotations.get(c, f"class{c}") for c in range(n_classes)]
