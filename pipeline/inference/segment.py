"""A video (or audio file) -> utterance segments as a manifest, from the best source available.

    segment_video(path, manifest=None, subtitles=None, asr=None) -> pd.DataFrame

Sources, in order of preference (the first that applies wins; the `segment_source` column says
which one):
    manifest  rows of a given manifest whose video_path or audio_path is this file
    srt, vtt  a subtitle file given, else <same stem>.srt / .vtt next to the media (speakers from
              the cue text when named)
    asr       voice-activity detection (``vad``: auto = silero-vad, the energy VAD when silero
              finds nothing; pipeline.inference.speech) + Whisper with timestamps; speaker
              "unknown"; a region where the model recognised nothing stays, as source "vad"
    vad       the same without a speech model (asr=None): segments with empty text

The frame has the manifest columns (pipeline.dataset.manifest) plus `segment_source`. Media paths are
absolute; dialogue_id defaults to the file's stem.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.dataset import media
from pipeline.dataset.manifest import COLUMNS, normalize, read_manifest
from pipeline.inference.speech import Asr, detect_speech, load_asr
from pipeline.inference.subtitles import find_subtitles, parse_subtitles

log = logging.getLogger(__name__)

SOURCES = ("manifest", "srt", "vtt", "asr", "vad")
UNKNOWN_SPEAKER = "unknown"


class SegmentError(ValueError):
    """No utterance segments can be had for a file (the message says why)."""


def _same_file(a: str, b: Path) -> bool:
    return bool(a) and Path(a).resolve() == b


def manifest_rows(manifest: pd.DataFrame | str | Path, path: str | Path) -> pd.DataFrame:
    """The rows of `manifest` whose video_path or audio_path is `path` (may be empty)."""
    df = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    target = Path(path).resolve()
    keep = [
        _same_file(v, target) or _same_file(a, target)
        for v, a in zip(df["video_path"], df["audio_path"], strict=True)
    ]
    return df[np.asarray(keep, bool)].reset_index(drop=True)


def _media_columns(path: Path, info: media.MediaInfo | None) -> dict[str, str]:
    """Video files go in video_path (audio is its track); audio-only files in audio_path."""
    has_video = info.has_video if info is not None else True
    return (
        {"video_path": str(path), "audio_path": ""}
        if has_video
        else {
            "video_path": "",
            "audio_path": str(path),
        }
    )


def _frame(rows: list[dict], dialogue_id: str, path: Path, info, source: str) -> pd.DataFrame:
    cols = _media_columns(path, info)
    records = [
        {
            "dialogue_id": dialogue_id,
            "utterance_id": f"{dialogue_id}_u{k:04d}",
            "speaker": r.get("speaker") or UNKNOWN_SPEAKER,
            "start_s": float(r["start_s"]),
            "end_s": float(r["end_s"]),
            "text": r.get("text", ""),
            "label": "",
            "split": "",
            **cols,
            "segment_source": r.get("source", source),
        }
        for k, r in enumerate(rows)
    ]
    if not records:
        return pd.DataFrame(columns=[*COLUMNS, "segment_source"])
    return normalize(pd.DataFrame(records), source=str(path))


def from_subtitles(
    path: Path, subtitles: Path, dialogue_id: str, info: media.MediaInfo | None = None
) -> pd.DataFrame:
    """One utterance per cue; source "srt" or "vtt" by the file's suffix. Column `cue` = "file:line"
    of each cue, so a cue that cannot be cut (inverted, zero-length) is reported where it is."""
    cues = parse_subtitles(subtitles)
    source = subtitles.suffix.lower().lstrip(".")
    rows = [
        {"start_s": c.start_s, "end_s": c.end_s, "speaker": c.speaker, "text": c.text} for c in cues
    ]
    out = _frame(rows, dialogue_id, path, info, source)
    return out.assign(cue=[f"{subtitles}:{c.line}" for c in cues]) if len(out) else out


def load_audio(path: Path) -> np.ndarray:
    """The whole audio track as float32 [S] mono 16 kHz (one streaming decode, frames skipped)."""
    seg = next(iter(media.iter_segments(path, [(0.0, None)], want_audio=True, want_frames=False)))
    if seg.audio is None:
        raise SegmentError(f"{path}: {seg.audio_error or seg.error or 'no audio'}")
    return seg.audio


def automatic(
    path: Path, dialogue_id: str, asr: Asr | None, info: media.MediaInfo, vad: str = "auto"
) -> pd.DataFrame:
    """VAD regions, then (with a speech model) Whisper text and segment timestamps inside them."""
    if not info.has_audio:
        raise SegmentError(
            f"{path}: no audio stream, so no automatic segmentation (give subtitles or a manifest)"
        )
    audio = load_audio(path)  # [S]
    regions = detect_speech(audio, vad=vad)
    if asr is None:
        rows = [{"start_s": a, "end_s": b, "text": "", "source": "vad"} for a, b in regions]
    else:
        rows = []
        for parts in asr.transcribe(audio, regions):
            rows += [
                {
                    "start_s": u.start_s,
                    "end_s": u.end_s,
                    "text": u.text,
                    "source": "asr" if u.text else "vad",
                }
                for u in parts
            ]
    return _frame(rows, dialogue_id, path, info, "vad")


def segment_video(
    path: str | Path,
    manifest: pd.DataFrame | str | Path | None = None,
    subtitles: str | Path | None = None,
    asr: Asr | str | None = None,
    dialogue_id: str | None = None,
    device: str = "cpu",
    vad: str = "auto",
) -> pd.DataFrame:
    """Utterance segments of one media file -> manifest frame with `segment_source`.

    `asr`: a loaded Asr, a Whisper model name/folder (loaded here), or None (VAD only, empty text).
    `vad`: "auto", "silero" or "energy" (pipeline.inference.speech.detect_speech).
    Raises SegmentError when no segment is found, media.MediaError when the file cannot be read,
    subtitles.SubtitleError (file and line) for a malformed subtitle file.
    """
    path = Path(path).expanduser().resolve()
    did = dialogue_id or path.stem
    if manifest is not None:
        rows = manifest_rows(manifest, path)
        if len(rows):
            out = rows.copy()
            out["segment_source"] = "manifest"
            return out
    info = media.probe(path)  # raises MediaError for a missing or corrupt file
    sub = Path(subtitles) if subtitles else find_subtitles(path)
    if sub is not None:
        out = from_subtitles(path, sub, did, info)
    else:
        if isinstance(asr, str):
            asr = load_asr(asr, device)
        out = automatic(path, did, asr, info, vad)
    if out.empty:
        source = "subtitles " + str(sub) if sub else "voice-activity detection"
        raise SegmentError(f"{path}: no utterance segments found ({source})")
    log.info("%s: %d segments from %s", path.name, len(out), out["segment_source"].iat[0])
    return out
