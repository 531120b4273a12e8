"""Batch inference: new conversation videos + a checkpoint -> an emotion for every utterance.

    predict_videos(inputs, checkpoint_dir, out_dir, ...) -> PredictSummary

Per video, named steps (each timed; the seconds go into the summary):
    1. segment   pipeline.inference.segment: manifest rows, else subtitles, else VAD + Whisper
    2. extract   exactly the extractors of the checkpoint's feature spec, into the feature store
    3. build     a FeatureSet of the video's utterances; refused unless its spec matches the checkpoint
    4. model     Ada2I -> class probabilities + per-modality support
    5. report    <name>.predictions.csv / .jsonl, <name>.report.html
Then summary.csv, summary.md and index.html over all videos. A video that fails (unreadable, no
audio stream while the checkpoint uses audio, no segments, no features) is recorded with its reason
and skipped; strict=True raises instead.

An utterance whose segment cannot be cut from its file (manifest row or subtitle cue: inverted,
zero-length, negative or non-finite times, past the end of the media) is that utterance's failure,
whatever modalities the checkpoint uses: it is not predicted (not even from its text), it is listed
in <name>.failures.csv (utterance, times, reason, cue) and counted in the summary
(n_failed_utterances); the other utterances of the video are predicted. strict=True raises.

Clip-per-utterance layouts (MELD's dia{D}_utt{U}.mp4, the IEMOCAP clips with clips.csv): when a
manifest is given and its rows for the requested files put several media files under one
dialogue_id, those clips are predicted per DIALOGUE, since Ada2I reads conversation context
(a Transformer over the utterances of a dialogue) and one clip alone is a one-utterance dialogue:
    1. segment   each clip: probe it, take its manifest rows (a failing clip is reported and dropped)
    2. extract   once for the dialogue's clips (the same store keys as clip by clip)
    3. build     one FeatureSet: the dialogue's utterances in manifest order; a clip none of whose
                 utterances got any feature is reported failed and the dialogue rebuilt without it
    4. model     the whole dialogue at once
    5. report    per clip as before (<name>.predictions.csv / .jsonl / .report.html: the clip's own
                 rows, ids and times, probabilities from the in-dialogue run), plus per dialogue
                 dialogues/<dialogue_id>.predictions.csv / .jsonl (all its predicted utterances in
                 manifest order, column `video` = the clip)
The clips' VideoResult.dialogue names the dialogue (also a column of summary.csv); shared stage
seconds are split evenly over its predicted clips. Files that are whole conversations (subtitles,
VAD/ASR, or manifests with one media file per dialogue) keep the per-video route above;
dialogue_context=False forces it for clips too (each clip alone, no context).

Per-modality support (columns support_<m>): softmax of modality m's unimodal class scores
(Ada2IOutput.unimodal, the eq. 16 scores the modulation uses) taken at the predicted class; NaN when
the utterance lacks that modality. The report shows each modality's share of the summed support.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from extractors.base import Extractor
from model.checkpoint import load_checkpoint
from pipeline.dataset import media
from pipeline.dataset.manifest import read_manifest, segment_problem, write_manifest
from pipeline.features.extract import build_featureset, extract_features, feature_spec
from pipeline.features.featureset import FeatureSet
from pipeline.inference.report_html import write_index, write_video_report
from pipeline.inference.segment import manifest_rows, segment_video
from pipeline.inference.speech import Asr, load_asr
from pipeline.inference.subtitles import find_subtitles
from pipeline.progress_bar import progress_bar
from pipeline.training.data import iter_batches
from pipeline.training.evaluate import check_feature_spec

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".wav", ".flac", ".mp3", ".m4a")
DEFAULT_FPS = 2.0  # the extraction default, used when a checkpoint's visual spec does not say


class PredictError(ValueError):
    """A failure under strict=True, or a checkpoint/extractor mismatch (always fatal)."""


@dataclass
class VideoResult:
    video: str
    status: str  # "ok" | "failed"
    reason: str = ""
    n_utterances: int = 0
    segment_source: str = ""  # "srt", "asr+vad", ...
    label_counts: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # csv, jsonl, html, manifest, failures
    seconds: dict[str, float] = field(default_factory=dict)  # per stage (+ per extractor)
    media_seconds: float = 0.0
    dialogue: str = ""  # clip-per-utterance: the dialogue predicted as a whole ("" = per video)
    # utterances not predicted: [{utterance_id, start_s, end_s, reason, cue}] (bad segments)
    failed_utterances: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PredictSummary:
    out_dir: Path
    videos: list[VideoResult]
    label_names: list[str]
    summary_csv: Path
    summary_md: Path
    index_html: Path

    @property
    def ok(self) -> list[VideoResult]:
        return [v for v in self.videos if v.status == "ok"]

    @property
    def failed(self) -> list[VideoResult]:
        return [v for v in self.videos if v.status != "ok"]

    @property
    def n_failed_utterances(self) -> int:
        return sum(len(v.failed_utterances) for v in self.videos)

    def line(self) -> str:
        return (
            f"{len(self.ok)} videos predicted, {len(self.failed)} failed, "
            f"{self.n_failed_utterances} utterances failed ({self.summary_md})"
        )


def list_videos(inputs: Sequence[str | Path] | str | Path) -> list[Path]:
    """Files as given, folders expanded to their media files (not recursive), in sorted order."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    out: list[Path] = []
    for item in items:
        p = Path(item).expanduser().resolve()
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in MEDIA_SUFFIXES)
        else:
            out.append(p)  # a missing file becomes a failed video, not a crash
    if not out:
        raise FileNotFoundError(f"no media files in {[str(i) for i in items]}")
    return list(dict.fromkeys(out))


def resolve_extractors(
    spec: dict[str, dict[str, Any]], modalities: str, hint: str | None, device: str = "cpu"
) -> dict[str, list[Extractor]]:
    """Rebuild the extractors a checkpoint's feature spec names, modality by modality.

    Each preset (the one the training features came from first) is built for the modality and its
    spec compared with check_feature_spec (names, versions, config hashes incl. weights); the first
    match wins. Nothing matching -> PredictError listing what each preset would give.
    """
    from extractors.presets import build_extractors, preset_names

    names = preset_names()
    order = ([hint] if hint in names else []) + [p for p in names if p != hint]
    fps = float(spec.get("v", {}).get("fps", DEFAULT_FPS))
    chosen: dict[str, list[Extractor]] = {}
    for m in modalities:
        if not spec.get(m, {}).get("extractors"):
            raise PredictError(
                f"the checkpoint's feature spec does not name the extractors of modality {m!r} "
                "(features imported, not extracted), so they cannot be recomputed from video"
            )
        tried = []
        for preset in order:
            try:
                exs = build_extractors(preset, m, device)[m]
            except Exception as exc:  # e.g. WeightsUnavailableError offline for "paper"
                tried.append(f"{preset}: unavailable ({type(exc).__name__})")
                continue
            try:
                check_feature_spec({m: spec[m]}, feature_spec({m: exs}, fps), f"preset {preset}")
            except ValueError as exc:
                tried.append(str(exc))
                continue
            chosen[m] = exs
            break
        else:
            raise PredictError(
                f"no extractor preset reproduces the checkpoint's modality {m!r} features "
                f"({spec[m].get('extractor')} v{spec[m].get('version')}, dim {spec[m].get('dim')}): "
                + "; ".join(tried)
            )
    return chosen


@torch.no_grad()
def run_model(model, fs: FeatureSet, device: str = "cpu", batch_size: int = 16):
    """-> probs float32 [N, C], support {m: float32 [N]} (NaN = modality absent), rows in fs order."""
    model.eval()
    probs, support = [], {m: [] for m in model.modalities}
    for batch in iter_batches(fs, fs.dialogues, batch_size):
        batch = batch.to(device)
        out = model(
            {m: batch.features[m] for m in model.modalities},
            batch.utterance_mask,
            batch.modality_mask,
        )
        p = out.logits.float().softmax(dim=-1).cpu()  # [B, T, C]
        if not torch.isfinite(p[batch.utterance_mask.cpu()]).all():  # never report NaN as a label
            names = [d.id for d in batch.dialogues]
            raise ValueError(f"the model gave non-finite probabilities in dialogues {names}")
        pred = p.argmax(dim=-1)  # [B, T]
        for m in model.modalities:
            pm = out.unimodal[m].float().softmax(dim=-1).cpu()  # [B, T, C]
            at = pm.gather(-1, pred[..., None])[..., 0]  # [B, T]
            at[~out.valid[m].cpu()] = float("nan")
            for i, d in enumerate(batch.dialogues):
                support[m].append(at[i, : d.length])
        for i, d in enumerate(batch.dialogues):
            probs.append(p[i, : d.length])
    return (
        torch.cat(probs).numpy().astype(np.float32),
        {m: torch.cat(v).numpy().astype(np.float32) for m, v in support.items()},
    )


def _unique_name(path: Path, used: set[str]) -> str:
    name, k = path.stem, 2
    while name in used:
        name, k = f"{path.stem}_{k}", k + 1
    used.add(name)
    return name


def _source_label(df: pd.DataFrame) -> str:
    return "+".join(dict.fromkeys(df["segment_source"]))


def prediction_table(
    seg: pd.DataFrame,
    probs: np.ndarray,
    support: dict[str, np.ndarray],
    present: np.ndarray,
    labels: list[str],
    modalities: str,
) -> pd.DataFrame:
    """Segments [N rows] + probs [N, C], support {m: [N]}, present bool [N, M] -> output table."""
    pred = [labels[i] for i in probs.argmax(axis=1)]
    return pd.DataFrame(
        {
            "dialogue_id": seg["dialogue_id"].to_numpy(),
            "utterance_id": seg["utterance_id"].to_numpy(),
            "start_s": seg["start_s"].to_numpy(),
            "end_s": seg["end_s"].to_numpy(),
            "speaker": seg["speaker"].to_numpy(),
            "text": seg["text"].to_numpy(),
            "predicted": pred,
            **{f"p_{c}": probs[:, k] for k, c in enumerate(labels)},
            "segment_source": seg["segment_source"].to_numpy(),
            **{f"support_{m}": support[m] for m in modalities},
            "missing": [
                "".join(m for j, m in enumerate(modalities) if not row[j]) for row in present
            ],
        }
    )


def _write_table(table: pd.DataFrame, stem: Path) -> tuple[Path, Path]:
    csv_path = stem.with_name(stem.name + ".predictions.csv")
    jsonl_path = stem.with_name(stem.name + ".predictions.jsonl")
    table.to_csv(csv_path, index=False, float_format="%.6g")
    table.to_json(jsonl_path, orient="records", lines=True, force_ascii=False)
    return csv_path, jsonl_path


def _write_video_outputs(
    table: pd.DataFrame, name: str, video: Path, ctx: dict[str, Any]
) -> dict[str, str]:
    out_dir = ctx["out_dir"]
    csv_path, jsonl_path = _write_table(table, out_dir / name)
    html = write_video_report(
        table, ctx["label_names"], ctx["modalities"], out_dir / f"{name}.report.html", str(video)
    )
    return {"csv": str(csv_path), "jsonl": str(jsonl_path), "html": str(html)}


def predict_one(video: Path, name: str, ctx: dict[str, Any]) -> VideoResult:
    """Steps 1-5 for one file; raises on failure (the caller records it)."""
    res = VideoResult(str(video), "failed")
    work = ctx["out_dir"] / "work" / name
    model, labels, modalities = ctx["model"], ctx["label_names"], ctx["modalities"]
    # 1. segment
    t0 = time.perf_counter()
    info = media.probe(video)  # MediaError: missing, empty, corrupt
    res.media_seconds = float(info.duration_s or 0.0)
    _check_streams(info, modalities)
    automatic = find_subtitles(video) is None and (
        ctx["manifest"] is None or manifest_rows(ctx["manifest"], video).empty
    )
    if automatic and ctx["asr"] is None and ctx["asr_model"]:
        ctx["asr"] = load_asr(ctx["asr_model"], ctx["device"])  # loaded once, on first need
    seg = segment_video(
        video, manifest=ctx["manifest"], asr=ctx["asr"], dialogue_id=name, vad=ctx["vad"]
    )
    seg, res.failed_utterances = split_bad_segments(seg, info.duration_s, ctx["strict"], str(video))
    if res.failed_utterances:
        path = ctx["out_dir"] / f"{name}.failures.csv"
        res.outputs["failed_utterances"] = _write_failed(res.failed_utterances, path)
        log.warning("%s: %d utterance(s) not predicted (bad segments): %s",
                    video, len(res.failed_utterances), path)  # fmt: skip
        if seg.empty:
            first = res.failed_utterances[0]
            raise ValueError(
                f"no utterance can be cut from the media ({len(res.failed_utterances)} bad "
                f"segments; first: {first['utterance_id']}: {first['reason']})"
            )
    res.seconds["segment"] = time.perf_counter() - t0
    res.n_utterances, res.segment_source = len(seg), _source_label(seg)
    true_labels = seg["label"].tolist()
    work.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(seg.assign(label=""), work / "manifest.csv")  # labels: not inputs
    # 2. extract
    t0 = time.perf_counter()
    summary = extract_features(
        manifest, ctx["store"], modalities=modalities, strict=ctx["strict"], fps=ctx["fps"],
        device=ctx["device"], progress=ctx["progress"], extractors=ctx["extractors"],
        report_dir=work,
    )  # fmt: skip
    res.seconds["extract"] = time.perf_counter() - t0
    res.seconds.update({f"extract.{k}": v for k, v in summary.per_extractor_seconds.items()})
    # 3. build + check
    t0 = time.perf_counter()
    fs, present = _checked_features(manifest, ctx, modalities, labels, work)
    if not present.any():
        reasons = sorted({f.reason for f in summary.failures}) or ["extractors returned nothing"]
        raise ValueError(f"no features for any utterance ({'; '.join(reasons[:3])})")
    res.seconds["build"] = time.perf_counter() - t0
    # 4. model
    t0 = time.perf_counter()
    probs, support = run_model(model, fs, ctx["device"])  # [N, C], {m: [N]}
    res.seconds["model"] = time.perf_counter() - t0
    # 5. outputs
    t0 = time.perf_counter()
    table = prediction_table(seg, probs, support, present, labels, modalities)
    if any(true_labels):
        table["label"] = true_labels
    res.outputs.update(_write_video_outputs(table, name, video, ctx))
    res.outputs.update({"manifest": str(manifest), "failures": str(summary.failures_path)})
    res.seconds["report"] = time.perf_counter() - t0
    res.label_counts = dict(Counter(table["predicted"]))
    res.status = "ok"
    return res


def _check_streams(info: media.MediaInfo, modalities: str) -> None:
    for m, has, what in (("a", info.has_audio, "audio"), ("v", info.has_video, "video")):
        if m in modalities and not has:
            raise ValueError(f"no {what} stream, and the checkpoint uses {what} features")


FAILED_FIELDS = ("utterance_id", "start_s", "end_s", "reason", "cue")


def split_bad_segments(
    seg: pd.DataFrame, duration: float | None, strict: bool = False, where: str = ""
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """(rows that can be cut, [failed utterance records]) of one media file's segments.

    A bad segment (pipeline.dataset.manifest.segment_problem against the probed duration) is the row's
    failure; strict raises PredictError naming the file and the utterance instead."""
    keep, failed = [], []
    cues = seg["cue"] if "cue" in seg.columns else [""] * len(seg)
    for ok_row, (uid, start, end, cue) in enumerate(
        zip(seg["utterance_id"], seg["start_s"], seg["end_s"], cues, strict=True)
    ):
        why = segment_problem(start, end, duration, media.END_TOLERANCE_S)
        if why is None:
            keep.append(ok_row)
            continue
        if strict:
            raise PredictError(
                f"--strict: {where}: utterance {uid!r}: {why}" + (f" ({cue})" if cue else "")
            )
        failed.append(
            {"utterance_id": uid, "start_s": start, "end_s": end, "reason": why, "cue": cue or ""}
        )
    return seg.iloc[keep].reset_index(drop=True), failed


def _write_failed(failed: list[dict[str, Any]], path: Path) -> str:
    pd.DataFrame(failed, columns=list(FAILED_FIELDS)).to_csv(path, index=False)
    return str(path)


def _failure_reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, media.MediaError) else str(exc)


def _resolved(path: str) -> Path | None:
    return Path(path).resolve() if path else None


def dialogue_groups(
    manifest: pd.DataFrame | None, videos: Sequence[Path]
) -> dict[str, list[tuple[Path, list[int]]]]:
    """Clip-per-utterance dialogues: dialogue_id -> [(clip, its manifest row positions)].

    A dialogue qualifies when the manifest's rows for the given files put two or more of them under
    it; a clip qualifies when all its rows are in that one dialogue. Clips in order of their first
    row; every other file (a whole conversation, or the only file of its dialogue) is absent.
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
    groups: dict[str, list[tuple[Path, list[int]]]] = {}
    for d, members in files.items():
        clips = [v for v in members if len(set(dids[rows[v]])) == 1]
        if len(members) > 1 and clips:
            groups[d] = sorted(((v, rows[v]) for v in clips), key=lambda c: c[1][0])
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
        true_labels = seg["label"].tolist()
        manifest_path = write_manifest(
            seg.drop(columns=["_clip", "_row"]).assign(label=""), work / "manifest.csv"
        )
        # 2. extract (once for the dialogue; cached entries are not recomputed)
        t0 = time.perf_counter()
        summary = extract_features(
            manifest_path, ctx["store"], modalities=modalities, strict=ctx["strict"],
            fps=ctx["fps"], device=ctx["device"], progress=ctx["progress"],
            extractors=ctx["extractors"], report_dir=work,
        )  # fmt: skip
        shared["extract"] = shared.get("extract", 0.0) + time.perf_counter() - t0
        for k, v in summary.per_extractor_seconds.items():
            shared[f"extract.{k}"] = shared.get(f"extract.{k}", 0.0) + v
        # 3. build + check
        t0 = time.perf_counter()
        fs, present = _checked_features(manifest_path, ctx, modalities, labels, work)
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
    if any(true_labels):
        table["label"] = true_labels
    table.insert(0, "video", [str(results[c].video) for c in seg["_clip"]])
    stem = ctx["out_dir"] / "dialogues" / ctx["dialogue_names"][dialogue_id]
    stem.parent.mkdir(exist_ok=True)
    d_csv, d_jsonl = _write_table(table, stem)
    shared["report"] = time.perf_counter() - t0
    predicted = set(seg["_clip"])
    ok = [name for _, name, _ in clips if name in predicted]
    for path, name, _ in clips:
        if name not in ok:
            continue
        t0 = time.perf_counter()
        res = results[name]
        own = table[(seg["_clip"] == name).to_numpy()].drop(columns="video").reset_index(drop=True)
        res.outputs.update(_write_video_outputs(own, name, path, ctx))
        res.outputs.update(
            {"dialogue_csv": str(d_csv), "dialogue_jsonl": str(d_jsonl),
             "manifest": str(manifest_path), "failures": str(summary.failures_path)}
        )  # fmt: skip
        res.seconds["report"] = time.perf_counter() - t0
        for k, v in shared.items():  # shared stages: an even share per predicted clip
            res.seconds[k] = res.seconds.get(k, 0.0) + v / len(ok)
        res.label_counts = dict(Counter(own["predicted"]))
        res.status = "ok"
    return [results[name] for _, name, _ in clips]


def _checked_features(manifest, ctx: dict, modalities: str, labels: list[str], work: Path):
    """Store -> FeatureSet for one prediction unit, refused unless it matches the checkpoint.
    Returns (feature set, present: bool [N, M])."""
    fs_dir = build_featureset(
        manifest, ctx["store"], modalities=modalities, out_dir=work / "features",
        extractors=ctx["extractors"], fps=ctx["fps"], label_names=labels,
    )  # fmt: skip
    fs = FeatureSet.load(fs_dir)
    check_feature_spec(ctx["spec"], fs.feature_spec, str(fs_dir))
    fs = fs.select_modalities(modalities)
    return fs, np.stack([fs.present[m].numpy() for m in modalities], axis=1)  # [N, M]


def predict_videos(
    inputs: Sequence[str | Path] | str | Path,
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    manifest: str | Path | pd.DataFrame | None = None,
    store_root: str | Path | None = None,
    device: str = "cpu",
    asr_model: str | Asr | None = None,
    strict: bool = False,
    progress: bool = True,
    extractors: dict[str, Sequence[Extractor]] | None = None,
    dialogue_context: bool = True,
    vad: str = "auto",
) -> PredictSummary:
    """Predict every utterance of every video; see the module docstring for steps and outputs.

    dialogue_context: predict clip-per-utterance dialogues (manifest rows of several of the given
    files under one dialogue_id) as whole dialogues; False = every file on its own.

    asr_model: Whisper name or folder (or a loaded Asr) for videos with neither manifest rows nor
    subtitles; None = VAD segments with empty text. store_root: default <out_dir>/store.
    vad: voice-activity detection for automatic segmentation: "auto" (silero-vad, the energy VAD
    when silero keeps far less than it), "silero" or "energy" (pipeline.inference.speech.detect_speech).
    extractors: already built {m: [Extractor]} (reuse across calls); refused unless they match.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = list_videos(inputs)
    model, meta = load_checkpoint(checkpoint_dir, device=device)
    spec, labels = meta.get("feature_spec", {}), list(meta["label_names"])
    spec = {m: spec.get(m, {}) for m in model.modalities}
    fps = float(spec.get("v", {}).get("fps", DEFAULT_FPS))
    if extractors is None:
        hint = _source_preset(meta.get("source", ""))
        extractors = resolve_extractors(spec, model.modalities, hint, device)
    extractors = {m: list(extractors[m]) for m in model.modalities if m in extractors}
    check_feature_spec(spec, feature_spec(extractors, fps), "the extractors given for prediction")
    ctx = {
        "out_dir": out_dir, "model": model, "label_names": labels, "modalities": model.modalities,
        "spec": spec, "fps": fps, "extractors": extractors, "device": device, "strict": strict,
        "progress": progress, "store": Path(store_root) if store_root else out_dir / "store",
        "manifest": read_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest,
        "asr": asr_model if isinstance(asr_model, Asr) else None,
        "asr_model": asr_model if isinstance(asr_model, str) else None, "vad": vad,
    }  # fmt: skip
    used: set[str] = set()
    names = {video: _unique_name(video, used) for video in videos}
    groups = dialogue_groups(ctx["manifest"], videos) if dialogue_context else {}
    in_group = {v: d for d, clips in groups.items() for v, _ in clips}
    dused: set[str] = set()
    ctx["dialogue_names"] = {d: _safe_name(d, dused) for d in groups}
    by_video: dict[Path, VideoResult] = {}
    bar = progress_bar(total=len(videos), desc="predict", unit="video", disable=not progress)
    for i, (video, name) in enumerate(names.items(), 1):
        if video in by_video:
            continue
        log.info("video %d of %d: %s", i, len(videos), video.name)
        bar.update(len(by_video) - bar.n)
        if video in in_group:  # a clip: its whole dialogue, once, at its first clip
            d = in_group[video]
            clips = [(v, names[v], rows) for v, rows in groups[d]]
            try:
                by_video.update(
                    zip([c[0] for c in clips], predict_dialogue(d, clips, ctx), strict=True)
                )
            except PredictError:
                raise
            except Exception as exc:  # the dialogue as a whole failed (strict aside)
                reason = _failure_reason(exc)
                if strict:
                    raise PredictError(f"--strict: dialogue {d}: {reason}") from exc
                log.warning("dialogue %s: skipped: %s", d, reason)
                for v, _, _ in clips:
                    by_video[v] = VideoResult(str(v), "failed", reason=reason, dialogue=d)
            continue
        try:
            by_video[video] = predict_one(video, name, ctx)
        except Exception as exc:  # one bad video must not stop the batch (strict aside)
            reason = _failure_reason(exc)
            if strict:
                raise PredictError(f"--strict: {video}: {reason}") from exc
            log.warning("%s: skipped: %s", video, reason)
            by_video[video] = VideoResult(str(video), "failed", reason=reason)
    bar.update(len(by_video) - bar.n)
    bar.close()
    return _write_summary(out_dir, [by_video[v] for v in videos], labels)


def _source_preset(source: str) -> str | None:
    """The extraction preset recorded in a FeatureSet's source JSON (copied into checkpoints)."""
    try:
        return json.loads(source).get("preset")
    except (ValueError, AttributeError):
        return None


def _write_summary(out_dir: Path, results: list[VideoResult], labels: list[str]) -> PredictSummary:
    rows = []
    for r in results:
        rows.append(
            {
                "video": r.video,
                "status": r.status,
                "reason": r.reason,
                "n_utterances": r.n_utterances,
                "segment_source": r.segment_source,
                "dialogue": r.dialogue,
                "n_failed_utterances": len(r.failed_utterances),
                "media_seconds": round(r.media_seconds, 3),
                **{f"n_{c}": r.label_counts.get(c, 0) for c in labels},
                "report": Path(r.outputs["html"]).name if "html" in r.outputs else "",
            }
        )
    df = pd.DataFrame(rows)
    csv_path, md_path = out_dir / "summary.csv", out_dir / "summary.md"
    df.to_csv(csv_path, index=False)
    md = [
        "| video | status | utterances | failed utterances | source | labels | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        dist = " ".join(f"{c}:{r.label_counts[c]}" for c in labels if r.label_counts.get(c))
        md.append(
            f"| {Path(r.video).name} | {r.status} | {r.n_utterances} | "
            f"{len(r.failed_utterances)} | {r.segment_source} | {dist} | "
            f"{r.reason.replace('|', '/')} |"
        )
    n_bad = sum(len(r.failed_utterances) for r in results)
    if n_bad:
        md += ["", f"{n_bad} utterance(s) not predicted (bad segments): see <video>.failures.csv"]
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    index = write_index(df, labels, out_dir / "index.html")
    return PredictSummary(out_dir, results, labels, csv_path, md_path, index)


def stage_seconds(results: Sequence[VideoResult]) -> dict[str, float]:
    """Seconds per stage summed over videos (the benchmark's per-stage figures)."""
    total: dict[str, float] = {}
    for r in results:
        for k, v in r.seconds.items():
            total[k] = total.get(k, 0.0) + (0.0 if math.isnan(v) else v)
    return total
