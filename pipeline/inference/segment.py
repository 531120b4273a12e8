"""Where utterances come from when the manifest gives no timestamps: a video (or audio file) ->
utterance segments as a manifest, from the best source available.

    segment_video(path, manifest=None, subtitles=None, asr="tiny.en") -> pd.DataFrame
    parse_subtitles(path) -> list[Cue]                            SRT/WebVTT cues (by suffix)
    find_subtitles(video) -> Path | None                          <same stem>.srt / .vtt
    detect_speech(audio, vad="auto") -> list[(start_s, end_s)]    VAD on float32 [S] mono 16 kHz

Sources, in order of preference (the first that applies wins; the `segment_source` column says
which one):
    manifest  rows of a given manifest whose video_path or audio_path is this file
    srt, vtt  a subtitle file given, else <same stem>.srt / .vtt next to the media (speakers from
              the cue text when named: section "subtitles")
    asr       voice-activity detection (``vad``: auto = silero-vad, the energy VAD when silero
              finds far less: section "voice-activity detection"), then faster-whisper with word
              timestamps inside the speech regions, grouped into utterances at sentence ends and
              pauses (pipeline.inference.asr; default: the packaged tiny.en, offline); speaker
              "unknown". A speech region where the model recognised no word stays, with empty
              text, as "vad"
    vad       the same without a speech model (asr="none"): one segment per region, empty text

Automatic segmentation streams the audio in windows of WINDOW_S (+ OVERLAP_S, so a speech region
that starts in a window ends inside it; the next window's copy of it is dropped): memory is bounded
by the window, not the recording (bench/asr_memory.py: a 2-hour file). The auto VAD decides per
window.

The frame has the manifest columns (pipeline.dataset.manifest) plus `segment_source` and, for
automatic segments, ASR_COLUMNS (the recogniser's average log-probability and no-speech
probability; NaN where there are no words). Media paths are absolute; dialogue_id defaults to the
file's stem.

Sections, in order: segmentation (segment_video and its three routes), subtitles (SRT/WebVTT ->
cues), voice-activity detection (where in a recording someone speaks). Speech recognition inside
the speech regions is its own module, pipeline/inference/asr.py: this module imports it, never the
other way round.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.dataset import media
from pipeline.dataset.manifest import COLUMNS, normalize, read_manifest
from pipeline.dataset.media import SAMPLE_RATE
from pipeline.inference.asr import (
    DEFAULT_ASR_MODEL,
    Asr,
    AsrUtterance,
    Word,
    asr_enabled,
    load_asr,
    utterances,
)
from pipeline.timecode import TIMECODE, seconds

log = logging.getLogger(__name__)

SOURCES = ("manifest", "srt", "vtt", "asr", "vad")
UNKNOWN_SPEAKER = "unknown"
ASR_COLUMNS = ("asr_avg_logprob", "asr_no_speech_prob")

# The speech-region policy of both VADs (section "voice-activity detection"): gaps under
# MERGE_GAP_S are pauses inside a turn (merged), blips under MIN_SPEECH_S are clicks (dropped),
# regions over MAX_SPEECH_S are split (so each fits Whisper's 30 s window with room).
MERGE_GAP_S = 0.3
MIN_SPEECH_S = 0.3
MAX_SPEECH_S = 15.0

# Automatic segmentation's windows (module docstring).
WINDOW_S = 300.0  # audio held at a time: 5 min of float32 at 16 kHz = 19 MB
OVERLAP_S = 2 * MAX_SPEECH_S  # a region starting in a window's last seconds still ends inside it


# ---- segmentation: a media file -> utterance segments -------------------------------------------


class SegmentError(ValueError):
    """No utterance segments can be had for a file (the message says why)."""


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
    `vad`: "auto", "silero" or "energy" (detect_speech).
    Raises SegmentError when no segment is found, media.MediaError when the file cannot be read,
    SubtitleError (file and line) for a malformed subtitle file.
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


def manifest_rows(manifest: pd.DataFrame | str | Path, path: str | Path) -> pd.DataFrame:
    """The rows of `manifest` whose video_path or audio_path is `path` (may be empty)."""
    df = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    target = Path(path).resolve()
    keep = [
        _same_file(v, target) or _same_file(a, target)
        for v, a in zip(df["video_path"], df["audio_path"], strict=True)
    ]
    return df[np.asarray(keep, bool)].reset_index(drop=True)


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


def _same_file(a: str, b: Path) -> bool:
    return bool(a) and Path(a).resolve() == b


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


# ---- subtitles: SRT and WebVTT -> cues (start, end, speaker, text) ------------------------------
#
# Speakers come from the cue text when it names one, in the forms subtitle files use in practice:
#     "ALICE: hello"          a leading name and a colon (SRT and VTT)
#     "[Alice] hello"         a bracketed name
#     "<v Alice>hello</v>"    the WebVTT voice span (<v.class Alice> too)
# otherwise the speaker is "". Formatting tags (<i>, <b>, <font ...>, {\an8}) are dropped; the
# lines of a cue are joined with a space. A malformed file raises SubtitleError naming the file and
# the 1-based line, so a user can open it at that spot; nothing else is raised, whatever the bytes.
#
# A well-formed cue whose end is not after its start (inverted or zero-length) does not spoil the
# file: it is returned with `problem` set, and becomes a failed utterance downstream
# (pipeline.inference.predict reports it and predicts the other cues), as a manifest row with such
# a segment does.

SUFFIXES = (".srt", ".vtt")

# "01:02:03,456" (SRT) or "01:02:03.456" / "02:03.456" (VTT; hours optional there).
_TIMING = re.compile(rf"^\s*{TIMECODE}\s*-->\s*{TIMECODE}(?:\s+.*)?$")  # VTT settings may follow
_VOICE = re.compile(r"^\s*<v(?:\.[\w.-]+)?\s+([^>]+)>")
_BRACKET = re.compile(r"^\s*\[([^\]\d][^\]]{0,40})\]\s*(.*)$")
# A name is 1-4 words starting with a letter; "Note: 10:30" or a URL do not look like one.
_COLON = re.compile(r"^\s*([A-Za-z][\w'.-]*(?: [A-Za-z][\w'.-]*){0,3})\s*:\s+(.+)$")
_TAGS = re.compile(r"</?[^>]+>|\{\\[^}]*\}")


class SubtitleError(ValueError):
    """A subtitle file that cannot be parsed; the message names the file and the line."""


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    speaker: str  # "" = not named in the cue
    text: str
    line: int  # 1-based line of the timing line, for messages
    problem: str = ""  # "" = usable; else why the cue cannot be cut (inverted, zero-length)


def parse_subtitles(path: str | Path) -> list[Cue]:
    """Read an .srt or .vtt file (UTF-8, BOM allowed) -> cues."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SubtitleError(f"{path}: unknown subtitle format {suffix!r} (use .srt or .vtt)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubtitleError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise SubtitleError(f"{path}: cannot read subtitle file ({exc.strerror or exc})") from exc
    return parse_srt(text, str(path)) if suffix == ".srt" else parse_vtt(text, str(path))


def find_subtitles(video: str | Path) -> Path | None:
    """The .srt (preferred) or .vtt next to `video` with the same stem, if any."""
    video = Path(video)
    for suffix in SUFFIXES:
        for candidate in (video.with_suffix(suffix), video.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


def parse_srt(text: str, source: str = "<srt>") -> list[Cue]:
    """SubRip: blocks of [index line] + timing line + text lines. Cues sorted by start (stable)."""
    cues = []
    for start, block in _blocks(text.lstrip("\ufeff").splitlines()):
        # The index line is optional in the wild; the timing line is the first or second one.
        timing_at = 0 if "-->" in block[0] or len(block) == 1 else 1
        if timing_at == 1 and not block[0].strip().isdigit() and "-->" not in block[1]:
            raise SubtitleError(
                f"{source}:{start}: expected a cue number or timing line, got {block[0].strip()!r}"
            )
        cues.append(_cue(start, block, timing_at, source))
    if not cues:
        raise SubtitleError(f"{source}: no subtitle cues")
    return sorted(cues, key=lambda c: c.start_s)


def parse_vtt(text: str, source: str = "<vtt>") -> list[Cue]:
    """WebVTT: "WEBVTT" header, then cue blocks ([identifier] + timing + text); NOTE, STYLE and
    REGION blocks are skipped. Cues sorted by start (stable)."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or not lines[0].startswith("WEBVTT"):
        first = lines[0].strip() if lines else ""
        raise SubtitleError(f"{source}:1: a WebVTT file starts with 'WEBVTT', got {first!r}")
    cues = []
    for start, block in _blocks(lines)[1:]:  # the first block is the header
        if block[0].startswith(("NOTE", "STYLE", "REGION")):
            continue
        timing_at = 0 if "-->" in block[0] else 1
        if timing_at == 1 and (len(block) < 2 or "-->" not in block[1]):
            raise SubtitleError(
                f"{source}:{start}: expected a cue timing line, got {block[0].strip()!r}"
            )
        cues.append(_cue(start, block, timing_at, source))
    if not cues:
        raise SubtitleError(f"{source}: no subtitle cues")
    return sorted(cues, key=lambda c: c.start_s)


def _cue(block_start: int, block: list[str], timing_at: int, source: str) -> Cue:
    line_no = block_start + timing_at
    m = _TIMING.match(block[timing_at])
    if not m:
        raise SubtitleError(
            f"{source}:{line_no}: expected a cue timing like '00:00:01,000 --> 00:00:02,500', "
            f"got {block[timing_at].strip()!r}"
        )
    g = m.groups()
    try:
        start, end = seconds(g[:4]), seconds(g[4:])
    except ValueError:
        raise SubtitleError(
            f"{source}:{line_no}: minutes/seconds out of range in {block[timing_at].strip()!r}"
        ) from None
    problem = ""
    if end < start:
        problem = f"{source}:{line_no}: cue ends ({end:.3f} s) before it starts ({start:.3f} s)"
    elif end == start:
        problem = f"{source}:{line_no}: zero-length cue ({start:.3f} s)"
    speaker, text = _split_speaker(block[timing_at + 1 :])
    return Cue(start, end, speaker, text, line_no, problem)


def _split_speaker(raw_lines: list[str]) -> tuple[str, str]:
    """(speaker, clean text) of a cue's text lines."""
    first = raw_lines[0] if raw_lines else ""
    speaker = ""
    voice = _VOICE.match(first)
    if voice:
        speaker = voice.group(1).strip()
    text = " ".join(_TAGS.sub("", line).strip() for line in raw_lines)
    text = re.sub(r"\s+", " ", text).strip()
    if not speaker:
        for pattern in (_BRACKET, _COLON):
            m = pattern.match(text)
            if m:
                speaker, text = m.group(1).strip(), m.group(2).strip()
                break
    return speaker, text


def _blocks(lines: list[str]) -> list[tuple[int, list[str]]]:
    """Blank-line separated blocks -> [(1-based first line, lines)]."""
    out, cur, start = [], [], 0
    for i, line in enumerate(lines, 1):
        if line.strip():
            if not cur:
                start = i
            cur.append(line.rstrip("\r"))
        elif cur:
            out.append((start, cur))
            cur = []
    if cur:
        out.append((start, cur))
    return out


# ---- voice-activity detection: where in a recording someone speaks ------------------------------
#
# Two VADs, one policy (MERGE_GAP_S, MIN_SPEECH_S, MAX_SPEECH_S above):
# - ``silero``: silero-vad (MIT; the trained network ships in the wheel, TorchScript, CPU), speech
#   probability per 32 ms window, threshold 0.5 (its default), its own splitting of long regions
#   at the longest silence. The VAD for real speech: on ../shared/media/speech/pyannote_sample.wav
#   (bench/vad_quality.py, BENCHMARKS.md) its 10 ms frame F1 against the who-spoke-when reference
#   is 0.989 (energy 0.986: clean telephone speech is easy), and with loud non-speech noise bursts
#   added 0.990 (energy 0.937: it marks every burst as speech). ~1 s per 30 s, one thread.
# - ``energy``: RMS energy in 30 ms frames (WebRTC VAD's longest frame) against a threshold that
#   adapts to the recording, between the noise floor (10th percentile of frame energy) and the
#   speech level (95th percentile); long regions split at their quietest frame. No model; finds
#   any loud sound, voice or not.
# - ``auto`` (the default): silero, unless its speech is under ``AUTO_MIN_SHARE`` (a quarter) of
#   the time the energy VAD finds loud: then the loud sound is mostly not speech to a trained VAD,
#   which is what synthetic voices are (the demo's generated tones: silero keeps 0.8 s of 11.7 s,
#   the energy VAD all five turns) and what the energy VAD alone did before silero; on real speech
#   the two agree on the amount (pyannote_sample: 22.7 s vs 22.8 s). A recording of real speech
#   under loud non-speech noise is where this guess is wrong: pass ``vad="silero"``.

FRAME_S = 0.030
MIN_DYNAMIC_DB = (
    6.0  # speech level less than this above the floor: nothing to detect (silence/noise)
)
THRESHOLD_FRACTION = 0.3  # threshold = floor + 0.3 * (speech level - floor), in dB
SILERO_THRESHOLD = 0.5  # speech probability; silero-vad's default
SILERO_PAD_S = 0.03  # silero-vad's default padding of each region (speech_pad_ms=30)
VADS = ("auto", "silero", "energy")
AUTO_MIN_SHARE = 0.25  # auto: silero's speech time below this share of energy's -> energy
_silero_lock = threading.Lock()  # the TorchScript model keeps state between windows


def detect_speech(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    merge_gap_s: float = MERGE_GAP_S,
    min_speech_s: float = MIN_SPEECH_S,
    max_speech_s: float = MAX_SPEECH_S,
    vad: str = "auto",
) -> list[tuple[float, float]]:
    """Speech regions [(start_s, end_s)] of float32 [S] mono audio, in time order.

    ``vad``: "auto" (silero unless it hears speech in under a quarter of what the energy VAD
    finds: the notes of the voice-activity detection section), "silero" or "energy".
    """
    if vad not in VADS:
        raise ValueError(f"vad must be one of {', '.join(VADS)}; got {vad!r}")
    kwargs = {
        "merge_gap_s": merge_gap_s,
        "min_speech_s": min_speech_s,
        "max_speech_s": max_speech_s,
    }
    if vad == "energy":
        return detect_speech_energy(audio, sample_rate, **kwargs)
    silero = detect_speech_silero(audio, sample_rate, **kwargs)
    if vad == "silero":
        return silero
    energy = detect_speech_energy(audio, sample_rate, **kwargs)  # milliseconds: always affordable
    if total_s(silero) < AUTO_MIN_SHARE * total_s(energy):
        log.info(
            "silero-vad hears %.1f s of speech where the energy VAD finds %.1f s of sound: "
            "using the energy VAD (vad='silero' to keep silero's)",
            total_s(silero),
            total_s(energy),
        )
        return energy
    return silero


def total_s(regions: list[tuple[float, float]]) -> float:
    """Seconds covered by non-overlapping regions."""
    return float(sum(b - a for a, b in regions))


def detect_speech_silero(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    merge_gap_s: float = MERGE_GAP_S,
    min_speech_s: float = MIN_SPEECH_S,
    max_speech_s: float = MAX_SPEECH_S,
    threshold: float = SILERO_THRESHOLD,
) -> list[tuple[float, float]]:
    """Speech regions by silero-vad: per-window probability -> threshold -> the same policy."""
    import torch
    from silero_vad import get_speech_timestamps

    x = torch.from_numpy(np.ascontiguousarray(audio, np.float32))  # [S]
    if len(x) < 512:  # shorter than one silero window (32 ms)
        return []
    model = _silero_model()
    with _silero_lock, torch.inference_mode():
        stamps = get_speech_timestamps(
            x,
            model,
            threshold=threshold,
            sampling_rate=sample_rate,
            min_speech_duration_ms=round(min_speech_s * 1000),
            min_silence_duration_ms=round(merge_gap_s * 1000),
            max_speech_duration_s=max_speech_s,
            speech_pad_ms=round(SILERO_PAD_S * 1000),
        )  # [{"start": sample, "end": sample}]
    return [(round(t["start"] / sample_rate, 3), round(t["end"] / sample_rate, 3)) for t in stamps]


@lru_cache(maxsize=1)
def _silero_model():
    import torch

    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad  # importing it sets torch's threads to 1: undo that

    torch.set_num_threads(threads)
    with warnings.catch_warnings():  # its importlib.resources.path and torch.jit.load deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad()  # TorchScript from the wheel (silero_vad/data/silero_vad.jit)


def detect_speech_energy(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    merge_gap_s: float = MERGE_GAP_S,
    min_speech_s: float = MIN_SPEECH_S,
    max_speech_s: float = MAX_SPEECH_S,
) -> list[tuple[float, float]]:
    """Speech regions by frame energy, in time order.

    Steps: frame energy (30 ms) -> adaptive threshold -> merge gaps < merge_gap_s -> drop regions
    < min_speech_s -> split regions > max_speech_s at their quietest frame.
    """
    frame = round(FRAME_S * sample_rate)
    db = frame_energy_db(audio, frame)  # [F]
    if len(db) == 0:
        return []
    floor, level = np.percentile(db, 10), np.percentile(db, 95)
    if level - floor < MIN_DYNAMIC_DB:
        return []  # flat energy: silence or stationary noise
    voiced = db > floor + THRESHOLD_FRACTION * (level - floor)  # [F]
    runs = _runs(voiced)
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and (a - merged[-1][1]) * FRAME_S < merge_gap_s:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    regions = []
    max_frames = max(1, int(max_speech_s / FRAME_S))
    for a, b in merged:
        if (b - a) * FRAME_S < min_speech_s:
            continue
        regions += _split_long(a, b, db, max_frames)
    dt = frame / sample_rate
    return [(round(a * dt, 3), round(b * dt, 3)) for a, b in regions]


def frame_energy_db(audio: np.ndarray, frame: int = round(FRAME_S * SAMPLE_RATE)) -> np.ndarray:
    """float32 [S] -> RMS energy in dBFS per non-overlapping frame, float64 [S // frame]."""
    n = len(audio) // frame
    frames = np.asarray(audio[: n * frame], np.float64).reshape(n, frame)  # [F, frame]
    rms = np.sqrt((frames**2).mean(axis=1))  # [F]
    return 20 * np.log10(np.maximum(rms, 1e-10))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """bool [F] -> [(first, last + 1)] of True runs."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)
    )


def _split_long(a: int, b: int, db: np.ndarray, max_frames: int) -> list[tuple[int, int]]:
    """Split frames [a, b) at the quietest frame of its middle until every part is <= max_frames."""
    if b - a <= max_frames:
        return [(a, b)]
    lo, hi = a + max_frames // 3, min(b - max_frames // 3, a + max_frames)
    cut = lo + int(np.argmin(db[lo:hi])) if hi > lo else a + max_frames
    return _split_long(a, cut, db, max_frames) + _split_long(cut, b, db, max_frames)
