"""Speech recognition: the packaged faster-whisper tiny.en on real speech, its pinned hash, model
resolution, words -> utterances, and automatic segmentation of a long recording in windows.

Real speech comes from ../shared/media/speech (CMU ARCTIC, pyannote's sample); those tests skip
without it ($ERC_SHARED_DIR points elsewhere). The packaged model needs no network.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from extractors.weights import WeightsUnavailableError
from pipeline.dataset.adapters.shared import find_shared_root
from pipeline.dataset.media import SAMPLE_RATE as SR
from pipeline.inference.asr import (
    PACKAGED_SHA256,
    SPLIT_PAUSE_S,
    AsrModelError,
    Word,
    asr_enabled,
    build_tiny_whisper,
    load_asr,
    packaged_model_dir,
    utterances,
    verify_model_file,
)
from pipeline.inference.segment import ASR_COLUMNS, WINDOW_S, segment_video

try:
    SPEECH = find_shared_root() / "media" / "speech"
except FileNotFoundError:
    SPEECH = Path("/nonexistent")
needs_speech = pytest.mark.skipif(not SPEECH.is_dir(), reason="../shared absent")
ARCTIC_A0007 = "and you always want to see it in the superlative degree"  # its CMU ARCTIC prompt


def normalise(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def asr():
    return load_asr(threads=1)


@pytest.fixture(scope="module")
def a0007() -> np.ndarray:
    import soundfile

    audio, sr = soundfile.read(str(SPEECH / "pysptk_arctic_a0007.wav"), dtype="float32")
    assert sr == SR and audio.ndim == 1
    return audio


@needs_speech
@pytest.mark.shared
def test_packaged_model_transcribes_real_speech(asr, a0007):
    assert asr.name == "packaged:tiny.en"
    duration = len(a0007) / SR
    words = asr.words(a0007, [(0.0, duration)])
    assert normalise("".join(w.text for w in words)) == ARCTIC_A0007.split()  # every word, exact
    starts = [w.start_s for w in words]
    assert starts == sorted(starts) and 0.0 <= starts[0] < 0.5 and words[-1].end_s <= duration
    assert all(0.0 < w.probability <= 1.0 and w.avg_logprob < 0 for w in words)
    # the same words when the speech is one region among silence: times come back in media time
    padded = np.concatenate([np.zeros(2 * SR, np.float32), a0007, np.zeros(SR, np.float32)])
    again = asr.words(padded, [(2.0, 2.0 + duration)])
    assert normalise("".join(w.text for w in again)) == ARCTIC_A0007.split()
    assert abs(again[0].start_s - 2.0 - words[0].start_s) < 0.1
    assert all(2.0 <= w.start_s <= w.end_s <= 2.0 + duration for w in again)


@pytest.mark.shared
def test_the_same_recording_gets_the_same_words_every_time(asr):
    """14 real IEMOCAP clips joined (72 s): the decoder is unsure of its last 30-s window (its
    log-probability fails Whisper's threshold). With faster-whisper's fallback to sampling that
    window came out different on each of 3 runs ("...if only I need! Ciao!", "...CAAARGH!");
    decoding at temperature 0 gives one transcript."""
    from pipeline.dataset.adapters.shared import load_shared_clips
    from pipeline.dataset.media import iter_segments

    try:
        clips = load_shared_clips()
    except FileNotFoundError:
        pytest.skip("../shared absent")
    names = clips["video_path"].str.contains(r"script02_2_(?:F037|M039)|script03")
    audio = np.concatenate(  # [S] 16 kHz, 72.5 s
        [next(iter_segments(v, [(0.0, None)], want_frames=False)).audio
         for v in clips.loc[names, "video_path"]]
    )  # fmt: skip
    assert names.sum() == 14 and 70 < len(audio) / SR < 75
    regions = [(0.0, len(audio) / SR)]
    first, second = asr.words(audio, regions), asr.words(audio, regions)
    assert len(first) > 100 and first == second


def test_tampered_packaged_model_is_refused(tmp_path):
    folder = packaged_model_dir()
    assert folder is not None and (folder / "model.bin").is_file()
    copy = Path(shutil.copytree(folder, tmp_path / "model"))
    cache = tmp_path / "cache"
    verify_model_file(copy / "model.bin", PACKAGED_SHA256, cache)  # the real bytes pass
    assert str((copy / "model.bin").resolve()) in (cache / "verified.json").read_text()
    stat = (copy / "model.bin").stat()
    with open(copy / "model.bin", "r+b") as f:  # flip one byte, keep size and mtime
        f.seek(stat.st_size // 2)
        byte = f.read(1)
        f.seek(stat.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(copy / "model.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(AsrModelError) as err:
        verify_model_file(copy / "model.bin", PACKAGED_SHA256, cache)
    msg = str(err.value)
    assert str((copy / "model.bin").resolve()) in msg and PACKAGED_SHA256 in msg
    actual = re.search(r"actual ([0-9a-f]{64})", msg)
    assert actual and actual.group(1) != PACKAGED_SHA256


def test_model_names_and_folders(tmp_path):
    assert not asr_enabled("none") and not asr_enabled(None) and asr_enabled("tiny.en")
    with pytest.raises(AsrModelError, match="unknown speech model 'whisper-huge'.*large-v3"):
        load_asr("whisper-huge", cache_dir=tmp_path)
    with pytest.raises(AsrModelError, match="not a folder"):
        load_asr(str(tmp_path / "missing"), cache_dir=tmp_path)
    (tmp_path / "junk").mkdir()
    with pytest.raises(AsrModelError, match="neither a CTranslate2 Whisper folder"):
        load_asr(str(tmp_path / "junk"), cache_dir=tmp_path)
    ct2 = Path(shutil.copytree(packaged_model_dir(), tmp_path / "ct2"))
    (ct2 / "tokenizer.json").unlink()
    with pytest.raises(AsrModelError, match="without tokenizer.json"):
        load_asr(str(ct2), cache_dir=tmp_path)


def test_a_hub_name_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError, match="(?s)'openai/whisper-small'.*offline"):
        load_asr("openai/whisper-small", cache_dir=tmp_path)


def test_transformers_whisper_folder_is_converted_once(tmp_path):
    """The random-init debug Whisper: converted to CTranslate2 on first use, then reused; its
    garbage words and timestamps past the audio stay inside the regions."""
    folder = build_tiny_whisper(tmp_path / "whisper")
    asr = load_asr(str(folder), threads=1, cache_dir=tmp_path / "cache")
    converted = list((tmp_path / "cache").glob("ct2-*"))
    assert len(converted) == 1 and (converted[0] / "model.bin").is_file()
    stamp = (converted[0] / "model.bin").stat().st_mtime_ns
    load_asr(str(folder), threads=1, cache_dir=tmp_path / "cache")
    assert (converted[0] / "model.bin").stat().st_mtime_ns == stamp
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
    regions = [(0.5, 1.2), (2.0, 2.8)]
    for w in asr.words(audio, regions):
        assert any(a <= w.start_s <= w.end_s <= b for a, b in regions), w
        assert "\ufffd" not in w.text


def _words(spec: str, t0: float = 0.0, step: float = 0.3) -> list[Word]:
    """'a b. | c' -> words every `step` s from t0; '|' inserts a 2 s pause."""
    out, t = [], t0
    for tok in spec.split():
        if tok == "|":
            t += 2.0
            continue
        out.append(Word(t, t + 0.25, " " + tok, 0.9, -0.2 - 0.1 * len(out), 0.01 * len(out)))
        t += step
    return out


def test_words_become_sentence_and_pause_utterances():
    words = _words("Oh. I see what you mean. | Really? | Well I never said that, did I? Yes.")
    regions = [(0.0, 2.2), (4.0, 4.5), (6.0, 10.0), (12.0, 13.0)]  # the last one: no words
    out = utterances(words, regions)
    assert [u.text for u in out] == [
        "Oh. I see what you mean.",  # "Oh." is a tiny fragment: merged into its neighbour
        "Really?",  # tiny too, but a long pause on each side: its own turn
        "Well I never said that, did I? Yes.",  # "Yes." merged back
        "",
    ]
    assert [u.source for u in out] == ["asr", "asr", "asr", "vad"]
    assert out[0].start_s == 0.0 and out[0].end_s == pytest.approx(1.5 + 0.25)
    assert out[1].start_s == pytest.approx(words[6].start_s)
    assert out[3].start_s == 12.0 and math.isnan(out[3].avg_logprob)
    # scores: the mean over the utterance's words
    assert out[1].avg_logprob == pytest.approx(words[6].avg_logprob, abs=1e-4)
    assert out[0].no_speech_prob == pytest.approx(np.mean([w.no_speech_prob for w in words[:6]]))
    # no sentence end for 40 s of words, no pause over SPLIT_PAUSE_S (0.4 s gaps, one of 0.9 s):
    # split at the longest pause, each part at most 20 s
    long = _words(" ".join(f"w{k}," if k == 30 else f"w{k}" for k in range(60)), step=0.65)
    assert SPLIT_PAUSE_S > 0.4 + 0.5
    long = [
        w if k <= 30 else Word(w.start_s + 0.5, w.end_s + 0.5,
                               w.text, w.probability, w.avg_logprob, w.no_speech_prob)
        for k, w in enumerate(long)
    ]  # fmt: skip
    parts = utterances(long, [(0.0, 50.0)])
    assert [u.text.split()[0] for u in parts] == ["w0", "w31"]
    assert all(u.end_s - u.start_s <= 20.0 for u in parts)


@needs_speech
@pytest.mark.shared
def test_long_recording_is_segmented_in_windows(tmp_path, a0007):
    """400 s (two windows), three snippets of real speech, one across the window boundary: each
    is found once, with its words, the ASR columns and media times."""
    import soundfile

    duration = 400.0
    audio = np.zeros(int(duration * SR), np.float32)
    at = [100.0, WINDOW_S - 1.5, 360.0]  # the second straddles the window boundary
    for t in at:
        audio[int(t * SR) : int(t * SR) + len(a0007)] = a0007
    path = tmp_path / "long.wav"
    soundfile.write(path, audio, SR)
    out = segment_video(path, asr=load_asr(threads=1), vad="silero")
    assert list(out["segment_source"]) == ["asr"] * 3
    for t, (_, row) in zip(at, out.iterrows(), strict=True):
        assert normalise(row["text"]) == ARCTIC_A0007.split()
        assert t - 0.1 < row["start_s"] < t + 0.6 and row["end_s"] < t + len(a0007) / SR + 0.2
        assert row["asr_avg_logprob"] < 0 and 0 <= row["asr_no_speech_prob"] < 0.5
    assert set(ASR_COLUMNS) <= set(out.columns) and set(out["speaker"]) == {"unknown"}


@needs_speech
@pytest.mark.shared
def test_real_conversation_follows_sentences(tmp_path):
    """pyannote's 30 s two-speaker sample against its .stm transcript (13 turns)."""
    sample = SPEECH / "pyannote_sample.wav"
    out = segment_video(sample, asr=load_asr(threads=1))
    ref = [line.split(None, 5) for line in sample.with_suffix(".stm").read_text().splitlines()]
    asr_rows = out[out["segment_source"] == "asr"]
    assert 8 <= len(asr_rows) <= 18  # sentences, not the VAD's three regions
    assert (asr_rows["text"].str.strip() != "").all()
    assert np.isfinite(asr_rows[list(ASR_COLUMNS)].to_numpy(float)).all()
    assert out["start_s"].is_monotonic_increasing and out["start_s"].iloc[0] > 6.5
    hyp = normalise(" ".join(asr_rows["text"]))
    reference = normalise(" ".join(r[5] for r in ref))
    assert len(set(hyp) & set(reference)) >= 0.8 * len(set(reference))


def test_word_error_rate_of_the_benchmark():
    from bench.asr_quality import edit_distance, normalise

    assert normalise("[LAUGHTER] Don't, you?  'Really' - no.") == ["don't", "you", "really", "no"]
    ref = normalise("and you always want to see it")
    assert edit_distance(ref, ref) == 0
    assert edit_distance(ref, normalise("you always want to sea it in")) == 3  # del, sub, ins
    assert edit_distance([], ["a", "b"]) == 2 and edit_distance(["a"], []) == 1
