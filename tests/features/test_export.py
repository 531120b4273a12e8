"""`erc export`: authors' pickle and MMSA layouts, round-tripped through the importers."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from pipeline.cli import main as cli_main
from pipeline.features.exporters import export_featureset
from pipeline.features.featureset import FeatureSet
from pipeline.features.importers.authors_pickle import LABEL_NAMES, load_authors_pickle
from pipeline.features.importers.mmsa import load_mmsa_pickle
from pipeline.features.importers.synthetic import make_synthetic


def featureset(**kw) -> FeatureSet:
    fs = make_synthetic(
        n_dialogues={"train": 5, "dev": 2, "test": 3},
        utterances=10 * 6,
        dims={"t": 6, "a": 4, "v": 3},
        label_names=LABEL_NAMES["iemocap"],
        seed=3,
        missing_rate={"v": 0.3},
        **kw,
    )
    for d in fs.dialogues:  # texts, and speakers as IEMOCAP's
        d.extra["texts"] = [f"{d.id} says {j}" for j in range(d.length)]
        d.speakers = ["M" if j % 2 else "F" for j in range(d.length)]
    # what a store may hold for a missing face: not zeros, so the export must zero it
    fs.features["v"][~fs.present["v"]] = 7.0
    return fs


def expected_features(fs: FeatureSet, m: str) -> np.ndarray:
    x = fs.features[m].numpy().copy()
    x[~fs.present[m].numpy()] = 0.0
    return x


def by_split(fs: FeatureSet) -> dict[str, list[str]]:
    return {s: [d.id for d in fs.split(s)] for s in ("train", "dev", "test")}


def rows_of(fs: FeatureSet, ids: list[str]) -> np.ndarray:
    index = {d.id: d for d in fs.dialogues}
    return np.concatenate(
        [np.arange(index[i].start, index[i].start + index[i].length) for i in ids]
    )


def test_authors_pickle_round_trips_through_the_importer(tmp_path):
    fs = featureset()
    assert (~fs.present["v"]).sum() > 3
    out = tmp_path / "iemocap.pkl"
    summary = export_featureset(fs, out, "authors-pickle")
    back = load_authors_pickle(out, "iemocap", trust=True)

    assert by_split(back) == by_split(fs)  # valVid carries our dev split
    for a, b in zip(fs.dialogues, back.dialogues, strict=True):
        assert (a.id, a.utterance_ids, a.speakers) == (b.id, b.utterance_ids, b.speakers)
        assert a.extra["texts"] == b.extra["texts"]
    assert torch.equal(back.labels, fs.labels)
    assert back.label_names == fs.label_names
    for m in "tav":
        np.testing.assert_array_equal(back.features[m].numpy(), expected_features(fs, m))
    assert summary.zero_filled == {"t": 0, "a": 0, "v": int((~fs.present["v"]).sum())}
    sidecar = json.loads((tmp_path / "iemocap.pkl.json").read_text())
    assert sidecar["label_names"] == fs.label_names
    assert sidecar["zero_filled"]["v"] == summary.zero_filled["v"]
    assert any("zeros" in n for n in sidecar["notes"])


def test_authors_tuple_layout_is_the_9_tuple_dialoguegcn_unpacks(tmp_path):
    fs = featureset()
    out = tmp_path / "dgcn.pkl"
    export_featureset(fs, out, "authors-pickle", layout="tuple")
    with open(out, "rb") as f:
        obj = pickle.load(f)  # our own file, just written
    assert isinstance(obj, tuple) and len(obj) == 9
    ids, speakers, labels, text, audio, visual, sentences, train_vid, test_vid = obj
    splits = by_split(fs)
    assert list(train_vid) == splits["train"] + splits["dev"]
    assert list(test_vid) == splits["test"]
    d = fs.dialogues[0]
    assert speakers[d.id] == d.speakers and sentences[d.id] == d.extra["texts"]
    assert labels[d.id] == fs.labels[: d.length].tolist()
    assert np.asarray(visual[d.id]).shape == (d.length, 3)
    back = load_authors_pickle(out, "iemocap", trust=True)
    assert sorted(by_split(back)["train"] + by_split(back)["dev"]) == sorted(train_vid)
    for m in "tav":
        rows = rows_of(back, [x.id for x in back.dialogues])
        ours = expected_features(fs, m)[rows_of(fs, [x.id for x in back.dialogues])]
        np.testing.assert_array_equal(back.features[m].numpy()[rows], ours)


def test_tuple_layout_keeps_nine_positions_without_visual_features(tmp_path):
    fs = featureset().select_modalities("ta")
    out = tmp_path / "dgcn_ta.pkl"
    export_featureset(fs, out, "authors-pickle", layout="tuple")
    with open(out, "rb") as f:
        obj = pickle.load(f)  # our own file, just written
    assert isinstance(obj, tuple) and len(obj) == 9  # was 8: DialogueGCN's unpacking failed
    ids, _, _, text, audio, visual, sentences, _, _ = obj
    d = fs.dialogues[0]
    assert np.asarray(text[d.id]).shape == (d.length, 6)
    assert np.asarray(audio[d.id]).shape == (d.length, 4)
    assert np.asarray(visual[d.id]).shape == (d.length, 1) and not np.asarray(visual[d.id]).any()
    assert sentences[d.id] == d.extra["texts"]
    notes = json.loads((tmp_path / "dgcn_ta.pkl.json").read_text())["notes"]
    assert any("no visual features, so videoVisual holds one zero" in n for n in notes)


def test_mmsa_export_matches_the_layout_and_round_trips(tmp_path):
    fs = featureset()
    out = tmp_path / "mmsa.pkl"
    summary = export_featureset(fs, out, "mmsa")
    with open(out, "rb") as f:
        data = pickle.load(f)
    assert set(data) == {"train", "valid", "test"}
    part = data["valid"]
    n = sum(d.length for d in fs.split("dev"))
    for key in ("id", "raw_text", "annotations", "audio_lengths", "vision_lengths"):
        assert len(part[key]) == n, key
    assert part["text"].shape == (n, 1, 6) and part["text"].dtype == np.float32
    assert part["audio"].shape == (n, 1, 4) and part["vision"].shape == (n, 1, 3)
    assert part["classification_labels"].dtype == np.int64
    np.testing.assert_array_equal(part["regression_labels"], part["classification_labels"])
    d = fs.split("dev")[0]
    assert part["id"][0] == f"{d.id}$_${d.utterance_ids[0]}"
    assert part["annotations"][0] == fs.label_names[int(fs.labels[d.start])]
    assert summary.splits == {"train": 5, "valid": 2, "test": 3}

    back = load_mmsa_pickle(out, trust=True)
    assert back.label_names == fs.label_names  # from the sidecar
    assert by_split(back) == by_split(fs)
    for a, b in zip(fs.dialogues, back.dialogues, strict=True):
        assert (a.id, a.utterance_ids, a.speakers) == (b.id, b.utterance_ids, b.speakers)
        assert a.extra["texts"] == b.extra["texts"]
    assert torch.equal(back.labels, fs.labels)
    for m in "tav":
        np.testing.assert_array_equal(back.features[m].numpy(), expected_features(fs, m))
        assert torch.equal(back.present[m], fs.present[m])  # the mask survives via <m>_present


def test_mmsa_export_leaves_out_unlabelled_utterances_and_names_sentiment_targets(tmp_path):
    fs = featureset()
    fs.label_names = list(LABEL_NAMES["mosei"][:6])  # 6 classes, a sentiment-like label set
    fs.labels[:3] = -1
    summary = export_featureset(fs, tmp_path / "m.pkl", "mmsa")
    assert summary.left_out == 3 and summary.utterances == len(fs) - 3
    assert any("unlabelled" in n for n in summary.notes)
    fs.label_names = list(LABEL_NAMES["mosei"])
    export_featureset(fs, tmp_path / "m7.pkl", "mmsa")
    with open(tmp_path / "m7.pkl", "rb") as f:
        part = pickle.load(f)["test"]
    np.testing.assert_array_equal(part["regression_labels"], part["classification_labels"] - 3.0)


def test_export_needs_no_missing_modality_and_refuses_bad_requests(tmp_path):
    fs = featureset().select_modalities("ta")
    summary = export_featureset(fs, tmp_path / "ta.pkl", "authors-pickle")
    assert any("vision" in n for n in summary.notes)
    assert set(load_authors_pickle(tmp_path / "ta.pkl", "iemocap", trust=True).features) == {
        "t",
        "a",
    }
    with pytest.raises(ValueError, match="unknown export format 'csv'"):
        export_featureset(fs, tmp_path / "x.pkl", "csv")
    with pytest.raises(ValueError, match="tuple layout needs text and audio"):
        export_featureset(
            featureset().select_modalities("v"), tmp_path / "v.pkl", "authors-pickle", "tuple"
        )
    with pytest.raises(ValueError, match="refusing to read a pickle without trust"):
        load_mmsa_pickle(tmp_path / "ta.pkl")


def test_erc_export_cli(tmp_path, capsys):
    fs = featureset()
    fs.save(tmp_path / "fs")
    rc = cli_main(
        [
            "export",
            "--format",
            "mmsa",
            "--features",
            str(tmp_path / "fs"),
            "--out",
            str(tmp_path / "o.pkl"),
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["format"] == "mmsa" and printed["utterances"] == len(fs)
    assert (tmp_path / "o.pkl").is_file() and (tmp_path / "o.pkl.json").is_file()
    rc = cli_main(
        [
            "export",
            "--format",
            "mmsa",
            "--features",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "p.pkl"),
        ]
    )
    assert rc == 2 and "feature set file not found" in capsys.readouterr().err
