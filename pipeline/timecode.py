"""Subtitle timecodes ("01:02:03,456") <-> seconds: the one parser and formatter.

    TIMECODE                 regex source of one timecode, 4 groups (hours, minutes, seconds,
                             fraction), for patterns that embed it (a cue's "start --> end" line)
    seconds(groups) -> s     those 4 groups -> seconds; ValueError when out of range
    parse_timecode(text)     one whole timecode -> seconds; ValueError naming the text
    format_timecode(s)       seconds -> "HH:MM:SS,mmm" (SRT)

SRT writes "01:02:03,456"; WebVTT "01:02:03.456" or "02:03.456" (hours optional); MELD's CSVs
carry SRT-style StartTime/EndTime. Used by inference/segment.py, dataset/adapters/meld.py and
dataset/demo.py (which writes the demo's .srt files), so all read and write one format.
A shared helper (pipeline/ top level): it imports no stage.
"""

from __future__ import annotations

import re

TIMECODE = r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})"
_WHOLE = re.compile(rf"^\s*{TIMECODE}\s*$")


def seconds(groups: tuple[str | None, ...]) -> float:
    """The 4 groups of a TIMECODE match -> seconds. Seconds must be < 60, and minutes too when
    hours are given (without hours, VTT's "75:03.000" is 75 minutes)."""
    h, m, s, frac = groups
    if int(s) >= 60 or (h is not None and int(m) >= 60):
        raise ValueError("minutes/seconds out of range")
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_timecode(text: str) -> float:
    """'00:16:16,059' -> 976.059; ValueError naming the text when it is not one timecode."""
    m = _WHOLE.match(text)
    if not m:
        raise ValueError(f"not a timecode like '00:01:02,500': {text!r}")
    try:
        return seconds(m.groups())
    except ValueError as exc:
        raise ValueError(f"{exc} in {text!r}") from None


def format_timecode(s: float) -> str:
    """976.059 -> '00:16:16,059' (SRT; rounded to the millisecond)."""
    ms = int(round(s * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
