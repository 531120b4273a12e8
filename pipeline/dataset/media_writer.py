"""Media encoding: RGB frames + mono audio -> an mp4, for the demo data, tests and benchmarks.

    write_video(path, frames, fps, audio) -> Path

The counterpart of pipeline/dataset/media.py (which decodes): PyAV (bundled FFmpeg), h264 + AAC
when available. Nothing in extraction or prediction writes video; only their inputs are made here.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.dataset.media import SAMPLE_RATE


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    crf: int = 28,
    preset: str = "ultrafast",
) -> Path:
    """Encode RGB uint8 [H, W, 3] frames (H, W even) + optional float32 [S] mono audio to mp4.

    h264 (libx264) + AAC when FFmpeg has them, else mpeg4. Audio packets are interleaved with the
    video as it goes, so the muxer never queues the whole file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    container = av.open(str(path), mode="w")
    try:
        v_stream = a_stream = None
        audio_written = 0
        chunk = 1024  # AAC frame size
        for n, rgb in enumerate(frames):
            if v_stream is None:
                v_stream = container.add_stream(codec, rate=rate)
                v_stream.height, v_stream.width = rgb.shape[:2]
                v_stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    # ultrafast: ~3x faster than veryfast for generated content, files ~2x larger.
                    v_stream.options = {"crf": str(crf), "preset": preset}
                if audio is not None:
                    a_stream = container.add_stream("aac", rate=sample_rate, layout="mono")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = n
            container.mux(v_stream.encode(frame))
            # Audio up to this frame's time plus one frame (interleaving, bounded muxer queue).
            until = (
                min(len(audio), round((n + 1) / float(rate) * sample_rate))
                if audio is not None
                else 0
            )
            while a_stream is not None and audio_written + chunk <= until:
                container.mux(
                    a_stream.encode(_audio_frame(audio, audio_written, chunk, sample_rate))
                )
                audio_written += chunk
        if v_stream is None:
            raise ValueError(f"{path}: no frames to write")
        while a_stream is not None and audio_written < len(audio):
            n = min(chunk, len(audio) - audio_written)
            container.mux(a_stream.encode(_audio_frame(audio, audio_written, n, sample_rate)))
            audio_written += n
        container.mux(v_stream.encode(None))
        if a_stream is not None:
            container.mux(a_stream.encode(None))
    finally:
        container.close()
    return path


def _audio_frame(audio: np.ndarray, offset: int, n: int, sample_rate: int) -> av.AudioFrame:
    data = np.asarray(audio[offset : offset + n], dtype=np.float32)[None, :]  # [1, n] planar mono
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = offset
    return frame
