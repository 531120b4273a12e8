"""FeatureSet: the cached per-utterance features that training and evaluation read.

A FeatureSet is a directory with two files:
    features.safetensors   feat.<m>     float32 [N, D_m]  one row per utterance, dialogues contiguous
                           present.<m>  uint8   [N]       0 = the utterance has no such feature
                           labels       int64   [N]       -1 = unlabelled
    meta.json              label_names, feature_spec {m: {...}}, dialogues [...], source,
                           content_sha256 (of features.safetensors' bytes + the rest of meta)
N is the number of utterances; m is a modality letter (t, a, v). Loading never executes code.
Loading checks content_sha256, so a flipped value, label or presence bit, or an edited meta.json,
is refused naming the file instead of being trained or evaluated on as good.
Every feat.<m> has its present.<m> (every version of this project wrote both); a file that lacks one,
or any other malformed file, raises FeatureSetError (a ValueError) naming the file and the key.

The last section audits a feature set's presence masks: presence_leaks(fs) names every (split,
modality) whose present.<m> gives the label away, and check_presence raises PresenceLeakError for
them (the importers and training refuse such a set).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from model.config import MODALITY_ORDER
from pipeline.files import atomic_write, sha256_file

MODALITIES = tuple(MODALITY_ORDER)  # canonical order everywhere: text, audio, visual
FEATURES_FILE = "features.safetensors"
META_FILE = "meta.json"
UNLABELLED = -1
FORMAT = "ada2i-erc.featureset/2"  # /2: meta.json holds content_sha256
DIGEST_KEY = "content_sha256"


def content_digest(features_path: Path, meta: dict[str, Any]) -> str:
    """sha256 of the tensor file's bytes and the canonical JSON of meta (without its digest)."""
    rest = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    h = hashlib.sha256(sha256_file(features_path).encode() + b"\0")
    h.update(json.dumps(rest, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


# The `source` key that marks data a program generated rather than recorded ("demo", "synthetic"):
# a model trained on it has learnt the generator's planted signal, not emotion in speech, and every
# prediction made with it must say so (pipeline/inference/predict_outputs.py: Provenance).
GENERATED_KEY = "generated"


def source_fields(source: str) -> dict[str, Any]:
    """A feature set's `source` as a dict: the JSON object extraction and the generators write, or
    {"description": text} for the free text of importers (and of older feature sets)."""
    try:
        parsed = json.loads(source)
    except (ValueError, TypeError):
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    # Synthetic feature sets saved before their source was JSON read "synthetic(seed=N)".
    if isinstance(source, str) and source.startswith("synthetic("):
        return {GENERATED_KEY: "synthetic", "description": source}
    return {"description": str(source or "")}


def generated_by(source: str) -> str:
    """What generated a feature set's data ("demo", "synthetic"); "" for recorded (or unknown) data."""
    return str(source_fields(source).get(GENERATED_KEY) or "")


def describe_source(source: str) -> str:
    """One line saying where a feature set's data came from."""
    f = source_fields(source)
    if "manifest" in f:
        what = f"features extracted from {f['manifest']}"
        if f.get("preset"):
            what += f" ({f['preset']} extractors, modalities {f.get('modalities', '?')})"
        return what + (f", generated {f[GENERATED_KEY]} data" if f.get(GENERATED_KEY) else "")
    return str(f.get("description") or f.get(GENERATED_KEY) or "unknown")


class FeatureSetError(ValueError):
    """A feature set that cannot be used; the message names the file (and key or dialogue)."""


@dataclass
class Dialogue:
    id: str
    split: str  # "train" | "dev" | "test" | "" (unknown)
    start: int  # first row in the feature matrices
    length: int
    utterance_ids: list[str]
    speakers: list[str]
    extra: dict[str, list[Any]] = field(default_factory=dict)  # start_s, end_s, texts, ...

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "split": self.split,
            "start": self.start,
            "length": self.length,
            "utterance_ids": self.utterance_ids,
            "speakers": self.speakers,
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Dialogue:
        known = {"id", "split", "start", "length", "utterance_ids", "speakers"}
        return cls(
            id=str(d["id"]),
            split=str(d.get("split", "")),
            start=int(d["start"]),
            length=int(d["length"]),
            utterance_ids=[str(u) for u in d["utterance_ids"]],
            speakers=[str(s) for s in d["speakers"]],
            extra={k: v for k, v in d.items() if k not in known},
        )


@dataclass
class FeatureSet:
    features: dict[str, torch.Tensor]  # m -> float32 [N, D_m]
    present: dict[str, torch.Tensor]  # m -> bool [N]
    labels: torch.Tensor  # int64 [N]
    dialogues: list[Dialogue]
    label_names: list[str]
    feature_spec: dict[str, dict[str, Any]]  # m -> {"dim": D_m, "extractors": [...], ...}
    source: str = ""
    path: Path | None = None  # where it was loaded from, for error messages

    @property
    def modalities(self) -> str:
        return "".join(m for m in MODALITIES if m in self.features)

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.features.items()}

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def split(self, name: str) -> list[Dialogue]:
        return [d for d in self.dialogues if d.split == name]

    # ---- validation -------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ValueError naming the file, dialogue and problem for anything training would trip on."""
        where = str(self.path) if self.path else "feature set"
        n = len(self)
        if not self.features:
            raise FeatureSetError(f"{where}: no modality features")
        unknown = set(self.features) - set(MODALITIES)
        if unknown:
            raise FeatureSetError(
                f"{where}: unknown modalities {sorted(unknown)}; expected some of tav"
            )
        for m, x in self.features.items():
            if x.ndim != 2 or x.shape[0] != n:
                raise FeatureSetError(
                    f"{where}: feat.{m} has shape {tuple(x.shape)}, expected [{n}, D]"
                )
            spec_dim = self.feature_spec.get(m, {}).get("dim")
            if spec_dim is not None and int(spec_dim) != x.shape[1]:
                raise FeatureSetError(
                    f"{where}: feat.{m} has dim {x.shape[1]} but its feature spec says {spec_dim}"
                )
            if self.present[m].shape != (n,):
                raise FeatureSetError(
                    f"{where}: present.{m} has shape {tuple(self.present[m].shape)}"
                )
        covered = 0
        for d in self.dialogues:
            if d.length <= 0:
                raise FeatureSetError(f"{where}: dialogue {d.id!r} is empty")
            if d.start != covered:
                raise FeatureSetError(
                    f"{where}: dialogue {d.id!r} starts at row {d.start}, expected {covered}"
                )
            if len(d.utterance_ids) != d.length or len(d.speakers) != d.length:
                raise FeatureSetError(
                    f"{where}: dialogue {d.id!r} lists a wrong number of utterances/speakers"
                )
            covered += d.length
            rows = slice(d.start, d.start + d.length)
            for m, x in self.features.items():
                block = x[rows]
                if not torch.isfinite(block).all():
                    bad = int((~torch.isfinite(block)).any(dim=1).nonzero()[0, 0])
                    raise FeatureSetError(
                        f"{where}: dialogue {d.id!r} utterance {d.utterance_ids[bad]!r} has NaN/inf "
                        f"in modality {m}"
                    )
            labels = self.labels[rows]
            bad_label = (labels < UNLABELLED) | (labels >= len(self.label_names))
            if bad_label.any():
                i = int(bad_label.nonzero()[0, 0])
                raise FeatureSetError(
                    f"{where}: dialogue {d.id!r} utterance {d.utterance_ids[i]!r} has label id "
                    f"{int(labels[i])} outside the label set {self.label_names}"
                )
        if covered != n:
            raise FeatureSetError(f"{where}: dialogues cover {covered} rows but there are {n}")
        ids = [u for d in self.dialogues for u in d.utterance_ids]
        if len(set(ids)) != len(ids):
            raise FeatureSetError(f"{where}: duplicate utterance ids")

    # ---- subsets ----------------------------------------------------------------------------

    def select_modalities(self, modalities: str) -> FeatureSet:
        missing = [m for m in modalities if m not in self.features]
        if missing:
            raise FeatureSetError(
                f"{self.path or 'feature set'}: modalities {missing} requested but only "
                f"{self.modalities!r} were extracted"
            )
        keep = [m for m in MODALITIES if m in modalities]
        return FeatureSet(
            features={m: self.features[m] for m in keep},
            present={m: self.present[m] for m in keep},
            labels=self.labels,
            dialogues=self.dialogues,
            label_names=self.label_names,
            feature_spec={m: self.feature_spec.get(m, {"dim": self.dims[m]}) for m in keep},
            source=self.source,
            path=self.path,
        )

    # ---- disk -------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write both files atomically (temp + rename); a crash leaves the old set or none."""
        self.validate()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"labels": self.labels.to(torch.int64).contiguous()}
        for m in self.features:
            tensors[f"feat.{m}"] = self.features[m].to(torch.float32).contiguous()
            tensors[f"present.{m}"] = self.present[m].to(torch.uint8).contiguous()
        spec = {m: {**self.feature_spec.get(m, {}), "dim": self.dims[m]} for m in self.features}
        meta = {
            "format": FORMAT,
            "label_names": self.label_names,
            "feature_spec": spec,
            "source": self.source,
            "dialogues": [d.to_dict() for d in self.dialogues],
        }
        atomic_write(directory / FEATURES_FILE, lambda p: save_file(tensors, str(p)))
        # Written after the tensors: a crash between the two leaves a pair that fails the check.
        meta[DIGEST_KEY] = content_digest(directory / FEATURES_FILE, meta)
        atomic_write(
            directory / META_FILE, lambda p: Path(p).write_text(json.dumps(meta, indent=1))
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path, validate: bool = True) -> FeatureSet:
        """Read a FeatureSet directory. FileNotFoundError for a missing file; FeatureSetError
        (naming the file and key) for anything malformed."""
        directory = Path(directory)
        features_path, meta_path = directory / FEATURES_FILE, directory / META_FILE
        for p in (features_path, meta_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: feature set file not found")
        try:
            tensors = load_file(str(features_path))
        except Exception as exc:  # safetensors raises its own error types
            raise FeatureSetError(
                f"{features_path}: not a readable safetensors file ({exc})"
            ) from exc
        try:
            meta = json.loads(meta_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FeatureSetError(f"{meta_path}: invalid JSON ({exc})") from exc
        fs = cls._from_parts(tensors, meta, features_path, meta_path, directory)
        if validate:
            try:
                fs.validate()
            except FeatureSetError:
                raise
            except (ValueError, TypeError, RuntimeError) as exc:
                raise FeatureSetError(str(exc)) from exc
        # After the checks that name what is malformed: this catches what still parses as valid.
        _check_digest(meta, features_path, meta_path)
        return fs

    @classmethod
    def _from_parts(cls, tensors, meta, features_path, meta_path, directory) -> FeatureSet:
        """Check the keys and types the format promises, then build (validate() checks values)."""
        if "labels" not in tensors:
            raise FeatureSetError(f"{features_path}: no 'labels' tensor")
        labels = tensors["labels"]
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise FeatureSetError(
                f"{features_path}: 'labels' must be an integer [N] tensor, "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        mods = [m for m in MODALITIES if f"feat.{m}" in tensors]
        for m in mods:
            if f"present.{m}" not in tensors:
                raise FeatureSetError(
                    f"{features_path}: no 'present.{m}' tensor for 'feat.{m}' (the format stores "
                    "one per modality: which utterances have that feature)"
                )
            if tensors[f"feat.{m}"].dtype.is_complex:
                raise FeatureSetError(f"{features_path}: 'feat.{m}' has dtype complex")
        if not isinstance(meta, dict):
            raise FeatureSetError(f"{meta_path}: expected a JSON object")
        for key, kind in (("dialogues", list), ("label_names", list)):
            if not isinstance(meta.get(key), kind):
                raise FeatureSetError(f"{meta_path}: '{key}' must be a JSON {kind.__name__}")
        spec = meta.get("feature_spec", {})
        if not isinstance(spec, dict) or not all(isinstance(v, dict) for v in spec.values()):
            raise FeatureSetError(f"{meta_path}: 'feature_spec' must map modality -> object")
        try:
            dialogues = [Dialogue.from_dict(d) for d in meta["dialogues"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FeatureSetError(f"{meta_path}: malformed 'dialogues' entry ({exc!r})") from exc
        return cls(
            features={m: tensors[f"feat.{m}"].float() for m in mods},
            present={m: tensors[f"present.{m}"].bool() for m in mods},
            labels=labels.long(),
            dialogues=dialogues,
            label_names=[str(n) for n in meta["label_names"]],
            feature_spec=spec,
            source=str(meta.get("source", "")),
            path=directory,
        )


def _check_digest(meta: dict[str, Any], features_path: Path, meta_path: Path) -> None:
    """Refuse a feature set whose bytes are not what was written (format /2 and later)."""
    recorded = meta.get(DIGEST_KEY)
    if recorded is None:
        raise FeatureSetError(
            f"{meta_path}: no '{DIGEST_KEY}', so its content cannot be checked (written by an "
            "earlier version, or by hand); rebuild it with erc extract or erc import"
        )
    actual = content_digest(features_path, meta)
    if actual != recorded:
        raise FeatureSetError(
            f"{features_path.parent}: content does not match its {DIGEST_KEY} in {meta_path.name} "
            f"(recorded {str(recorded)[:12]}…, now {actual[:12]}…): {features_path.name} or "
            f"{meta_path.name} was changed or damaged after it was written; rebuild the feature set"
        )


def from_arrays(
    dialogues: list[dict[str, Any]],
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    label_names: list[str],
    present: dict[str, np.ndarray] | None = None,
    feature_spec: dict[str, dict[str, Any]] | None = None,
    source: str = "",
) -> FeatureSet:
    """Build a FeatureSet from row-aligned numpy arrays and dialogue dicts (id, split, utterance_ids,
    speakers, optional extras); rows must already be grouped by dialogue in order."""
    built, start = [], 0
    for d in dialogues:
        n = len(d["utterance_ids"])
        extra = {
            k: v for k, v in d.items() if k not in {"id", "split", "utterance_ids", "speakers"}
        }
        built.append(
            Dialogue(
                id=str(d["id"]),
                split=str(d.get("split", "")),
                start=start,
                length=n,
                utterance_ids=[str(u) for u in d["utterance_ids"]],
                speakers=[str(s) for s in d.get("speakers", ["?"] * n)],
                extra=extra,
            )
        )
        start += n
    feats = {
        m: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for m, x in features.items()
    }
    pres = {
        m: torch.from_numpy(np.asarray(present[m], dtype=bool))
        if present and m in present
        else torch.ones(start, dtype=torch.bool)
        for m in feats
    }
    spec = {
        m: {"dim": int(x.shape[1]), **((feature_spec or {}).get(m, {}))} for m, x in feats.items()
    }
    return FeatureSet(
        features=feats,
        present=pres,
        labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        dialogues=built,
        label_names=list(label_names),
        feature_spec=spec,
        source=source,
    )


def split_counts(fs: FeatureSet) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for d in fs.dialogues:
        c = out.setdefault(d.split or "?", {"dialogues": 0, "utterances": 0})
        c["dialogues"] += 1
        c["utterances"] += d.length
    return out


# ---- presence audit: does a modality's presence mask give the label away? --------------------
#
# A model sees present.<m> (absent utterances are masked out, their features are zeros), so if a
# modality is present for nearly every utterance of some classes and nearly none of another, the
# mask alone predicts the label and every score trained or measured on it is inflated. This is not
# hypothetical: ../shared's audio_pyaudioanalysis.npz has no row for any IEMOCAP "fru" utterance
# (and 8% of "hap" are missing), so a model with that audio learned "no audio -> frustrated" and
# reached 75 test W-F1 on IEMOCAP-6, 12 points above the same model with real audio descriptors.
#
# presence_leaks(fs) -> one message per (split, modality) whose per-class coverage differs by more
# than MAX_COVERAGE_GAP between two classes with at least MIN_CLASS_UTTERANCES labelled utterances.
# Missing faces or silent audio in real recordings vary with the class far less than that.

MAX_COVERAGE_GAP = 0.5  # fraction of a class's utterances that have the modality
MIN_CLASS_UTTERANCES = 20  # rarer classes give too noisy a coverage to judge


class PresenceLeakError(ValueError):
    """A feature set whose presence mask predicts the label; the message says where and how."""


def presence_leaks(fs: FeatureSet, modalities: str | None = None) -> list[str]:
    labels = fs.labels.numpy()  # [N]
    split = np.empty(len(labels), dtype=object)  # [N]
    for d in fs.dialogues:
        split[d.start : d.start + d.length] = d.split
    problems = []
    for m in modalities or fs.modalities:
        present = fs.present[m].numpy().astype(bool)  # [N]
        for name in sorted({d.split for d in fs.dialogues}):
            rows = (split == name) & (labels != UNLABELLED)
            coverage = {}  # class name -> fraction of its utterances with modality m
            for c, label in enumerate(fs.label_names):
                of_class = rows & (labels == c)
                if of_class.sum() >= MIN_CLASS_UTTERANCES:
                    coverage[label] = float(present[of_class].mean())
            if len(coverage) < 2:
                continue
            low = min(coverage, key=coverage.get)
            high = max(coverage, key=coverage.get)
            if coverage[high] - coverage[low] > MAX_COVERAGE_GAP:
                problems.append(
                    f"modality {m!r} in split {name or '(none)'!r}: present for "
                    f"{coverage[high]:.0%} of {high!r} but {coverage[low]:.0%} of {low!r} "
                    "utterances, so whether it is present predicts the label"
                )
    return problems


def check_presence(
    fs: FeatureSet, where: str, modalities: str | None = None, hint: str = ""
) -> None:
    """Raise PresenceLeakError naming `where` (a file or source) and every leak found, then hint."""
    problems = presence_leaks(fs, modalities)
    if problems:
        raise PresenceLeakError(f"{where}: " + "; ".join(problems) + (f" ({hint})" if hint else ""))
