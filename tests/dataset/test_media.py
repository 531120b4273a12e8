"""Streaming decode on generated media with known content, every bad input, and the real clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.dataset.media import (
    SAMPLE_RATE,
    MediaError,
    iter_segments,
    probe,
    sample_times,
)
from pipeline.dataset.media_writer import write_video

SHARED = Path(__file__).resolve().parents[3] / "shared"
CLIPS = SHARED / "data" / "iemocap" / "clips"
FPS, DUR, W, H = 10, 6.0, 64, 48


def _ramp_frames(n):
    """Frame k is uniformly grey at level 4k: a decoded frame tells its own index."""
    for k in range(n):
        yield np.full((H, W, 3), 4 * k, np.uint8)


def _tone(freq, dur, sr=SAMPLE_RATE):
    t = np.arange(int(dur * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(audio, sr=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.argmax(spectrum) * sr / len(audio)


@pytest.fixture(scope="module")
def tone_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "tone.mp4"
    return write_video(path, _ramp_frames(int(DUR * FPS)), FPS, _tone(440, DUR))


@pytest.fixture(scope="module")
def silent_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "noaudio.mp4"
    return write_video(path, _ramp_frames(30), FPS)


def test_probe(tone_video):
    info = probe(tone_video)
    assert info.has_audio and info.has_video
    assert info.duration_s == pytest.approx(DUR, abs=0.1)
    assert (info.width, info.height, info.fps) == (W, H, FPS)
    assert info.n_frames_est == pytest.approx(DUR * FPS, abs=1)
    assert info.audio_sample_rate == SAMPLE_RATE


def test_audio_tone_and_lengths(tone_video):
    segs = [(0.5, 2.0), (1.0, 4.0), (2.25, 2.75)]
    out = list(iter_segments(tone_video, segs, want_frames=False))
    assert sorted(s.index for s in out) == [0, 1, 2]
    for s in out:
        assert s.error is None and s.frames == []
        assert s.audio.dtype == np.float32 and s.audio.ndim == 1
        assert len(s.audio) == round(s.end_s * SAMPLE_RATE) - round(s.start_s * SAMPLE_RATE)
        assert abs(_peak_hz(s.audio) - 440) < 2.0 / (s.end_s - s.start_s)  # ~bin width
        assert 0.2 < np.abs(s.audio).max() < 0.6


def test_frames_sampled_at_fps(tone_video):
    (s,) = iter_segments(tone_video, [(1.0, 4.0)], fps=2.0, want_audio=False)
    assert s.audio is None and s.error is None
    assert len(s.frames) == 6 and all(
        f.shape == (H, W, 3) and f.dtype == np.uint8 for f in s.frames
    )
    # Sampling times 1.25, 1.75, ...: the frame shown then is index floor(t * FPS).
    expected = [4 * int(t * FPS) for t in sample_times(1.0, 4.0, 2.0)]
    got = [int(round(float(f.mean()))) for f in s.frames]
    assert np.allclose(got, expected, atol=3), (got, expected)


def test_a_rate_above_the_videos_own_samples_each_frame_once(tone_video, caplog):
    with caplog.at_level("WARNING"):
        (s,) = iter_segments(tone_video, [(1.0, 3.0)], fps=1e9, want_audio=False)
    assert s.error is None and len(s.frames) == 2 * FPS  # not 2e9 sampling times
    assert f"sampling at the video's own {FPS:g} fps, not the 1e+09 fps asked" in caplog.text


def test_overlapping_unsorted_segments_share_one_decode(tone_video):
    segs = [(3.0, 5.0), (0.0, 1.0), (3.5, 4.5), (0.5, 3.5)]
    out = {s.index: s for s in iter_segments(tone_video, segs, fps=2.0)}
    assert sorted(out) == [0, 1, 2, 3] and all(s.error is None for s in out.values())
    # The overlap of segments 0 and 2 is the same audio.
    a0, a2 = out[0].audio, out[2].audio
    np.testing.assert_array_equal(a0[8000:24000], a2)
    assert [len(out[i].frames) for i in range(4)] == [4, 2, 2, 6]


def test_streams_in_time_order(tone_video):
    """The first segment comes out before the decoder reaches the later one (lazy, bounded)."""
    order = [s.index for s in iter_segments(tone_video, [(4.0, 5.0), (0.0, 1.0)])]
    assert order == [1, 0]


def test_bad_segments_reported_others_complete(tone_video):
    segs = [(1.0, 2.0), (2.0, 2.0), (3.0, 1.0), (-1.0, 1.0), (5.0, 9.0), (7.0, 8.0), (4.0, 5.0)]
    out = {s.index: s for s in iter_segments(tone_video, segs)}
    assert out[1].error.startswith("zero-length")
    assert out[2].error.startswith("inverted")
    assert out[3].error.startswith("negative start")
    assert out[4].error.startswith("segment past the end") and "media ends at 6.0" in out[4].error
    assert out[5].error.startswith("segment past the end")
    for i in (1, 2, 3, 4, 5):
        assert out[i].audio is None and out[i].frames == []
    for i in (0, 6):
        assert out[i].error is None and len(out[i].audio) == SAMPLE_RATE and len(out[i].frames) == 2


def test_end_none_means_whole_file_and_small_overshoot_is_padded(tone_video):
    out = iter_segments(tone_video, [(0.0, None), (5.0, 6.1)], want_frames=False)
    whole, over = sorted(out, key=lambda s: s.index)
    assert whole.error is None and len(whole.audio) == pytest.approx(DUR * SAMPLE_RATE, abs=2)
    # 0.1 s past the end is within the tolerance (transcripts overshoot): padded with silence.
    assert over.error is None and len(over.audio) == round(1.1 * SAMPLE_RATE)
    assert np.abs(over.audio[-800:]).max() == 0.0


def test_end_none_is_each_streams_own_end(tmp_path):
    """A whole-clip row (end None) of a file whose sound stops 1 s before its picture: the audio
    is the sound there is, whether or not frames are asked for. It failed as "segment past the
    end" when only audio was decoded (the container's duration, the picture's, was the end)."""
    path = write_video(
        tmp_path / "short_sound.mp4", _ramp_frames(int(DUR * FPS)), FPS, _tone(440, DUR - 1)
    )
    for want_frames in (False, True):
        (whole,) = iter_segments(path, [(0.0, None)], want_frames=want_frames)
        assert whole.error is None, whole.error
        assert len(whole.audio) == pytest.approx((DUR - 1) * SAMPLE_RATE, abs=1100)  # AAC frame
        assert np.abs(whole.audio[-SAMPLE_RATE // 2 :]).max() > 0.1  # the tone, no padded silence
        assert len(whole.frames) == (int(DUR * 2) if want_frames else 0)  # 2 fps over 6 s


def test_no_audio_stream(silent_video):
    (s,) = iter_segments(silent_video, [(0.0, 2.0)], fps=2.0)
    assert s.audio_error == "no audio stream" and s.audio is None
    assert s.frames_error is None and len(s.frames) == 4  # the frames are still usable


def test_audio_only_wav(tmp_path):
    """A 44.1 kHz stereo wav: resampled to 16 kHz mono, the tone stays at 1 kHz."""
    path = tmp_path / "tone.wav"
    tone = _tone(1000, 3.0, 44100)
    sf.write(path, np.stack([tone, tone], 1), 44100)
    info = probe(path)
    assert info.has_audio and not info.has_video and info.audio_sample_rate == 44100
    (s,) = iter_segments(path, [(0.5, 2.5)], want_frames=False)
    assert s.error is None and len(s.audio) == 2 * SAMPLE_RATE
    assert abs(_peak_hz(s.audio) - 1000) < 2
    (s,) = iter_segments(path, [(0.5, 2.5)])  # frames asked of an audio file
    assert s.frames_error == "no video stream" and len(s.audio) == 2 * SAMPLE_RATE


def test_max_frame_side(tone_video):
    (s,) = iter_segments(tone_video, [(0.0, 1.0)], fps=1.0, want_audio=False, max_frame_side=32)
    assert s.frames[0].shape == (24, 32, 3)


def test_corrupt_and_missing_files_raise(tmp_path, tone_video):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(tone_video.read_bytes()[: tone_video.stat().st_size // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty, tmp_path / "missing.mp4"):
        with pytest.raises(MediaError, match=path.name) as info:
            list(iter_segments(path, [(0.0, 1.0)]))
        assert info.value.path == str(path)
        with pytest.raises(MediaError, match=path.name):
            probe(path)


@pytest.mark.shared
@pytest.mark.skipif(not CLIPS.is_dir(), reason="../shared not present")
def test_real_iemocap_clips():
    clips = sorted(CLIPS.glob("*.mp4"))
    assert len(clips) == 52
    for path in clips[:4]:
        info = probe(path)
        assert (info.width, info.height) == (640, 480) and info.has_audio
        out = sorted(iter_segments(path, [(0.0, None), (0.2, 1.2)], fps=2.0), key=lambda s: s.index)
        whole, part = out
        for s in (whole, part):
            assert s.error is None
            assert len(s.frames) == max(1, round((s.end_s - s.start_s) * 2))
            assert s.frames[0].shape == (480, 640, 3)
        assert len(part.audio) == round(1.2 * SAMPLE_RATE) - round(0.2 * SAMPLE_RATE)
        # The whole clip: its sound as long as the audio stream (here 0-9 ms short of the picture)
        assert abs(len(whole.audio) - info.audio_duration_s * SAMPLE_RATE) < 0.01 * SAMPLE_RATE
        # Real speech: not silent, not clipped.
        assert 0.01 < np.abs(whole.audio).max() <= 1.0


def test_yielded_buffers_are_not_retained(tone_video):
    """Memory stays flat in video length: once a segment is handed out, the decoder keeps no
    reference to its frames (bench/media_memory.py measures the same on a 30-minute video)."""
    import gc
    import weakref

    gen = iter_segments(tone_video, [(0.0, 1.0), (2.0, 3.0), (4.0, 5.0)], fps=2.0)
    first = next(gen)
    ref = weakref.ref(first.frames[0])
    del first
    second = next(gen)  # the generator is still alive and mid-file
    gc.collect()
    assert ref() is None
    assert second.error is None
    gen.close()
