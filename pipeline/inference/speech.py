"""Voice-activity detection: where in a recording someone speaks (speech recognition inside those
regions is pipeline/inference/asr.py).

    detect_speech(audio, vad="auto") -> list[(start_s, end_s)]  VAD on float32 [S] mono 16 kHz
    detect_speech_silero(audio) / detect_speech_energy(audio)   the two detectors

Two VADs, one policy: gaps under 0.3 s are pauses inside a turn (merged), blips under 0.3 s are
clicks (dropped), regions over 15 s are split (so each fits Whisper's 30 s window with room).

- ``silero``: silero-vad (MIT; the trained network ships in the wheel, TorchScript, CPU), speech
  probability per 32 ms window, threshold 0.5 (its default), its own splitting of long regions at
  the longest silence. The VAD for real speech: on ../shared/media/speech/pyannote_sample.wav
  (bench/vad_quality.py, BENCHMARKS.md) its 10 ms frame F1 against the who-spoke-when reference
  is 0.989 (energy 0.986: clean telephone speech is easy), and with loud non-speech noise
  bursts added 0.990 (energy 0.937: it marks every burst as speech). ~1 s per 30 s, one thread.
- ``energy``: RMS energy in 30 ms frames (WebRTC VAD's longest frame) against a threshold that
  adapts to the recording, between the noise floor (10th percentile of frame energy) and the
  speech level (95th percentile); long regions split at their quietest frame. No model; finds
  any loud sound, voice or not.
- ``auto`` (the default): silero, unless its speech is under ``AUTO_MIN_SHARE`` (a quarter) of
  the time the energy VAD finds loud: then the loud sound is mostly not speech to a trained VAD,
  which is what synthetic voices are (the demo's generated tones: silero keeps 0.8 s of 11.7 s,
  the energy VAD all five turns) and what the energy VAD alone did before silero; on real
  speech the two agree on the amount (pyannote_sample: 22.7 s vs 22.8 s). A recording of real
  speech under loud non-speech noise is where this guess is wrong: pass ``vad="silero"``.
"""

from __future__ import annotations

import logging
import threading
import warnings
from functools import lru_cache

import numpy as np

from pipeline.dataset.media import SAMPLE_RATE

log = logging.getLogger(__name__)

FRAME_S = 0.030
MERGE_GAP_S = 0.3
MIN_SPEECH_S = 0.3
MAX_SPEECH_S = 15.0
MIN_DYNAMIC_DB = (
    6.0  # speech level less than this above the floor: nothing to detect (silence/noise)
)
THRESHOLD_FRACTION = 0.3  # threshold = floor + 0.3 * (speech level - floor), in dB
SILERO_THRESHOLD = 0.5  # speech probability; silero-vad's default
SILERO_PAD_S = 0.03  # silero-vad's default padding of each region (speech_pad_ms=30)
VADS = ("auto", "silero", "energy")
AUTO_MIN_SHARE = 0.25  # auto: silero's speech time below this share of energy's -> energy
_silero_lock = threading.Lock()  # the TorchScript model keeps state between windows


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
    finds: module docstring), "silero" or "energy".
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


@lru_cache(maxsize=1)
def _silero_model():
    import torch

    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad  # importing it sets torch's threads to 1: undo that

    torch.set_num_threads(threads)
    with warnings.catch_warnings():  # its importlib.resources.path and torch.jit.load deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad()  # TorchScript from the wheel (silero_vad/data/silero_vad.jit)


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
