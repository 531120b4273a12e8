"""Manifest schema: round trips in three formats, path resolution, validation, per-row problems."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline.dataset.manifest import (
    COLUMNS,
    normalize,
    read_manifest,
    validate_rows,
    write_manifest,
)


def _frame(tmp_path: Path) -> pd.DataFrame:
    media = tmp_path / "media"
    media.mkdir()
    (media / "d1.mp4").write_bytes(b"x")
    return pd.DataFrame(
        {
            "dialogue_id": ["d1", "d2", "d1"],  # interleaved on purpose
            "utterance_id": ["d1_0", "d2_0", "d1_1"],
            "speaker": ["A", "B", "B"],
            "start_s": [0.0, 1.0, 2.5],
            "end_s": [2.0, float("nan"), 4.0],
            "text": ["Hi, there.", "Ça va? “quoted”", ""],
            "label": ["neu", "", "hap"],
            "split": ["train", "valid", "train"],
            "video_path": [str(media / "d1.mp4"), "/elsewhere/d2.mp4", str(media / "d1.mp4")],
            "audio_path": ["", "", ""],
            "orig_start_s": [10.0, 11.0, 12.5],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_round_trip(tmp_path, suffix):
    df = _frame(tmp_path)
    path = write_manifest(df, tmp_path / f"manifest{suffix}")
    back = read_manifest(path)
    assert list(back.columns) == list(COLUMNS) + ["orig_start_s"]
    # Dialogue rows become contiguous, order inside a dialogue kept.
    assert back["utterance_id"].tolist() == ["d1_0", "d1_1", "d2_0"]
    assert back["split"].tolist() == ["train", "train", "dev"]  # "valid" -> "dev"
    assert back["text"].tolist() == ["Hi, there.", "", "Ça va? “quoted”"]
    assert back["label"].tolist() == ["neu", "hap", ""]
    assert back["end_s"].iloc[1] == 4.0 and math.isnan(back["end_s"].iloc[2])
    assert back["start_s"].dtype == "float64"
    assert back["video_path"].iloc[0] == str((tmp_path / "media" / "d1.mp4").resolve())
    assert back["video_path"].iloc[2] == "/elsewhere/d2.mp4"  # absolute outside: kept
    assert back["orig_start_s"].astype(float).tolist() == [10.0, 12.5, 11.0]
    assert not list(tmp_path.glob(".manifest*"))  # no temp file left behind


def test_paths_written_relative(tmp_path):
    write_manifest(_frame(tmp_path), tmp_path / "m.csv")
    raw = pd.read_csv(tmp_path / "m.csv", keep_default_na=False)
    assert raw["video_path"].tolist() == ["media/d1.mp4", "media/d1.mp4", "/elsewhere/d2.mp4"]
    # Moving the folder keeps the manifest valid: paths follow the manifest.
    moved = tmp_path.rename(tmp_path.with_name(tmp_path.name + "_moved"))
    back = read_manifest(moved / "m.csv")
    assert back["video_path"].iloc[0] == str((moved / "media" / "d1.mp4").resolve())


def test_overwrite_is_atomic_replace(tmp_path):
    path = tmp_path / "m.csv"
    write_manifest(_frame(tmp_path), path)
    df = read_manifest(path)
    write_manifest(df.iloc[:1], path)
    assert len(read_manifest(path)) == 1


def test_missing_column_names_file(tmp_path):
    path = tmp_path / "m.csv"
    _frame(tmp_path).drop(columns=["speaker"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"m\.csv.*missing required column.*speaker"):
        read_manifest(path)


def test_duplicate_utterance_names_row(tmp_path):
    path = tmp_path / "m.csv"
    df = _frame(tmp_path)
    df.loc[2, "utterance_id"] = "d1_0"
    df.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"m\.csv: row 2: duplicate utterance_id 'd1_0'"):
        read_manifest(path)


def test_non_numeric_time_names_utterance(tmp_path):
    path = tmp_path / "m.csv"
    df = _frame(tmp_path)
    df["start_s"] = df["start_s"].astype(object)
    df.loc[1, "start_s"] = "1.0s"
    df.to_csv(path, index=False)
    with pytest.raises(
        ValueError, match=r"row 1 \(utterance 'd2_0'\): start_s is not a number: '1.0s'"
    ):
        read_manifest(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown manifest format"):
        read_manifest(tmp_path / "m.txt")
    with pytest.raises(FileNotFoundError, match="m.csv"):
        read_manifest(tmp_path / "m.csv")


def test_bad_rows_stay_readable_and_are_listed(tmp_path):
    df = _frame(tmp_path)
    extra = pd.DataFrame(
        {
            "dialogue_id": ["d3"] * 5,
            "utterance_id": ["zero", "inverted", "negative", "nomedia", "nofile"],
            "speaker": ["A", "A", "", "A", "A"],
            "start_s": [1.0, 3.0, -0.5, 0.0, 0.0],
            "end_s": [1.0, 2.0, 1.0, 1.0, 1.0],
            "text": ["a", "b", "c", "d", "e"],
            "video_path": [
                "/x.mp4",
                "/x.mp4",
                str(tmp_path / "media" / "d1.mp4"),
                "",
                "/no/such.mp4",
            ],
        }
    )
    path = tmp_path / "m.csv"
    write_manifest(pd.concat([df, extra]), path)
    # A text with bytes that are not UTF-8 must not make the manifest unreadable.
    raw = path.read_bytes().replace("Ça va".encode(), b"\xc7a va")
    path.write_bytes(raw)
    back = read_manifest(path)
    assert len(back) == 8
    problems = validate_rows(back, check_files=False)
    reasons = {uid: [r for u, r in problems if u == uid] for uid, _ in problems}
    assert reasons["zero"] == ["zero-length segment (1.000-1.000 s)"]
    assert reasons["inverted"] == ["inverted segment (3.000-2.000 s)"]
    assert reasons["negative"] == ["negative start (-0.500 s)", "unknown speaker"]
    assert reasons["nomedia"] == ["no media path"]
    assert reasons["d2_0"] == ["undecodable text encoding"]
    assert "d1_0" not in reasons and "nofile" not in reasons
    with_files = dict(validate_rows(back))
    assert with_files["nofile"] == "media file not found: /no/such.mp4"
    assert "d1_0" not in with_files


def test_normalize_rejects_empty_ids():
    df = pd.DataFrame({c: ["x"] for c in ("dialogue_id", "utterance_id", "speaker", "text")})
    df["start_s"], df["end_s"], df["utterance_id"] = 0.0, 1.0, ""
    with pytest.raises(ValueError, match="row 0: empty utterance_id"):
        normalize(df)


def test_a_stray_label_in_a_generic_manifest_is_named_with_its_rows(tmp_path, caplog):
    df = _frame(tmp_path)
    df["label"] = ["neu", "hap", "hpa"]  # a typo of IEMOCAP's hap
    path = write_manifest(df, tmp_path / "m.csv")
    with caplog.at_level("WARNING"):
        read_manifest(path)
    assert "label 'hpa' (row 2) is not in the iemocap label set" in caplog.text
    caplog.clear()
    df["label"] = ["cat", "dog", "cow"]  # a set of its own: nothing to compare with
    with caplog.at_level("WARNING"):
        read_manifest(write_manifest(df, tmp_path / "m2.csv"))
    assert "label set" not in caplog.text
