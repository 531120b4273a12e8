"""Media decoding: probe a file, and cut it into utterance segments in one streaming pass.

    probe(path) -> MediaInfo
    iter_segments(path, segments, fps) -> Iterator[SegmentMedia]   one decode per file

Writing video (the demo data, tests, benchmarks) is pipeline/dataset/media_writer.py.

Audio comes out as float32 [S] mono at SAMPLE_RATE (what wav2vec2 and openSMILE expect); frames as
RGB uint8 [H, W, 3] sampled at `fps` inside each segment. PyAV (bundled FFmpeg) does the decoding, so
no system ffmpeg is needed (../shared/DESIGN.md, "Environment facts").

Memory stays bounded in the length of the video: packets are decoded in order and dropped; a segment
buffers its audio only while the decoder is inside it, and a video frame is converted to RGB only when
it is the frame shown at a sampling time.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz; the rate of wav2vec2 and of the openSMILE configs
# A segment may end this far past the last decoded sample and still count as inside the media:
# IEMOCAP transcript end times overshoot the recordings by a few ms.
END_TOLERANCE_S = 0.25


class MediaError(RuntimeError):
    """A file that cannot be opened or decoded at all (missing, corrupt, truncated)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class MediaInfo:
    path: str
    duration_s: float | None  # container duration (None when the file does not say)
    has_audio: bool
    has_video: bool
    fps: float | None  # video average frame rate
    width: int | None
    height: int | None
    n_frames_est: int | None  # from the stream header, else duration * fps
    audio_sample_rate: int | None  # native rate, before resampling to SAMPLE_RATE
    audio_duration_s: float | None = None  # per-stream durations: a mismatch hints misalignment
    video_duration_s: float | None = None


@dataclass
class SegmentMedia:
    index: int  # position in the `segments` argument
    start_s: float
    end_s: float
    audio: np.ndarray | None  # float32 [S], S = round(end * 16k) - round(start * 16k), or up
    # to the audio stream's own end for an open end (None: the file's duration is its longest stream's)
    frames: list[np.ndarray]  # each uint8 [H, W, 3] RGB; read-only (may be shared between segments)
    error: str | None = None  # any problem; None = everything asked for is here
    audio_error: str | None = None  # the audio-only part of `error` (frames may still be usable)
    frames_error: str | None = None


def sample_times(start_s: float, end_s: float, fps: float) -> np.ndarray:
    """Frame sampling times in [start, end): n = max(1, round(duration * fps)) evenly spaced centres.

    A 3 s segment at 2 fps gives 6 frames; a 0.2 s one still gives 1.
    """
    n = max(1, int(round((end_s - start_s) * fps)))
    return start_s + (np.arange(n) + 0.5) * (end_s - start_s) / n  # [n]


def _open(path: str | Path) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise MediaError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise MediaError(path, "empty file")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(path, f"cannot open media ({exc})") from exc


def _stream_duration(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _info(container, path) -> MediaInfo:
    a = container.streams.audio[0] if container.streams.audio else None
    v = container.streams.video[0] if container.streams.video else None
    a_dur, v_dur = (_stream_duration(a) if a else None), (_stream_duration(v) if v else None)
    duration = container.duration / 1e6 if container.duration else None
    if duration is None:
        duration = max((d for d in (a_dur, v_dur) if d is not None), default=None)
    fps = None
    if v is not None:
        rate = v.average_rate or v.guessed_rate or v.base_rate
        fps = float(rate) if rate else None
    n_frames = None
    if v is not None:
        n_frames = v.frames or (int(round(duration * fps)) if duration and fps else None)
    return MediaInfo(
        path=str(path),
        duration_s=duration,
        has_audio=a is not None,
        has_video=v is not None,
        fps=fps,
        width=v.codec_context.width if v else None,
        height=v.codec_context.height if v else None,
        n_frames_est=n_frames,
        audio_sample_rate=a.codec_context.sample_rate if a else None,
        audio_duration_s=a_dur,
        video_duration_s=v_dur,
    )


def probe(path: str | Path) -> MediaInfo:
    """Stream layout and durations from the container header (no decoding)."""
    container = _open(path)
    try:
        return _info(container, path)
    finally:
        container.close()


def _segment_error(start: float, end: float) -> str | None:
    if math.isnan(start) or math.isnan(end):
        return "missing segment bounds"
    if start < 0:
        return f"negative start ({start:.3f} s)"
    if end == start:
        return f"zero-length segment ({start:.3f}-{end:.3f} s)"
    if end < start:
        return f"inverted segment ({start:.3f}-{end:.3f} s)"
    return None


@dataclass
class _Open:
    """Decode state of one requested segment."""

    index: int
    start: float
    end: float
    a0: int = 0  # audio sample range [a0, a1) at SAMPLE_RATE, absolute in the file
    a1: int = 0
    filled: int = 0  # absolute sample index written up to
    want_audio: bool = False
    parts: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray | None] = field(default_factory=list)
    pending: int = 0  # frame slots not yet filled
    open_end: bool = False  # asked "until the end": each stream ends where it ends
    audio_error: str | None = None
    frames_error: str | None = None

    @property
    def audio_done(self) -> bool:
        return not self.want_audio or self.filled >= self.a1

    @property
    def done(self) -> bool:
        return self.audio_done and self.pending == 0

    def take_audio(self, chunk: np.ndarray, g0: int) -> None:
        """Copy the part of `chunk` (float32 [n], absolute start sample g0) inside the segment."""
        g1 = g0 + len(chunk)
        if g1 <= self.filled or g0 >= self.a1:
            return
        if g0 > self.filled:  # audio starts late or has a hole: keep the timeline with silence
            self.parts.append(np.zeros(min(g0, self.a1) - self.filled, np.float32))
            self.filled = min(g0, self.a1)
        hi = min(g1, self.a1)
        if hi > self.filled:
            self.parts.append(chunk[self.filled - g0 : hi - g0].copy())
            self.filled = hi

    def result(self, error: str | None = None) -> SegmentMedia:
        audio = None
        if self.want_audio and self.audio_error is None and error is None:
            audio = np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
        frames = [f for f in self.frames if f is not None]
        had_frames = bool(self.frames)
        # Drop the buffers: the decoder's bookkeeping still references this object until the end.
        self.parts, self.frames = [], []
        errors = [e for e in (error, self.audio_error, self.frames_error) if e]
        return SegmentMedia(
            index=self.index,
            start_s=self.start,
            end_s=self.end,
            audio=audio,
            frames=frames if not (error or self.frames_error) else [],
            error="; ".join(errors) if errors else None,
            audio_error=self.audio_error or (error if self.want_audio else None),
            frames_error=self.frames_error or (error if had_frames else None),
        )


def iter_segments(
    path: str | Path,
    segments: Sequence[tuple[float, float | None]],
    fps: float = 2.0,
    want_audio: bool = True,
    want_frames: bool = True,
    max_frame_side: int | None = None,
    end_tolerance_s: float = END_TOLERANCE_S,
) -> Iterator[SegmentMedia]:
    """Decode `path` once and yield one SegmentMedia per (start_s, end_s) in `segments`.

    Segments may overlap and come in any order; results are yielded as the decoder passes each
    segment's end (invalid segments first), with `index` pointing back into `segments`. An end of
    None/NaN means "until the end of the media" (of each stream: a sound track that stops before the
    picture gives the sound there is, without padding). Per-segment problems (zero-length, inverted,
    negative start, past the end, no audio/video stream) go into `error`; the others still complete.
    Raises MediaError for a missing, empty, corrupt or undecodable file.
    """
    container = _open(path)
    try:
        info = _info(container, path)
        a_stream = container.streams.audio[0] if (want_audio and info.has_audio) else None
        v_stream = container.streams.video[0] if (want_frames and info.has_video) else None
        if v_stream is not None and info.fps and fps > info.fps:
            # No more distinct frames exist, and the sampling times (and frames held per segment)
            # grow with the rate: a huge rate once allocated until the kernel killed the process.
            log.warning(
                "%s: sampling at the video's own %.4g fps, not the %.4g fps asked",
                path,
                info.fps,
                fps,
            )
            fps = info.fps
        live: list[_Open] = []
        for i, (start, end) in enumerate(segments):
            start = float(start)
            end = float("nan") if end is None else float(end)
            open_end = math.isnan(end) and info.duration_s is not None
            if open_end:
                end = info.duration_s  # the longest stream's; a shorter one ends at its own end
            err = _segment_error(start, end)
            if err:
                yield SegmentMedia(i, start, end, None, [], err, err, err)
                continue
            seg = _Open(i, start, end, want_audio=a_stream is not None, open_end=open_end)
            seg.a0, seg.a1 = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
            seg.filled = seg.a0
            if want_audio and a_stream is None:
                seg.audio_error = "no audio stream"
            if want_frames and v_stream is None:
                seg.frames_error = "no video stream"
            if v_stream is not None:
                seg.frames = [None] * len(sample_times(start, end, fps))
                seg.pending = len(seg.frames)
            live.append(seg)
        if not live:
            return
        if a_stream is None and v_stream is None:
            for seg in live:
                yield seg.result()
            return
        yield from _decode(
            container, path, info, live, a_stream, v_stream, fps, max_frame_side, end_tolerance_s
        )
    finally:
        container.close()


def _decode(
    container, path, info, live, a_stream, v_stream, fps, max_side, tol
) -> Iterator[SegmentMedia]:
    """The single decoding pass behind iter_segments."""
    # Audio: segments ordered by first sample; `opened` holds only those the decoder is inside.
    by_start = sorted((s for s in live if s.want_audio), key=lambda s: s.a0)
    next_open, opened = 0, []
    # Frames: every sampling time of every segment, in time order: (t, segment, slot).
    slots = sorted(
        (
            (t, s, k)
            for s in live
            if s.pending
            for k, t in enumerate(sample_times(s.start, s.end, fps))
        ),
        key=lambda x: x[0],
    )
    next_slot = 0
    remaining = {s.index: s for s in live}
    touched: list[_Open] = []  # segments whose audio or frames just completed
    resampler = (
        av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE) if a_stream else None
    )
    audio_pos: int | None = None  # absolute sample index of the next resampled sample
    prev_frame, prev_rgb, last_video_t, frame_dur = None, None, None, 1.0 / (info.fps or 25.0)
    out_size = None
    if v_stream is not None:
        v_stream.thread_type = "AUTO"  # frame threads: ~2x on h264
        w, h = info.width or 0, info.height or 0
        if max_side and max(w, h) > max_side:
            scale = max_side / max(w, h)
            out_size = (max(2, round(w * scale)), max(2, round(h * scale)))
    stopped: str | None = None

    def to_rgb(frame) -> np.ndarray:
        if out_size:
            return frame.to_ndarray(format="rgb24", width=out_size[0], height=out_size[1])
        return frame.to_ndarray(format="rgb24")  # [H, W, 3] uint8

    def feed_audio(chunk: np.ndarray) -> None:
        nonlocal audio_pos, next_open, opened
        g0, g1 = audio_pos, audio_pos + len(chunk)
        while next_open < len(by_start) and by_start[next_open].a0 < g1:
            opened.append(by_start[next_open])
            next_open += 1
        for seg in opened:
            seg.take_audio(chunk, g0)
        touched.extend(s for s in opened if s.audio_done)
        opened = [s for s in opened if not s.audio_done]
        audio_pos = g1

    def finished() -> list[SegmentMedia]:
        out = [s for s in touched if s.done and s.index in remaining]
        touched.clear()
        for s in out:
            del remaining[s.index]
        return [s.result() for s in out]

    streams = [s for s in (a_stream, v_stream) if s is not None]
    packets = container.demux(streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:  # truncated file: keep what was decoded
            stopped = f"demuxing stopped ({exc})"
            break
        try:
            frames = packet.decode()
        except av.error.FFmpegError:  # one corrupt packet: skip it, as FFmpeg's own tools do
            continue
        for frame in frames:
            if isinstance(frame, av.AudioFrame):
                if audio_pos is None:
                    audio_pos = round((frame.time or 0.0) * SAMPLE_RATE)
                for out in resampler.resample(frame):
                    feed_audio(out.to_ndarray().reshape(-1))  # [1, n] -> [n]
            else:
                t = frame.time if frame.time is not None else (last_video_t or 0.0) + frame_dur
                while next_slot < len(slots) and slots[next_slot][0] < t:
                    _, seg, k = slots[next_slot]
                    if prev_frame is None:  # sampling time before the first frame: show the first
                        prev_frame, prev_rgb = frame, None
                    if prev_rgb is None:
                        prev_rgb = to_rgb(prev_frame)
                    seg.frames[k] = prev_rgb
                    seg.pending -= 1
                    if seg.pending == 0:
                        touched.append(seg)
                    next_slot += 1
                prev_frame, prev_rgb, last_video_t = frame, None, t
        if touched:
            yield from finished()

    if resampler is not None and audio_pos is not None:
        for out in resampler.resample(None):  # flush the resampler's tail
            feed_audio(out.to_ndarray().reshape(-1))
    if (a_stream is not None and audio_pos is None) and (v_stream is None or last_video_t is None):
        raise MediaError(path, stopped or "no decodable audio or video")
    if a_stream is None and v_stream is not None and last_video_t is None:
        raise MediaError(path, stopped or "no decodable video frames")

    # End of stream: what is left either ends within the tolerance (pad / hold the last frame) or
    # lies past the end of the media.
    audio_end = audio_pos / SAMPLE_RATE if audio_pos is not None else None
    video_end = last_video_t + frame_dur if last_video_t is not None else None
    media_end = max(e for e in (audio_end, video_end, 0.0) if e is not None)
    for seg in sorted(remaining.values(), key=lambda s: s.index):
        if seg.want_audio and audio_pos is None:
            seg.want_audio, seg.audio_error = False, "no decodable audio"
        if seg.pending and last_video_t is None:
            seg.pending, seg.frames_error = 0, "no decodable video frames"
        if (seg.end > media_end + tol and not seg.open_end) or seg.start >= media_end:
            reason = f"segment past the end ({seg.start:.3f}-{seg.end:.3f} s, media ends at {media_end:.3f} s)"
            if stopped:
                reason += f"; {stopped}"
            yield seg.result(error=reason)
            continue
        if seg.want_audio and seg.filled < seg.a1 and not seg.open_end:
            seg.parts.append(np.zeros(seg.a1 - seg.filled, np.float32))
            seg.filled = seg.a1
        if seg.pending:
            rgb = to_rgb(prev_frame)
            seg.frames = [f if f is not None else rgb for f in seg.frames]
            seg.pending = 0
        yield seg.result()
