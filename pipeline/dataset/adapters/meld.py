"""MELD -> manifest.

Layout: {train,dev,test}_sent_emo.csv (columns Sr No., Utterance, Speaker, Emotion, Sentiment,
Dialogue_ID, Utterance_ID, Season, Episode, StartTime, EndTime) and one clip per utterance,
dia{Dialogue_ID}_utt{Utterance_ID}.mp4, in a folder per split (official names in CLIP_DIRS).

Times: each clip is cut to its utterance already, so start_s = 0 and end_s = NaN ("the whole clip";
iter_segments reads NaN as "to the end"), or the probed clip duration with probe_durations=True.
The position in the episode (SRT-style StartTime/EndTime "00:16:16,059") is kept as orig_start_s /
orig_end_s. Dialogue ids restart in each split, so dialogue_id is "{split}_dia{D}".

Labels: emotions become the MELD-7 codes neu sur fea sad joy dis ang (label_set "meld", the
canonical order of pipeline/dataset/manifest.py); sentiments stay neutral/positive/negative ("meld-sentiment").

Text: the official CSVs hold mojibake (UTF-8 read as cp1252, e.g. "â€™" for "’"). repair_text
re-encodes as cp1252 and decodes as UTF-8, which inverts exactly that mistake; it touches only text
with the mistake's marks, and text that fails the round trip is kept as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from pipeline.dataset.manifest import LABEL_SET_COLUMN, MELD_CODES, normalize
from pipeline.dataset.media import MediaError, probe
from pipeline.timecode import parse_timecode

SPLITS = ("train", "dev", "test")
CLIP_DIRS = {
    "train": "train_splits",
    "dev": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}
EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")


# What this mistake leaves in English text: "â€" starts every curly quote, dash and ellipsis
# ("â€™" for "’"), "Ã" and "Â" every Latin-1 letter and symbol ("Ã³" for "ó", "Â£" for "£").
_MOJIBAKE = ("â€", "Ã", "Â")


def repair_text(text: str) -> str:
    """Undo cp1252 mojibake ("â€™" -> "’"); text without its marks, or that does not round-trip,
    is returned unchanged. One repair for the MELD adapter and the shared-data importer
    (pipeline/features/importers/shared_data.py)."""
    if not any(mark in text for mark in _MOJIBAKE):
        return (
            text  # a correct non-Latin text may round-trip too; only text with the marks is fixed
        )
    try:
        return text.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def parse_srt_time(value) -> float:
    """'00:16:16,059' -> 976.059 (NaN when absent or malformed)."""
    if not isinstance(value, str):
        return float("nan")
    try:
        return parse_timecode(value)
    except ValueError:
        return float("nan")


def load_meld(
    root: str | Path,
    splits: Iterable[str] = SPLITS,
    clip_dirs: Mapping[str, str] | None = None,
    label: str = "emotion",
    probe_durations: bool = False,
    csv_dir: str | Path | None = None,
) -> pd.DataFrame:
    """MELD folder -> manifest. label: "emotion" (7 classes) or "sentiment" (3).

    clip_dirs maps split -> clip folder (relative to root or absolute); a split whose folder does not
    exist gets no media paths (text-only), while a missing clip inside an existing folder keeps its
    path so that extraction reports it.
    """
    if label not in ("emotion", "sentiment"):
        raise ValueError(f"label must be 'emotion' or 'sentiment', not {label!r}")
    root = Path(root)
    csv_dir = Path(csv_dir) if csv_dir else root
    dirs = {**CLIP_DIRS, **(clip_dirs or {})}
    frames = []
    for split in splits:
        csv = csv_dir / f"{split}_sent_emo.csv"
        if not csv.is_file():
            raise FileNotFoundError(f"{csv}: MELD annotation CSV not found")
        raw = pd.read_csv(csv, keep_default_na=False, dtype=str)
        need = {"Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"}
        if need - set(raw.columns):
            raise ValueError(f"{csv}: missing column(s) {sorted(need - set(raw.columns))}")
        raw["_d"], raw["_u"] = raw["Dialogue_ID"].astype(int), raw["Utterance_ID"].astype(int)
        raw = raw.sort_values(["_d", "_u"], kind="stable")
        clip_dir = root / dirs[split] if split in dirs else None
        has_clips = clip_dir is not None and clip_dir.is_dir()
        names = [f"dia{d}_utt{u}" for d, u in zip(raw["_d"], raw["_u"], strict=True)]
        df = pd.DataFrame(
            {
                "dialogue_id": [f"{split}_dia{d}" for d in raw["_d"]],
                "utterance_id": [f"{split}_{n}" for n in names],
                "speaker": raw["Speaker"].map(repair_text).to_numpy(),
                "start_s": 0.0,
                "end_s": float("nan"),
                "text": raw["Utterance"].map(repair_text).to_numpy(),
                "label": _labels(raw, label),
                "split": split,
                "video_path": [str(clip_dir / f"{n}.mp4") if has_clips else "" for n in names],
                "audio_path": "",
                "orig_start_s": raw.get("StartTime", pd.Series("", index=raw.index))
                .map(parse_srt_time)
                .to_numpy(),
                "orig_end_s": raw.get("EndTime", pd.Series("", index=raw.index))
                .map(parse_srt_time)
                .to_numpy(),
            }
        )
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out[LABEL_SET_COLUMN] = "meld" if label == "emotion" else "meld-sentiment"
    if probe_durations:
        out["end_s"] = [_duration(p) for p in out["video_path"]]
    return normalize(out, source=str(root))


def _labels(raw: pd.DataFrame, label: str) -> list[str]:
    """Emotions as the 3-letter MELD-7 codes (neu sur fea sad joy dis ang, as the importers and
    the authors' code name them); an unknown emotion is kept as written, for the label check to
    report; sentiments (neutral, positive, negative) as written, lower case."""
    if label == "sentiment":
        return raw["Sentiment"].str.lower().tolist()
    return [MELD_CODES.get(e, e) for e in raw["Emotion"].str.lower()]


def _duration(path: str) -> float:
    if not path:
        return float("nan")
    try:
        d = probe(path).duration_s
    except MediaError:  # corrupt / missing clips are MELD's known problem: report later, not here
        return float("nan")
    return float("nan") if d is None else d
