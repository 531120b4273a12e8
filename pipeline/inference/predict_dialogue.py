"""Clip-per-utterance layouts (MELD, the IEMOCAP clips): the clips of a dialogue predicted together.

    dialogue_groups(manifest, videos) -> {dialogue_id: [(clip, manifest rows)]}
    predict_dialogue(dialogue_id, clips, ctx) -> [VideoResult per clip]

Ada2I reads conversation context, so a clip alone would be a one-utterance dialogue; the steps are
those of pipeline/inference/predict.py's module docstring (second list).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.dataset import media
from pipeline.dataset.manifest import write_manifest
from pipeline.features.extract import extract_featureset
from pipeline.inference.predict_outputs import (
    VideoResult,
    _write_dialogue_outputs,
    _write_failed,
    _write_video_outputs,
    prediction_table,
)
from pipeline.inference.predict_steps import (
    PredictError,
    _check_streams,
    _checked_features,
    _failure_reason,
    run_model,
    split_bad_segments,
    true_labels,
)

log = logging.getLogger(__name__)


def _resolved(path: str) -> Path | None:
    return Path(path).resolve() if path else None


def dialogue_groups(
    manifest: pd.DataFrame | None, videos: Sequence[Path]
) -> dict[str, list[tuple[Path, list[int]]]]:
    """Clip-per-utterance dialogues: dialogue_id -> [(clip, its manifest row positions)].

    A dialogue qualifies when the manifest's rows for the given files put two or more of them under
    it; a clip qualifies when all its rows are in that one dialogue. Once one dialogue qualifies
    (the files are clips of a clip-per-utterance dataset), so does a dialogue with a single clip:
    it gets its dialogue outputs (report, CSV) like the others, and is predicted just as alone.
    Clips in order of their first row; every other file (a whole conversation, or the only file of
    its dialogue in a run of whole conversations) is absent.
    """
    if manifest is None or manifest.empty:
        return {}
    wanted = {v.resolve(): v for v in videos}
    rows: dict[Path, list[int]] = {}
    for i, (vp, ap) in enumerate(zip(manifest["video_path"], manifest["audio_path"], strict=True)):
        for f in dict.fromkeys(x for x in (_resolved(vp), _resolved(ap)) if x is not None):
            if f in wanted:
                rows.setdefault(wanted[f], []).append(i)
    dids = manifest["dialogue_id"].to_numpy()
    files: dict[str, list[Path]] = {}
    for v, pos in rows.items():
        for d in dict.fromkeys(dids[pos]):
            files.setdefault(str(d), []).append(v)
    clips = {
        d: [v for v in members if len(set(dids[rows[v]])) == 1] for d, members in files.items()
    }
    several = {d for d, members in files.items() if len(members) > 1 and clips[d]}
    groups: dict[str, list[tuple[Path, list[int]]]] = {}
    for d in files:
        if d in several or (several and clips[d]):
            groups[d] = sorted(((v, rows[v]) for v in clips[d]), key=lambda c: c[1][0])
    return groups


def _safe_name(text: str, used: set[str]) -> str:
    base = re.sub(r"[^\w.-]+", "_", text).strip("._") or "dialogue"
    name, k = base, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def predict_dialogue(
    dialogue_id: str, clips: list[tuple[Path, str, list[int]]], ctx: dict[str, Any]
) -> list[VideoResult]:
    """One clip-per-utterance dialogue: clips [(path, output name, manifest rows)] in manifest order.

    Steps as in the module docstring; a clip that fails is returned failed (strict: PredictError)
    and the dialogue is predicted without it. Returns one VideoResult per clip, in `clips` order.
    """
    model, labels, modalities = ctx["model"], ctx["label_names"], ctx["modalities"]
    manifest: pd.DataFrame = ctx["manifest"]
    results = {
        name: VideoResult(str(path), "failed", dialogue=dialogue_id) for path, name, _ in clips
    }

    def fail(name: str, reason: str) -> None:
        if ctx["strict"]:
            raise PredictError(f"--strict: {results[name].video}: {reason}")
        log.warning("%s (dialogue %s): skipped: %s", results[name].video, dialogue_id, reason)
        results[name].reason = reason

    # 1. segment: each clip's own manifest rows
    parts = []
    for path, name, rows in clips:
        t0 = time.perf_counter()
        try:
            info = media.probe(path)
            results[name].media_seconds = float(info.duration_s or 0.0)
            _check_streams(info, modalities)
        except Exception as exc:
            fail(name, _failure_reason(exc))
            continue
        seg = manifest.iloc[rows].assign(segment_source="manifest", _clip=name, _row=rows)
        seg, failed = split_bad_segments(seg, info.duration_s, ctx["strict"], str(path))
        if failed:
            results[name].failed_utterances = failed
            path_f = ctx["out_dir"] / f"{name}.failures.csv"
            results[name].outputs["failed_utterances"] = _write_failed(failed, path_f)
        if seg.empty:
            fail(name, f"no utterance can be cut from the media ({failed[0]['reason']})")
            continue
        parts.append(seg)
        results[name].seconds["segment"] = time.perf_counter() - t0
        results[name].n_utterances, results[name].segment_source = len(seg), "manifest"
    work = ctx["out_dir"] / "work" / f"dialogue_{ctx['dialogue_names'][dialogue_id]}"
    work.mkdir(parents=True, exist_ok=True)
    shared: dict[str, float] = {}
    while parts:  # at most twice: again without clips that got no features at all
        seg = pd.concat(parts).sort_values("_row", kind="stable").reset_index(drop=True)
        labels_true = true_labels(seg)
        rows = seg.drop(columns=["_clip", "_row"]).assign(label="")
        manifest_path = write_manifest(rows, work / "manifest.csv")  # an output (predict.py)
        # 2. extract (once for the dialogue; cached entries are not recomputed) + 3. build, in
        # one pass over the rows in memory
        t0 = time.perf_counter()
        summary, fs = extract_featureset(
            rows, ctx["store"], modalities=modalities, label_names=labels,
            source=str(manifest_path), strict=ctx["strict"], fps=ctx["fps"],
            device=ctx["device"], progress=ctx["progress"], extractors=ctx["extractors"],
            report_dir=work,
        )  # fmt: skip
        shared["extract"] = shared.get("extract", 0.0) + time.perf_counter() - t0
        for k, v in summary.per_extractor_seconds.items():
            shared[f"extract.{k}"] = shared.get(f"extract.{k}", 0.0) + v
        t0 = time.perf_counter()
        fs, present = _checked_features(fs, ctx, modalities, str(manifest_path))
        shared["build"] = shared.get("build", 0.0) + time.perf_counter() - t0
        has_any = pd.Series(present.any(axis=1)).groupby(seg["_clip"].to_numpy()).any()
        empty = [c for c in has_any.index if not has_any[c]]
        if not empty:
            break
        for name in empty:
            uids = set(seg.loc[seg["_clip"] == name, "utterance_id"])
            why = sorted({f.reason for f in summary.failures if f.utterance_id in uids})
            fail(name, f"no features ({'; '.join(why[:3]) or 'extractors returned nothing'})")
        parts = [p for p in parts if p["_clip"].iat[0] not in empty]
    if not parts:
        return [results[name] for _, name, _ in clips]
    # 4. model: the whole dialogue at once
    t0 = time.perf_counter()
    probs, support = run_model(model, fs, ctx["device"])  # [N, C], {m: [N]}
    shared["model"] = time.perf_counter() - t0
    # 5. outputs: per clip (its own rows) + the dialogue
    t0 = time.perf_counter()
    table = prediction_table(seg, probs, support, present, labels, modalities)
    if any(labels_true):
        table["label"] = labels_true
    table.insert(0, "video", [str(results[c].video) for c in seg["_clip"]])
    shared["report"] = time.perf_counter() - t0
    predicted = set(seg["_clip"])
    ok = [name for _, name, _ in clips if name in predicted]
    clip_reports = {}
    for path, name, _ in clips:
        if name not in ok:
            continue
        t0 = time.perf_counter()
        res = results[name]
        mine = table[(seg["_clip"] == name).to_numpy()].reset_index(drop=True)
        own = mine.drop(columns="video")
        res.outputs.update(_write_video_outputs(own, name, path, ctx))
        res.outputs.update({"manifest": str(manifest_path), "failures": str(summary.failures_path)})
        res.predictions = mine
        clip_reports[res.video] = res.outputs["html"]
        res.seconds["report"] = time.perf_counter() - t0
    # The dialogue's own outputs, after its clips' reports, which its report links to.
    t0 = time.perf_counter()
    stem = ctx["out_dir"] / "dialogues" / ctx["dialogue_names"][dialogue_id]
    dialogue_outputs = _write_dialogue_outputs(table, stem, dialogue_id, clip_reports, ctx)
    shared["report"] += time.perf_counter() - t0
    for name in ok:
        res = results[name]
        res.outputs.update(dialogue_outputs)
        for k, v in shared.items():  # shared stages: an even share per predicted clip
            res.seconds[k] = res.seconds.get(k, 0.0) + v / len(ok)
        res.label_counts = dict(Counter(res.predictions["predicted"]))
        res.status = "ok"
    return [results[name] for _, name, _ in clips]
