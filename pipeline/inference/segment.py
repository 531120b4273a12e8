"""A video (or audio file) -> utterance segments as a manifest, from the best source available.

    segment_video(path, manifest=None, subtitles=None, asr="tiny.en") -> pd.DataFrame

Sources, in order of preference (the first that applies wins; the `segment_source` column says
which one):
    manifest  rows of a given manifest whose video_path or audio_path is this file
    srt, vtt  a subtitle file given, else <same stem>.srt / .vtt next to the media (speakers from
              the cue text when named)
    asr       voice-activity detection (``vad``: auto = silero-vad, the energy VAD when silero
              finds far less; pipeline.inference.speech), then faster-whisper with word timestamps
              inside the speech regions, grouped into utterances at sentence ends and pauses
              (pipeline.inference.asr; default: the packaged tiny.en, offline); speaker "unknown".
              A speech region where the model recognised no word stays, with empty text, as "vad"
    vad       the same without a speech model (asr="none"): one segment per region, empty text

Automatic segmentation streams the audio in windows of WINDOW_S (+ OVERLAP_S, so a speech region
that starts in a window ends inside it; the next window's copy of it is dropped): memory is bounded
by the window, not the recording (bench/asr_memory.py: a 2-hour file). The auto VAD decides per
window.

The frame has the manifest columns (pipeline.dataset.manifest) plus `segment_source` and, for
automatic segments, ASR_COLUMNS (the recogniser's average log-probability and no-speech
probability; NaN where there are no words). Media paths are absolute; dialogue_id defaults to the
file's stem.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.dataset import media
from pipeline.dataset.manifest import COLUMNS, normalize, read_manifest
from pipeline.inference.asr import (
    DEFAULT_ASR_MODEL,
    Asr,
    AsrUtterance,
    Word,
    asr_enabled,
    load_asr,
    utterances,
)
from pipeline.inference.speech import MAX_SPEECH_S, MIN_SPEECH_S, detect_speech
from pipeline.inference.subtitles import find_subtitles, parse_subtitles

log = logging.getLogger(__name__)

SOURCES = ("manifest", "srt", "vtt", "asr", "vad")
UNKNOWN_SPEAKER = "unknown"
ASR_COLUMNS = ("asr_avg_logprob", "asr_no_speech_prob")
WINDOW_S = 300.0  # audio held at a time: 5 min of float32 at 16 kHz = 19 MB
OVERLAP_S = 2 * MAX_SPEECH_S  # a region starting in a window's last seconds still ends inside it


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
            **{c: r[c] for c in ASR_COLUMNS if c in r},
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


def audio_windows(
    path: Path, duration_s: float | None
) -> Iterator[tuple[float, float, np.ndarray]]:
    """(start_s, core_end_s, float32 [S] mono 16 kHz) per window of WINDOW_S + OVERLAP_S, in time
    order, from one streaming decode (at most two windows in memory). core_end_s is where the next
    window starts (inf for the last). Without a known duration: one window."""
    if duration_s is None or duration_s <= WINDOW_S + OVERLAP_S:
        windows: list[tuple[float, float | None]] = [(0.0, duration_s)]
    else:
        starts = np.arange(0.0, duration_s - OVERLAP_S, WINDOW_S)
        windows = [(float(a), float(a) + WINDOW_S + OVERLAP_S) for a in starts[:-1]]
        windows.append((float(starts[-1]), duration_s))  # the last one runs to the audio's end
    core_ends = [a for a, _ in windows[1:]] + [math.inf]
    for seg in media.iter_segments(path, windows, want_audio=True, want_frames=False):
        if seg.audio is None:
            raise SegmentError(f"{path}: {seg.audio_error or seg.error or 'no audio'}")
        yield seg.start_s, core_ends[seg.index], seg.audio


def _new_regions(
    found: list[tuple[float, float]], t0: float, core_end: float, last_end: float
) -> list[tuple[float, float]]:
    """A window's regions (seconds in the window, starting at t0) -> media-time regions that start
    in its core (before core_end) and after the previous window's last region (last_end)."""
    out = []
    for a, b in found:
        a, b = round(a + t0, 3), round(b + t0, 3)
        a = max(a, last_end)  # a region the previous window already took in part: the rest
        if a < core_end and b - a >= MIN_SPEECH_S:
            out.append((a, b))
    return out


def automatic(
    path: Path, dialogue_id: str, asr: Asr | None, info: media.MediaInfo, vad: str = "auto"
) -> pd.DataFrame:
    """VAD regions window by window, then (with a speech model) words -> utterances."""
    if not info.has_audio:
        raise SegmentError(
            f"{path}: no audio stream, so no automatic segmentation (give subtitles or a manifest)"
        )
    regions: list[tuple[float, float]] = []
    words: list[Word] = []
    last_end = 0.0
    # The audio track's own length: a picture track that runs longer (40 s of video over 30 s of
    # audio) made the whole file fail as "past the end" when the container's duration was used.
    audio_s = info.audio_duration_s or info.duration_s
    for t0, core_end, audio in audio_windows(path, audio_s):  # audio: [S] per window
        new = _new_regions(detect_speech(audio, vad=vad), t0, core_end, last_end)
        if not new:
            continue
        last_end = new[-1][1]
        regions += new
        if asr is not None:
            found = asr.words(audio, [(a - t0, b - t0) for a, b in new])
            words += [replace(w, start_s=w.start_s + t0, end_s=w.end_s + t0) for w in found]
    if asr is None:
        utts = [AsrUtterance(a, b, "", math.nan, math.nan, "vad") for a, b in regions]
    else:
        utts = utterances(words, regions)
    rows = [
        {
            "start_s": u.start_s,
            "end_s": u.end_s,
            "text": u.text,
            "source": u.source,
            "asr_avg_logprob": u.avg_logprob,
            "asr_no_speech_prob": u.no_speech_prob,
        }
        for u in utts
    ]
    return _frame(rows, dialogue_id, path, info, "vad")


def segment_video(
    path: str | Path,
    manifest: pd.DataFrame | str | Path | None = None,
    subtitles: str | Path | None = None,
    asr: Asr | str | None = DEFAULT_ASR_MODEL,
    dialogue_id: str | None = None,
    device: str = "cpu",
    vad: str = "auto",
) -> pd.DataFrame:
    """Utterance segments of one media file -> manifest frame with `segment_source`.

    `asr`: a loaded Asr, a model name or folder (pipeline.inference.asr.load_asr; loaded here only
    when segments must come from speech), or "none"/None (VAD only, empty text).
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
            asr = load_asr(asr, device) if asr_enabled(asr) else None
        out = automatic(path, did, asr, info, vad)
    if out.empty:
        source = "subtitles " + str(sub) if sub else "voice-activity detection"
        raise SegmentError(f"{path}: no utterance segments found ({source})")
    log.info("%s: %d segments from %s", path.name, len(out), out["segment_source"].iat[0])
    return out
