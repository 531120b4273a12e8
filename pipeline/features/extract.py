"""Extraction: manifest -> plan -> run (features into the store, failures report) -> assemble.

The module follows that order, in three sections:
    plan      which (utterance, extractor) pairs exist, their store keys, and failures (shared by
              extraction, `status`, `gc` and FeatureSet building, so that all four agree on keys)
    run       compute every entry the store lacks; batches go to the extractors on a small thread
              pool (the Runner, section run: below)
    assemble  a planned manifest + the store -> a FeatureSet (in memory; the caller saves it)
and then the path-based entry points the CLI and the flows call (extract_features,
extract_featureset, build_featureset).

extract_features() runs these named steps:
    1. read the manifest, build (or take) the extractors
    2. plan: one task per (utterance, extractor) with its content key; bad rows -> failures
    3. look the keys up in the store; only missing keys are computed
    4. text: batches of transcripts into each text extractor (no media)
    5. media: group the missing audio/visual tasks by file; decode each file ONCE (audio only if an
       audio extractor needs it, frames only if a visual one does, only the segments still needed),
       in a background thread so decoding overlaps inference; batch segments into each extractor
       (extractor calls run on a small thread pool: the Runner, below)
    6. write the failures report (CSV + JSON) and return the summary
Every entry is written as soon as its batch is done, so a killed run resumes where it stopped.
With ``index=False`` (a worker on another host) only entry files are written; the process that
keeps the store's index adds them with FeatureStore.ingest (docs/architecture.md).

The Runner batches tasks into the extractors on a small thread pool and writes what they return.

Why threads, and one torch thread each: on CPU the visual extractor (MTCNN + DenseNet121) is ~95%
of the cost. Torch's own intra-op parallelism (2 OpenMP threads) collapsed on the shared 2-core
machine (measured 3-9x slower than one thread when other processes held the cores: OpenMP threads
wait on each other at every op), while two Python threads each running whole batches with one torch
thread (torch releases the GIL) use both cores with no barrier. Only extractors known to be
re-entrant run concurrently: visual ones by default (torch modules in inference mode + OpenCV), or
any extractor with ``thread_safe = True``. Others (a Hugging Face fast tokenizer raises "Already
borrowed" when shared between threads) are serialised by a per-extractor lock.

Store writes happen on the calling thread only, in submission order, so SQLite sees one writer
per process and memory holds at most ``2 x workers`` batches in flight.

Concurrent extractions on one store split the work instead of each computing every entry: a batch
claims its keys in the store just before it is submitted (one SQLite transaction per batch), and
keys another live extraction has claimed, or has stored since planning, are left to it; at the end
the runner waits for them to appear. Both processes still decode every segment (decoding is a few
per cent of the cost); only the extractor calls are shared out. A key whose claimant stops without
storing it is reported as a failure that a rerun computes (its claim is then taken over).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from extractors.base import Extractor
from extractors.file_digest import stat_key
from extractors.presets import ExtractorPreset, build_extractors
from extractors.text import OUT_OF_FOLD
from model.config import MODALITY_ORDER, parse_modalities
from pipeline.dataset import media
from pipeline.dataset.manifest import (
    GENERATED_COLUMN,
    declared_set,
    from_frame,
    label_order,
    media_file_problem,
    read_manifest,
    validate_rows,
)
from pipeline.features.featureset import GENERATED_KEY, FeatureSet, from_arrays
from pipeline.features.store import (
    Entry,
    FeatureStore,
    StoreError,
    UnindexedWriter,
    make_key,
    text_hash,
)
from pipeline.files import atomic_write_text
from pipeline.progress_bar import progress_bar

log = logging.getLogger(__name__)


# ---- plan: which (utterance, extractor) pairs exist, their store keys, and failures -------------
#
# A task's input is:
#     text   -> the transcript (its UTF-8 bytes are hashed)          segment None, fps None
#               (an utterance with no words, empty or whitespace text, has no text task: its text
#               modality is absent, like a face not found; not a failure, so strict runs go on;
#               no_words() lists them for reports)
#     audio  -> audio_path, else the audio track of video_path        segment (start, end), fps None
#     visual -> video_path                                            segment (start, end), fps
# An end_s of NaN means "until the end of the media" and is keyed as such (end None). A row whose
# segment cannot be cut (missing, negative or non-finite start, inf end, zero-length, inverted) is a
# failure of its audio/visual tasks; a media path that is missing or not a regular file (/dev/zero,
# a FIFO: hashing it would never end) fails that row's media tasks. Neither stops the other rows.
# The plan makes the Tasks and the Failures of rows that cannot be extracted; the Runner (section
# run) computes the Tasks and records a Failure for each that produced no entry.


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


FAILURE_FIELDS = ("utterance_id", "modality", "extractor", "file", "reason")

# validate_rows reasons -> the modalities they make impossible. A bad segment does not stop the
# text; bad text does not stop the media; a speaker problem is reported but stops no feature.
_SEGMENT_REASONS = ("missing start", "non-finite", "negative start", "zero-length", "inverted")


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


# (preset, modalities, device, weights, text model) -> (their files' state, the extractors)
_BUILT: dict[tuple, tuple[tuple, dict[str, Sequence[Extractor]]]] = {}
_BUILT_LOCK = threading.Lock()


def load_extractors(
    preset: ExtractorPreset,
    modalities: str,
    device: str = "cpu",
    extractors: dict[str, Sequence[Extractor]] | None = None,
    visual_weights: str | None = None,
    text_model: str | None = None,
) -> dict[str, list[Extractor]]:
    """The extractors for each requested modality: the given ones, else built from the preset
    (visual_weights: a fine-tuned DenseNet121 file for the paper preset's visual extractor;
    text_model: a sentence encoder for text instead of the preset's).

    Built extractors are kept for the process (one per preset, modalities, device, weights), so
    extracting and then assembling a FeatureSet, or several shards in one process, load each
    model once; the runner's per-extractor locks are per object, so sharing them is safe. A
    weights file or model folder rewritten since (fine-tuned again into the same place) is loaded
    again: a long-lived worker never encodes with the model that was there before."""
    modalities = parse_modalities(modalities)
    if extractors is None:
        key = (preset, modalities, device, visual_weights, text_model)
        state = (_files_state(visual_weights), _files_state(text_model))
        with _BUILT_LOCK:  # one build per key, even when shard tasks start together
            if key not in _BUILT or _BUILT[key][0] != state:  # the old model is dropped, not kept
                built = build_extractors(
                    preset, modalities, device, visual_weights=visual_weights, text_model=text_model
                )
                _BUILT[key] = state, built
            extractors = _BUILT[key][1]
    missing = [m for m in modalities if not extractors.get(m)]
    if missing:
        raise ValueError(f"preset {preset!r} has no extractor for modalities {missing}")
    return {m: list(extractors[m]) for m in modalities}


def _files_state(path: str | None) -> tuple:
    """(name, stat_key) of each file at a local path (a file or a folder); () for a model name
    or None."""
    if not path or not Path(path).expanduser().exists():
        return ()
    root = Path(path).expanduser()
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    return tuple((str(f.relative_to(root)), *stat_key(f)) for f in files if f.is_file())


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
                ex = _out_of_fold_encoder(ex, row) if m == "t" else ex
                key = make_key(ihash, segment, task_fps, ex.spec.config_hash())
                tasks.append(Task(i, utt, m, ex, key, ihash, source, segment, task_fps))
    return tasks, failures


def _out_of_fold_encoder(ex: Extractor, row) -> Extractor:
    """The text extractor for one row: for a train row of a dialogue whose labels a fine-tuned
    encoder learnt, its fold encoder that never saw them (extractors/text.py); else ``ex``.
    The encoder's own vectors of those rows separate the classes better than of any other row,
    and a dialogue model trained on them over-trusts text (5 dev W-F1 points on IEMOCAP-6 TA,
    BENCHMARKS.md "Fine-tuned text"). Dev, test and unsplit rows (new videos) use ``ex``."""
    fold_encoder = getattr(ex, "fold_encoder", None)
    if fold_encoder is None or getattr(row, "split", "") != "train":
        return ex
    return fold_encoder(str(row.dialogue_id)) or ex


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


@dataclass
class ExtractionPlan:
    """One manifest planned once: its rows, the extractors, every (utterance, extractor) task with
    its store key, and the rows that cannot be extracted. Running the plan and assembling the
    FeatureSet both read it, so the manifest is read, the extractors built and the keys made
    (media hashed) once per stage."""

    rows: pd.DataFrame  # the normalized manifest (pipeline/dataset/manifest.py)
    source: str  # where the rows came from: a manifest path, or a label (messages, provenance)
    preset: str
    extractors: dict[str, Sequence[Extractor]]
    fps: float
    tasks: list[Task]
    failures: list[Failure]  # rows that cannot be extracted (bad segment, missing file, ...)


def manifest_rows(manifest: str | Path | pd.DataFrame, source: str | None = None):
    """A manifest file or an in-memory frame -> (normalized rows, source label)."""
    if isinstance(manifest, pd.DataFrame):
        source = source or "<manifest frame>"
        return from_frame(manifest, source), source
    return read_manifest(manifest), source or str(Path(manifest).resolve())


def plan_extraction(
    rows: pd.DataFrame,
    store: FeatureStore | UnindexedWriter,
    source: str,
    preset: str = "offline",
    modalities: str = "tav",
    fps: float = 2.0,
    device: str = "cpu",
    extractors: dict[str, Sequence[Extractor]] | None = None,
    speakers: Collection[str] | None = None,
) -> ExtractionPlan:
    """Build (or take) the extractors and plan every task of normalized manifest rows."""
    fps = check_fps(fps)
    exs = load_extractors(preset, modalities, device, extractors)
    tasks, failures = plan_tasks(rows, exs, store, fps, speakers)
    return ExtractionPlan(rows, source, preset, exs, fps, tasks, failures)


# ---- run: compute every entry the store lacks, then write the failures report -------------------
# Extractor calls go through the Runner: batches per extractor on a small thread pool (why threads:
# the module docstring), results written on the calling thread in submission order.

# Utterances per extractor call. Visual batches hold every sampled frame of each utterance
# (an 18 s IEMOCAP turn at 2 fps = 36 frames x 0.9 MB), so they stay small to bound memory.
BATCH = {"t": 64, "a": 8, "v": 4}
PREFETCH = 4  # decoded segments buffered ahead of the extractors
CLAIM_POLL_S = 0.5  # how often the end of a run checks for entries another extraction computes


_LOCKS: dict[int, threading.Lock] = {}  # id(extractor) -> its lock, shared by every Runner
_LOCKS_LOCK = threading.Lock()


def extractor_lock(ex: Extractor) -> threading.Lock:
    """The lock that serialises calls into one extractor object that is not re-entrant, across
    every Runner of the process (built extractors are shared: extract.load_extractors)."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(id(ex), threading.Lock())


class StoreAbort(ExtractionError):
    """The store refused a write (disk full, read-only): the run stops, naming the path."""


def is_thread_safe(ex: Extractor) -> bool:
    return bool(getattr(ex, "thread_safe", ex.spec.kind == "visual"))


class Runner:
    """Batches tasks per extractor, runs them on ``workers`` threads, stores results, records
    failures (raising ExtractionError at the first one when strict) and per-extractor seconds."""

    def __init__(
        self,
        store: FeatureStore,
        strict: bool,
        bar: tqdm,
        failures: list[Failure],
        workers: int = 1,
        on_progress: Callable[[dict[str, int]], None] | None = None,
    ):
        self.store, self.strict, self.bar, self.failures = store, strict, bar, failures
        self.on_progress = on_progress  # {"done", "total", "failed"} after each stored batch
        self.advanced = 0  # entries stored or failed so far
        self.seconds: dict[str, float] = defaultdict(float)  # busy seconds, summed over threads
        self.done = 0
        self.entries = 0  # store entries written: identical inputs (the same text) share one
        # key -> every task resolving to it (identical text/segments are computed once)
        self.pending: dict[str, list[Task]] = {}
        # id(extractor) -> its next batch: per object, not per name, since a fine-tuned text
        # encoder's fold encoders share its name (the plan gives them the train rows they held out)
        self.buffers: dict[int, list[tuple[Task, Any]]] = defaultdict(list)
        self.queued: set[str] = set()  # keys handed to a batch: served, result not yet stored
        self.workers = max(1, workers)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="extract")
        self.inflight: deque[tuple[list[tuple[Task, Any]], Future]] = deque()
        self._seconds_lock = threading.Lock()
        self.claimed: set[str] = set()  # keys this run claimed (released when stored or at close)
        self.deferred: dict[str, list[Task]] = {}  # keys left to a concurrent extraction
        self.by_others = 0  # (utterance, extractor) entries a concurrent extraction computed

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        try:  # an interrupted run lets others take its unfinished keys at once
            self.store.release(self.claimed)
        except StoreError as exc:
            log.warning("could not release claims: %s", exc)

    # ---- bookkeeping -------------------------------------------------------------------------

    def unserved(self, task: Task) -> bool:
        return task.key in self.pending and task.key not in self.queued

    def fail(self, task: Task, reason: str) -> None:
        if task.key in self.claimed:  # let a concurrent run see at once that it is not coming
            self.claimed.discard(task.key)
            self.store.release([task.key])
        for t in self.pending.pop(task.key, [task]):
            self._advance(1)
            self.record(Failure(t.utterance_id, t.modality, t.name, t.source, reason))

    def _advance(self, n: int) -> None:
        self.bar.update(n)
        self.advanced += n  # not bar.n: a disabled bar does not count
        if self.on_progress:
            self.on_progress(
                {"done": self.advanced, "total": self.bar.total, "failed": len(self.failures)}
            )

    def record(self, failure: Failure) -> None:
        self.failures.append(failure)
        if self.strict:
            raise ExtractionError(f"--strict: {failure.message()}")

    # ---- batching ----------------------------------------------------------------------------

    def add(self, task: Task, item: Any) -> None:
        self.queued.add(task.key)
        buf = self.buffers[id(task.extractor)]
        buf.append((task, item))
        if len(buf) >= BATCH[task.modality]:
            self.flush(id(task.extractor))

    def flush(self, extractor: int | None = None) -> None:
        """Submit one extractor's buffer (``id(extractor)``; all when None); collect finished
        batches beyond the limit."""
        for n in [extractor] if extractor is not None else list(self.buffers):
            batch, self.buffers[n] = self.buffers[n], []
            batch = self._claim(batch)
            if batch:
                ex = batch[0][0].extractor
                future = self.pool.submit(self._call, ex, [item for _, item in batch])
                self.inflight.append((batch, future))
        while len(self.inflight) > 2 * self.workers or (
            self.inflight and self.inflight[0][1].done()
        ):
            self._collect()

    def finish(self) -> None:
        self.flush()
        while self.inflight:
            self._collect()
        self._await_others()

    # ---- claims ------------------------------------------------------------------------------

    def _claim(self, batch: list[tuple[Task, Any]]) -> list[tuple[Task, Any]]:
        """The part of a batch this run computes; the rest is another extraction's to store."""
        skip = self.store.claim([t.key for t, _ in batch])  # claimed or stored by another run
        mine = []
        for task, item in batch:
            if task.key in skip:
                self.deferred[task.key] = self.pending.pop(task.key, [task])
            else:
                self.claimed.add(task.key)
                mine.append((task, item))
        return mine

    def _await_others(self) -> None:
        """Wait for the deferred keys: stored by their claimant, or orphaned when it stopped."""
        waiting = dict(self.deferred)
        if waiting:
            log.info("waiting for %d entries a concurrent extraction is computing", len(waiting))
        while waiting:
            stored = self.store.present(waiting)
            alive = self.store.claims_alive(k for k in waiting if k not in stored)
            for key in list(waiting):
                if key in stored:
                    tasks = waiting.pop(key)
                    self.by_others += len(tasks)
                    self._advance(len(tasks))
                elif key not in alive:
                    for t in waiting.pop(key):
                        self.bar.update(1)
                        self.record(
                            Failure(
                                t.utterance_id,
                                t.modality,
                                t.name,
                                t.source,
                                "a concurrent extraction claimed it and stopped without storing "
                                "it (failed there or was killed): run extract again",
                            )
                        )
            if waiting:
                time.sleep(CLAIM_POLL_S)
        self.deferred.clear()
        if self.by_others:
            log.info("%d entries were computed by a concurrent extraction", self.by_others)

    def _call(self, ex: Extractor, items: list[Any]) -> list[Any]:
        """Worker thread: one extractor call; a failing batch is retried item by item."""
        lock = None if is_thread_safe(ex) else extractor_lock(ex)
        t0 = time.perf_counter()
        if lock:
            lock.acquire()
        try:
            try:
                outputs = list(ex(items))
            except Exception:  # isolate the input that breaks the extractor; the rest complete
                outputs = []
                for item in items:
                    try:
                        outputs.append(ex([item])[0])
                    except Exception as exc:
                        outputs.append(exc)
        finally:
            if lock:
                lock.release()
            with self._seconds_lock:
                self.seconds[ex.spec.name] += time.perf_counter() - t0
        if len(outputs) != len(items):
            err = ValueError(f"returned {len(outputs)} outputs for {len(items)} inputs")
            outputs = [err] * len(items)
        return outputs

    def _collect(self) -> None:
        """Calling thread: store the oldest batch's results (submission order)."""
        batch, future = self.inflight.popleft()
        outputs = future.result()
        ex = batch[0][0].extractor
        entries = []
        for (task, _), out in zip(batch, outputs, strict=True):
            reason = check_output(out, ex.spec.dim)
            if reason:
                self.fail(task, reason)
                continue
            tasks = self.pending.pop(task.key, [task])
            entries.append(
                Entry(
                    task.key,
                    out,
                    ex.spec,
                    task.utterance_id,
                    task.input_hash,
                    task.source,
                    task.segment,
                    task.fps,
                    refs=tuple(t.utterance_id for t in tasks),
                )
            )
            self.done += len(tasks)
            self._advance(len(tasks))
        try:
            self.store.put_many(entries)
        except StoreError as exc:  # disk full, read-only: every later write would fail too
            raise StoreAbort(str(exc)) from exc
        self.entries += len(entries)
        self.claimed.difference_update(e.key for e in entries)  # put_many released them


def check_output(out: Any, dim: int) -> str | None:
    """Why an extractor output cannot be stored, or None (None itself is a valid "masked")."""
    if isinstance(out, Exception):
        return f"extractor error: {type(out).__name__}: {out}"
    if out is None:
        return None
    x = np.asarray(out)
    if x.shape != (dim,) or not np.isfinite(x).all():
        finite = bool(np.isfinite(x).all())
        return f"extractor returned shape {x.shape} (finite: {finite}), expected [{dim}]"
    return None


def prefetch(items: Iterator[Any], depth: int = PREFETCH) -> Iterator[Any]:
    """Run a generator in a thread (PyAV/OpenCV decode releases the GIL) with a bounded queue."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    sentinel = object()

    def put(entry) -> bool:  # False once the consumer has gone: never block on a full queue
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # re-raised in the consumer
            put((sentinel, exc))
            return
        put((sentinel, None))

    thread = threading.Thread(target=produce, daemon=True, name="decode")
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is sentinel:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class ExtractSummary:
    done: int  # (utterance, extractor) pairs computed in this run
    cached: int  # pairs whose entry was already in the store
    failed: int  # failure records (see failures_path)
    failures_path: Path
    per_extractor_seconds: dict[str, float] = field(default_factory=dict)  # + "decode"
    failures: list[Failure] = field(default_factory=list)
    new_entries: int | None = None  # store entries written: pairs with identical input share one

    def line(self) -> str:
        line = f"done {self.done}, cached {self.cached}, failed {self.failed}"
        if self.new_entries is not None and self.new_entries != self.done:
            # `erc store verify` counts entries, `erc status` utterances per extractor: say why
            # the numbers differ.
            line += (
                f" (utterance, extractor) pairs; the {self.done} computed are stored as "
                f"{self.new_entries} entries: identical inputs (the same text) share one"
            )
        return line


def _media_jobs(tasks: Iterable[Task]) -> dict[str, dict[tuple[float, float | None], list[Task]]]:
    """file -> segment -> its pending audio/visual tasks, files and segments in manifest order."""
    jobs: dict[str, dict[tuple[float, float | None], list[Task]]] = {}
    for t in tasks:
        jobs.setdefault(t.source, {}).setdefault(t.segment, []).append(t)
    return jobs


def _timed(items: Iterator[Any], seconds: dict[str, float]) -> Iterator[Any]:
    """Accumulate the time spent producing each item (decoding) into seconds["decode"]."""
    while True:
        t0 = time.perf_counter()
        try:
            item = next(items)
        except StopIteration:
            return
        finally:
            seconds["decode"] += time.perf_counter() - t0
        yield item


def _segment_error(seg: media.SegmentMedia, modality: str) -> str | None:
    if modality == "a":
        return seg.audio_error or (seg.error if seg.audio is None else None)
    return seg.frames_error or (seg.error if not seg.frames else None)


def _decode_file(run: Runner, path: str, segments: dict, fps: float) -> None:
    """Decode one file once and feed every pending audio/visual task of its segments.

    media.iter_segments reports per-segment problems (past the end, no audio/video stream, bad
    bounds) in the segment, so one bad utterance never stops the others of its file.
    """
    requests = list(segments)  # [(start_s, end_s | None)]
    owners = list(segments.values())  # [[Task]] aligned with requests
    want_audio = any(t.modality == "a" for ts in owners for t in ts)
    want_frames = any(t.modality == "v" for ts in owners for t in ts)
    try:
        decoded = media.iter_segments(path, requests, fps, want_audio, want_frames)
        for seg in prefetch(_timed(decoded, run.seconds)):
            for t in owners[seg.index]:
                if not run.unserved(t):
                    continue  # an identical task elsewhere already produced or failed it
                error = _segment_error(seg, t.modality)
                if error:
                    run.fail(t, error)
                else:
                    run.add(t, seg.audio if t.modality == "a" else seg.frames)
    except ExtractionError:  # --strict
        raise
    except Exception as exc:  # unreadable file, or a decoder bug: only this file's tasks fail
        reason = exc.reason if isinstance(exc, media.MediaError) else f"decoding error: {exc!r}"
        if not isinstance(exc, media.MediaError):
            log.exception("%s: unexpected decoding error", path)
        for ts in owners:
            for t in ts:
                if run.unserved(t):
                    run.fail(t, reason)


def run_extraction(
    plan: ExtractionPlan,
    store: FeatureStore | UnindexedWriter,
    strict: bool = False,
    progress: bool = True,
    report_dir: str | Path | None = None,
    workers: int | None = None,
    on_progress: Callable[[dict[str, int]], None] | None = None,
) -> ExtractSummary:
    """Steps 3-6 of a plan: compute every entry the store lacks, then write the failures report."""
    workers = workers or len(os.sched_getaffinity(0))
    report_dir = Path(report_dir) if report_dir else store.root / "reports"
    failures: list[Failure] = []
    torch_threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    run = None
    try:
        # 3. look up
        have = store.present(t.key for t in plan.tasks)
        todo = [t for t in plan.tasks if t.key not in have]
        cached = len(plan.tasks) - len(todo)
        bar = progress_bar(total=len(todo), disable=not progress, desc="extract", unit="entry")
        run = Runner(store, strict, bar, failures, workers, on_progress)
        for f in plan.failures:
            run.record(f)
        for t in todo:
            run.pending.setdefault(t.key, []).append(t)
        firsts = [ts[0] for ts in run.pending.values()]  # one task per distinct key
        # 4. text (runs on the pool while the media below decodes), shortest first: a batch then
        # holds texts of one padded length (extractors/text.py buckets by it), so its forward
        # passes are full; the vectors do not depend on the batch
        texts = [t for t in firsts if t.modality == "t"]
        for t in sorted(texts, key=lambda t: len(plan.rows["text"].iat[t.row])):
            run.add(t, plan.rows["text"].iat[t.row])
        run.flush()
        # 5. media, one decode per file
        for path, segments in _media_jobs(t for t in firsts if t.modality != "t").items():
            _decode_file(run, path, segments, plan.fps)
        run.finish()
        bar.close()
    finally:
        if run is not None:
            run.close()
        torch.set_num_threads(torch_threads)
    # 6. report
    names = [ex.spec.name for m in plan.extractors for ex in plan.extractors[m]] + ["decode"]
    summary = ExtractSummary(
        done=run.done,
        new_entries=run.entries,
        cached=cached,
        failed=len(failures),
        failures_path=write_failures(failures, report_dir),
        per_extractor_seconds={n: round(run.seconds.get(n, 0.0), 3) for n in names},
        failures=failures,
    )
    log.info("extract %s: %s (failures: %s)", plan.source, summary.line(), summary.failures_path)
    return summary


# ---- assemble: a planned manifest + the store -> a FeatureSet -----------------------------------
#
# In memory; the caller saves it if wanted. A modality's extractors are concatenated in preset
# order: feat.<m> [N, sum of dims]. An utterance lacks a modality (zeros, present.<m> = 0) when any
# of its extractors failed, returned None or was never extracted. Labels: ids index ``label_names``
# (default: the manifest's declared label set in its canonical order, else its non-empty labels
# sorted alphabetically: pipeline/dataset/manifest.py); "" -> -1. Dialogues and utterances in
# manifest order.


def feature_spec(
    extractors: dict[str, Sequence[Extractor]], fps: float, tasks: Sequence[Task] = ()
) -> dict[str, dict]:
    """Per modality: what its columns came from, so checkpoints can refuse mismatched features.

    {m: {extractor: "a+b", version: "1+2", dim: D_m, config_hash, extractors: [spec + hash], fps?}}
    plus, where ``tasks`` gave train rows to a fine-tuned text encoder's fold encoders,
    OUT_OF_FOLD: {folds: K, train_rows: how many, weights: [the fold encoders' weights hashes]}.
    """
    out = {}
    for m, exs in extractors.items():
        parts = [{**ex.spec.to_dict(), "config_hash": ex.spec.config_hash()} for ex in exs]
        out[m] = {
            "extractor": "+".join(p["name"] for p in parts),
            "version": "+".join(p["version"] for p in parts),
            "dim": sum(p["dim"] for p in parts),
            "config_hash": "+".join(p["config_hash"] for p in parts),
            "weights": "+".join(p["weights"] for p in parts),
            "extractors": parts,
            **({"fps": fps} if m == "v" else {}),
        }
        own = {id(ex) for ex in exs}
        folded: dict[str, set[int]] = {}  # fold encoder's weights hash -> the rows it encoded
        for t in tasks:
            if t.modality == m and id(t.extractor) not in own:
                folded.setdefault(t.extractor.spec.weights_hash, set()).add(t.row)
        if folded:
            record = next((r for ex in exs if (r := getattr(ex, "finetune_record", None))), {})
            out[m][OUT_OF_FOLD] = {
                "folds": record.get(OUT_OF_FOLD, {}).get("folds", len(folded)),
                "train_rows": sum(len(rows) for rows in folded.values()),
                "weights": list(folded),
            }
    return out


def assemble_featureset(
    plan: ExtractionPlan, store, label_names: Sequence[str] | None = None
) -> FeatureSet:
    """Every planned entry read from ``store`` (a FeatureStore or UnindexedWriter) -> FeatureSet."""
    df, exs, n = plan.rows, plan.extractors, len(plan.rows)
    by_pair = {(t.row, t.name): t.key for t in plan.tasks}
    feats, present = {}, {}
    for m, mexs in exs.items():
        dims = [ex.spec.dim for ex in mexs]
        x = np.zeros((n, sum(dims)), np.float32)  # [N, D_m]
        ok = np.ones(n, bool)  # [N]
        offset = 0
        for ex, dim in zip(mexs, dims, strict=True):
            for i in range(n):
                key = by_pair.get((i, ex.spec.name))
                vec = _get_or_none(store, key) if ok[i] and key else None
                if vec is None:
                    ok[i] = False
                else:
                    x[i, offset : offset + dim] = vec
            offset += dim
        x[~ok] = 0.0  # a partial row (one extractor of several) is not a feature
        feats[m], present[m] = x, ok
        if not ok.all():
            log.warning("modality %s: %d of %d utterances have no features", m, (~ok).sum(), n)
    labels_col = df["label"].tolist()
    label_set = declared_set(df, plan.source)
    names = list(label_names) if label_names else label_order(labels_col, label_set)
    for i, lab in enumerate(labels_col):
        if lab and lab not in names:
            raise ValueError(
                f"{plan.source}: row {i} (utterance {df['utterance_id'].iat[i]!r}): label "
                f"{lab!r} is not in label_names {names}"
            )
    labels = np.array([names.index(lab) if lab else -1 for lab in labels_col], np.int64)  # [N]
    dialogues = []  # manifest rows keep a dialogue's rows contiguous, so rows stay aligned
    for did, rows in df.groupby("dialogue_id", sort=False):
        dialogues.append(
            {
                "id": str(did),
                "split": rows["split"].iat[0],
                "utterance_ids": rows["utterance_id"].tolist(),
                "speakers": rows["speaker"].tolist(),
                "start_s": [float(v) for v in rows["start_s"]],
                "end_s": [None if np.isnan(v) else float(v) for v in rows["end_s"]],
                "texts": rows["text"].tolist(),
            }
        )
    generated = sorted({str(v) for v in df.get(GENERATED_COLUMN, []) if isinstance(v, str) and v})
    source = json.dumps(
        {
            "manifest": plan.source,
            "store": str(Path(store.root).resolve()),
            "preset": plan.preset,
            "modalities": "".join(exs),
            "fps": plan.fps,
            **({GENERATED_KEY: "+".join(generated)} if generated else {}),
        }
    )
    return from_arrays(
        dialogues,
        feats,
        labels,
        names,
        present=present,
        feature_spec=feature_spec(exs, plan.fps, plan.tasks),
        source=source,
    )


def _get_or_none(store, key: str) -> np.ndarray | None:
    try:
        return store.get(key)
    except KeyError:
        return None


# ---- the whole pass: the path-based entry points the CLI and the flows call ---------------------


def extract_features(
    manifest_path: str | Path,
    store_root: str | Path,
    preset: str = "offline",
    modalities: str = "tav",
    strict: bool = False,
    fps: float = 2.0,
    device: str = "cpu",
    progress: bool = True,
    extractors: dict[str, Sequence[Extractor]] | None = None,
    speakers: Collection[str] | None = None,
    report_dir: str | Path | None = None,
    workers: int | None = None,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    index: bool = True,
    text_model: str | None = None,
) -> ExtractSummary:
    """Extract every missing (utterance, extractor) entry of a manifest into the store.

    Failures go to ``report_dir`` (default: ``<store>/reports``) as failures.csv and failures.json;
    ``strict`` raises ExtractionError at the first one. ``speakers``: if given, any other speaker is
    a failure. ``extractors``: already built {modality: [Extractor]} (reuse models across calls).
    ``workers``: extractor threads (default: the CPUs this process may use); with more than one,
    torch runs one intra-op thread per worker during the call (why: the module docstring).
    ``on_progress``: called with {"done", "total", "failed"} entries as batches are stored.
    ``index``: False = never open the store's index.sqlite (a writer on another host: entries are
    looked up and written as files, no claims); index them afterwards with FeatureStore.ingest.
    ``text_model``: a sentence encoder for text instead of the preset's (load_extractors).
    The path-based form the flows and the CLI call: plan_extraction + run_extraction.
    """
    # 1. inputs (the manifest first: a bad one fails before the store is created)
    fps = check_fps(fps)
    rows, source = manifest_rows(manifest_path)
    exs = load_extractors(preset, modalities, device, extractors, text_model=text_model)
    store = FeatureStore(store_root) if index else UnindexedWriter(store_root)
    try:
        # 2. plan, 3-6. run
        plan = plan_extraction(rows, store, source, preset, modalities, fps, device, exs, speakers)
        return run_extraction(plan, store, strict, progress, report_dir, workers, on_progress)
    finally:
        store.close()


def extract_featureset(
    manifest: str | Path | pd.DataFrame,
    store_root: str | Path,
    preset: str = "offline",
    modalities: str = "tav",
    out_dir: str | Path | None = None,
    label_names: Sequence[str] | None = None,
    source: str | None = None,
    strict: bool = False,
    fps: float = 2.0,
    device: str = "cpu",
    progress: bool = True,
    extractors: dict[str, Sequence[Extractor]] | None = None,
    speakers: Collection[str] | None = None,
    report_dir: str | Path | None = None,
) -> tuple[ExtractSummary, FeatureSet]:
    """Extract a manifest (a file or an in-memory frame) and assemble its FeatureSet in one pass:
    the rows are read, the extractors built and the tasks planned once. The FeatureSet is written
    to ``out_dir`` only when given (prediction keeps it in memory). ``source`` labels a frame's
    rows in messages and provenance."""
    fps = check_fps(fps)
    rows, source = manifest_rows(manifest, source)
    exs = load_extractors(preset, modalities, device, extractors)
    with FeatureStore(store_root) as store:
        plan = plan_extraction(rows, store, source, preset, modalities, fps, device, exs, speakers)
        summary = run_extraction(plan, store, strict, progress, report_dir)
        fs = assemble_featureset(plan, store, label_names)
    if out_dir is not None:
        fs.save(out_dir)
    return summary, fs


def build_featureset(
    manifest_path: str | Path,
    store_root: str | Path,
    preset: str = "offline",
    modalities: str = "tav",
    out_dir: str | Path = "featureset",
    extractors: dict[str, Sequence[Extractor]] | None = None,
    fps: float = 2.0,
    label_names: Sequence[str] | None = None,
    device: str = "cpu",
    text_model: str | None = None,
) -> Path:
    """Read a manifest's features from the store and write a FeatureSet directory (the path-based
    form the flows cache on; the assemble section above says how rows and labels are laid out).
    ``fps`` must be the frame rate the visual features were extracted at (it is part of their key),
    ``text_model`` the text encoder they were extracted with (None: the preset's).
    """
    fps = check_fps(fps)
    rows, source = manifest_rows(manifest_path)
    exs = load_extractors(preset, modalities, device, extractors, text_model=text_model)
    with FeatureStore(store_root, create=False) as store:
        plan = plan_extraction(rows, store, source, preset, modalities, fps, device, exs)
        fs = assemble_featureset(plan, store, label_names)
    return fs.save(out_dir)
