"""Manifest -> features in the store (+ failures report) -> FeatureSet directory.

extract_features() runs these named steps:
    1. read the manifest, build (or take) the extractors
    2. plan: one task per (utterance, extractor) with its content key; bad rows -> failures
    3. look the keys up in the store; only missing keys are computed
    4. text: batches of transcripts into each text extractor (no media)
    5. media: group the missing audio/visual tasks by file; decode each file ONCE (audio only if an
       audio extractor needs it, frames only if a visual one does, only the segments still needed),
       in a background thread so decoding overlaps inference; batch segments into each extractor
       (extractor calls run on a small thread pool: pipeline/features/extract_runner.py)
    6. write the failures report (CSV + JSON) and return the summary
Every entry is written as soon as its batch is done, so a killed run resumes where it stopped.
With ``index=False`` (a worker on another host) only entry files are written; the process that
keeps the store's index adds them with FeatureStore.ingest (docs/architecture.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from extractors.base import Extractor
from pipeline.dataset import media
from pipeline.dataset.manifest import from_frame, read_manifest
from pipeline.features.assemble import assemble_featureset, feature_spec  # noqa: F401 (public here)
from pipeline.features.extract_plan import (
    ExtractionError,
    Failure,
    Task,
    check_fps,
    load_extractors,
    plan_tasks,
    write_failures,
)
from pipeline.features.extract_runner import Runner, prefetch
from pipeline.features.featureset import FeatureSet
from pipeline.features.store import FeatureStore, UnindexedWriter
from pipeline.progress_bar import progress_bar

log = logging.getLogger(__name__)


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
) -> ExtractSummary:
    """Extract every missing (utterance, extractor) entry of a manifest into the store.

    Failures go to ``report_dir`` (default: ``<store>/reports``) as failures.csv and failures.json;
    ``strict`` raises ExtractionError at the first one. ``speakers``: if given, any other speaker is
    a failure. ``extractors``: already built {modality: [Extractor]} (reuse models across calls).
    ``workers``: extractor threads (default: the CPUs this process may use); with more than one,
    torch runs one intra-op thread per worker during the call (pipeline/features/extract_runner.py: why).
    ``on_progress``: called with {"done", "total", "failed"} entries as batches are stored.
    ``index``: False = never open the store's index.sqlite (a writer on another host: entries are
    looked up and written as files, no claims); index them afterwards with FeatureStore.ingest.
    The path-based form the flows and the CLI call: plan_extraction + run_extraction.
    """
    # 1. inputs (the manifest first: a bad one fails before the store is created)
    fps = check_fps(fps)
    rows, source = manifest_rows(manifest_path)
    exs = load_extractors(preset, modalities, device, extractors)
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
) -> Path:
    """Read a manifest's features from the store and write a FeatureSet directory (the path-based
    form the flows cache on; pipeline/features/assemble.py says how rows and labels are laid out).
    ``fps`` must be the frame rate the visual features were extracted at (it is part of their key).
    """
    fps = check_fps(fps)
    rows, source = manifest_rows(manifest_path)
    exs = load_extractors(preset, modalities, device, extractors)
    with FeatureStore(store_root, create=False) as store:
        plan = plan_extraction(rows, store, source, preset, modalities, fps, device, exs)
        fs = assemble_featureset(plan, store, label_names)
    return fs.save(out_dir)
