"""SRT and WebVTT subtitles -> cues (start, end, speaker, text): one route of utterance segmentation.

    parse_subtitles(path) -> list[Cue]          by suffix: .srt or .vtt
    parse_srt(text, source) / parse_vtt(text, source)

Speakers come from the cue text when it names one, in the forms subtitle files use in practice:
    "ALICE: hello"          a leading name and a colon (SRT and VTT)
    "[Alice] hello"         a bracketed name
    "<v Alice>hello</v>"    the WebVTT voice span (<v.class Alice> too)
otherwise the speaker is "". Formatting tags (<i>, <b>, <font ...>, {\\an8}) are dropped; the lines
of a cue are joined with a space. A malformed file raises SubtitleError naming the file and the
1-based line, so a user can open it at that spot; nothing else is raised, whatever the bytes.

A well-formed cue whose end is not after its start (inverted or zero-length) does not spoil the file:
it is returned with `problem` set, and becomes a failed utterance downstream (pipeline.inference.predict
reports it and predicts the other cues), as a manifest row with such a segment does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.timecode import TIMECODE, seconds

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
