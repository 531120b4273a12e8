"""Extraction end to end on generated media with real extractors: every bad input, strict, warm rerun.

Media: a 4 s mp4 of a real face (matplotlib's Grace Hopper sample) with a generated voice-like
signal, a faceless video without audio, a wav (audio, no video), a corrupt file and a missing one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.dataset import media_writer
from pipeline.dataset.manifest import read_manifest, write_manifest
from pipeline.features.extract import (
    ExtractionError,
    build_featureset,
    extract_features,
    plan_tasks,
    store_status,
)
from pipeline.features.featureset import FeatureSet
from pipeline.features.store import FeatureStore

DURATION_S = 4.0


def _face_frames(n: int) -> list[np.ndarray]:
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        face = np.asarray(Image.open(f).convert("RGB").resize((240, 280)))  # [280, 240, 3]
    return [face] * n


@pytest.fixture(scope="module")
def extractors():
    """Replaces the session's tiny set: the real packaged MiniLM, openSMILE and the face extractor
    (MTCNN + a random-init DenseNet121), every modality end to end."""
    from extractors.opensmile_audio import OpenSmileExtractor
    from extractors.text import SentenceTextExtractor
    from extractors.visual import FaceVisualExtractor

    return {
        "t": [SentenceTextExtractor()],  # the real packaged MiniLM
        "a": [OpenSmileExtractor("eGeMAPSv02")],
        "v": [FaceVisualExtractor(pretrained=False)],  # real MTCNN + random-init DenseNet121
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, voice, write_wav) -> Path:
    root = tmp_path_factory.mktemp("data")
    fps = 10
    frames = _face_frames(int(DURATION_S * fps))
    media_writer.write_video(root / "good.mp4", frames, fps, audio=voice(DURATION_S))
    blank = [np.full_like(frames[0], 128)] * len(frames)  # no face: visual is masked, not failed
    media_writer.write_video(root / "silent_film.mp4", blank, fps)  # and no audio stream
    write_wav(root / "speech.wav", voice(2.0))  # no video stream
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    rows = [  # dialogue, utt, speaker, start, end, text, label, video
        ("d1", "ok1", "A", 0.0, 1.5, "I can't believe it.", "ang", "good.mp4"),
        ("d1", "ok2", "B", 1.5, 3.0, "Calm down.", "neu", "good.mp4"),
        ("d1", "ok3", "A", 3.0, DURATION_S, "Calm down.", "", "good.mp4"),  # same text as ok2
        ("d1", "past_end", "B", 5.0, 6.0, "Later.", "neu", "good.mp4"),
        ("d1", "inverted", "A", 2.0, 1.0, "Backwards.", "sad", "good.mp4"),
        ("d1", "zero_len", "B", 1.0, 1.0, "Nothing.", "sad", "good.mp4"),
        ("d2", "no_audio", "A", 0.0, 2.0, "Silent film.", "neu", "silent_film.mp4"),
        ("d2", "no_video", "B", 0.0, 1.0, "Radio.", "neu", "speech.wav"),
        ("d2", "corrupt", "A", 0.0, 1.0, "Broken.", "ang", "corrupt.mp4"),
        ("d2", "missing", "B", 0.0, 1.0, "Gone.", "ang", "missing.mp4"),
        ("d2", "bad_text", "Z", 0.0, 1.0, "caf\ufffd", "neu", "good.mp4"),
    ]
    cols = ["dialogue_id", "utterance_id", "speaker", "start_s", "end_s", "text", "label"]
    df = pd.DataFrame(rows, columns=cols + ["video_path"])
    df["split"] = ["train"] * 6 + ["test"] * 5
    path = write_manifest(df, root / "manifest.csv")
    # An undecodable byte in the transcript, as a badly encoded CSV would have it.
    raw = path.read_bytes().replace("caf\ufffd".encode(), b"caf\xe9")
    path.write_bytes(raw)
    return path


EXPECTED = {  # (utterance, modality) -> reason fragment
    ("past_end", "a"): "past the end",
    ("past_end", "v"): "past the end",
    ("inverted", "a"): "inverted",
    ("inverted", "v"): "inverted",
    ("zero_len", "a"): "zero-length",
    ("zero_len", "v"): "zero-length",
    ("no_audio", "a"): "no audio stream",
    ("no_video", "v"): "no video stream",
    ("corrupt", "a"): "corrupt.mp4",
    ("corrupt", "v"): "corrupt.mp4",
    ("missing", "a"): "not found",
    ("missing", "v"): "not found",
    ("bad_text", "t"): "undecodable text",
    ("bad_text", ""): "unknown speaker 'Z'",
}


def test_extract_end_to_end_records_every_bad_input(dataset, extractors, tmp_path):
    store = tmp_path / "store"
    mods = "".join(extractors)
    summary = extract_features(
        dataset, store, modalities=mods, extractors=extractors, progress=False, speakers=["A", "B"]
    )
    got = {(f.utterance_id, f.modality): f for f in summary.failures}
    expected = {k: v for k, v in EXPECTED.items() if not k[1] or k[1] in mods}
    assert set(got) == set(expected)
    for k, fragment in expected.items():
        assert fragment in got[k].reason + got[k].file, (k, got[k])
    assert got[("missing", "a")].file.endswith("missing.mp4")
    report = pd.read_csv(summary.failures_path)
    assert len(report) == summary.failed == len(expected)
    assert summary.failures_path.with_suffix(".json").is_file()
    # 11 texts - 1 bad (ok2/ok3 share a key but both count); audio: ok1-3 + no_video;
    # visual: ok1-3 + no_audio + bad_text (only its text and speaker are bad).
    n_text = 10
    n_audio = 5 * len(extractors["a"])  # ok1-3, no_video, bad_text
    n_visual = 5 * len(extractors.get("v", []))  # ok1-3, no_audio, bad_text
    assert summary.done == n_text + n_audio + n_visual
    assert summary.cached == 0
    assert all(s > 0 for n, s in summary.per_extractor_seconds.items() if n != "decode")

    # Warm rerun: nothing is computed, no extractor is called.
    again = extract_features(
        dataset, store, modalities=mods, extractors=extractors, progress=False, speakers=["A", "B"]
    )
    assert (again.done, again.cached) == (0, summary.done)
    assert {k for k, v in again.per_extractor_seconds.items() if v > 0} <= {"decode"}
    assert again.failed == summary.failed
    with FeatureStore(store) as fstore:
        masked = [e for e in fstore.entries() if e["status"] == "missing"]
    assert [(e["utterance_id"], e["extractor"]) for e in masked] == [("no_audio", "densenet-face")]

    fs = FeatureSet.load(
        build_featureset(dataset, store, "offline", mods, tmp_path / "fs", extractors)
    )
    ids = [u for d in fs.dialogues for u in d.utterance_ids]
    assert ids[:3] == ["ok1", "ok2", "ok3"] and len(fs) == 11
    assert fs.label_names == ["ang", "neu", "sad"]  # sorted
    assert fs.labels.tolist() == [0, 1, -1, 1, 2, 2, 1, 1, 0, 0, 1]
    assert fs.dims["t"] == 384 and fs.dims["a"] == 88
    present = {m: dict(zip(ids, fs.present[m].tolist(), strict=True)) for m in fs.features}
    assert not present["t"]["bad_text"] and present["t"]["missing"]
    assert present["a"]["ok1"] and present["a"]["no_video"] and not present["a"]["no_audio"]
    assert present["v"]["ok1"] and not present["v"]["no_audio"]  # no face -> cached as masked
    assert float(fs.features["a"][ids.index("no_audio")].abs().sum()) == 0.0
    assert (fs.features["t"][ids.index("ok2")] == fs.features["t"][ids.index("ok3")]).all()
    assert fs.feature_spec["a"]["extractor"] == extractors["a"][0].spec.name
    assert fs.feature_spec["t"]["extractors"][0]["weights"] == "packaged"


def test_changed_extractor_recomputes_only_it(dataset, extractors, tmp_path):
    store = tmp_path / "store"
    base = {m: extractors[m] for m in "ta"}
    first = extract_features(dataset, store, modalities="ta", extractors=base, progress=False)
    smile = extractors["a"][0]
    bumped = dataclasses.replace(smile.spec, version=smile.spec.version + "-next")
    changed = type(smile).__new__(type(smile))
    changed.__dict__.update(smile.__dict__, spec=bumped)  # same model, a newer declared version
    exs = {"t": extractors["t"], "a": [changed]}
    status = store_status(dataset, store, modalities="ta", extractors=exs)
    assert status[bumped.name]["stale"] == 5 and status[bumped.name]["cached"] == 0
    assert status["sbert"]["cached"] == 10
    second = extract_features(dataset, store, modalities="ta", extractors=exs, progress=False)
    assert second.done == 5 and second.cached == first.done - 5
    assert second.per_extractor_seconds["sbert"] == 0


def test_strict_makes_first_failure_fatal(dataset, extractors, tmp_path):
    with pytest.raises(ExtractionError, match=r"--strict: utterance '\w+'"):
        extract_features(
            dataset,
            tmp_path / "s",
            modalities="ta",
            extractors=extractors,
            strict=True,
            progress=False,
        )


def test_cli_extract_status_gc_and_errors(dataset, tmp_path, capsys):
    from pipeline.cli import main

    store = str(tmp_path / "store")
    # the tiny preset's MiniLM text (the default offline preset's mpnet is 5x slower to run)
    common = ["--manifest", str(dataset), "--store", store, "--modalities", "t", "--preset", "tiny"]
    assert main(["extract", *common, "--no-progress", "--featureset", str(tmp_path / "fs")]) == 0
    out = capsys.readouterr().out
    assert "done 10, cached 0, failed 1" in out and "featureset:" in out
    assert FeatureSet.load(tmp_path / "fs").dims == {"t": 384}
    assert main(["status", *common]) == 0
    assert "sbert" in capsys.readouterr().out.split("\n")[1]
    assert main(["gc", "--store", store, "--dry-run"]) == 0  # no manifest: debris only
    assert "would delete 0 objects" in capsys.readouterr().out
    # Keeping only the audio of this manifest drops every text entry.
    assert main(["gc", "--store", store, "--manifest", str(dataset), "--modalities", "a"]) == 0
    assert "deleted 9 objects and 9 index rows" in capsys.readouterr().out  # ok2/ok3 share one
    assert main(["check-media", "--manifest", str(dataset), "--out", str(tmp_path / "mc")]) == 0
    assert "suspect" in capsys.readouterr().out and (tmp_path / "mc" / "media_check.csv").is_file()
    # Bad input: one line naming the file and the problem, exit code 2, no traceback.
    assert main(["status", "--manifest", str(tmp_path / "nope.csv"), "--store", store]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.csv" in err and "not found" in err


def test_extract_featureset_is_one_pass_and_equals_the_two_steps(dataset, tmp_path, monkeypatch):
    """Planned once (rows read, media hashed, keys made once); the FeatureSet it assembles is
    the one extract_features + build_featureset write, byte for byte."""
    import pipeline.features.extract as extract_mod
    from pipeline.features.extract import extract_featureset

    manifest = dataset
    extract_features(manifest, tmp_path / "s1", "tiny", "ta", progress=False)
    two_steps = build_featureset(manifest, tmp_path / "s1", "tiny", "ta", tmp_path / "fs1")

    plans, reads = [], []
    monkeypatch.setattr(
        extract_mod, "plan_tasks", lambda *a, **k: plans.append(a) or plan_tasks(*a, **k)
    )
    monkeypatch.setattr(extract_mod, "read_manifest", lambda p: reads.append(p) or read_manifest(p))
    summary, fs = extract_featureset(
        manifest, tmp_path / "s2", "tiny", "ta", out_dir=tmp_path / "fs2", progress=False
    )
    assert (len(reads), len(plans)) == (1, 1)
    assert summary.failed > 0 and summary.done > 0  # the dataset's bad rows are failures
    assert isinstance(fs, FeatureSet) and len(fs) == len(read_manifest(manifest))
    name = "features.safetensors"
    assert (tmp_path / "fs2" / name).read_bytes() == (two_steps / name).read_bytes()


def test_identical_texts_share_one_entry_and_the_summary_says_so(tmp_path):
    rows = pd.DataFrame(
        {
            "dialogue_id": ["d"] * 3,
            "utterance_id": ["u0", "u1", "u2"],
            "speaker": ["A", "B", "A"],
            "start_s": [0.0, 1.0, 2.0],
            "end_s": [1.0, 2.0, 3.0],
            "text": ["Yeah.", "Yeah.", "No way."],  # two utterances, one text
        }
    )
    manifest = write_manifest(rows, tmp_path / "m.csv")
    s = extract_features(manifest, tmp_path / "store", "tiny", "t", progress=False)
    assert (s.done, s.new_entries) == (3, 2)
    assert "the 3 computed are stored as 2 entries: identical inputs (the same text)" in s.line()


def test_built_extractors_are_reused_until_their_model_folder_is_rewritten(tmp_path):
    """A long-lived worker keeps one built text model per folder: the same objects while the
    folder is unchanged, a fresh model once it is rewritten (fine-tuned again), and the old one
    is dropped rather than kept beside it."""
    import shutil

    from extractors.text import packaged_minilm_path
    from pipeline.features import extract as extract_module

    encoder = tmp_path / "encoder"
    shutil.copytree(packaged_minilm_path(), encoder)
    load = lambda: extract_module.load_extractors("tiny", "t", text_model=str(encoder))  # noqa: E731
    first = load()["t"][0]
    assert load()["t"][0] is first
    config = encoder / "config.json"
    config.write_text(config.read_text() + "\n")  # a rewrite: other size and mtime
    second = load()["t"][0]
    assert second is not first
    assert load()["t"][0] is second
    keys = [k for k in extract_module._BUILT if str(encoder) in k]
    assert len(keys) == 1
