"""Fixtures shared by the prediction tests: a tiny checkpoint trained on the demo set, the demo
videos copied where a test wants them, and demo_d00 cut into one clip per utterance."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def checkpoint(demo, extractors, tmp_path_factory) -> Path:
    """A checkpoint folder trained here: the demo set's tiny-preset text + audio features, 3 epochs
    of the tiny Ada2I, copied to a folder with nothing else around it (portable: no run, features
    or store beside it). Shared and read-only: a test that changes it works on a copy."""
    from pipeline.features.extract import build_featureset, extract_features
    from pipeline.training.train import train_from_featureset

    modalities = "".join(extractors)  # "ta": the session extractors' modalities
    work = tmp_path_factory.mktemp("train")
    extract_features(
        demo, work / "store", "tiny", modalities, extractors=extractors, progress=False
    )
    fs = build_featureset(demo, work / "store", "tiny", modalities, work / "fs", extractors)
    run = train_from_featureset(
        fs, work / "run", "tiny", modalities, overrides={"epochs": 3, "progress": False}
    )
    portable = tmp_path_factory.mktemp("portable") / "ck"
    shutil.copytree(run.checkpoint_dir, portable)
    shutil.rmtree(work)
    return portable


@pytest.fixture(scope="session")
def demo_videos(demo) -> Callable[..., list[Path]]:
    """demo_videos(dest, n, subtitles=True) -> the first n demo videos (demo_d00.mp4, ...) copied
    into dest, each with its SRT beside it unless subtitles is False (then prediction segments
    the audio itself)."""

    def copy(dest: Path, n: int, subtitles: bool = True) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for k in range(n):
            shutil.copy(demo.parent / f"demo_d{k:02d}.mp4", dest)
            if subtitles:
                shutil.copy(demo.parent / f"demo_d{k:02d}.srt", dest)
            out.append(dest / f"demo_d{k:02d}.mp4")
        return out

    return copy


@pytest.fixture(scope="session")
def clips(demo, tmp_path_factory) -> pd.DataFrame:
    """demo_d00 cut into one small mp4 per utterance (its audio, blank frames) -> manifest frame
    (the MELD dia{D}_utt{U}.mp4 layout: times from 0 in each clip). Shared: tests change a copy."""
    from pipeline.dataset.manifest import read_manifest
    from pipeline.dataset.media import SAMPLE_RATE, iter_segments
    from pipeline.dataset.media_writer import write_video

    folder = tmp_path_factory.mktemp("clips")
    df = read_manifest(demo)
    df = df[df["dialogue_id"] == "demo_d00"].reset_index(drop=True)
    bounds = list(zip(df["start_s"], df["end_s"], strict=True))
    cut = {
        s.index: s.audio for s in iter_segments(df["video_path"].iat[0], bounds, want_frames=False)
    }
    rows = []
    for i, u in df.iterrows():
        audio = cut[i]  # [S] float32 16 kHz
        dur = len(audio) / SAMPLE_RATE
        frames = [np.zeros((32, 32, 3), np.uint8)] * max(1, int(dur * 5))
        path = write_video(folder / f"dia0_utt{i}.mp4", frames, 5.0, audio)
        rows.append({**u, "start_s": 0.0, "end_s": round(dur, 3), "video_path": str(path)})
    return pd.DataFrame(rows)
