"""The real data in ../shared/data (read in place, never copied: see its README for licences).

- load_shared_iemocap: iemocap_erc.csv, the 6-class ERC subset (7,433 utterances, 151 dialogues,
  Session 5 = test), text + labels + times in the dialogue recordings, no media.
- load_shared_clips: iemocap/clips/clips.csv + 52 real mp4 clips. Each file is one utterance, so
  start_s = 0 and end_s = the clip's duration (probed); the times in the dialogue are kept as
  orig_start_s / orig_end_s. erc_label blank = unlabelled. Both declare label_set "iemocap".
- load_shared_meld / load_shared_mosei: the official MELD CSVs and MOSEI labels, no media.

The shared root is $ERC_SHARED_DIR, else ../shared next to the project.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pipeline.dataset.adapters.meld import load_meld
from pipeline.dataset.adapters.mosei import load_mosei
from pipeline.dataset.manifest import LABEL_SET_COLUMN, normalize
from pipeline.dataset.media import probe


def find_shared_root(shared_root: str | Path | None = None) -> Path:
    """Resolve the shared folder (argument, $ERC_SHARED_DIR, ../shared); FileNotFoundError if absent."""
    candidates = [
        shared_root,
        os.environ.get("ERC_SHARED_DIR"),
        Path(__file__).resolve().parents[4] / "shared",
    ]
    for c in candidates:
        if c is not None and (Path(c) / "data").is_dir():
            return Path(c)
    raise FileNotFoundError(f"shared data not found (tried {[str(c) for c in candidates if c]})")


def load_shared_iemocap(shared_root: str | Path | None = None) -> pd.DataFrame:
    """iemocap_erc.csv -> manifest (text-only; split "valid" becomes "dev")."""
    csv = find_shared_root(shared_root) / "data" / "iemocap" / "iemocap_erc.csv"
    raw = pd.read_csv(csv, dtype={"utt_id": str, "dialogue": str}, keep_default_na=False)
    raw = raw.sort_values(["dialogue", "turn"], kind="stable") if "turn" in raw else raw
    df = pd.DataFrame(
        {
            "dialogue_id": raw["dialogue"],
            "utterance_id": raw["utt_id"],
            "speaker": raw["speaker"],
            "start_s": raw["start_s"],
            "end_s": raw["end_s"],
            "text": raw["text"],
            "label": raw["label"],
            "split": raw["split"],
            LABEL_SET_COLUMN: "iemocap",
        }
    )
    return normalize(df, source=str(csv))


def load_shared_clips(shared_root: str | Path | None = None) -> pd.DataFrame:
    """clips.csv + the 52 mp4 clips -> manifest with absolute video paths (audio in the mp4)."""
    clips_dir = find_shared_root(shared_root) / "data" / "iemocap" / "clips"
    csv = clips_dir / "clips.csv"
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    raw["_start"] = raw["dialogue_start_s"].astype(float)
    raw = raw.sort_values(["dialogue", "_start"], kind="stable")
    paths = [clips_dir / f for f in raw["file"]]
    durations = [probe(p).duration_s if p.is_file() else float("nan") for p in paths]
    df = pd.DataFrame(
        {
            "dialogue_id": raw["dialogue"].to_numpy(),
            "utterance_id": raw["utt_id"].to_numpy(),
            "speaker": raw["speaker"].to_numpy(),
            "start_s": 0.0,
            "end_s": durations,
            "text": raw["text"].to_numpy(),
            "label": raw["erc_label"].to_numpy(),
            "split": raw["erc_split"].to_numpy(),
            "video_path": [str(p) for p in paths],
            "audio_path": "",
            "orig_start_s": raw["_start"].to_numpy(),
            "orig_end_s": raw["dialogue_end_s"].astype(float).to_numpy(),
            "iemocap_emotion": raw["iemocap_emotion"].to_numpy(),
            LABEL_SET_COLUMN: "iemocap",
        }
    )
    return normalize(df, source=str(csv))


def load_shared_meld(shared_root: str | Path | None = None, **kwargs) -> pd.DataFrame:
    """The three MELD CSVs -> manifest (no clips offline); kwargs go to load_meld."""
    return load_meld(find_shared_root(shared_root) / "data" / "meld", **kwargs)


def load_shared_mosei(shared_root: str | Path | None = None, **kwargs) -> pd.DataFrame:
    """CMU_MOSEI_Labels.csv -> manifest (no media, no text); kwargs go to load_mosei."""
    return load_mosei(
        find_shared_root(shared_root) / "data" / "mosei" / "CMU_MOSEI_Labels.csv", **kwargs
    )
