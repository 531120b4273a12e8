"""Segmentation: SRT/WebVTT parsing (speakers, malformed files), VAD rules, and the three routes
(manifest, subtitles, automatic VAD + speech recognition: the packaged tiny.en and a tiny
random-init Whisper) on a generated demo video."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.dataset.manifest import COLUMNS, read_manifest
from pipeline.dataset.media import MediaError
from pipeline.inference.asr import build_tiny_whisper, clean_text, load_asr
from pipeline.inference.segment import (
    SegmentError,
    SubtitleError,
    detect_speech,
    parse_srt,
    parse_subtitles,
    parse_vtt,
    segment_video,
)

SR = 16000

SRT = """\ufeff1
00:00:01,000 --> 00:00:02,500
ALICE: Hello there.

2
00:00:03,000 --> 00:00:04,250
[Bob] <i>Hi,</i>
how are you?

00:00:05,000 --> 00:00:06,000
No speaker at 10:30: fine.
"""

VTT = """WEBVTT - a conversation

NOTE this is a comment
spanning two lines

intro
00:01.000 --> 00:02.000 align:start
<v Alice>Good morning</v>

00:00:03.500 --> 00:00:04.000
<v.loud Bob Smith>What?!

00:00:04.500 --> 00:00:05.500
Carol: I said good morning.
"""


def test_srt_cues_times_speakers_and_text():
    cues = parse_srt(SRT, "x.srt")
    assert [(c.start_s, c.end_s) for c in cues] == [(1.0, 2.5), (3.0, 4.25), (5.0, 6.0)]
    assert [c.speaker for c in cues] == ["ALICE", "Bob", ""]
    assert [c.text for c in cues] == [
        "Hello there.",
        "Hi, how are you?",
        "No speaker at 10:30: fine.",
    ]


def test_vtt_cues_voice_spans_identifiers_and_notes():
    cues = parse_vtt(VTT, "x.vtt")
    assert [(c.start_s, c.end_s) for c in cues] == [(1.0, 2.0), (3.5, 4.0), (4.5, 5.5)]
    assert [c.speaker for c in cues] == ["Alice", "Bob Smith", "Carol"]
    assert [c.text for c in cues] == ["Good morning", "What?!", "I said good morning."]


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        (
            "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03 --> 00:00:04,000\nbad\n",
            6,
            "timing",
        ),
        ("hello world\nno timing here\n", 1, "cue number or timing"),
        (
            "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 --> 00:01:99,000\nx\n",
            6,
            "out of range",
        ),
    ],
)
def test_malformed_srt_names_file_and_line(tmp_path, text, line, fragment):
    path = tmp_path / "bad.srt"
    path.write_text(text)
    with pytest.raises(SubtitleError, match=rf"bad\.srt:{line}: .*{fragment}"):
        parse_subtitles(path)


def test_malformed_vtt_and_empty_files(tmp_path):
    with pytest.raises(SubtitleError, match=r"x\.vtt:1: .*WEBVTT"):
        parse_vtt("1\n00:00.000 --> 00:01.000\nhi\n", "x.vtt")
    with pytest.raises(SubtitleError, match=r"x\.vtt:3: .*timing"):
        parse_vtt("WEBVTT\n\nid\nnot a timing\n", "x.vtt")
    with pytest.raises(SubtitleError, match="no subtitle cues"):
        parse_srt("\n\n", "empty.srt")
    (tmp_path / "latin1.srt").write_bytes(
        "1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n".encode("latin-1")
    )
    with pytest.raises(SubtitleError, match="latin1.srt: not UTF-8"):
        parse_subtitles(tmp_path / "latin1.srt")


def _bursts(spans, total_s, seed=0):
    """float32 [total_s * SR]: noise at -54 dBFS plus 200 Hz tones in `spans`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.002, int(total_s * SR))
    t = np.arange(len(x)) / SR
    for a, b in spans:
        on = (t >= a) & (t < b)
        x[on] += 0.3 * np.sin(2 * np.pi * 200 * t[on])
    return x.astype(np.float32)


def test_vad_merges_short_gaps_drops_blips_splits_long_regions():
    spans = [(1.0, 2.0), (2.15, 3.0), (4.0, 4.1), (5.0, 6.0), (7.0, 39.0)]
    regions = detect_speech(_bursts(spans, 40.0))
    # 0.15 s gap merged, 0.1 s blip dropped, 32 s region split into parts <= 15 s
    assert regions[0][0] == pytest.approx(1.0, abs=0.05) and regions[0][1] == pytest.approx(
        3.0, abs=0.05
    )
    assert regions[1][0] == pytest.approx(5.0, abs=0.05) and regions[1][1] == pytest.approx(
        6.0, abs=0.05
    )
    long = regions[2:]
    assert len(long) >= 3 and all(b - a <= 15.0 + 1e-6 for a, b in long)
    assert long[0][0] == pytest.approx(7.0, abs=0.05) and long[-1][1] == pytest.approx(
        39.0, abs=0.05
    )
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(regions, regions[1:], strict=False))
    assert detect_speech(_bursts([], 5.0)) == []  # noise only
    assert detect_speech(np.zeros(SR, np.float32)) == []  # digital silence


def test_clean_text_drops_control_and_replacement_characters():
    assert clean_text("a\x0b b\ufffd\n c") == "a b c"


@pytest.fixture(scope="module")
def truth(demo):
    """The shared demo set's first video and its own manifest rows."""
    df = read_manifest(demo)
    video = df["video_path"].iat[0]
    return df[df["video_path"] == video].reset_index(drop=True), Path(video)


def test_manifest_rows_win(truth, tmp_path):
    df, video = truth
    out = segment_video(video, manifest=df)
    assert set(out["segment_source"]) == {"manifest"}
    assert out["utterance_id"].tolist() == df["utterance_id"].tolist()
    # a manifest without rows for this video falls through to the subtitles next to it
    other = df.assign(video_path=str(tmp_path / "elsewhere.mp4"))
    assert set(segment_video(video, manifest=other)["segment_source"]) == {"srt"}


def test_subtitles_next_to_the_video(truth, tmp_path):
    df, video = truth
    out = segment_video(video)
    assert list(out.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert set(out["segment_source"]) == {"srt"}
    np.testing.assert_allclose(out["start_s"], df["start_s"], atol=1e-3)
    np.testing.assert_allclose(out["end_s"], df["end_s"], atol=1e-3)
    assert out["speaker"].tolist() == df["speaker"].tolist()
    assert out["text"].tolist() == df["text"].tolist()
    # the same cues as WebVTT, given explicitly
    vtt = tmp_path / "cues.vtt"
    lines = ["WEBVTT", ""]
    for r in df.itertuples():
        lines += [f"00:{r.start_s:06.3f} --> 00:{r.end_s:06.3f}", f"<v {r.speaker}>{r.text}", ""]
    vtt.write_text("\n".join(lines))
    out = segment_video(video, subtitles=vtt)
    assert (
        set(out["segment_source"]) == {"vtt"} and out["speaker"].tolist() == df["speaker"].tolist()
    )


def _overlap(a, b):
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _check_found_where_energy(out, df):
    found = list(zip(out["start_s"], out["end_s"], strict=True))
    true = list(zip(df["start_s"], df["end_s"], strict=True))
    for seg in found:  # every segment lies on generated speech
        assert max(_overlap(seg, t) for t in true) >= 0.8 * (seg[1] - seg[0])
    for t in true:  # every utterance is mostly covered
        assert sum(_overlap(seg, t) for seg in found) >= 0.8 * (t[1] - t[0])


def test_automatic_vad_and_tiny_whisper(truth, tmp_path):
    df, video = truth
    bare = tmp_path / "bare.mp4"  # no subtitles next to it
    shutil.copy(video, bare)
    out = segment_video(bare, asr="none")
    assert set(out["segment_source"]) == {"vad"} and (out["text"] == "").all()
    assert (out["speaker"] == "unknown").all() and out["asr_avg_logprob"].isna().all()
    _check_found_where_energy(out, df)
    # the default, the packaged tiny.en: the demo's voice is a generated tone, no words in it
    default = segment_video(bare)
    assert len(default) == len(out) and set(default["segment_source"]) <= {"asr", "vad"}
    _check_found_where_energy(default, df)
    # a transformers Whisper folder (random-init), converted to CTranslate2 on first use
    # (its words and timings are noise, and its fallback decoding samples: only where they may be)
    regions = list(zip(out["start_s"], out["end_s"], strict=True))
    asr = load_asr(str(build_tiny_whisper(tmp_path / "whisper")), cache_dir=tmp_path / "ct2")
    noise = segment_video(bare, asr=asr)
    assert set(noise["segment_source"]) <= {"asr", "vad"} and len(noise) >= 1
    for a, b in zip(noise["start_s"], noise["end_s"], strict=True):
        assert any(s <= a < e for s, e in regions) and a < b <= regions[-1][1] + 1e-6
    assert all("\ufffd" not in t for t in noise["text"])


def test_unreadable_or_silent_media_is_reported(tmp_path, truth):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(MediaError):
        segment_video(bad)
    from pipeline.dataset.media_writer import write_video

    silent = write_video(tmp_path / "silent.mp4", [np.zeros((32, 32, 3), np.uint8)] * 10, 10)
    with pytest.raises(SegmentError, match="no audio stream"):
        segment_video(silent)


def test_a_picture_track_longer_than_the_audio_is_segmented_over_the_audio(truth, tmp_path):
    """40 s of video over 30 s of audio failed whole: "segment past the end (0.000-40.000 s)"."""
    from pipeline.dataset import media
    from pipeline.dataset.media_writer import write_video

    df, video = truth
    (seg,) = media.iter_segments(video, [(0.0, None)], want_frames=False)  # the demo's voice
    frames = [np.full((32, 32, 3), 90, np.uint8)] * int(10 * (len(seg.audio) / SR + 10))
    long = write_video(tmp_path / "long.mp4", frames, 10, seg.audio)  # 10 s more picture
    info = media.probe(long)
    assert info.video_duration_s > info.audio_duration_s + 9
    out = segment_video(long, asr="none")
    assert len(out) >= 1 and out["end_s"].max() <= info.audio_duration_s + 0.05
