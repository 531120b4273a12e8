"""Batch inference: new conversation videos + a checkpoint -> an emotion for every utterance.

    predict_videos(inputs, checkpoint_dir, out_dir, ...) -> PredictSummary

Per video, named steps (each timed; the seconds go into the summary):
    1. segment   pipeline.inference.segment: manifest rows, else subtitles, else VAD + speech
                 recognition (faster-whisper; offline default: the packaged tiny.en)
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

An utterance with no words (empty text: a speech region the recogniser found no word in, or
asr_model="none") has no text modality: support_t NaN, "t" in column `missing`.

Per-modality support (columns support_<m>): softmax of modality m's unimodal class scores
(Ada2IOutput.unimodal, the eq. 16 scores the modulation uses) taken at the predicted class; NaN when
the utterance lacks that modality. The report shows each modality's share of the summed support.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from extractors.base import Extractor
from pipeline.dataset import media
from pipeline.dataset.manifest import read_manifest, write_manifest
from pipeline.features.assemble import feature_spec
from pipeline.features.extract import extract_featureset
from pipeline.features.extract_plan import no_words
from pipeline.features.store import default_store
from pipeline.inference.asr import DEFAULT_ASR_MODEL, Asr, asr_enabled, load_asr
from pipeline.inference.predict_dialogue import _safe_name, dialogue_groups, predict_dialogue
from pipeline.inference.predict_outputs import (
    PredictSummary,
    VideoResult,
    _write_failed,
    _write_summary,
    _write_video_outputs,
    prediction_table,
)
from pipeline.inference.predict_steps import (
    PredictError,
    _check_streams,
    _checked_features,
    _failure_reason,
    _source_label,
    run_model,
    split_bad_segments,
    true_labels,
)
from pipeline.inference.provenance import checkpoint_provenance
from pipeline.inference.segment import manifest_rows, segment_video
from pipeline.inference.subtitles import find_subtitles
from pipeline.progress_bar import progress_bar
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.evaluate import check_feature_spec

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".wav", ".flac", ".mp3", ".m4a")
DEFAULT_FPS = 2.0  # the extraction default, used when a checkpoint's visual spec does not say


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

    Candidates: for text, the sentence encoder the spec names (a packaged model, or the folder or
    id it was loaded from: imported text records only that); then each preset (the one the
    training features came from first), built for the modality. Each candidate's spec is compared
    with check_feature_spec (names, versions, config hashes incl. weights); the first match wins.
    Nothing matching -> PredictError listing what each candidate would give.
    """
    from extractors.presets import build_extractors, preset_names

    names = preset_names()
    order = ([hint] if hint in names else []) + [p for p in names if p != hint]
    fps = float(spec.get("v", {}).get("fps", DEFAULT_FPS))
    imported = [m for m in modalities if not spec.get(m, {}).get("extractors")]
    if imported:  # checked before any model loads: nothing else can help
        raise PredictError(_imported_message(spec, modalities, imported))
    chosen: dict[str, list[Extractor]] = {}
    for m in modalities:
        tried = []
        candidates = [(f"preset {p}", p, None) for p in order]  # (name, preset, text model)
        if m == "t" and len(spec[m]["extractors"]) == 1:
            from extractors.text import SentenceTextExtractor, model_of_spec

            model = model_of_spec(spec[m]["extractors"][0])
            candidates = ([(f"text model {model}", None, model)] if model else []) + candidates
        for name, preset, model in candidates:
            try:
                if preset:
                    exs = build_extractors(preset, m, device)[m]
                else:
                    exs = [SentenceTextExtractor(model, device=device)]
            except Exception as exc:  # e.g. WeightsUnavailableError offline for "paper"
                tried.append(f"{name}: unavailable ({type(exc).__name__})")
                continue
            try:
                check_feature_spec({m: spec[m]}, feature_spec({m: exs}, fps), name)
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


def _imported_message(spec: dict[str, dict[str, Any]], modalities: str, imported: list[str]) -> str:
    """Why a checkpoint on imported features cannot predict from video, and what to run instead."""
    from extractors.presets import MODALITY_NAMES

    what = ", ".join(
        f"{m!r} ({MODALITY_NAMES[m]}: {spec.get(m, {}).get('extractor') or 'unnamed'}"
        + (f" from {spec[m]['source']})" if spec.get(m, {}).get("source") else ")")
        for m in imported
    )
    rest = "".join(m for m in modalities if m not in imported)
    names = " and ".join(MODALITY_NAMES[m] for m in imported)
    fixes = [f"train with --modalities {rest}"] if rest else []
    if "t" in imported:  # text imports record the text extractor, so a re-import predicts
        fixes.append("re-import the text with `erc import` (it records the text extractor)")
    fixes.append(
        f"extract {names} features from the training media with `erc extract --modalities "
        f"{''.join(imported)}` and train on that feature set"
    )
    return (
        f"the checkpoint's features of modality {what} were imported, not extracted by this "
        f"pipeline, so they cannot be recomputed from video. To predict from video, "
        + ", or ".join(fixes)
    )


def _unique_name(path: Path, used: set[str]) -> str:
    name, k = path.stem, 2
    while name in used:
        name, k = f"{path.stem}_{k}", k + 1
    used.add(name)
    return name


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
    labels_true = true_labels(seg)
    work.mkdir(parents=True, exist_ok=True)
    rows = seg.assign(label="")  # labels: not inputs
    silent = no_words(rows) if "t" in modalities else []
    if silent:  # their text modality is absent (column `missing`), not a failure
        log.info("%s: %d of %d utterances have no words: no text for them",
                 video.name, len(silent), len(rows))  # fmt: skip
    # An output, not an intermediate: the segments as a manifest (`erc extract` or a retrain can
    # use it); extraction below works on the rows in memory and never reads it back.
    manifest = write_manifest(rows, work / "manifest.csv")
    # 2. extract + 3. build (one pass: planned once, the FeatureSet assembled in memory) + check
    t0 = time.perf_counter()
    summary, fs = extract_featureset(
        rows, ctx["store"], modalities=modalities, label_names=labels, source=str(manifest),
        strict=ctx["strict"], fps=ctx["fps"], device=ctx["device"], progress=ctx["progress"],
        extractors=ctx["extractors"], report_dir=work,
    )  # fmt: skip
    res.seconds["extract"] = time.perf_counter() - t0
    res.seconds.update({f"extract.{k}": v for k, v in summary.per_extractor_seconds.items()})
    t0 = time.perf_counter()
    fs, present = _checked_features(fs, ctx, modalities, str(manifest))
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
    if any(labels_true):
        table["label"] = labels_true
    res.outputs.update(_write_video_outputs(table, name, video, ctx))
    res.predictions = table
    res.outputs.update({"manifest": str(manifest), "failures": str(summary.failures_path)})
    res.seconds["report"] = time.perf_counter() - t0
    res.label_counts = dict(Counter(table["predicted"]))
    res.status = "ok"
    return res


def predict_videos(
    inputs: Sequence[str | Path] | str | Path,
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    manifest: str | Path | pd.DataFrame | None = None,
    store_root: str | Path | None = None,
    device: str = "cpu",
    asr_model: str | Asr | None = DEFAULT_ASR_MODEL,
    strict: bool = False,
    progress: bool = True,
    extractors: dict[str, Sequence[Extractor]] | None = None,
    dialogue_context: bool = True,
    vad: str = "auto",
) -> PredictSummary:
    """Predict every utterance of every video; see the module docstring for steps and outputs.

    dialogue_context: predict clip-per-utterance dialogues (manifest rows of several of the given
    files under one dialogue_id) as whole dialogues; False = every file on its own.

    asr_model: speech model for videos with neither manifest rows nor subtitles (a name or folder:
    pipeline.inference.asr; or a loaded Asr); default the packaged tiny.en (offline); "none" or
    None = VAD segments with empty text (no words: their text modality is absent). store_root:
    default the user's store (pipeline.features.store.default_store), so a video predicted again,
    into any folder, reuses its features.
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
        "progress": progress, "store": Path(store_root) if store_root else default_store(),
        "manifest": read_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest,
        "asr": asr_model if isinstance(asr_model, Asr) else None,
        "asr_model": asr_model if isinstance(asr_model, str) and asr_enabled(asr_model) else None,
        "vad": vad,
        "provenance": checkpoint_provenance(checkpoint_dir, meta),
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
    return _write_summary(out_dir, [by_video[v] for v in videos], labels, ctx["provenance"])


def _source_preset(source: str) -> str | None:
    """The extraction preset recorded in a FeatureSet's source JSON (copied into checkpoints)."""
    try:
        return json.loads(source).get("preset")
    except (ValueError, AttributeError):
        return None
