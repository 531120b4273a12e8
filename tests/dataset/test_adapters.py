"""Adapters on small fake raw layouts written here, and on the real CSVs in ../shared."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.dataset.adapters import (
    load_generic,
    load_iemocap,
    load_meld,
    load_mosei,
    load_shared_clips,
    load_shared_iemocap,
    load_shared_meld,
    load_shared_mosei,
)
from pipeline.dataset.adapters.meld import parse_srt_time, repair_text
from pipeline.dataset.manifest import COLUMNS, read_manifest, validate_rows, write_manifest
from pipeline.dataset.media import SAMPLE_RATE, iter_segments
from pipeline.dataset.media_writer import write_video

SHARED = Path(__file__).resolve().parents[3] / "shared"


def _tiny_video(path: Path, seconds: float = 3.0) -> Path:
    frames = (np.full((32, 32, 3), 100, np.uint8) for _ in range(int(seconds * 10)))
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return write_video(path, frames, 10, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))


# ---- IEMOCAP ---------------------------------------------------------------------------------

TRANSCRIPT = """Ses01F_impro01_F000 [000.2901-001.2357]: Excuse me.
Ses01F_impro01_M000 [001.5712-002.4750]: Do you have your forms?
M: [BREATHING]
Ses01F_impro01_MXX0 [002.0000-002.5000]: Yeah.
Ses01F_impro01_F001 [000.9000-001.4000]: Yeah.
Ses01F_impro01_F002 [002.5000-002.9000]: Um.
"""
EMO = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[0.2901 - 1.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()

[1.5712 - 2.4750]\tSes01F_impro01_M000\tfru\t[2.0000, 3.5000, 3.5000]
[0.9000 - 1.4000]\tSes01F_impro01_F001\texc\t[4.0000, 3.5000, 3.0000]
[2.5000 - 2.9000]\tSes01F_impro01_F002\txxx\t[3.0000, 3.0000, 3.0000]
"""


def _fake_iemocap(root: Path) -> Path:
    for session, dialogue in ((1, "Ses01F_impro01"), (5, "Ses05M_impro01")):
        d = root / f"Session{session}" / "dialog"
        (d / "transcriptions").mkdir(parents=True)
        (d / "EmoEvaluation").mkdir()
        (d / "transcriptions" / f"{dialogue}.txt").write_text(
            TRANSCRIPT.replace("Ses01F_impro01", dialogue)
        )
        (d / "EmoEvaluation" / f"{dialogue}.txt").write_text(
            EMO.replace("Ses01F_impro01", dialogue)
        )
        (d / "avi" / "DivX").mkdir(parents=True)
        _tiny_video(d / "avi" / "DivX" / f"{dialogue}.avi")
    return root


def test_iemocap_raw_layout(tmp_path):
    df = load_iemocap(_fake_iemocap(tmp_path / "IEMOCAP"), sessions=(1, 5))
    assert list(df.columns) == [*COLUMNS, "label_set"] and set(df["label_set"]) == {"iemocap"}
    d1 = df[df["dialogue_id"] == "Ses01F_impro01"]
    # Sorted by transcript start time; XX ids, non-utterance lines and xxx labels dropped.
    assert d1["utterance_id"].tolist() == [
        "Ses01F_impro01_F000",
        "Ses01F_impro01_F001",
        "Ses01F_impro01_M000",
    ]
    assert d1["label"].tolist() == ["neu", "exc", "fru"]
    assert d1["speaker"].tolist() == ["F", "F", "M"]
    assert d1["start_s"].tolist() == [0.2901, 0.9, 1.5712] and d1["end_s"].tolist() == [
        1.2357,
        1.4,
        2.475,
    ]
    assert d1["text"].iloc[0] == "Excuse me."
    assert set(df.loc[df["dialogue_id"] == "Ses05M_impro01", "split"]) == {"test"}
    assert set(d1["split"]) == {"train"}
    assert d1["video_path"].iloc[0].endswith("Session1/dialog/avi/DivX/Ses01F_impro01.avi")
    assert validate_rows(df) == []
    # The adapter's output goes straight to the decoder.
    segs = {
        s.index: s
        for s in iter_segments(
            d1["video_path"].iloc[0], list(zip(d1.start_s, d1.end_s, strict=True))
        )
    }
    assert all(s.error is None for s in segs.values())
    assert len(segs[0].audio) == round(1.2357 * SAMPLE_RATE) - round(0.2901 * SAMPLE_RATE)


def test_iemocap_include_all_and_dev(tmp_path):
    root = _fake_iemocap(tmp_path / "IEMOCAP")
    df = load_iemocap(root, sessions=(1, 5), include_all=True, dev_dialogues=["Ses01F_impro01"])
    assert "xxx" in set(df["label"]) and len(df) == 8
    assert set(df.loc[df["dialogue_id"] == "Ses01F_impro01", "split"]) == {"dev"}
    with pytest.raises(ValueError, match="no IEMOCAP transcriptions"):
        load_iemocap(tmp_path / "empty")


# ---- MELD ------------------------------------------------------------------------------------


def _fake_meld(root: Path) -> Path:
    root.mkdir()
    rows = [
        # Mojibake as in the official CSVs: "’" read as cp1252.
        (
            1,
            "You mustâ€™ve had your hands full.",
            "Chandler",
            "neutral",
            "neutral",
            1,
            1,
            "00:16:21,940",
            "00:16:23,442",
        ),
        (2, "Café, please", "Monica", "joy", "positive", 1, 0, "00:16:16,059", "00:16:21,731"),
        (3, "Oh my God!", "Ross", "surprise", "positive", 0, 0, "01:02:03,004", "01:02:04,500"),
    ]
    cols = [
        "Sr No.",
        "Utterance",
        "Speaker",
        "Emotion",
        "Sentiment",
        "Dialogue_ID",
        "Utterance_ID",
        "StartTime",
        "EndTime",
    ]
    for split in ("train", "dev", "test"):
        pd.DataFrame(rows, columns=cols).to_csv(
            root / f"{split}_sent_emo.csv", index=False, encoding="utf-8"
        )
    (root / "my_train_clips").mkdir()
    _tiny_video(root / "my_train_clips" / "dia1_utt0.mp4", 2.0)
    (root / "my_train_clips" / "dia1_utt1.mp4").write_bytes(b"\x00" * 100)  # a corrupt clip
    return root


def test_meld_layout(tmp_path):
    root = _fake_meld(tmp_path / "MELD")
    df = load_meld(root, clip_dirs={"train": "my_train_clips"}, probe_durations=True)
    train = df[df["split"] == "train"]
    assert train["utterance_id"].tolist() == [
        "train_dia0_utt0",
        "train_dia1_utt0",
        "train_dia1_utt1",
    ]
    assert train["dialogue_id"].tolist() == ["train_dia0", "train_dia1", "train_dia1"]
    assert train["text"].tolist() == [
        "Oh my God!",
        "Café, please",
        "You must’ve had your hands full.",
    ]
    assert train["label"].tolist() == ["sur", "joy", "neu"]  # MELD-7 codes
    assert train["orig_start_s"].tolist() == [3723.004, 976.059, 981.94]
    assert (train["start_s"] == 0).all()
    # Clip durations probed; the corrupt clip keeps its path (reported later) with an unknown end.
    assert train["end_s"].iloc[1] == pytest.approx(2.0, abs=0.1) and math.isnan(
        train["end_s"].iloc[2]
    )
    assert train["video_path"].iloc[2].endswith("my_train_clips/dia1_utt1.mp4")
    # Dev/test folders absent here: text-only rows.
    assert (df.loc[df["split"] != "train", "video_path"] == "").all()
    assert set(load_meld(root, splits=["dev"], label="sentiment")["label"]) == {
        "neutral",
        "positive",
    }


def test_meld_text_repair_and_times():
    assert repair_text("mustâ€™ve") == "must’ve"
    assert repair_text("must’ve") == "must’ve"  # already right: kept
    assert repair_text("Café") == "Café"
    assert parse_srt_time("00:16:16,059") == pytest.approx(976.059)
    assert math.isnan(parse_srt_time("garbage"))


# ---- MOSEI -----------------------------------------------------------------------------------


def test_mosei_layout(tmp_path):
    csv = tmp_path / "labels.csv"
    pd.DataFrame(
        {
            "file": ["vidB", "vidA", "vidA", "vidB", "vidC"],
            "index": [1, 0, 1, 0, 0],
            "start": [10.0, 1.0, 5.0, 2.0, 0.0],
            "end": [12.5, 4.0, 8.0, 6.0, 1.0],
            "label2a": [1, 0, 1, 1, 0],
            "label2b": [1, -1, 0, 1, -1],
            "label6": [0, 1, 2, 5, 3],
            "label7": [3, -3, 0, 1, -1],
            "split": [0, 1, 2, 0, 3],
        }
    ).to_csv(csv)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "vidA.txt").write_text(
        "vidA___0___1.0___4.0___hello there\nvidA___1___5.0___8.0___bye\n"
    )
    df = load_mosei(csv, video_dir=tmp_path / "videos", transcript_dir=tmp_path / "text")
    assert df["utterance_id"].tolist() == [
        "vidB_0",
        "vidB_1",
        "vidA_0",
        "vidA_1",
    ]  # vidC: unused split
    assert df["label"].tolist() == [
        "weakly_positive",
        "strongly_positive",
        "strongly_negative",
        "neutral",
    ]
    assert df["split"].tolist() == ["train", "train", "dev", "test"]
    assert df["text"].tolist() == ["", "", "hello there", "bye"]
    assert df["start_s"].tolist() == [2.0, 10.0, 1.0, 5.0]
    assert df["video_path"].iloc[0] == str(tmp_path / "videos" / "vidB.mp4")
    assert load_mosei(csv, label="emotion6")["label"].tolist() == ["fear", "happy", "sad", "anger"]
    assert (
        load_mosei(csv, label="sentiment2", include_unused=True)["label"].tolist()[-1] == "negative"
    )
    with pytest.raises(ValueError, match="label must be"):
        load_mosei(csv, label="emotion7")


# ---- generic ---------------------------------------------------------------------------------


def test_generic_csv_and_jsonl(tmp_path):
    (tmp_path / "talk.mp4").write_bytes(b"x")
    src = pd.DataFrame(
        {
            "talk": ["t1", "t1", "t2"],
            "sentence": ["a", "b", "c"],
            "file": ["talk.mp4"] * 3,
            "t0": [0, 1, 2],
            "t1": [1, 2, 3],
        }
    )
    src.to_csv(tmp_path / "talks.csv", index=False)
    mapping = {
        "dialogue_id": "talk",
        "text": "sentence",
        "video_path": "file",
        "start_s": "t0",
        "end_s": "t1",
    }
    df = load_generic(tmp_path / "talks.csv", mapping, defaults={"speaker": "?"})
    assert df["utterance_id"].tolist() == ["t1_0", "t1_1", "t2_0"]
    assert df["video_path"].iloc[0] == str((tmp_path / "talk.mp4").resolve())
    assert df["end_s"].tolist() == [1.0, 2.0, 3.0] and set(df["speaker"]) == {"?"}
    with open(tmp_path / "talks.jsonl", "w") as fh:
        for r in src.to_dict("records"):
            fh.write(json.dumps(r) + "\n")
    assert load_generic(tmp_path / "talks.jsonl", mapping, defaults={"speaker": "?"}).equals(df)
    with pytest.raises(ValueError, match="not in the table"):
        load_generic(tmp_path / "talks.csv", {"text": "nope"})


# ---- ../shared (real) ------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared not present")
def test_shared_iemocap_counts(tmp_path):
    df = load_shared_iemocap(SHARED)
    assert len(df) == 7433 and df["dialogue_id"].nunique() == 151
    assert df["split"].value_counts().to_dict() == {"train": 5163, "dev": 647, "test": 1623}
    assert set(df["label"]) == {"hap", "sad", "neu", "ang", "exc", "fru"}
    assert df.groupby("split")["dialogue_id"].nunique().to_dict() == {
        "train": 108,
        "dev": 12,
        "test": 31,
    }
    assert (df["end_s"] > df["start_s"]).all()
    path = write_manifest(df, tmp_path / "iemocap.parquet")
    assert read_manifest(path)["utterance_id"].tolist() == df["utterance_id"].tolist()


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared not present")
def test_shared_meld_mosei_counts():
    meld = load_shared_meld(SHARED)
    train = meld[meld["split"] == "train"]
    assert len(train) == 9989 and train["dialogue_id"].nunique() == 1038
    assert meld["split"].value_counts().to_dict() == {"train": 9989, "test": 2610, "dev": 1109}
    assert set(meld["label"]) == {"neu", "sur", "fea", "sad", "joy", "dis", "ang"}  # MELD-7 codes
    assert not meld["text"].str.contains("â€").any()
    mosei = load_shared_mosei(SHARED, include_unused=True)
    assert len(mosei) == 23259
    assert mosei["split"].value_counts().to_dict() == {
        "train": 16327,
        "test": 4662,
        "dev": 1871,
        "unused": 399,
    }


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared not present")
def test_shared_clips():
    df = load_shared_clips(SHARED)
    assert len(df) == 52 and validate_rows(df) == []
    assert df["end_s"].between(1.0, 19.0).all() and (df["start_s"] == 0).all()
    assert (df["label"] == "").sum() == 16  # blank erc_label = unlabelled
    assert df["dialogue_id"].str.startswith("Ses01F_").all()


def test_load_dataset_by_name_and_manifest_cli(tmp_path, shared_dir, capsys):
    from pipeline.cli import main
    from pipeline.dataset.adapters import load_dataset

    with pytest.raises(ValueError, match="no adapter for dataset 'friends'"):
        load_dataset("friends", tmp_path)
    with pytest.raises(ValueError, match="needs its root folder"):
        load_dataset("meld", None)
    out = tmp_path / "clips.csv"
    assert main(["manifest", "shared", "--root", str(shared_dir), "--out", str(out)]) == 0
    assert "52 utterances" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 52
