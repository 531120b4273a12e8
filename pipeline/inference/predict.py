"""Batch inference: new conversation videos + a checkpoint -> an emotion for every utterance.

    predict_videos(inputs, checkpoint_dir, out_dir, ...) -> PredictSummary

A run is a PredictJob: what every video shares (the checkpoint's model and feature spec, the
extractors that reproduce it, the feature store, the manifest, the speech recogniser, the writer of
the outputs: predict_outputs.PredictionWriter), read once from the inputs (PredictJob.open).
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
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from extractors.base import Extractor
from pipeline.dataset import media
from pipeline.dataset.manifest import read_manifest, segment_problem, write_manifest
from pipeline.features.extract import extract_featureset, feature_spec, no_words
from pipeline.features.featureset import FeatureSet
from pipeline.features.store import default_store
from pipeline.inference.asr import BEAM_SIZE, DEFAULT_ASR_MODEL, Asr, asr_enabled, load_asr
from pipeline.inference.predict_outputs import (
    PredictionWriter,
    PredictSummary,
    VideoResult,
    checkpoint_provenance,
    prediction_table,
)
from pipeline.inference.segment import find_subtitles, manifest_rows, segment_video
from pipeline.progress_bar import progress_bar
from pipeline.training.checkpoint import checkpoint_folder, load_checkpoint
from pipeline.training.data import iter_batches
from pipeline.training.evaluate import check_feature_spec

if TYPE_CHECKING:
    from model.ada2i import Ada2I

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".wav", ".flac", ".mp3", ".m4a")
DEFAULT_FPS = 2.0  # the extraction default, used when a checkpoint's visual spec does not say


class PredictError(ValueError):
    """A failure under strict=True, or a checkpoint/extractor mismatch (always fatal)."""


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
    asr_beam: int = BEAM_SIZE,
) -> PredictSummary:
    """Predict every utterance of every video; see the module docstring for steps and outputs.

    dialogue_context: predict clip-per-utterance dialogues (manifest rows of several of the given
    files under one dialogue_id) as whole dialogues; False = every file on its own.

    asr_model: speech model for videos with neither manifest rows nor subtitles (a name or folder:
    pipeline.inference.asr; or a loaded Asr); default the packaged tiny.en (offline); "none" or
    None = VAD segments with empty text (no words: their text modality is absent). asr_beam: its
    beam size (1 = greedy: ~1.7x faster, more word errors; BENCHMARKS.md). store_root:
    default the user's store (pipeline.features.store.default_store), so a video predicted again,
    into any folder, reuses its features.
    vad: voice-activity detection for automatic segmentation: "auto" (silero-vad, the energy VAD
    when silero keeps far less than it), "silero" or "energy" (pipeline.inference.segment.detect_speech).
    extractors: already built {m: [Extractor]} (reuse across calls); refused unless they match.
    """
    # 1. read inputs: the files, then the checkpoint and what reproduces its features
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = list_videos(inputs)
    job = PredictJob.open(
        checkpoint_dir, out_dir, manifest=manifest, store_root=store_root, device=device,
        asr_model=asr_model, strict=strict, progress=progress, extractors=extractors, vad=vad,
        asr_beam=asr_beam,
    )  # fmt: skip
    # 2-5. per video, or per clip-per-utterance dialogue: segment -> extract -> model -> outputs
    results = job.predict_all(videos, dialogue_context)
    # the summary over all videos, in input order
    return job.writer.summary(results, speech_recognition=job.recogniser_settings())


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


@dataclass(frozen=True, eq=False)
class PredictJob:
    """What every video of one prediction run shares; its methods are the steps of the run.

    Built by PredictJob.open from a checkpoint folder; the speech recogniser (asr) is loaded on
    first need, since videos with manifest rows or subtitles never need it."""

    model: Ada2I  # the checkpoint's, on `device`
    spec: dict[str, dict[str, Any]]  # the checkpoint's feature spec, one entry per model modality
    fps: float  # visual frames per second of the spec
    extractors: dict[str, list[Extractor]]  # {m: [Extractor]}, checked against spec
    store: Path  # feature store
    writer: PredictionWriter  # out_dir, label names, modalities, provenance
    manifest: pd.DataFrame | None = None  # the user's manifest, read once
    asr_model: str | None = None  # speech model name or folder, loaded on first need
    loaded_asr: Asr | None = None  # a recogniser given already loaded
    asr_beam: int = BEAM_SIZE  # for asr_model
    vad: str = "auto"
    device: str = "cpu"
    strict: bool = False
    progress: bool = True

    @classmethod
    def open(
        cls,
        checkpoint_dir: str | Path,
        out_dir: Path,
        manifest: str | Path | pd.DataFrame | None = None,
        store_root: str | Path | None = None,
        device: str = "cpu",
        asr_model: str | Asr | None = DEFAULT_ASR_MODEL,
        strict: bool = False,
        progress: bool = True,
        extractors: dict[str, Sequence[Extractor]] | None = None,
        vad: str = "auto",
        asr_beam: int = BEAM_SIZE,
    ) -> PredictJob:
        """The checkpoint, the extractors that reproduce its features (given ones are checked),
        the manifest read once; the arguments as predict_videos'."""
        checkpoint_dir = checkpoint_folder(checkpoint_dir)  # a Hub repo id: its cached snapshot
        model, meta = load_checkpoint(checkpoint_dir, device=device)
        spec, labels = meta.get("feature_spec", {}), list(meta["label_names"])
        spec = {m: spec.get(m, {}) for m in model.modalities}
        fps = float(spec.get("v", {}).get("fps", DEFAULT_FPS))
        if extractors is None:
            hint = _source_preset(meta.get("source", ""))
            extractors = resolve_extractors(spec, model.modalities, hint, device)
        extractors = {m: list(extractors[m]) for m in model.modalities if m in extractors}
        check_feature_spec(
            spec, feature_spec(extractors, fps), "the extractors given for prediction"
        )
        store = Path(store_root) if store_root else default_store()
        if isinstance(manifest, (str, Path)):
            manifest = read_manifest(manifest)
        provenance = checkpoint_provenance(checkpoint_dir, meta)
        return cls(
            model=model, spec=spec, fps=fps, extractors=extractors, store=store,
            writer=PredictionWriter(out_dir, labels, model.modalities, provenance),
            manifest=manifest,
            asr_model=asr_model if isinstance(asr_model, str) and asr_enabled(asr_model) else None,
            loaded_asr=asr_model if isinstance(asr_model, Asr) else None, asr_beam=asr_beam,
            vad=vad, device=device, strict=strict, progress=progress,
        )  # fmt: skip

    @property
    def out_dir(self) -> Path:
        return self.writer.out_dir

    @property
    def label_names(self) -> list[str]:
        return self.writer.label_names

    @property
    def modalities(self) -> str:
        return self.model.modalities

    @cached_property
    def asr(self) -> Asr | None:
        """The speech recogniser: the one given, else asr_model loaded once (None: VAD only)."""
        if self.loaded_asr is None and self.asr_model:
            return load_asr(self.asr_model, self.device, beam_size=self.asr_beam)
        return self.loaded_asr

    def recogniser_settings(self) -> dict[str, object] | None:
        """The speech recogniser's settings and the VAD, if a video needed them (None: none did:
        every one had subtitles or manifest rows)."""
        asr = self.__dict__.get("asr")  # the cached property is set once a video needed it
        return None if asr is None else {**asr.settings(), "vad": self.vad}

    def predict_all(self, videos: list[Path], dialogue_context: bool = True) -> list[VideoResult]:
        """Every file -> its VideoResult, in `videos` order. The clips of a clip-per-utterance
        dialogue are predicted together (dialogue_context), at the dialogue's first clip; a file
        or dialogue that fails is recorded with its reason (strict: PredictError)."""
        used: set[str] = set()
        names = {video: _unique_name(video, used) for video in videos}
        groups = dialogue_groups(self.manifest, videos) if dialogue_context else {}
        in_group = {v: d for d, clips in groups.items() for v, _ in clips}
        dused: set[str] = set()
        dialogue_names = {d: _safe_name(d, dused) for d in groups}
        by_video: dict[Path, VideoResult] = {}
        bar = progress_bar(
            total=len(videos), desc="predict", unit="video", disable=not self.progress
        )
        for i, (video, name) in enumerate(names.items(), 1):
            if video in by_video:
                continue
            log.info("video %d of %d: %s", i, len(videos), video.name)
            bar.update(len(by_video) - bar.n)
            if video in in_group:  # a clip: its whole dialogue, once, at its first clip
                d = in_group[video]
                clips = [(v, names[v], rows) for v, rows in groups[d]]
                try:
                    results = self.predict_dialogue(d, dialogue_names[d], clips)
                    by_video.update(zip([c[0] for c in clips], results, strict=True))
                except PredictError:
                    raise
                except Exception as exc:  # the dialogue as a whole failed (strict aside)
                    reason = _failure_reason(exc)
                    if self.strict:
                        raise PredictError(f"--strict: dialogue {d}: {reason}") from exc
                    log.warning("dialogue %s: skipped: %s", d, reason)
                    for v, _, _ in clips:
                        by_video[v] = VideoResult(str(v), "failed", reason=reason, dialogue=d)
                continue
            try:
                by_video[video] = self.predict_video(video, name)
            except Exception as exc:  # one bad video must not stop the batch (strict aside)
                reason = _failure_reason(exc)
                if self.strict:
                    raise PredictError(f"--strict: {video}: {reason}") from exc
                log.warning("%s: skipped: %s", video, reason)
                by_video[video] = VideoResult(str(video), "failed", reason=reason)
        bar.update(len(by_video) - bar.n)
        bar.close()
        return [by_video[v] for v in videos]

    def predict_video(self, video: Path, name: str) -> VideoResult:
        """Steps 1-5 for one file; raises on failure (the caller records it)."""
        res = VideoResult(str(video), "failed")
        work = self.out_dir / "work" / name
        modalities = self.modalities
        # 1. segment
        t0 = time.perf_counter()
        info = self._probe(video, res)  # MediaError: missing, empty, corrupt
        automatic = find_subtitles(video) is None and (
            self.manifest is None or manifest_rows(self.manifest, video).empty
        )
        seg = segment_video(
            video, manifest=self.manifest, asr=self.asr if automatic else None,
            dialogue_id=name, vad=self.vad,
        )  # fmt: skip
        seg, res.failed_utterances = split_bad_segments(
            seg, info.duration_s, self.strict, str(video)
        )
        if res.failed_utterances:
            res.outputs["failed_utterances"] = path = self.writer.failed(
                res.failed_utterances, name
            )
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
        # An output, not an intermediate: the segments as a manifest (`erc extract` or a retrain
        # can use it); extraction below works on the rows in memory and never reads it back.
        manifest = write_manifest(rows, work / "manifest.csv")
        # 2. extract + 3. build (one pass: planned once, the FeatureSet assembled in memory)
        t0 = time.perf_counter()
        summary, fs = self._extract(rows, manifest, work)
        res.seconds["extract"] = time.perf_counter() - t0
        res.seconds.update({f"extract.{k}": v for k, v in summary.per_extractor_seconds.items()})
        t0 = time.perf_counter()
        fs, present = self._checked_features(fs, str(manifest))
        if not present.any():
            reasons = sorted({f.reason for f in summary.failures}) or [
                "extractors returned nothing"
            ]
            raise ValueError(f"no features for any utterance ({'; '.join(reasons[:3])})")
        res.seconds["build"] = time.perf_counter() - t0
        # 4. model
        t0 = time.perf_counter()
        probs, support = run_model(self.model, fs, self.device)  # [N, C], {m: [N]}
        res.seconds["model"] = time.perf_counter() - t0
        # 5. outputs
        t0 = time.perf_counter()
        table = self._table(seg, probs, support, present, labels_true)
        res.outputs.update(self.writer.video(table, name, video))
        res.predictions = table
        res.outputs.update({"manifest": str(manifest), "failures": str(summary.failures_path)})
        res.seconds["report"] = time.perf_counter() - t0
        res.label_counts = dict(Counter(table["predicted"]))
        res.status = "ok"
        return res

    def predict_dialogue(
        self, dialogue_id: str, dialogue_name: str, clips: list[tuple[Path, str, list[int]]]
    ) -> list[VideoResult]:
        """One clip-per-utterance dialogue: clips [(path, output name, manifest rows)] in manifest
        order; its outputs go to dialogues/<dialogue_name>.*.

        Steps as in the module docstring (second list); a clip that fails is returned failed
        (strict: PredictError) and the dialogue is predicted without it. Returns one VideoResult
        per clip, in `clips` order.
        """
        manifest: pd.DataFrame = self.manifest
        results = {
            name: VideoResult(str(path), "failed", dialogue=dialogue_id) for path, name, _ in clips
        }

        def fail(name: str, reason: str) -> None:
            if self.strict:
                raise PredictError(f"--strict: {results[name].video}: {reason}")
            log.warning("%s (dialogue %s): skipped: %s", results[name].video, dialogue_id, reason)
            results[name].reason = reason

        # 1. segment: each clip's own manifest rows
        parts = []
        for path, name, rows in clips:
            t0 = time.perf_counter()
            try:
                info = self._probe(path, results[name])
            except Exception as exc:
                fail(name, _failure_reason(exc))
                continue
            seg = manifest.iloc[rows].assign(segment_source="manifest", _clip=name, _row=rows)
            seg, failed = split_bad_segments(seg, info.duration_s, self.strict, str(path))
            if failed:
                results[name].failed_utterances = failed
                results[name].outputs["failed_utterances"] = self.writer.failed(failed, name)
            if seg.empty:
                fail(name, f"no utterance can be cut from the media ({failed[0]['reason']})")
                continue
            parts.append(seg)
            results[name].seconds["segment"] = time.perf_counter() - t0
            results[name].n_utterances, results[name].segment_source = len(seg), "manifest"
        work = self.out_dir / "work" / f"dialogue_{dialogue_name}"
        work.mkdir(parents=True, exist_ok=True)
        shared: dict[str, float] = {}
        while parts:  # at most twice: again without clips that got no features at all
            seg = pd.concat(parts).sort_values("_row", kind="stable").reset_index(drop=True)
            labels_true = true_labels(seg)
            rows = seg.drop(columns=["_clip", "_row"]).assign(label="")
            manifest_path = write_manifest(rows, work / "manifest.csv")  # an output (as per video)
            # 2. extract (once for the dialogue; cached entries are not recomputed) + 3. build, in
            # one pass over the rows in memory
            t0 = time.perf_counter()
            summary, fs = self._extract(rows, manifest_path, work)
            shared["extract"] = shared.get("extract", 0.0) + time.perf_counter() - t0
            for k, v in summary.per_extractor_seconds.items():
                shared[f"extract.{k}"] = shared.get(f"extract.{k}", 0.0) + v
            t0 = time.perf_counter()
            fs, present = self._checked_features(fs, str(manifest_path))
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
        probs, support = run_model(self.model, fs, self.device)  # [N, C], {m: [N]}
        shared["model"] = time.perf_counter() - t0
        # 5. outputs: per clip (its own rows) + the dialogue
        t0 = time.perf_counter()
        table = self._table(seg, probs, support, present, labels_true)
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
            res.outputs.update(self.writer.video(own, name, path))
            res.outputs.update(
                {"manifest": str(manifest_path), "failures": str(summary.failures_path)}
            )
            res.predictions = mine
            clip_reports[res.video] = res.outputs["html"]
            res.seconds["report"] = time.perf_counter() - t0
        # The dialogue's own outputs, after its clips' reports, which its report links to.
        t0 = time.perf_counter()
        dialogue_outputs = self.writer.dialogue(table, dialogue_name, dialogue_id, clip_reports)
        shared["report"] += time.perf_counter() - t0
        for name in ok:
            res = results[name]
            res.outputs.update(dialogue_outputs)
            for k, v in shared.items():  # shared stages: an even share per predicted clip
                res.seconds[k] = res.seconds.get(k, 0.0) + v / len(ok)
            res.label_counts = dict(Counter(res.predictions["predicted"]))
            res.status = "ok"
        return [results[name] for _, name, _ in clips]

    # ---- the steps both routes share --------------------------------------------------------
    def _probe(self, path: Path, res: VideoResult) -> media.MediaInfo:
        """The file's streams and duration; refused when it lacks a stream the checkpoint uses."""
        info = media.probe(path)
        res.media_seconds = float(info.duration_s or 0.0)
        for m, has, what in (("a", info.has_audio, "audio"), ("v", info.has_video, "video")):
            if m in self.modalities and not has:
                raise ValueError(f"no {what} stream, and the checkpoint uses {what} features")
        return info

    def _extract(self, rows: pd.DataFrame, manifest: Path, work: Path):
        """Exactly the checkpoint's extractors over the rows in memory -> (summary, FeatureSet);
        cached entries of the store are not recomputed."""
        return extract_featureset(
            rows, self.store, modalities=self.modalities, label_names=self.label_names,
            source=str(manifest), strict=self.strict, fps=self.fps, device=self.device,
            progress=self.progress, extractors=self.extractors, report_dir=work,
        )  # fmt: skip

    def _checked_features(self, fs: FeatureSet, source: str) -> tuple[FeatureSet, np.ndarray]:
        """A prediction unit's FeatureSet, refused unless it matches the checkpoint.
        Returns (feature set of the checkpoint's modalities, present: bool [N, M])."""
        check_feature_spec(self.spec, fs.feature_spec, source)
        fs = fs.select_modalities(self.modalities)
        return fs, np.stack([fs.present[m].numpy() for m in self.modalities], axis=1)  # [N, M]

    def _table(
        self,
        seg: pd.DataFrame,
        probs: np.ndarray,
        support: dict[str, np.ndarray],
        present: np.ndarray,
        labels_true: list[str],
    ) -> pd.DataFrame:
        """The predictions table, with the manifest's labels (column `label`) when it had any."""
        table = prediction_table(seg, probs, support, present, self.label_names, self.modalities)
        if any(labels_true):
            table["label"] = labels_true
        return table


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


def true_labels(seg: pd.DataFrame) -> list[str]:
    """The manifest's labels of the segments as text, "" for none: an unlabelled clip read back
    from a manifest is NaN, which the per-clip path wrote into its CSVs as the label "NaN"."""
    return ["" if pd.isna(v) else str(v) for v in seg["label"]]


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


def _unique_name(path: Path, used: set[str]) -> str:
    name, k = path.stem, 2
    while name in used:
        name, k = f"{path.stem}_{k}", k + 1
    used.add(name)
    return name


def _source_label(df: pd.DataFrame) -> str:
    return "+".join(dict.fromkeys(df["segment_source"]))


def _failure_reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, media.MediaError) else str(exc)


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


def _source_preset(source: str) -> str | None:
    """The extraction preset recorded in a FeatureSet's source JSON (copied into checkpoints)."""
    try:
        return json.loads(source).get("preset")
    except (ValueError, AttributeError):
        return None
