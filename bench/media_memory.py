"""Media decoding benchmarks: speed on the real IEMOCAP clips, memory on a long generated video.

    uv run python -m bench.media_memory speed            # 52 clips in ../shared/data/iemocap/clips
    uv run python -m bench.media_memory memory --minutes 30 3

speed: decode every clip once through iter_segments (whole clip as one segment, 16 kHz mono audio
+ frames at --fps), print one JSON line with seconds of media, wall seconds and realtime_factor
(media seconds per wall second), for audio+frames, audio only and frames only.

memory: write a --minutes long 320x240 10 fps h264 + AAC video (cached under --work), then decode it
in a fresh subprocess as 3 s utterances every 4 s (audio + frames at --fps, results dropped as they
come, like extraction does) and print the child's peak RSS. Several lengths show whether memory is
flat in video length.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.dataset.media import SAMPLE_RATE, iter_segments, probe
from pipeline.dataset.media_writer import write_video

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "iemocap" / "clips"
W, H, VIDEO_FPS = 320, 240, 10


def bench_speed(clips_dir: Path, fps: float) -> dict:
    clips = sorted(clips_dir.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no clips in {clips_dir}")
    media_s = sum(probe(p).duration_s for p in clips)
    out = {"bench": "media_speed", "clips": len(clips), "media_s": round(media_s, 2), "fps": fps}
    for name, audio, frames in (
        ("av", True, True),
        ("audio", True, False),
        ("frames", False, True),
    ):
        t0 = time.perf_counter()
        n_frames = 0
        for p in clips:
            for seg in iter_segments(
                p, [(0.0, None)], fps=fps, want_audio=audio, want_frames=frames
            ):
                assert seg.error is None, (p, seg.error)
                n_frames += len(seg.frames)
        wall = time.perf_counter() - t0
        out[f"{name}_wall_s"] = round(wall, 2)
        out[f"{name}_realtime_factor"] = round(media_s / wall, 1)
        out[f"{name}_frames"] = n_frames
    return out


def _frames(n: int):
    """A moving square on a drifting gradient: cheap to make, not trivially compressible."""
    yy, xx = np.mgrid[0:H, 0:W]
    for k in range(n):
        frame = np.empty((H, W, 3), np.uint8)
        frame[..., 0] = (xx + k) % 256
        frame[..., 1] = (yy + 2 * k) % 256
        frame[..., 2] = 128
        x, y = (k * 3) % (W - 40), (k * 2) % (H - 40)
        frame[y : y + 40, x : x + 40] = 255
        yield frame


def make_long_video(path: Path, minutes: float) -> Path:
    if path.is_file():
        return path
    seconds = minutes * 60
    t = np.arange(int(seconds * SAMPLE_RATE), dtype=np.float64) / SAMPLE_RATE
    audio = (0.2 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.25 * t) > 0)).astype(
        np.float32
    )
    del t
    tmp = path.with_suffix(".tmp.mp4")
    write_video(tmp, _frames(int(seconds * VIDEO_FPS)), VIDEO_FPS, audio)
    tmp.replace(path)
    return path


def decode_long(path: Path, fps: float) -> dict:
    """Run in the child process: decode utterance-like segments, report peak RSS."""
    duration = probe(path).duration_s
    segments = [(s, s + 3.0) for s in np.arange(0.0, duration - 3.0, 4.0)]
    t0 = time.perf_counter()
    n_audio = n_frames = n_err = 0
    for seg in iter_segments(path, segments, fps=fps):
        n_err += seg.error is not None
        n_audio += 0 if seg.audio is None else len(seg.audio)
        n_frames += len(seg.frames)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {
        "bench": "media_memory",
        "video": path.name,
        "media_s": round(duration, 1),
        "segments": len(segments),
        "errors": n_err,
        "audio_s": round(n_audio / SAMPLE_RATE, 1),
        "frames": n_frames,
        "wall_s": round(wall, 1),
        "realtime_factor": round(duration / wall, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--clips", type=Path, default=CLIPS)
    sp.add_argument("--fps", type=float, default=2.0)
    mp = sub.add_parser("memory")
    mp.add_argument("--minutes", type=float, nargs="+", default=[30.0])
    mp.add_argument("--fps", type=float, default=2.0)
    mp.add_argument("--work", type=Path, default=Path("/tmp/erc_bench_media"))
    cp = sub.add_parser("_child")  # internal: the measured decode in a fresh process
    cp.add_argument("path", type=Path)
    cp.add_argument("--fps", type=float, default=2.0)
    args = parser.parse_args(argv)

    if args.mode == "speed":
        print(json.dumps(bench_speed(args.clips, args.fps)))
    elif args.mode == "_child":
        print(json.dumps(decode_long(args.path, args.fps)))
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        for minutes in args.minutes:
            t0 = time.perf_counter()
            video = make_long_video(args.work / f"long_{minutes:g}min.mp4", minutes)
            made_s = time.perf_counter() - t0
            child = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.media_memory",
                    "_child",
                    str(video),
                    "--fps",
                    str(args.fps),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            result["generate_s"] = round(made_s, 1)
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
