"""Import the authors' feature pickle (and its ERC relatives) into a FeatureSet.

The Ada2I code (leson502/ADA2I) and its predecessors (DialogueRNN, MMGCN, COGMEN, CORECT) ship one
pickle per dataset holding, per dialogue id: speakers, integer labels, one 1-D feature vector per
utterance for text / audio / visual, and the sentences; plus split id lists trainVid / testVid
(MOSEI also valVid). Three layouts occur; all are read:

    "fields"   dict of field -> {dialogue id: values}: speaker|speakers, label|labels, text, audio,
               visual, sentence, trainVid, testVid[, valVid]. MOSEI's label is one level deeper,
               {"7class"|"2class": {dialogue id: values}}. (Ada2I's own format.)
    "tuple"    tuple/list (videoIDs, videoSpeakers, videoLabels, videoText, videoAudio[, videoVisual],
               videoSentence, trainVid, testVid[, extra]): 9 or 10 items, each a dict keyed by
               dialogue id or an id collection. The 6-dict form without visual is DialogueRNN's MELD
               pickle; a trailing dict after the split lists (MELD sentiment labels) is ignored.
    "split"    {"train"|"dev"|"test": [per-dialogue dict with uid|vid|id, speaker(s), label(s), text,
               audio, visual, sentence]}: the already split form Ada2I's loader builds.

Safety. Unpickling runs code named in the file, so nothing is read unless trust=True (CLI:
--trust-pickle). Even then the file is read by a restricted Unpickler (importers/safe_pickle.py,
shared with the MMSA importer) that resolves only plain containers, numpy arrays/dtypes/scalars
and the two helpers old pickles need (`_codecs.encode`, `copyreg._reconstructor` for
containers); any other global (os.system, builtins.eval, torch storages, user classes such as
COGMEN's Sample) stops the load with an error naming the global.

Dev split. When the pickle has no dev ids (IEMOCAP, MELD), dev is chosen by us, not the authors'
unseeded shuffle: `dev_ids` if given, else int(dev_fraction * n_train) training dialogues drawn with
numpy.random.default_rng(dev_seed) from the SORTED training ids. The choice lands in every
Dialogue.split and in `source`, so the saved FeatureSet fixes it for good. Default seed 12 follows
the notes (authors' IEMOCAP run: 108 train / 12 dev / 31 test dialogues).

Speakers become strings: "M"/"F" stay; ints become "0", "1", ...; MELD's one-hot speaker vectors
become the index of their 1 ("0".."8"). Utterance ids are taken from the pickle when it has them and
they are unique across dialogues, else "<dialogue id>/<index>". Every row has present=1: the
pickles do not say which vectors are placeholders.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.features.featureset import MODALITIES, FeatureSet, from_arrays
from pipeline.features.importers.safe_pickle import read_pickle_restricted
from pipeline.files import sha256_file

# Label orders from ../shared/paper/official-code-notes.md ("Data it expects").
LABEL_NAMES: dict[str, list[str]] = {
    "iemocap": ["hap", "sad", "neu", "ang", "exc", "fru"],
    "meld": ["neu", "sur", "fea", "sad", "joy", "dis", "ang"],
    # MOSEI sentiment -3..3 as 7 classes (strong negative .. strong positive), or 2 classes.
    "mosei": ["strong_neg", "neg", "weak_neg", "neutral", "weak_pos", "pos", "strong_pos"],
    "mosei2": ["neg", "pos"],
}
DEV_SEED = 12  # notes: authors' IEMOCAP dev split used seed 12 (their shuffle, our draw)
DEV_FRACTION = 0.1  # notes: "a random 10% of training dialogues"

_FEATURE_FIELDS = {"t": "text", "a": "audio", "v": "visual"}
_ALIASES = {
    "speaker": ("speaker", "speakers"),
    "label": ("label", "labels"),
    "sentence": ("sentence", "sentences"),
    "id": ("uid", "vid", "id", "dialogue_id"),
    "utterance_ids": ("utterance_ids", "ids"),
}

# ---- layouts -> one canonical dict ----------------------------------------------------------


def _get(d: Mapping, field: str, default: Any = None) -> Any:
    for key in _ALIASES.get(field, (field,)):
        if key in d:
            return d[key]
    return default


def _is_id_collection(x: Any) -> bool:
    return isinstance(x, (list, tuple, set, frozenset, np.ndarray)) and all(
        isinstance(v, (str, int, np.integer, np.str_)) for v in x
    )


def _canonical(obj: Any, path: Path, dataset: str, mosei_classes: int) -> dict[str, Any]:
    """Any supported layout -> {"fields": {field: {vid: values}}, "splits": {split: [vid]}}."""
    if isinstance(obj, Mapping) and "trainVid" in obj and "testVid" in obj:  # "fields"
        fields = {"speaker": _get(obj, "speaker"), "label": _get(obj, "label")}
        for m, name in _FEATURE_FIELDS.items():
            if name in obj:
                fields[m] = obj[name]
        fields["sentence"] = _get(obj, "sentence")
        if "ids" in obj or "videoIDs" in obj:
            fields["utterance_ids"] = obj.get("ids", obj.get("videoIDs"))
        label = fields["label"]
        if isinstance(label, Mapping) and any(k in label for k in ("7class", "2class")):
            key = f"{mosei_classes}class"
            if key not in label:
                raise ValueError(f"{path}: labels have schemes {sorted(label)}, not {key!r}")
            fields["label"] = label[key]
        splits = {"train": obj["trainVid"], "test": obj["testVid"]}
        if obj.get("valVid") is not None:
            splits["dev"] = obj["valVid"]
        layout = "fields"
    elif isinstance(obj, (tuple, list)) and 8 <= len(obj) <= 11:  # "tuple"
        dicts, rest = [], list(obj)
        while rest and isinstance(rest[0], Mapping):
            dicts.append(rest.pop(0))
        split_lists = []
        while rest and _is_id_collection(rest[0]):
            split_lists.append(rest.pop(0))
        if len(dicts) not in (6, 7) or len(split_lists) < 2:
            raise ValueError(
                f"{path}: unknown pickle layout: a {len(obj)}-item {type(obj).__name__} with "
                f"{len(dicts)} per-dialogue dicts and {len(split_lists)} id lists; expected "
                "(videoIDs, videoSpeakers, videoLabels, videoText, videoAudio[, videoVisual], "
                "videoSentence, trainVid, testVid[, extra])"
            )
        names = ["utterance_ids", "speaker", "label", "t", "a"]
        names += ["v", "sentence"] if len(dicts) == 7 else ["sentence"]
        fields = dict(zip(names, dicts, strict=True))
        splits = {"train": split_lists[0], "test": split_lists[1]}
        if len(split_lists) >= 3:
            splits["dev"] = split_lists[2]
        layout = "tuple"
    elif isinstance(obj, Mapping) and "train" in obj and "test" in obj:  # "split"
        fields: dict[str, dict] = {}
        splits = {}
        for split in ("train", "dev", "test"):
            for i, d in enumerate(obj.get(split) or []):
                if not isinstance(d, Mapping):
                    raise ValueError(
                        f"{path}: unknown pickle layout: {split}[{i}] is a {type(d).__name__}, "
                        "expected a dict per dialogue"
                    )
                vid = _get(d, "id", f"{split}{i:05d}")
                splits.setdefault(split, []).append(vid)
                for f in ("speaker", "label", "sentence", "utterance_ids"):
                    if _get(d, f) is not None:
                        fields.setdefault(f, {})[vid] = _get(d, f)
                for m, name in _FEATURE_FIELDS.items():
                    if name in d:
                        fields.setdefault(m, {})[vid] = d[name]
        layout = "split"
    else:
        kind = type(obj).__name__
        keys = sorted(map(str, obj))[:12] if isinstance(obj, Mapping) else None
        raise ValueError(
            f"{path}: unknown pickle layout ({kind}"
            + (f" with keys {keys}" if keys is not None else "")
            + (f" of length {len(obj)}" if isinstance(obj, (list, tuple)) else "")
            + "); expected the Ada2I field dict (trainVid/testVid + speaker, label, text, audio, "
            "visual, sentence), the 9/10-tuple (videoIDs, videoSpeakers, videoLabels, ...), "
            "or {train, dev, test} lists of dialogue dicts"
        )
    for f in ("speaker", "label"):
        if not isinstance(fields.get(f), Mapping):
            raise ValueError(f"{path}: {layout} layout has no per-dialogue {f} dict")
    if not any(isinstance(fields.get(m), Mapping) for m in _FEATURE_FIELDS):
        raise ValueError(f"{path}: {layout} layout has no text/audio/visual features")
    return {"layout": layout, "fields": fields, "splits": splits}


# ---- public API -----------------------------------------------------------------------------


def load_authors_pickle(
    path: str | Path,
    dataset: str = "iemocap",
    trust: bool = False,
    dev_fraction: float = DEV_FRACTION,
    dev_seed: int = DEV_SEED,
    dev_ids: Iterable[str] | None = None,
    mosei_classes: int = 7,
) -> FeatureSet:
    """Read an authors'-format pickle into a FeatureSet (rows: train, dev, test dialogues, each in
    the pickle's id order). Refuses unless trust=True, because unpickling can run code."""
    path = Path(path)
    if dataset not in ("iemocap", "meld", "mosei"):
        raise ValueError(f"{path}: dataset must be iemocap, meld or mosei, not {dataset!r}")
    if not trust:
        raise ValueError(
            f"{path}: refusing to read a pickle without trust: unpickling can run arbitrary code "
            "from the file. Pass trust=True (CLI: --trust-pickle) only for a file from a source "
            "you trust; it is then read with a restricted unpickler (containers and numpy only)."
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pickle not found")
    if mosei_classes not in (2, 7):
        raise ValueError(f"{path}: mosei_classes must be 7 or 2, not {mosei_classes}")
    data = _canonical(read_pickle_restricted(path), path, dataset, mosei_classes)
    fields, splits = data["fields"], dict(data["splits"])
    label_names = LABEL_NAMES["mosei2" if dataset == "mosei" and mosei_classes == 2 else dataset]

    train = [str(v) for v in splits["train"]]
    if "dev" in splits:
        dev_rule = "from the pickle"
        if dev_ids is not None:
            raise ValueError(f"{path}: the pickle has its own dev ids; do not pass dev_ids")
    elif dev_ids is not None:
        dev = {str(v) for v in dev_ids}
        unknown = sorted(dev - set(train))
        if unknown:
            raise ValueError(f"{path}: dev_ids not among the training dialogues: {unknown[:5]}")
        splits["dev"] = [v for v in train if v in dev]
        dev_rule = f"given ids ({len(dev)})"
    else:
        splits["dev"] = choose_dev(train, dev_fraction, dev_seed)
        dev_rule = f"random {dev_fraction:g} of sorted train ids, numpy default_rng({dev_seed})"
    dev_set = {str(v) for v in splits["dev"]}
    order = [("train", v) for v in train if v not in dev_set]
    order += [("dev", str(v)) for v in splits["dev"]]
    order += [("test", str(v)) for v in splits["test"]]

    by_str = _keys_by_str(fields, path)
    dialogues, labels, rows = [], [], {m: [] for m in _FEATURE_FIELDS if m in fields}
    for split, vid in order:
        dialogues.append(_dialogue(fields, by_str, vid, split, path, rows, labels))
    _unique_utterance_ids(dialogues)
    features = {m: _stack(rows[m], m, path) for m in MODALITIES if m in rows}
    spec = {
        m: {"extractor": f"authors-pickle:{_FEATURE_FIELDS[m]}", "file": path.name}
        for m in features
    }
    source = (
        f"authors-pickle {path.name} sha256={sha256_file(path)[:16]} dataset={dataset} "
        f"layout={data['layout']} dev={dev_rule}"
    )
    fs = from_arrays(
        dialogues, features, np.asarray(labels), label_names, feature_spec=spec, source=source
    )
    fs.path = path
    fs.validate()
    return fs


def choose_dev(train_ids: Iterable[str], fraction: float = DEV_FRACTION, seed: int = DEV_SEED):
    """int(fraction * n) ids drawn with numpy default_rng(seed) from the sorted ids, in sorted order;
    independent of the pickle's id order, so the same ids always give the same dev set."""
    ids = sorted(str(v) for v in train_ids)
    k = int(len(ids) * fraction)
    picked = np.random.default_rng(seed).choice(len(ids), size=k, replace=False)
    return [ids[i] for i in sorted(picked)]


def save_as_authors_pickle(
    featureset: FeatureSet, path: str | Path, layout: str = "fields", include_dev: bool = True
) -> Path:
    """Write a FeatureSet in the authors' format ("fields" dict or 9/10-"tuple"), for round-trip
    tests and for running the authors' code on our features. include_dev=True writes dev ids as
    valVid (a 3rd id list in the tuple); False folds dev back into trainVid as the IEMOCAP/MELD
    pickles do. Speakers and sentences are written as stored (strings)."""
    path = Path(path)
    fs = featureset
    per: dict[str, dict[str, Any]] = {k: {} for k in ("ids", "speaker", "label", "sentence")}
    for m in fs.features:
        per[_FEATURE_FIELDS[m]] = {}
    for d in fs.dialogues:
        rows = slice(d.start, d.start + d.length)
        per["ids"][d.id] = list(d.utterance_ids)
        per["speaker"][d.id] = list(d.speakers)
        per["label"][d.id] = [int(y) for y in fs.labels[rows]]
        per["sentence"][d.id] = list(d.extra.get("texts", [""] * d.length))
        for m, x in fs.features.items():
            per[_FEATURE_FIELDS[m]][d.id] = [r for r in x[rows].numpy().astype(np.float32)]
    ids = {s: [d.id for d in fs.dialogues if d.split == s] for s in ("train", "dev", "test")}
    train = ids["train"] if include_dev else ids["train"] + ids["dev"]
    if layout == "fields":
        obj: Any = {**per, "trainVid": train, "testVid": ids["test"]}
        if include_dev and ids["dev"]:
            obj["valVid"] = ids["dev"]
    elif layout == "tuple":
        if not {"t", "a"} <= set(fs.features):
            raise ValueError("tuple layout needs text and audio features")
        # Fixed positions: DialogueGCN/MMGCN unpack 9 values, so a feature set without visual
        # features still writes videoVisual, as one zero per utterance (the exporter notes it).
        no_visual = {d.id: [np.zeros(1, np.float32)] * d.length for d in fs.dialogues}
        feats = [per[_FEATURE_FIELDS[m]] if m in fs.features else no_visual for m in "tav"]
        obj = [
            per["ids"],
            per["speaker"],
            per["label"],
            *feats,
            per["sentence"],
            train,
            ids["test"],
        ]
        if include_dev and ids["dev"]:
            obj.append(ids["dev"])
        obj = tuple(obj)
    else:
        raise ValueError(f"layout must be 'fields' or 'tuple', not {layout!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path


# ---- helpers --------------------------------------------------------------------------------


def _keys_by_str(fields: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """Per field, str(dialogue id) -> original key (pickles mix str and int ids)."""
    out = {}
    for f, d in fields.items():
        if isinstance(d, Mapping):
            out[f] = {str(k): k for k in d}
    return out


def _dialogue(fields, by_str, vid, split, path, rows, labels) -> dict[str, Any]:
    def value(f: str) -> Any:
        if f not in by_str or vid not in by_str[f]:
            return None
        return fields[f][by_str[f][vid]]

    y = value("label")
    if y is None:
        raise ValueError(f"{path}: dialogue {vid!r} ({split}) has no label entry")
    y = [int(v) for v in np.asarray(y).reshape(-1)]
    n = len(y)
    if n == 0:
        raise ValueError(f"{path}: dialogue {vid!r} is empty")
    speakers = value("speaker")
    if speakers is None or len(speakers) != n:
        raise ValueError(f"{path}: dialogue {vid!r} has {n} labels but speakers do not match")
    for m in rows:
        x = value(m)
        if x is None:
            raise ValueError(f"{path}: dialogue {vid!r} has no {_FEATURE_FIELDS[m]} features")
        x = np.asarray(x, dtype=np.float32)  # [n, D_m]
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(
                f"{path}: dialogue {vid!r} {_FEATURE_FIELDS[m]} features have shape "
                f"{tuple(x.shape)}, expected [{n}, D] (one 1-D vector per utterance)"
            )
        rows[m].append(x)
    labels.extend(y)
    utt = value("utterance_ids")
    sentences = value("sentence")
    out = {
        "id": vid,
        "split": split,
        "utterance_ids": [str(u) for u in utt] if utt is not None and len(utt) == n else None,
        "speakers": [_speaker(s) for s in speakers],
    }
    if sentences is not None and len(sentences) == n:
        out["texts"] = [str(s) for s in sentences]
    return out


def _speaker(s: Any) -> str:
    if isinstance(s, (str, np.str_)):
        return str(s)
    arr = np.asarray(s)
    if arr.ndim == 1 and arr.size > 1:  # one-hot speaker vector (MELD pickles)
        return str(int(arr.argmax()))
    return str(arr.reshape(-1)[0].item()) if arr.size == 1 else str(s)


def _unique_utterance_ids(dialogues: list[dict[str, Any]]) -> None:
    given = [u for d in dialogues for u in (d["utterance_ids"] or [])]
    keep = all(d["utterance_ids"] is not None for d in dialogues) and len(set(given)) == len(given)
    for d in dialogues:
        if not keep:
            d["utterance_ids"] = [f"{d['id']}/{j}" for j in range(len(d["speakers"]))]


def _stack(blocks: list[np.ndarray], m: str, path: Path) -> np.ndarray:
    dims = {b.shape[1] for b in blocks}
    if len(dims) != 1:
        raise ValueError(f"{path}: {_FEATURE_FIELDS[m]} features have mixed dims {sorted(dims)}")
    return np.concatenate(blocks, axis=0)  # [N, D_m]
