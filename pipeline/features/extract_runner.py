"""Batching tasks into extractors on a small thread pool, and writing what they return.

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

The work comes as Tasks (one (utterance, extractor) pair with its store key) planned by
pipeline/features/extract.py; what produced no entry is a Failure, and under strict the first one
raises ExtractionError. Those three types are declared here, so that the plan can import the Runner.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from extractors.base import Extractor
from pipeline.features.store import Entry, FeatureStore, StoreError

log = logging.getLogger(__name__)

# Utterances per extractor call. Visual batches hold every sampled frame of each utterance
# (an 18 s IEMOCAP turn at 2 fps = 36 frames x 0.9 MB), so they stay small to bound memory.
BATCH = {"t": 64, "a": 8, "v": 4}
PREFETCH = 4  # decoded segments buffered ahead of the extractors
CLAIM_POLL_S = 0.5  # how often the end of a run checks for entries another extraction computes


# ---- what a runner runs and what it reports -----------------------------------------------------
# The plan (pipeline/features/extract.py) makes the Tasks and the Failures of rows that cannot be
# extracted; the Runner computes the Tasks and records a Failure for each that produced no entry.
# They are declared here, below extract.py, which imports the Runner.


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
        self.buffers: dict[str, list[tuple[Task, Any]]] = defaultdict(list)
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
        buf = self.buffers[task.name]
        buf.append((task, item))
        if len(buf) >= BATCH[task.modality]:
            self.flush(task.name)

    def flush(self, name: str | None = None) -> None:
        """Submit the named buffer (all when None); collect finished batches beyond the limit."""
        for n in [name] if name else list(self.buffers):
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
