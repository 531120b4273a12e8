"""Media sanity check: one report row per media file of a manifest, with a `suspect` flag.

    report = check_media(read_manifest("manifest.csv"), fps=1.0, face_detector=detector)
    write_report(report, "out/")  -> out/media_check.csv, out/media_check.md

Per file: duration, audio/video streams, audio vs video stream length, silence ratio (share of 25 ms
frames with RMS below `silence_db` dBFS), face-found rate (frames sampled at `fps`, judged by any
callable frames -> list[bool], e.g. an MTCNN wrapper), and the manifest's segments checked against
the duration (past the end, inverted, zero-length, negative start). MELD is known to hold corrupt and
misaligned clips; this is how they are found before extraction.

The file is decoded once, in windows of `window_s` seconds, so memory does not grow with its length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.media import END_TOLERANCE_S, SAMPLE_RATE, MediaError, iter_segments, probe

FaceDetector = Callable[[Sequence[np.ndarray]], Sequence[bool]]
FRAME_S = 0.025  # 25 ms analysis frames, the usual speech frame length
# dBFS. Measured on the 52 real IEMOCAP clips: room noise sits at -54..-50 dBFS (5th-25th percentile
# of 25 ms frames), the quietest utterance ("Yeah.", Ses01F_impro02_M011) peaks at -41.5 dBFS.
SILENCE_DB = -50.0
MAX_SILENCE = 0.95  # more silent than this -> suspect (an utterance clip is mostly speech)
MIN_FACE_RATE = 0.2  # fewer frames with a face than this -> suspect (when a detector is given)
MIN_DURATION_S = 0.3  # shorter than a syllable
MAX_AV_GAP_S = 1.0  # audio and video stream lengths differ by more -> likely misaligned
REPORT_COLUMNS = [
    "path", "n_utterances", "readable", "duration_s", "has_audio", "has_video",
    "audio_duration_s", "video_duration_s", "silence_ratio", "face_rate", "n_frames_checked",
    "n_bad_segments", "bad_segments", "suspect", "reasons",
]  # fmt: skip


def silent_frames(audio: np.ndarray, silence_db: float = SILENCE_DB) -> tuple[int, int]:
    """(silent, total) 25 ms frames of float32 [S] audio at 16 kHz (the tail < 25 ms is ignored)."""
    n = int(FRAME_S * SAMPLE_RATE)
    k = len(audio) // n
    if k == 0:
        return 0, 0
    rms = np.sqrt(np.mean(audio[: k * n].reshape(k, n).astype(np.float64) ** 2, axis=1))  # [k]
    return int((rms < 10 ** (silence_db / 20)).sum()), k


def segment_problems(
    rows: pd.DataFrame, duration: float | None, tol: float = END_TOLERANCE_S
) -> list[str]:
    """Manifest rows of one file vs its duration -> ["utterance_id: reason", ...]."""
    out = []
    for r in rows.itertuples(index=False):
        start, end = r.start_s, r.end_s
        end_eff = duration if (math.isnan(end) and duration is not None) else end
        if math.isnan(start):
            out.append(f"{r.utterance_id}: missing start")
        elif start < 0:
            out.append(f"{r.utterance_id}: negative start {start:.3f}")
        elif end_eff is not None and not math.isnan(end_eff) and end_eff == start:
            out.append(f"{r.utterance_id}: zero-length {start:.3f}-{end_eff:.3f}")
        elif end_eff is not None and not math.isnan(end_eff) and end_eff < start:
            out.append(f"{r.utterance_id}: inverted {start:.3f}-{end_eff:.3f}")
        elif duration is not None and (start >= duration or (end_eff or 0) > duration + tol):
            out.append(f"{r.utterance_id}: past the end {start:.3f}-{end_eff:.3f} > {duration:.3f}")
    return out


def check_file(
    path: str,
    rows: pd.DataFrame,
    fps: float = 1.0,
    face_detector: FaceDetector | None = None,
    silence_db: float = SILENCE_DB,
    window_s: float = 30.0,
    expect_video: bool = True,
) -> dict:
    """One report row (dict with REPORT_COLUMNS) for one media file and its manifest rows."""
    rec = {c: None for c in REPORT_COLUMNS} | {"path": path, "n_utterances": len(rows)}
    reasons: list[str] = []
    try:
        info = probe(path)
    except MediaError as exc:
        bad = segment_problems(rows, None)
        return rec | {
            "readable": False, "suspect": True, "reasons": f"unreadable: {exc.reason}",
            "n_bad_segments": len(bad), "bad_segments": "; ".join(bad[:10]),
        }  # fmt: skip
    rec.update(
        readable=True,
        duration_s=info.duration_s,
        has_audio=info.has_audio,
        has_video=info.has_video,
        audio_duration_s=info.audio_duration_s,
        video_duration_s=info.video_duration_s,
    )
    want_frames = face_detector is not None and info.has_video
    silent = total = faces = n_frames = 0
    if info.duration_s and (info.has_audio or want_frames):
        edges = np.arange(0.0, info.duration_s, window_s).tolist() + [info.duration_s]
        windows = [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
        try:
            for seg in iter_segments(
                path, windows, fps, want_audio=info.has_audio, want_frames=want_frames
            ):
                if seg.audio is not None:
                    s, t = silent_frames(seg.audio, silence_db)
                    silent, total = silent + s, total + t
                if want_frames and seg.frames:
                    found = list(face_detector(seg.frames))
                    faces, n_frames = (
                        faces + int(sum(bool(f) for f in found)),
                        n_frames + len(found),
                    )
        except MediaError as exc:
            reasons.append(f"undecodable: {exc.reason}")
    rec["silence_ratio"] = silent / total if total else None
    rec["face_rate"] = faces / n_frames if n_frames else None
    rec["n_frames_checked"] = n_frames
    bad = segment_problems(rows, info.duration_s)
    rec["n_bad_segments"], rec["bad_segments"] = len(bad), "; ".join(bad[:10])

    if not info.has_audio:
        reasons.append("no audio stream")
    if expect_video and not info.has_video:
        reasons.append("no video stream")
    if info.duration_s is not None and info.duration_s < MIN_DURATION_S:
        reasons.append(f"very short ({info.duration_s:.2f} s)")
    if rec["silence_ratio"] is not None and rec["silence_ratio"] > MAX_SILENCE:
        reasons.append(f"mostly silent ({rec['silence_ratio']:.0%} of 25 ms frames)")
    if rec["face_rate"] is not None and rec["face_rate"] < MIN_FACE_RATE:
        reasons.append(f"few faces ({rec['face_rate']:.0%} of {n_frames} frames)")
    a, v = info.audio_duration_s, info.video_duration_s
    if a is not None and v is not None and abs(a - v) > MAX_AV_GAP_S:
        reasons.append(f"audio and video lengths differ ({a:.2f} vs {v:.2f} s)")
    if bad:
        reasons.append(f"{len(bad)} bad segment(s)")
    return rec | {"suspect": bool(reasons), "reasons": "; ".join(reasons)}


def check_media(
    manifest_df: pd.DataFrame,
    fps: float = 1.0,
    face_detector: FaceDetector | None = None,
    silence_db: float = SILENCE_DB,
    progress: Callable[[int, int, str], None] | None = None,
    out_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Manifest (read_manifest output) -> report DataFrame, one row per media file (REPORT_COLUMNS).

    Each utterance's file is its video_path, else its audio_path; rows with neither are not media and
    are skipped. progress(done, total, path) is called after each file. With out_dir, the report is
    also written there (write_report: media_check.csv + media_check.md).
    """
    media = [
        v or a for v, a in zip(manifest_df["video_path"], manifest_df["audio_path"], strict=True)
    ]
    df = manifest_df.assign(_media=media)
    df = df[df["_media"] != ""]
    groups = list(df.groupby("_media", sort=False))
    records = []
    for k, (path, rows) in enumerate(groups):
        expect_video = bool((rows["video_path"] == path).any())
        records.append(
            check_file(path, rows, fps, face_detector, silence_db, expect_video=expect_video)
        )
        if progress is not None:
            progress(k + 1, len(groups), path)
    report = pd.DataFrame.from_records(records, columns=REPORT_COLUMNS)
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def summary_markdown(report: pd.DataFrame) -> str:
    """A short Markdown summary: totals, then one line per suspect file."""
    n, sus = len(report), report[report["suspect"].astype(bool)]
    dur = pd.to_numeric(report["duration_s"], errors="coerce")
    sil = pd.to_numeric(report["silence_ratio"], errors="coerce")
    face = pd.to_numeric(report["face_rate"], errors="coerce")
    lines = [
        "# Media check",
        "",
        f"- files: {n}, suspect: {len(sus)}, unreadable: {int((~report['readable'].astype(bool)).sum())}",
        f"- total duration: {dur.sum():.1f} s (median {dur.median():.2f} s)",
        f"- median silence ratio: {sil.median():.2f}"
        if sil.notna().any()
        else "- silence: not measured",
        f"- median face-found rate: {face.median():.2f}"
        if face.notna().any()
        else "- faces: not checked",
        f"- bad segments: {int(pd.to_numeric(report['n_bad_segments']).fillna(0).sum())}",
        "",
    ]
    if len(sus):
        lines += ["| file | reasons |", "|---|---|"]
        lines += [
            f"| {Path(p).name} | {r} |" for p, r in zip(sus["path"], sus["reasons"], strict=True)
        ]
    else:
        lines.append("No suspect files.")
    return "\n".join(lines) + "\n"


def write_report(
    report: pd.DataFrame, out_dir: str | Path, stem: str = "media_check"
) -> tuple[Path, Path]:
    """Write {stem}.csv (full report) and {stem}.md (summary) -> their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    report.to_csv(csv, index=False)
    md.write_text(summary_markdown(report), encoding="utf-8")
    return csv, md


def run_check(
    manifest_path: str | Path,
    out_dir: str | Path,
    fps: float = 1.0,
    face_detector: FaceDetector | None = None,
    show: bool = True,
) -> tuple[pd.DataFrame, Path, Path]:
    """read_manifest + check_media + write_report: what the `check-media` command runs, with a
    progress bar over the media files (face detection takes minutes on a large set)."""
    from pipeline.progress_bar import progress_bar

    bar = None

    def advance(done: int, total: int, path: str) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_bar(total=total, desc="check media", unit="file", disable=not show)
        bar.set_postfix_str(Path(path).name, refresh=False)
        bar.update(done - bar.n)

    try:
        report = check_media(
            read_manifest(manifest_path), fps=fps, face_detector=face_detector, progress=advance
        )
    finally:
        if bar is not None:
            bar.close()
    csv, md = write_report(report, out_dir)  # written once, here
    return report, csv, md
