"""Planning an extraction: which (utterance, extractor) pairs exist, their store keys, and failures.

Shared by extraction, `status`, `gc` and FeatureSet building, so that all four agree on keys.
A task's input is:
    text   -> the transcript (its UTF-8 bytes are hashed)           segment None, fps None
              (an utterance with no words, empty or whitespace text, has no text task: its text
              modality is absent, like a face not found; not a failure, so strict runs go on;
              no_words() lists them for reports)
    audio  -> audio_path, else the audio track of video_path         segment (start, end), fps None
    visual -> video_path                                             segment (start, end), fps
An end_s of NaN means "until the end of the media" and is keyed as such (end None). A row whose
segment cannot be cut (missing, negative or non-finite start, inf end, zero-length, inverted) is a
failure of its audio/visual tasks; a media path that is missing or not a regular file (/dev/zero, a
FIFO: hashing it would never end) fails that row's media tasks. Neither stops the other rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from extractors.base import Extractor
from extractors.presets import ExtractorPreset, build_extractors
from model.config import MODALITY_ORDER, parse_modalities
from pipeline.dataset.manifest import media_file_problem, read_manifest, validate_rows
from pipeline.features.store import FeatureStore, make_key, text_hash
from pipeline.files import atomic_write_text

FAILURE_FIELDS = ("utterance_id", "modality", "extractor", "file", "reason")

# validate_rows reasons -> the modalities they make impossible. A bad segment does not stop the
# text; bad text does not stop the media; a speaker problem is reported but stops no feature.
_SEGMENT_REASONS = ("missing start", "non-finite", "negative start", "zero-length", "inverted")


@dataclass(frozen=True)
class Failure:
    """One utterance x extractor that produced no entry (or a row-level problem: extractor "")."""

    utterance_id: str
    modality: str  # t | a | v | "" (whole row)
    extractor: str
    file: str
    reason: str

    def message(self) -> str:
        where = f" (modality {self.modality}, extractor {self.extractor})" if self.extractor else ""
        file = f" in {self.file}" if self.file else ""
        return f"utterance {self.utterance_id!r}{where}{file}: {self.reason}"


@dataclass
class Task:
    """One (utterance, extractor) pair to look up or compute."""

    row: int  # position in the manifest
    utterance_id: str
    modality: str  # t | a | v
    extractor: Extractor
    key: str
    input_hash: str
    source: str  # media file, "" for text
    segment: tuple[float, float | None] | None  # seconds; None for text
    fps: float | None

    @property
    def name(self) -> str:
        return self.extractor.spec.name


class ExtractionError(ValueError):
    """A failure under strict=True (a ValueError so the CLI prints it as one line)."""


MAX_FPS = 120.0  # above any conversation video's frame rate


def check_fps(fps) -> float:
    """The visual frame rate as a float; ValueError unless it is finite, > 0 and <= MAX_FPS."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a number > 0, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"fps must be a finite number > 0 (frames per second), got {fps!r}")
    if value > MAX_FPS:
        # Frames are sampled per utterance and held until it is done; media.iter_segments also
        # caps the rate at each video's own frame rate.
        raise ValueError(f"fps must be at most {MAX_FPS:g} frames per second, got {fps!r}")
    return value


_BUILT: dict[tuple, dict[str, Sequence[Extractor]]] = {}
_BUILT_LOCK = threading.Lock()


def load_extractors(
    preset: ExtractorPreset,
    modalities: str,
    device: str = "cpu",
    extractors: dict[str, Sequence[Extractor]] | None = None,
    visual_weights: str | None = None,
) -> dict[str, list[Extractor]]:
    """The extractors for each requested modality: the given ones, else built from the preset
    (visual_weights: a fine-tuned DenseNet121 file for the paper preset's visual extractor).

    Built extractors are kept for the process (one per preset, modalities, device, weights), so
    extracting and then assembling a FeatureSet, or several shards in one process, load each
    model once; the runner's per-extractor locks are per object, so sharing them is safe."""
    modalities = parse_modalities(modalities)
    if extractors is None:
        key = (preset, modalities, device, visual_weights)
        with _BUILT_LOCK:  # one build per key, even when shard tasks start together
            if key not in _BUILT:
                _BUILT[key] = build_extractors(
                    preset, modalities, device, visual_weights=visual_weights
                )
        extractors = _BUILT[key]
    missing = [m for m in modalities if not extractors.get(m)]
    if missing:
        raise ValueError(f"preset {preset!r} has no extractor for modalities {missing}")
    return {m: list(extractors[m]) for m in modalities}


def _reason_modalities(reason: str, modalities: str) -> str | None:
    """The modalities a validate_rows reason blocks; "" = a row-level problem; None = irrelevant."""
    if reason.startswith(_SEGMENT_REASONS):
        return "".join(m for m in modalities if m in "av") or None
    if reason.startswith("undecodable text"):
        return "t" if "t" in modalities else None
    return ""  # speaker problems; media paths are checked per modality in plan_tasks


def plan_tasks(
    df: pd.DataFrame,
    extractors: dict[str, Sequence[Extractor]],
    store: FeatureStore,
    fps: float,
    speakers: Collection[str] | None = None,
) -> tuple[list[Task], list[Failure]]:
    """Every (utterance, extractor) task with its key, and a Failure for each impossible one."""
    modalities = "".join(m for m in MODALITY_ORDER if extractors.get(m))
    fps = check_fps(fps)
    failures: list[Failure] = []
    blocked: set[tuple[str, str]] = set()  # (utterance_id, modality)
    rows = validate_rows(df, require_media=False, check_files=False)
    if speakers is None:  # a missing speaker only matters against a known speaker list
        rows = [(u, r) for u, r in rows if not r.startswith("unknown speaker")]
    else:
        known = set(speakers)
        rows += [
            (u, f"unknown speaker {s!r}")
            for u, s in zip(df["utterance_id"], df["speaker"], strict=True)
            if s and s not in known
        ]
    for utt, reason in rows:
        mods = _reason_modalities(reason, modalities)
        if mods is None:
            continue
        if not mods:
            failures.append(Failure(utt, "", "", "", reason))
        for m in mods:
            blocked.add((utt, m))
            for ex in extractors[m]:
                failures.append(Failure(utt, m, ex.spec.name, "", reason))

    tasks: list[Task] = []
    file_hashes: dict[str, str | Exception] = {}
    for i, row in enumerate(df.itertuples(index=False)):
        utt = row.utterance_id
        end = None if math.isnan(row.end_s) else float(row.end_s)
        for m in modalities:
            if (utt, m) in blocked:
                continue
            specs = [ex.spec for ex in extractors[m]]
            if m == "t":
                if not has_words(row.text):
                    continue  # no words: text absent (masked), not a feature of ""
                try:
                    ihash = text_hash(row.text)
                except UnicodeEncodeError:
                    failures += [
                        Failure(utt, m, s.name, "", "undecodable text encoding") for s in specs
                    ]
                    continue
                source, segment, task_fps = "", None, None
            else:
                source = (row.audio_path or row.video_path) if m == "a" else row.video_path
                if not source:
                    what = "no audio or video path" if m == "a" else "no video path"
                    failures += [Failure(utt, m, s.name, "", what) for s in specs]
                    continue
                if source not in file_hashes:
                    file_hashes[source] = _hash_media(store, source)
                ihash = file_hashes[source]
                if isinstance(ihash, Failure):
                    failures += [Failure(utt, m, s.name, source, ihash.reason) for s in specs]
                    continue
                segment = (float(row.start_s), end)
                task_fps = fps if m == "v" else None  # audio does not depend on the frame rate
            for ex in extractors[m]:
                key = make_key(ihash, segment, task_fps, ex.spec.config_hash())
                tasks.append(Task(i, utt, m, ex, key, ihash, source, segment, task_fps))
    return tasks, failures


def has_words(text: str) -> bool:
    """False for empty or whitespace-only text: an utterance nobody transcribed (a laugh, a VAD
    region the recogniser found no word in) has no text modality rather than the vector of ""."""
    return bool(str(text).strip())


def no_words(df: pd.DataFrame) -> list[str]:
    """Utterance ids whose text modality is absent because they have no words."""
    return [u for u, t in zip(df["utterance_id"], df["text"], strict=True) if not has_words(t)]


def _hash_media(store: FeatureStore, source: str) -> str | Failure:
    """The file's content hash, or a Failure (reason only) when it is not a readable regular file;
    checked first because hashing a device or a FIFO reads forever (or blocks)."""
    why = media_file_problem(source)
    if why:
        return Failure("", "", "", source, why)
    try:
        return store.file_hash(source)
    except OSError as exc:
        return Failure("", "", "", source, f"cannot read media file ({exc})")


def write_failures(failures: Sequence[Failure], out_dir: Path) -> Path:
    """failures.csv + failures.json (same rows) in out_dir, atomically; returns the CSV path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [asdict(f) for f in failures]
    csv_path = out_dir / "failures.csv"
    table = io.StringIO(newline="")  # csv writes "\r\n" line ends itself
    w = csv.DictWriter(table, fieldnames=FAILURE_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(csv_path, table.getvalue())
    atomic_write_text(out_dir / "failures.json", json.dumps(rows, indent=1))
    return csv_path


def manifest_tasks(
    manifest_path: str | Path,
    store: FeatureStore,
    preset: str,
    modalities: str,
    fps: float,
    extractors: dict[str, Sequence[Extractor]] | None = None,
    device: str = "cpu",
) -> tuple[list[Task], list[Failure]]:
    """plan_tasks for a manifest file and a preset (or already built extractors)."""
    df = read_manifest(manifest_path)
    return plan_tasks(df, load_extractors(preset, modalities, device, extractors), store, fps)


def store_status(
    manifest_path: str | Path,
    store_root: str | Path,
    preset: str = "offline",
    modalities: str = "tav",
    fps: float = 2.0,
    extractors: dict[str, Sequence[Extractor]] | None = None,
) -> dict[str, dict[str, int]]:
    """{extractor name: {cached, missing, stale, invalid}} for a manifest against a store."""
    with FeatureStore(store_root, create=False) as store:
        tasks, failures = manifest_tasks(manifest_path, store, preset, modalities, fps, extractors)
        wanted = [(t.utterance_id, t.name, t.key) for t in tasks]
        wanted += [(f.utterance_id, f.extractor, None) for f in failures if f.extractor]
        return {name: c.to_dict() for name, c in store.status(wanted).items()}


def referenced_keys(
    manifest_paths: Sequence[str | Path],
    store: FeatureStore,
    preset: str,
    modalities: str,
    fps: float,
    extractors: dict[str, Sequence[Extractor]] | None = None,
) -> set[str]:
    """Every key some manifest still needs: what gc keeps."""
    exs = load_extractors(preset, modalities, "cpu", extractors)  # built once for all manifests
    keys: set[str] = set()
    for path in manifest_paths:
        keys.update(t.key for t in manifest_tasks(path, store, preset, modalities, fps, exs)[0])
    return keys
