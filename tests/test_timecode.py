"""pipeline/timecode.py: the one SRT/VTT timecode parser and formatter."""

from __future__ import annotations

import pytest

from pipeline.timecode import format_timecode, parse_timecode


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:16:16,059", 976.059),  # SRT (MELD's StartTime)
        ("01:02:03.4", 3723.4),  # VTT, a short fraction is tenths
        ("02:03.456", 123.456),  # VTT without hours
        (" 75:03.000 ", 4503.0),  # without hours the minutes may exceed 59
    ],
)
def test_parse(text, seconds):
    assert parse_timecode(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["garbage", "00:16:16", "00:61:00,000", "00:00:60,000", ""])
def test_parse_refuses_naming_the_text(text):
    with pytest.raises(ValueError, match="timecode|out of range"):
        parse_timecode(text)


def test_format_round_trips_to_the_millisecond():
    assert format_timecode(976.059) == "00:16:16,059"
    assert format_timecode(3723.4004) == "01:02:03,400"
    for s in (0.0, 0.001, 59.999, 3599.5, 36000.25):
        assert parse_timecode(format_timecode(s)) == pytest.approx(s, abs=5e-4)
