"""CMU-MOSEI -> manifest.

Labels CSV (as in ../shared/data/mosei/CMU_MOSEI_Labels.csv): file (YouTube video id), index
(segment number), start, end (seconds in the video), label2a, label2b, label6, label7, split
(0 train / 1 valid / 2 test / 3 unused). Media: a folder of {file}.mp4 (the full videos; segments are
cut by start/end). Each video is one "dialogue" of a single speaker (MOSEI is monologues), so
speaker = the video id and utterances are the segments in time order.

Label choices (values as found in the CSV):
- "sentiment7": label7 in -3..3 -> SENTIMENT7 names (the usual 7-class MOSEI sentiment).
- "sentiment2": label2a, 0 = negative (< 0), 1 = non-negative (>= 0) (the counts match label7 < 0).
- "emotion6": label6, the argmax over the CMU SDK emotion order: happy sad anger surprise disgust fear
  (counts 14,567 / 3,782 / 2,730 / 437 / 1,291 / 452 fit that order: happiness dominates MOSEI).

Transcripts are optional: a folder of {file}.txt in the CMU "Segmented/Combined" form, lines
`{file}___{index}___{start}___{end}___{text}`, matched by segment index; absent -> empty text.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.dataset.manifest import (
    LABEL_SET_COLUMN,
    MOSEI_EMOTION6,
    MOSEI_SENTIMENT2,
    MOSEI_SENTIMENT7,
    normalize,
)

# The label sets (and their order) live in pipeline/dataset/manifest.py; the manifest declares which one.
SENTIMENT7 = MOSEI_SENTIMENT7
SENTIMENT2 = MOSEI_SENTIMENT2
EMOTION6 = MOSEI_EMOTION6
SPLIT_CODES = {0: "train", 1: "dev", 2: "test", 3: "unused"}


def _label_names(df: pd.DataFrame, label: str, source: str) -> list[str]:
    if label == "sentiment7":
        return [SENTIMENT7[int(v) + 3] for v in df["label7"]]
    if label == "sentiment2":
        return [SENTIMENT2[int(v)] for v in df["label2a"]]
    if label == "emotion6":
        return [EMOTION6[int(v)] for v in df["label6"]]
    raise ValueError(f"{source}: label must be sentiment7, sentiment2 or emotion6, not {label!r}")


def read_transcript(path: Path) -> dict[int, str]:
    """CMU segmented transcript -> {segment index: text}."""
    texts = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("___", 4)
        if len(parts) == 5 and parts[1].strip().isdigit():
            texts[int(parts[1])] = parts[4].strip()
    return texts


def load_mosei(
    labels_csv: str | Path,
    video_dir: str | Path | None = None,
    transcript_dir: str | Path | None = None,
    label: str = "sentiment7",
    include_unused: bool = False,
    video_suffix: str = ".mp4",
) -> pd.DataFrame:
    """MOSEI labels CSV (+ optional video and transcript folders) -> manifest.

    Rows with split 3 (unused by the standard protocol) are dropped unless include_unused, where
    their split is "unused".
    """
    labels_csv = Path(labels_csv)
    raw = pd.read_csv(labels_csv, dtype={"file": str})
    need = {"file", "index", "start", "end", "label2a", "label6", "label7", "split"}
    if need - set(raw.columns):
        raise ValueError(f"{labels_csv}: missing column(s) {sorted(need - set(raw.columns))}")
    if not include_unused:
        raw = raw[raw["split"] != 3]
    # Videos in first-appearance order, segments in time order inside each.
    first = {f: k for k, f in enumerate(dict.fromkeys(raw["file"]))}
    raw = raw.assign(_v=raw["file"].map(first)).sort_values(["_v", "start", "index"], kind="stable")
    texts: dict[str, dict[int, str]] = {}
    if transcript_dir is not None:
        for f in first:
            t = Path(transcript_dir) / f"{f}.txt"
            texts[f] = read_transcript(t) if t.is_file() else {}
    video_dir = Path(video_dir) if video_dir is not None else None
    df = pd.DataFrame(
        {
            "dialogue_id": raw["file"].to_numpy(),
            "utterance_id": [
                f"{f}_{int(i)}" for f, i in zip(raw["file"], raw["index"], strict=True)
            ],
            "speaker": raw["file"].to_numpy(),
            "start_s": raw["start"].astype(float).to_numpy(),
            "end_s": raw["end"].astype(float).to_numpy(),
            "text": [
                texts.get(f, {}).get(int(i), "")
                for f, i in zip(raw["file"], raw["index"], strict=True)
            ],
            "label": _label_names(raw, label, str(labels_csv)),
            "split": [SPLIT_CODES.get(int(s), str(s)) for s in raw["split"]],
            "video_path": [
                str(video_dir / f"{f}{video_suffix}") if video_dir else "" for f in raw["file"]
            ],
            "audio_path": "",
            LABEL_SET_COLUMN: f"mosei-{label}",
        }
    )
    return normalize(df, source=str(labels_csv))
