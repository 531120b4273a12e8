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

import json
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extractors.base import Extractor
from pipeline.dataset import media
from pipeline.dataset.manifest import read_manifest
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
from pipeline.features.store import FeatureStore, UnindexedWriter
from pipeline.progress_bar import progress_bar

log = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    done: int  # (utterance, extractor) entries computed in this run
    cached: int  # entries already in the store
    failed: int  # failure records (see failures_path)
    failures_path: Path
    per_extractor_seconds: dict[str, float] = field(default_factory=dict)  # + "decode"
    failures: list[Failure] = field(default_factory=list)

    def line(self) -> str:
        return f"done {self.done}, cached {self.cached}, failed {self.failed}"


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
    """
    # 1. inputs
    fps = check_fps(fps)
    df = read_manifest(manifest_path)
    exs = load_extractors(preset, modalities, device, extractors)
    workers = workers or len(os.sched_getaffinity(0))
    store = FeatureStore(store_root) if index else UnindexedWriter(store_root)
    report_dir = Path(report_dir) if report_dir else store.root / "reports"
    failures: list[Failure] = []
    torch_threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    run = None
    try:
        # 2. plan + 3. look up
        tasks, planned_failures = plan_tasks(df, exs, store, fps, speakers)
        have = store.present(t.key for t in tasks)
        todo = [t for t in tasks if t.key not in have]
        cached = len(tasks) - len(todo)
        bar = progress_bar(total=len(todo), disable=not progress, desc="extract", unit="entry")
        run = Runner(store, strict, bar, failures, workers, on_progress)
        for f in planned_failures:
            run.record(f)
        for t in todo:
            run.pending.setdefault(t.key, []).append(t)
        firsts = [ts[0] for ts in run.pending.values()]  # one task per distinct key
        # 4. text (runs on the pool while the media below decodes)
        for t in (t for t in firsts if t.modality == "t"):
            run.add(t, df["text"].iat[t.row])
        run.flush()
        # 5. media, one decode per file
        for path, segments in _media_jobs(t for t in firsts if t.modality != "t").items():
            _decode_file(run, path, segments, fps)
        run.finish()
        bar.close()
    finally:
        if run is not None:
            run.close()
        store.close()
        torch.set_num_threads(torch_threads)
    # 6. report
    names = [ex.spec.name for m in exs for ex in exs[m]] + ["decode"]
    summary = ExtractSummary(
        done=run.done,
        cached=cached,
        failed=len(failures),
        failures_path=write_failures(failures, report_dir),
        per_extractor_seconds={n: round(run.seconds.get(n, 0.0), 3) for n in names},
        failures=failures,
    )
    log.info("extract %s: %s (failures: %s)", manifest_path, summary.line(), summary.failures_path)
    return summary


def feature_spec(extractors: dict[str, Sequence[Extractor]], fps: float) -> dict[str, dict]:
    """Per modality: what its columns came from, so checkpoints can refuse mismatched features.

    {m: {extractor: "a+b", version: "1+2", dim: D_m, config_hash, extractors: [spec + hash], fps?}}
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
    return out


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
    """Read a manifest's features from the store and write a FeatureSet directory.

    A modality's extractors are concatenated in preset order: feat.<m> [N, sum of dims]. An
    utterance lacks a modality (zeros, present.<m> = 0) when any of its extractors failed, returned
    None or was never extracted. Labels: ids index ``label_names`` (default: the manifest's declared
    label set in its canonical order, else its non-empty labels sorted alphabetically:
    pipeline/dataset/labels.py); "" -> -1. Dialogues and utterances in manifest order.
    ``fps`` must be the frame rate the visual features were extracted at (it is part of their key).
    """
    from pipeline.dataset.labels import declared_set, label_order
    from pipeline.features.featureset import from_arrays

    fps = check_fps(fps)
    df = read_manifest(manifest_path)
    exs = load_extractors(preset, modalities, device, extractors)
    n = len(df)
    with FeatureStore(store_root, create=False) as store:
        tasks, _ = plan_tasks(df, exs, store, fps)
        by_pair = {(t.row, t.name): t.key for t in tasks}
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
    label_set = declared_set(df, str(manifest_path))
    names = list(label_names) if label_names else label_order(labels_col, label_set)
    for i, lab in enumerate(labels_col):
        if lab and lab not in names:
            raise ValueError(
                f"{manifest_path}: row {i} (utterance {df['utterance_id'].iat[i]!r}): label "
                f"{lab!r} is not in label_names {names}"
            )
    labels = np.array([names.index(lab) if lab else -1 for lab in labels_col], np.int64)  # [N]
    dialogues = []  # read_manifest keeps a dialogue's rows contiguous, so rows stay aligned
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
    source = json.dumps(
        {
            "manifest": str(Path(manifest_path).resolve()),
            "store": str(Path(store_root).resolve()),
            "preset": preset,
            "modalities": "".join(exs),
            "fps": fps,
        }
    )
    fs = from_arrays(
        dialogues,
        feats,
        labels,
        names,
        present=present,
        feature_spec=feature_spec(exs, fps),
        source=source,
    )
    return fs.save(out_dir)


def _get_or_none(store: FeatureStore, key: str) -> np.ndarray | None:
    try:
        return store.get(key)
    except KeyError:
        return None
