"""Voice-activity detection against a human reference; prints ONE JSON line.

    python -m bench.vad_quality            # ../shared/media/speech/pyannote_sample.wav

The recording (30 s, two speakers on a telephone line) comes with a who-spoke-when ``.rttm`` and
a timed transcript ``.stm``. Speech in the reference = the union of its turns. Per VAD
(pipeline.inference.segment: silero, energy, auto) and per reference:

- frame scores on 10 ms frames (speech = positive class): precision, recall, F1, and accuracy
  over all frames (non-speech included);
- boundary error: reference regions are the union with pauses under 0.3 s merged (the VADs'
  own merge gap, so both sides have the same granularity); ``ref_to_hyp_s`` is the mean distance
  from each reference start/end to the nearest VAD boundary (missed or shifted boundaries),
  ``hyp_to_ref_s`` the same from each VAD boundary to the reference (spurious ones);
- seconds of speech found and the number of regions.

The clean recording is speech from 6.7 s on, with one click-like sound at 2.4 s; so two
harder copies are scored too, made here with a fixed seed: ``bursts`` adds three bursts of
white noise at the speech's RMS in the silent lead-in (1.0-1.8, 3.0-3.5, 4.5-5.5 s: loud sound
that is not speech), ``snr10`` adds stationary white noise 10 dB below the speech's RMS.

Cheap (a second of CPU); results in BENCHMARKS.md. tests/inference/test_vad.py asserts silero's frame F1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pipeline.inference.segment import MERGE_GAP_S, VADS, _silero_model, detect_speech

FRAME_S = 0.010  # 10 ms scoring frames: the usual resolution of VAD / diarisation scoring
SPEECH = Path(__file__).resolve().parents[2] / "shared" / "media" / "speech"
SAMPLE = SPEECH / "pyannote_sample.wav"

Regions = list[tuple[float, float]]


def read_rttm(path: Path) -> Regions:
    """SPEAKER lines -> [(start_s, end_s)] per turn (overlaps kept; union taken later)."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "SPEAKER":
            start, dur = float(parts[3]), float(parts[4])
            out.append((start, start + dur))
    return out


def read_stm(path: Path) -> Regions:
    """``file channel speaker start end text`` lines -> [(start_s, end_s)]."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) >= 5 and not line.startswith(";;"):
            out.append((float(parts[3]), float(parts[4])))
    return out


def frame_mask(regions: Regions, duration_s: float) -> np.ndarray:
    """bool [F] over 10 ms frames: True where a frame's centre lies in any region."""
    centres = (np.arange(int(round(duration_s / FRAME_S))) + 0.5) * FRAME_S  # [F]
    mask = np.zeros(len(centres), bool)
    for a, b in regions:
        mask |= (centres >= a) & (centres < b)
    return mask


def union(regions: Regions, merge_gap_s: float = 0.0) -> Regions:
    """Sorted, overlaps joined, gaps under ``merge_gap_s`` joined."""
    out: list[list[float]] = []
    for a, b in sorted(regions):
        if out and a - out[-1][1] < merge_gap_s + 1e-9:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def frame_scores(ref: Regions, hyp: Regions, duration_s: float) -> dict[str, float]:
    r, h = frame_mask(ref, duration_s), frame_mask(hyp, duration_s)  # [F] each
    tp, fp, fn = int((r & h).sum()), int((~r & h).sum()), int((r & ~h).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "accuracy": round(float((r == h).mean()), 4),
    }


def boundary_error(ref: Regions, hyp: Regions) -> dict[str, float | None]:
    """Mean distance (s) from each boundary of one side to the nearest of the other."""
    rb = np.array([t for seg in ref for t in seg])
    hb = np.array([t for seg in hyp for t in seg])
    if not len(rb) or not len(hb):
        return {"ref_to_hyp_s": None, "hyp_to_ref_s": None}

    def mean_nearest(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a[:, None] - b[None, :]).min(axis=1).mean())

    return {
        "ref_to_hyp_s": round(mean_nearest(rb, hb), 3),
        "hyp_to_ref_s": round(mean_nearest(hb, rb), 3),
    }


def score(hyp: Regions, ref_turns: Regions, duration_s: float) -> dict:
    ref = union(ref_turns)
    return {
        **frame_scores(ref, hyp, duration_s),
        **boundary_error(union(ref_turns, MERGE_GAP_S), hyp),
        "speech_s": round(sum(b - a for a, b in hyp), 2),
        "regions": len(hyp),
    }


BURSTS = ((1.0, 1.8), (3.0, 3.5), (4.5, 5.5))  # s, inside the 6.7 s before the first word


def conditions(audio: np.ndarray, sr: int, ref: Regions, seed: int = 0) -> dict[str, np.ndarray]:
    """clean, bursts, snr10 copies of ``audio`` (module docstring)."""
    rng = np.random.default_rng(seed)
    speech = frame_mask(ref, len(audio) / sr).repeat(round(FRAME_S * sr))[: len(audio)]
    rms = float(np.sqrt(np.mean(audio[: len(speech)][speech] ** 2)))  # speech RMS
    bursts = audio.copy()
    for a, b in BURSTS:
        i, j = round(a * sr), round(b * sr)
        bursts[i:j] += rms * rng.standard_normal(j - i).astype(np.float32)
    snr10 = audio + (rms / np.sqrt(10)) * rng.standard_normal(len(audio)).astype(np.float32)
    return {"clean": audio, "bursts": bursts, "snr10": snr10.astype(np.float32)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wav", type=Path, default=SAMPLE)
    args = parser.parse_args(argv)
    import soundfile
    import torch

    torch.set_num_threads(1)
    audio, sr = soundfile.read(str(args.wav), dtype="float32")  # [S] mono 16 kHz
    duration = len(audio) / sr
    refs = {
        "rttm": read_rttm(args.wav.with_suffix(".rttm")),
        "stm": read_stm(args.wav.with_suffix(".stm")),
    }
    result: dict = {"file": args.wav.name, "duration_s": round(duration, 2), "frame_s": FRAME_S}
    for ref_name, turns in refs.items():
        result[f"reference_{ref_name}_speech_s"] = round(sum(b - a for a, b in union(turns)), 2)
    _silero_model()  # loaded before the clock starts (once per process)
    for cond, x in conditions(audio, sr, union(refs["rttm"])).items():
        for vad in VADS:
            t0 = time.perf_counter()
            hyp = detect_speech(x, sr, vad=vad)
            seconds = time.perf_counter() - t0
            result[f"{cond}/{vad}"] = {
                "seconds": round(seconds, 3),
                **{ref_name: score(hyp, turns, duration) for ref_name, turns in refs.items()},
            }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
