"""Bad input, kind by kind: each is a clear, contained failure.

Every case asserts that the message names the file (and row, key or utterance) and the problem, that
the other rows complete, and that the store and run folders are intact afterwards. Inputs are tiny:
a 3 s video and a 2 s wav generated here, the `tiny` extractor preset on text + audio (the visual
extractor has its own bad-input cases in tests/features/test_extract.py). Kinds that other test files already
cover with heavier fixtures (kill -9, concurrent writers, malicious pickles, no face) are listed in
COVERED_ELSEWHERE, and a test checks those tests still exist.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from pipeline.cli import main
from pipeline.dataset import media, media_writer
from pipeline.dataset.manifest import IEMOCAP, MELD, ManifestError, read_manifest, write_manifest
from pipeline.features.extract import build_featureset, extract_features, feature_spec, store_status
from pipeline.features.featureset import FeatureSet, FeatureSetError
from pipeline.features.store import FeatureStore

SR = media.SAMPLE_RATE
MODALITIES = "ta"
DURATION_S = 3.0
GOOD = [  # utterance, start, end, text: the rows that must complete in every case
    ("g1", 0.0, 1.0, "I am so glad you came."),
    ("g2", 1.0, 2.0, "Me too, it has been a while."),
]


def _voice(seconds: float, f0: float = 150.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )  # [S]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory, write_wav) -> Path:
    root = tmp_path_factory.mktemp("media")
    frames = [np.full((32, 32, 3), 90 + 10 * k, np.uint8) for k in range(int(DURATION_S * 5))]
    media_writer.write_video(root / "talk.mp4", frames, 5, audio=_voice(DURATION_S))
    media_writer.write_video(root / "silent_film.mp4", frames, 5)  # no audio stream
    write_wav(root / "speech.wav", _voice(2.0, 180.0))
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (root / "empty.wav").write_bytes(b"")
    os.mkfifo(root / "pipe.wav")
    (root / "a_folder.wav").mkdir()
    return root


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    """One store for every case: the good rows are computed once, then served from it."""
    return tmp_path_factory.mktemp("store") / "store"


def _rows(media_dir: Path, extra: list[dict]) -> pd.DataFrame:
    base = [
        {"dialogue_id": "d1", "utterance_id": u, "speaker": "A", "start_s": s, "end_s": e,
         "text": t, "label": "neu", "video_path": str(media_dir / "talk.mp4")}
        for u, s, e, t in GOOD
    ]  # fmt: skip
    defaults = {"dialogue_id": "d1", "speaker": "B", "text": "The odd one.", "label": "sad",
                "video_path": str(media_dir / "talk.mp4")}  # fmt: skip
    return pd.DataFrame(base + [{**defaults, **r} for r in extra])


def assert_store_intact(root: Path) -> None:
    """The index is a sound SQLite database; every indexed entry is a finite safetensors tensor;
    no temp file is left behind."""
    with sqlite3.connect(root / "index.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with FeatureStore(root, create=False) as store:
        keys = [e["key"] for e in store.entries()]
        assert keys
        for key in keys:
            vec = store.get(key)
            assert vec is None or np.isfinite(vec).all()
    assert not [p for p in root.rglob("*.tmp")]


def assert_reports(report_dir: Path, utterance: str, fragment: str) -> list[dict]:
    """failures.csv and failures.json agree and name the bad utterance (and only bad ones)."""
    csv = pd.read_csv(report_dir / "failures.csv", keep_default_na=False, dtype=str)
    js = json.loads((report_dir / "failures.json").read_text())
    assert len(csv) == len(js) and csv["utterance_id"].tolist() == [r["utterance_id"] for r in js]
    mine = [r for r in js if r["utterance_id"] == utterance]
    assert mine and all(fragment in r["reason"] for r in mine), js
    assert not {r["utterance_id"] for r in js} & {u for u, *_ in GOOD}
    return mine


# ---- row failures: one bad row, the others complete ---------------------------------------

# (kind, extra row, reason fragment, failing modalities, whether the failure names the file)
ROW_CASES = [
    ("inf-end", {"start_s": 0.5, "end_s": math.inf}, "non-finite timestamp", "a", False),
    ("inf-start", {"start_s": math.inf, "end_s": 2.0}, "non-finite timestamp", "a", False),
    ("neg-inf-start", {"start_s": -math.inf, "end_s": 1.0}, "non-finite timestamp", "a", False),
    ("nan-start", {"start_s": math.nan, "end_s": 1.0}, "missing start", "a", False),
    ("negative-start", {"start_s": -1.0, "end_s": 1.0}, "negative start", "a", False),
    ("inverted", {"start_s": 2.0, "end_s": 1.0}, "inverted segment", "a", False),
    ("zero-length", {"start_s": 1.0, "end_s": 1.0}, "zero-length", "a", False),
    ("past-end", {"start_s": 5.0, "end_s": 6.0}, "past the end", "a", True),
    ("missing-file", {"video_path": "nowhere.mp4"}, "media file not found", "a", True),
    ("dev-zero", {"audio_path": "/dev/zero"}, "not a regular file", "a", True),
    ("fifo", {"audio_path": "pipe.wav"}, "not a regular file", "a", True),
    ("folder", {"audio_path": "a_folder.wav"}, "not a regular file", "a", True),
    ("corrupt-file", {"video_path": "corrupt.mp4"}, "cannot open media", "a", True),
    ("empty-file", {"audio_path": "empty.wav"}, "empty file", "a", True),
    ("no-audio-stream", {"video_path": "silent_film.mp4"}, "no audio", "a", True),
    ("no-media-path", {"video_path": ""}, "no audio or video path", "a", False),
    ("bad-text-bytes", {"text": "caf\ufffd"}, "undecodable text", "t", False),
]


@pytest.mark.parametrize(
    "kind, row, fragment, mods, names_file", ROW_CASES, ids=[c[0] for c in ROW_CASES]
)
def test_bad_row_is_that_rows_failure(
    kind, row, fragment, mods, names_file, media_dir, extractors, store_root, tmp_path
):
    row = {"utterance_id": f"bad_{kind}", "start_s": 0.0, "end_s": 1.0,
           "video_path": str(media_dir / "talk.mp4"), **row}  # fmt: skip
    for col in ("video_path", "audio_path"):  # relative to the media folder, like a manifest
        if row.get(col) and not os.path.isabs(row[col]):
            row[col] = str(media_dir / row[col])
    manifest = write_manifest(_rows(media_dir, [row]), tmp_path / "m.csv")
    s = extract_features(
        manifest, store_root, "tiny", MODALITIES, extractors=extractors, progress=False,
        report_dir=tmp_path / "reports",
    )  # fmt: skip
    uid = row["utterance_id"]
    mine = assert_reports(tmp_path / "reports", uid, fragment)
    assert {r["modality"] for r in mine} == set(mods)
    if names_file:
        assert all(r["file"] for r in mine)
    assert any(uid in f.message() and fragment in f.message() for f in s.failures)
    # The other rows (and the bad row's unaffected modalities) are all in the store.
    counts = store_status(manifest, store_root, "tiny", MODALITIES, extractors=extractors)
    n_rows = len(GOOD) + 1
    for m, exs in extractors.items():
        for ex in exs:
            assert counts[ex.spec.name]["cached"] == n_rows - (m in mods)
    fs = FeatureSet.load(build_featureset(
        manifest, store_root, "tiny", MODALITIES, tmp_path / "fs", extractors
    ))  # fmt: skip
    bad = [u for d in fs.dialogues for u in d.utterance_ids].index(uid)
    for m in MODALITIES:
        assert fs.present[m][bad].item() == (m not in mods)
        assert fs.present[m][[0, 1]].all()  # g1, g2
    assert_store_intact(store_root)


def test_unknown_speaker_against_a_speaker_list(media_dir, extractors, store_root, tmp_path):
    manifest = write_manifest(_rows(media_dir, [{"utterance_id": "who", "speaker": "Zed",
                                                 "start_s": 2.0, "end_s": 3.0}]),
                              tmp_path / "m.csv")  # fmt: skip
    s = extract_features(
        manifest, store_root, "tiny", MODALITIES, extractors=extractors, progress=False,
        report_dir=tmp_path / "r", speakers=["A", "B"],
    )  # fmt: skip
    assert_reports(tmp_path / "r", "who", "unknown speaker 'Zed'")
    assert s.failed == 1 and s.done + s.cached == 3 * 3  # every entry of every row still made


def test_inf_row_in_the_extract_flow_shards(media_dir, extractors, store_root, tmp_path):
    """The flow's own steps (write-shards, extract-shard) run on a manifest with an inf row."""
    from flows.extract import extract_shard, write_shards

    bad = {"utterance_id": "u_inf", "start_s": 0.0, "end_s": math.inf}
    manifest = write_manifest(_rows(media_dir, [bad]), tmp_path / "m.csv")
    (shard,) = write_shards.fn(str(manifest), str(tmp_path / "shards"), 1)
    assert math.isinf(read_manifest(shard).set_index("utterance_id").at["u_inf", "end_s"])
    out = extract_shard.fn(shard, str(store_root), "tiny", MODALITIES, False)
    assert out["failed"] == 2  # two audio extractors for the one row
    assert_reports(Path(out["failures_path"]).parent, "u_inf", "non-finite timestamp")
    assert_store_intact(store_root)


def test_strict_names_the_bad_row(media_dir, extractors, store_root, tmp_path):
    bad = {"utterance_id": "u_inf", "start_s": 0.0, "end_s": math.inf}
    manifest = write_manifest(_rows(media_dir, [bad]), tmp_path / "m.csv")
    with pytest.raises(ValueError, match=r"--strict: utterance .u_inf.*non-finite timestamp"):
        extract_features(manifest, store_root, "tiny", MODALITIES, strict=True,
                         extractors=extractors, progress=False, report_dir=tmp_path)  # fmt: skip
    assert_store_intact(store_root)


# ---- whole-manifest errors: one clear error naming the file, nothing written ----------------

HEADER = "dialogue_id,utterance_id,speaker,start_s,end_s,text,label\n"
MANIFEST_CASES = [
    ("header-only", "m.csv", HEADER, "empty manifest"),
    ("zero-bytes", "m.csv", "", "empty manifest"),
    ("blank-jsonl", "m.jsonl", "\n\n", "empty manifest"),
    ("missing-column", "m.csv", "dialogue_id,utterance_id\nd,u\n", "missing required column"),
    ("duplicate-id", "m.csv", HEADER + "d,u,A,0,1,x,\nd,u,A,1,2,y,\n", "row 1: duplicate"),
    ("non-numeric-time", "m.csv", HEADER + "d,u,A,zero,1,x,\n", "start_s is not a number"),
    ("empty-id", "m.csv", HEADER + "d,,A,0,1,x,\n", "row 0: empty utterance_id"),
    ("bad-jsonl", "m.jsonl", '{"dialogue_id": "d", \n', "cannot parse manifest"),
    ("binary-parquet", "m.parquet", "\x00garbage\x01", "cannot parse manifest"),
    ("unknown-suffix", "m.txt", HEADER, "unknown manifest format"),
    ("label-outside-set", "m.csv",
     HEADER[:-1] + ",label_set\nd,u1,A,0,1,x,hap,iemocap\nd,u2,A,1,2,y,xyz,iemocap\n",
     "row 1 (utterance 'u2'): label 'xyz' is not in the iemocap label set ['hap', 'sad', 'neu'"),
    ("unknown-label-set", "m.csv", HEADER[:-1] + ",label_set\nd,u1,A,0,1,x,hap,emo9\n",
     "unknown label_set 'emo9'"),
]  # fmt: skip


@pytest.mark.parametrize(
    "kind, name, text, fragment", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES]
)
def test_bad_manifest_is_one_error_naming_the_file(kind, name, text, fragment, tmp_path, capsys):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert str(path) in str(err.value) and fragment in str(err.value)
    # Through the CLI: one line on stderr, exit 2, no traceback, no store created.
    store = tmp_path / "store"
    code = main(["extract", "--manifest", str(path), "--store", str(store), "--preset", "tiny",
                 "--modalities", "t", "--no-progress"])  # fmt: skip
    err_text = capsys.readouterr().err
    assert code == 2 and fragment in err_text and "Traceback" not in err_text
    assert not (store / "objects").exists() or not any((store / "objects").iterdir())


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv: manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def test_generic_manifest_labels_are_open_and_sorted(media_dir, extractors, store_root, tmp_path):
    """No declared label set: any label is a class; names sorted alphabetically (documented)."""
    df = _rows(media_dir, [{"utterance_id": "x", "start_s": 2.0, "end_s": 3.0, "label": "xyz"}])
    manifest = write_manifest(df, tmp_path / "m.csv")
    extract_features(manifest, store_root, "tiny", MODALITIES, extractors=extractors,
                     progress=False, report_dir=tmp_path)  # fmt: skip
    fs = FeatureSet.load(
        build_featureset(manifest, store_root, "tiny", MODALITIES, tmp_path / "fs", extractors)
    )
    assert fs.label_names == ["neu", "xyz"]


@pytest.mark.parametrize("declared, order", [("iemocap", IEMOCAP), ("meld", MELD)])
def test_declared_label_set_gives_the_canonical_order(
    declared, order, media_dir, extractors, store_root, tmp_path
):
    """Extracted feature sets use the same label order as imported ones (and the authors')."""
    from pipeline.features.importers import authors_pickle, shared_data, synthetic

    imported = {"iemocap": shared_data.IEMOCAP_LABELS, "meld": shared_data.MELD_LABELS}[declared]
    assert list(order) == imported == authors_pickle.LABEL_NAMES[declared]
    assert list(IEMOCAP) == synthetic.IEMOCAP_LABELS
    df = _rows(media_dir, [{"utterance_id": "x", "start_s": 2.0, "end_s": 3.0}])
    df["label"], df["label_set"] = ["ang", "sad", "neu"], declared
    manifest = write_manifest(df, tmp_path / "m.csv")
    extract_features(manifest, store_root, "tiny", MODALITIES, extractors=extractors,
                     progress=False, report_dir=tmp_path)  # fmt: skip
    fs = FeatureSet.load(
        build_featureset(manifest, store_root, "tiny", MODALITIES, tmp_path / "fs", extractors)
    )
    assert fs.label_names == list(order)  # not the alphabetical ["ang", "neu", "sad"]
    assert [fs.label_names[i] for i in fs.labels.tolist()] == ["ang", "sad", "neu"]


def test_adapters_declare_their_label_sets(tmp_path):
    from pipeline.dataset.adapters.meld import load_meld

    csv = tmp_path / "dev_sent_emo.csv"
    pd.DataFrame({"Utterance": ["hi", "no"], "Speaker": ["A", "B"], "Emotion": ["joy", "anger"],
                  "Sentiment": ["positive", "negative"], "Dialogue_ID": ["0", "0"],
                  "Utterance_ID": ["0", "1"]}).to_csv(csv, index=False)  # fmt: skip
    df = load_meld(tmp_path, splits=["dev"])
    assert df["label"].tolist() == ["joy", "ang"] and set(df["label_set"]) == {"meld"}
    sent = load_meld(tmp_path, splits=["dev"], label="sentiment")
    assert set(sent["label_set"]) == {"meld-sentiment"}


@pytest.mark.parametrize("fps", ["0", "-2", "nan", "inf", "1e9"])
def test_bad_fps_is_refused_before_anything_is_written(fps, media_dir, tmp_path, capsys):
    manifest = write_manifest(_rows(media_dir, []), tmp_path / "m.csv")
    store = tmp_path / "store"
    with pytest.raises(ValueError, match="fps must be a finite number > 0|fps must be at most 120"):
        extract_features(manifest, store, "tiny", "t", fps=float(fps), progress=False)
    code = main(["extract", "--manifest", str(manifest), "--store", str(store), "--preset", "tiny",
                 "--modalities", "t", "--fps", fps, "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "fps must be" in err and "Traceback" not in err
    assert not store.exists()


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_import_limit_dialogues_must_be_positive(limit, tmp_path, capsys):
    from pipeline.features.importers.shared_data import import_dataset

    with pytest.raises(ValueError, match=rf"limit_dialogues must be >= 1.*got {limit}"):
        import_dataset("iemocap-shared", tmp_path / "fs", limit_dialogues=int(limit))
    code = main(["import", "iemocap-shared", "--out", str(tmp_path / "fs"),
                 "--limit-dialogues", limit])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "limit_dialogues must be >= 1" in err and "Traceback" not in err
    assert not (tmp_path / "fs").exists()


# ---- feature sets on disk ------------------------------------------------------------------


@pytest.fixture
def saved_featureset(tmp_path) -> Path:
    from pipeline.features.importers.synthetic import make_synthetic

    fs = make_synthetic({"train": 2, "dev": 1, "test": 1}, utterances=12,
                        dims={"t": 4, "a": 3}, seed=1)  # fmt: skip
    return fs.save(tmp_path / "fs")


def test_featureset_written_by_this_project_has_every_present_key(saved_featureset):
    keys = set(load_file(str(saved_featureset / "features.safetensors")))
    assert {"present.t", "present.a", "feat.t", "feat.a", "labels"} <= keys
    assert FeatureSet.load(saved_featureset).present["a"].dtype == __import__("torch").bool


def _rewrite(path: Path, edit) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


FEATURESET_CASES = [
    ("no-present-key", "features.safetensors", lambda t: t.pop("present.a"), "no 'present.a'"),
    ("no-labels", "features.safetensors", lambda t: t.pop("labels"), "no 'labels' tensor"),
    ("float-labels", "features.safetensors",
     lambda t: t.__setitem__("labels", t["labels"].float()), "'labels' must be an integer"),
    ("short-present", "features.safetensors",
     lambda t: t.__setitem__("present.t", t["present.t"][:3]), "present.t has shape"),
    ("nan-feature", "features.safetensors",
     lambda t: t["feat.t"].__setitem__((0, 0), float("nan")), "NaN/inf in modality t"),
    ("truncated", "features.safetensors", None, "not a readable safetensors file"),
    ("bad-json", "meta.json", None, "invalid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(
    "kind, name, edit, fragment", FEATURESET_CASES, ids=[c[0] for c in FEATURESET_CASES]
)
def test_damaged_featureset_is_refused_naming_file_and_key(
    kind, name, edit, fragment, saved_featureset
):
    path = saved_featureset / name
    if edit is not None:
        _rewrite(path, edit)
    elif name == "meta.json":
        path.write_text('{"label_names": [')
    else:
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FeatureSetError) as err:
        FeatureSet.load(saved_featureset)
    assert str(saved_featureset) in str(err.value) and fragment in str(err.value)


# ---- predict: bad segments are those utterances' failures -----------------------------------


@pytest.fixture(scope="module")
def checkpoint(extractors, tmp_path_factory) -> Path:
    """An untrained tiny Ada2I with the tiny extractors' feature spec: enough to predict with."""
    from model.ada2i import Ada2I
    from model.config import preset
    from pipeline.training.checkpoint import save_checkpoint

    spec = feature_spec(extractors, 2.0)
    dims = {m: s["dim"] for m, s in spec.items()}
    model = Ada2I(preset("tiny", input_dims=dims, modalities=MODALITIES))
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "ck", model,
                           label_names=["ang", "hap", "neu", "sad"], feature_spec=spec,
                           source=json.dumps({"preset": "tiny"}))  # fmt: skip


def _predict(inputs, checkpoint, out, extractors, store_root, **kw):
    from pipeline.inference.predict import predict_videos

    return predict_videos(inputs, checkpoint, out, store_root=store_root, progress=False,
                          extractors=extractors, **kw)  # fmt: skip


PREDICT_ROWS = [
    ("inverted", 2.0, 1.0, "inverted segment"),
    ("past-end", 5.0, 6.0, "past the end of the media"),
    ("inf-end", 0.5, math.inf, "non-finite timestamp"),
    ("negative", -1.0, 1.0, "negative start"),
]


def test_predict_manifest_bad_rows_fail_alone_and_are_counted(
    media_dir, checkpoint, extractors, store_root, tmp_path, capsys
):
    extra = [{"utterance_id": k, "start_s": s, "end_s": e} for k, s, e, _ in PREDICT_ROWS]
    manifest = write_manifest(_rows(media_dir, extra), tmp_path / "m.csv")
    video = media_dir / "talk.mp4"
    summary = _predict([video], checkpoint, tmp_path / "out", extractors, store_root,
                       manifest=manifest)  # fmt: skip
    (res,) = summary.videos
    assert res.status == "ok" and res.n_utterances == len(GOOD)
    table = pd.read_csv(res.outputs["csv"])
    assert table["utterance_id"].tolist() == [u for u, *_ in GOOD]  # bad rows: not from text alone
    failed = pd.read_csv(res.outputs["failed_utterances"], keep_default_na=False)
    assert failed["utterance_id"].tolist() == [k for k, *_ in PREDICT_ROWS]
    for (_, _, _, fragment), reason in zip(PREDICT_ROWS, failed["reason"], strict=True):
        assert fragment in reason
    assert summary.n_failed_utterances == 4 and "4 utterances failed" in summary.line()
    csv = pd.read_csv(summary.summary_csv)
    assert csv["n_failed_utterances"].tolist() == [4]
    assert "| 4 |" in summary.summary_md.read_text()
    # The CLI says so and exits 1 (something failed), without a traceback.
    code = main(["predict", str(video), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "cli"), "--manifest", str(manifest), "--store", str(store_root),
                 "--no-progress"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 1 and "4 utterance(s) not predicted" in out.out and "Traceback" not in out.err
    assert_store_intact(store_root)


def test_predict_strict_names_the_bad_row(media_dir, checkpoint, extractors, store_root, tmp_path):
    from pipeline.inference.predict import PredictError

    manifest = write_manifest(
        _rows(media_dir, [{"utterance_id": "inv", "start_s": 2.0, "end_s": 1.0}]),
        tmp_path / "m.csv",
    )
    with pytest.raises(PredictError, match=r"talk\.mp4: utterance 'inv': inverted segment"):
        _predict([media_dir / "talk.mp4"], checkpoint, tmp_path / "o", extractors, store_root,
                 manifest=manifest, strict=True)  # fmt: skip


def test_predict_inverted_srt_cue_fails_alone(
    media_dir, checkpoint, extractors, store_root, tmp_path
):
    from pipeline.inference.segment import parse_subtitles

    video = tmp_path / "clip.mp4"
    video.write_bytes((media_dir / "talk.mp4").read_bytes())
    srt = video.with_suffix(".srt")
    srt.write_text(
        "1\n00:00:00,000 --> 00:00:01,000\nA: Hello there.\n\n"
        "2\n00:00:02,000 --> 00:00:01,500\nB: Backwards cue.\n\n"
        "3\n00:00:01,000 --> 00:00:02,000\nA: Fine, thanks.\n\n"
        "4\n00:00:09,000 --> 00:00:10,000\nB: After the end.\n"
    )
    cues = parse_subtitles(srt)  # parses: the inverted cue is flagged, not fatal
    assert [bool(c.problem) for c in cues] == [False, False, True, False]
    assert "clip.srt:6: cue ends (1.500 s) before it starts (2.000 s)" in cues[2].problem
    summary = _predict([video], checkpoint, tmp_path / "out", extractors, store_root)
    (res,) = summary.videos
    assert res.status == "ok" and res.n_utterances == 2
    failed = pd.read_csv(res.outputs["failed_utterances"], keep_default_na=False)
    assert failed["cue"].tolist() == [f"{srt}:6", f"{srt}:14"]
    assert "inverted segment" in failed["reason"][0] and "past the end" in failed["reason"][1]
    assert summary.n_failed_utterances == 2


def test_predict_all_rows_bad_fails_the_video_with_the_reason(
    media_dir, checkpoint, extractors, store_root, tmp_path
):
    df = _rows(media_dir, [])
    df["start_s"], df["end_s"] = [7.0, 8.0], [8.0, 9.0]
    other = media_dir / "speech.wav"  # a second video predicts fine alongside
    pd.concat([df, pd.DataFrame([{**df.iloc[0], "utterance_id": "w1", "dialogue_id": "w",
                                   "start_s": 0.0, "end_s": 1.0, "video_path": "",
                                   "audio_path": str(other)}])]).to_csv(tmp_path / "m2.csv")  # fmt: skip
    both = read_manifest(tmp_path / "m2.csv")
    summary = _predict([media_dir / "talk.mp4", other], checkpoint, tmp_path / "out", extractors,
                       store_root, manifest=both)  # fmt: skip
    bad, good = summary.videos
    assert bad.status == "failed" and "no utterance can be cut" in bad.reason
    assert "past the end" in bad.reason and good.status == "ok" and good.n_utterances == 1


@pytest.mark.parametrize("name", ["pipe.wav", "empty.wav", "corrupt.mp4", "missing.mp4"])
def test_predict_unreadable_input_fails_that_video_only(
    name, media_dir, checkpoint, extractors, store_root, tmp_path
):
    """A FIFO, an empty file, a corrupt one, a missing one: that video fails, at once, alone."""
    summary = _predict([media_dir / name, media_dir / "speech.wav"], checkpoint, tmp_path / "o",
                       extractors, store_root)  # fmt: skip
    bad, good = summary.videos
    assert bad.status == "failed" and bad.reason and good.status == "ok"
    assert name in pd.read_csv(summary.summary_csv)["video"][0]


# ---- the paper preset offline ----------------------------------------------------------------


def test_paper_preset_offline_is_one_message(tmp_path, capsys, monkeypatch):
    from extractors import presets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(presets.PresetUnavailableError) as err:
        presets.build_extractors("paper", "a")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert "preset 'paper' cannot be built" in str(err.value) and "offline" in str(err.value)
    manifest = tmp_path / "m.csv"
    manifest.write_text(HEADER + "d,u,A,0,1,hello,\n")
    code = main(["extract", "--manifest", str(manifest), "--store", str(tmp_path / "s"),
                 "--preset", "paper", "--modalities", "a", "--no-progress"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err + captured.out
    assert captured.err.count("preset 'paper' cannot be built") == 1


# ---- kinds covered by other test files (heavier fixtures); kept here as the catalogue ------

COVERED_ELSEWHERE = {
    "no video stream / no face / missing / corrupt media (visual)": (
        "test_extract", "test_extract_end_to_end_records_every_bad_input"),
    "first failure fatal under --strict": ("test_extract", "test_strict_makes_first_failure_fatal"),
    "kill -9 of extraction, then resume": ("test_store", "test_sigkill_mid_run_then_resume_is_identical"),
    "two concurrent extractions on one store": ("test_store", "test_two_concurrent_writer_processes"),
    "kill and resume of training": ("test_train", "test_resume_continues_exactly_where_it_stopped"),
    "pickle without --trust-pickle": ("test_importers", "test_refuses_without_trust"),
    "malicious pickle global even with trust": (
        "test_importers", "test_non_allowed_global_is_refused_even_with_trust"),
    "unknown pickle layout": ("test_importers", "test_unknown_layout_names_the_file"),
    "corrupt clip inside a predicted dialogue": ("test_predict", "test_corrupt_clip_inside_a_dialogue"),
    "checkpoint/feature mismatch": ("test_predict", "test_mismatched_checkpoint_is_refused"),
    "malformed SRT / WebVTT": ("test_segment", "test_malformed_srt_names_file_and_line"),
    "unreadable or silent media for segmentation": (
        "test_segment", "test_unreadable_or_silent_media_is_reported"),
    "bad feature set refused, nothing half written": (
        "test_train", "test_bad_featureset_on_disk_is_refused_and_nothing_half_written"),
}  # fmt: skip


def test_kinds_covered_elsewhere_still_have_their_tests():
    here = Path(__file__).parent
    # Test files live in per-stage folders (tests/<stage>/test_x.py): find each by name.
    files = {path.stem: path for path in here.rglob("test_*.py")}
    for kind, (module, name) in COVERED_ELSEWHERE.items():
        source = files.get(module, here / f"{module}.py").read_text()
        assert f"def {name}(" in source, f"{kind}: tests/{module}.py::{name} is gone"
