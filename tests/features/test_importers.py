"""Importers: authors' pickle (trust, restricted unpickling, layouts, dev split) and ../shared data."""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.cli import data as cli_data
from pipeline.dataset.adapters.meld import repair_text
from pipeline.features.featureset import FeatureSet, PresenceLeakError, presence_leaks, split_counts
from pipeline.features.importers.authors_pickle import (
    choose_dev,
    load_authors_pickle,
    save_as_authors_pickle,
)
from pipeline.features.importers.shared_data import (
    DEFAULT_DATA_DIR,
    HANDCRAFTED,
    load_iemocap_shared,
    load_meld_shared,
    read_iemocap_table,
    read_meld_table,
)
from pipeline.features.importers.synthetic import make_synthetic

torch.set_num_threads(min(2, torch.get_num_threads()))  # shared 2-core machine

SHARED = Path(os.environ.get("ERC_SHARED_DATA", DEFAULT_DATA_DIR))
needs_shared = pytest.mark.skipif(
    not (SHARED / "iemocap" / "iemocap_erc.csv").is_file(), reason=f"{SHARED} absent"
)


def _small_featureset() -> FeatureSet:
    fs = make_synthetic(
        n_dialogues={"train": 18, "dev": 2, "test": 5},
        utterances=200,
        dims={"t": 6, "a": 4, "v": 3},
        seed=3,
    )
    for d in fs.dialogues:
        d.extra["texts"] = [f"{d.id} says {j}" for j in range(d.length)]
    return fs


def _assert_same_rows(a: FeatureSet, b: FeatureSet) -> None:
    """Same dialogues (by id) with equal features, labels, speakers, utterance ids and texts."""
    by_id = {d.id: d for d in b.dialogues}
    assert sorted(by_id) == sorted(d.id for d in a.dialogues)
    for d in a.dialogues:
        e = by_id[d.id]
        assert (e.utterance_ids, e.speakers) == (d.utterance_ids, d.speakers)
        assert e.extra["texts"] == d.extra["texts"]
        ra, rb = slice(d.start, d.start + d.length), slice(e.start, e.start + e.length)
        assert torch.equal(a.labels[ra], b.labels[rb])
        for m in a.features:
            assert torch.equal(a.features[m][ra], b.features[m][rb])


# ---- authors' pickle ------------------------------------------------------------------------


def test_round_trip_fields_layout_keeps_values_and_splits(tmp_path):
    fs = _small_featureset()
    path = save_as_authors_pickle(fs, tmp_path / "iemocap.pkl", layout="fields")
    back = load_authors_pickle(path, "iemocap", trust=True)
    _assert_same_rows(fs, back)
    assert [(d.id, d.split) for d in back.dialogues] == [(d.id, d.split) for d in fs.dialogues]
    assert back.label_names == ["hap", "sad", "neu", "ang", "exc", "fru"]
    assert back.dims == {"t": 6, "a": 4, "v": 3}
    assert "dev=from the pickle" in back.source
    assert back.save(tmp_path / "fs") and FeatureSet.load(tmp_path / "fs").dims == back.dims


def test_round_trip_tuple_layout_draws_a_deterministic_dev_split(tmp_path):
    fs = _small_featureset()
    path = save_as_authors_pickle(fs, tmp_path / "t.pkl", layout="tuple", include_dev=False)
    a = load_authors_pickle(path, "iemocap", trust=True)
    b = load_authors_pickle(path, "iemocap", trust=True)
    _assert_same_rows(fs, a)
    train_pool = sorted(d.id for d in fs.dialogues if d.split in ("train", "dev"))
    dev = [d.id for d in a.split("dev")]
    assert dev == [d.id for d in b.split("dev")] == choose_dev(train_pool, 0.1, 12)
    assert len(dev) == 2 and set(dev) < set(train_pool)  # int(0.1 * 20)
    assert split_counts(a)["test"]["dialogues"] == 5
    assert "default_rng(12)" in a.source
    other = load_authors_pickle(path, "iemocap", trust=True, dev_seed=5)
    assert [d.id for d in other.split("dev")] != dev
    given = load_authors_pickle(path, "iemocap", trust=True, dev_ids=train_pool[:3])
    assert [d.id for d in given.split("dev")] == train_pool[:3]
    with pytest.raises(ValueError, match="dev_ids not among"):
        load_authors_pickle(path, "iemocap", trust=True, dev_ids=["nope"])


def test_dialoguernn_meld_tuple_one_hot_speakers_and_int_ids(tmp_path):
    """6 dicts (no visual), int utterance ids repeated across dialogues, one-hot speakers, and a
    trailing sentiment dict: DialogueRNN's MELD pickle layout."""
    rng = np.random.default_rng(0)
    vids = [0, 1, 2]
    one_hot = np.eye(9)
    obj = (
        {v: list(range(3)) for v in vids},
        {v: [one_hot[2], one_hot[5], one_hot[2]] for v in vids},
        {v: [0, 6, 4] for v in vids},
        {v: [rng.standard_normal(5) for _ in range(3)] for v in vids},
        {v: rng.standard_normal((3, 2)) for v in vids},
        {v: ["a", "b", "c"] for v in vids},
        [0, 1],
        [2],
        {v: [0, 1, 2] for v in vids},
    )
    path = tmp_path / "meld.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    fs = load_authors_pickle(path, "meld", trust=True, dev_fraction=0.5)
    assert fs.modalities == "ta" and fs.dims == {"t": 5, "a": 2}
    assert fs.dialogues[0].speakers == ["2", "5", "2"]
    assert fs.dialogues[0].utterance_ids[0] == f"{fs.dialogues[0].id}/0"
    assert [d.split for d in fs.dialogues] == ["train", "dev", "test"]
    assert fs.labels.tolist() == [0, 6, 4] * 3
    assert fs.label_names[6] == "ang"
    np.testing.assert_array_equal(fs.features["a"][6:9].numpy(), obj[4][2].astype(np.float32))


def test_mosei_fields_layout_uses_val_ids_and_label_scheme(tmp_path):
    vids = ["v1", "v2", "v3"]
    obj = {
        "speaker": {v: [0, 0] for v in vids},
        "label": {"7class": {v: [6, 0] for v in vids}, "2class": {v: [1, 0] for v in vids}},
        "text": {v: np.ones((2, 4)) for v in vids},
        "audio": {v: np.zeros((2, 3)) for v in vids},
        "visual": {v: np.zeros((2, 2)) for v in vids},
        "sentence": {v: ["x", "y"] for v in vids},
        "trainVid": ["v1"],
        "valVid": ["v2"],
        "testVid": ["v3"],
    }
    path = tmp_path / "mosei.pkl"
    path.write_bytes(pickle.dumps(obj))
    fs7 = load_authors_pickle(path, "mosei", trust=True)
    fs2 = load_authors_pickle(path, "mosei", trust=True, mosei_classes=2)
    assert [d.split for d in fs7.dialogues] == ["train", "dev", "test"]
    assert fs7.labels.tolist() == [6, 0] * 3 and len(fs7.label_names) == 7
    assert fs2.labels.tolist() == [1, 0] * 3 and fs2.label_names == ["neg", "pos"]


def test_presplit_layout_of_dialogue_dicts(tmp_path):
    """{train, dev, test}: lists of per-dialogue dicts (the form Ada2I's loader builds)."""

    def dia(uid, n):
        return {
            "uid": uid,
            "speakers": ["M", "F"][:n],
            "labels": [3, 5][:n],
            "text": np.full((n, 4), 0.5),
            "audio": np.zeros((n, 2)),
            "visual": np.ones((n, 3)),
            "sentence": ["hi", "there"][:n],
        }

    obj = {"train": [dia("a", 2), dia("b", 1)], "dev": [dia("c", 2)], "test": [dia("d", 2)]}
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps(obj))
    fs = load_authors_pickle(path, "iemocap", trust=True)
    assert [(d.id, d.split) for d in fs.dialogues] == [
        ("a", "train"), ("b", "train"), ("c", "dev"), ("d", "test")
    ]  # fmt: skip
    assert fs.labels.tolist() == [3, 5, 3, 3, 5, 3, 5] and fs.dims == {"t": 4, "a": 2, "v": 3}
    assert fs.dialogues[0].extra["texts"] == ["hi", "there"]


def test_refuses_without_trust(tmp_path):
    path = save_as_authors_pickle(_small_featureset(), tmp_path / "x.pkl")
    with pytest.raises(ValueError, match="--trust-pickle") as err:
        load_authors_pickle(path, "iemocap")
    assert str(path) in str(err.value) and "arbitrary code" in str(err.value)


def test_unknown_layout_names_the_file(tmp_path):
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps({"features": [1, 2, 3]}))
    with pytest.raises(ValueError, match="unknown pickle layout") as err:
        load_authors_pickle(path, "iemocap", trust=True)
    assert str(path) in str(err.value)
    path.write_bytes(pickle.dumps(tuple(range(9))))
    with pytest.raises(ValueError, match=f"{path}: unknown pickle layout"):
        load_authors_pickle(path, "iemocap", trust=True)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_non_allowed_global_is_refused_even_with_trust(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"trainVid": [_Exploit(marker)], "testVid": []}))
    with pytest.raises(ValueError, match=r"system, which is not allowed") as err:
        load_authors_pickle(path, "iemocap", trust=True)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_cli_import_authors_pickle(tmp_path, capsys):
    path = save_as_authors_pickle(_small_featureset(), tmp_path / "x.pkl")
    parser = argparse.ArgumentParser()
    cli_data.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["import", "authors-pickle", "--path", str(path), "--out", "o"])
    with pytest.raises(ValueError, match="--trust-pickle"):
        args.func(args)
    out = tmp_path / "fs"
    args = parser.parse_args(
        ["import", "authors-pickle", "--path", str(path), "--trust-pickle", "--out", str(out)]
    )
    assert args.func(args) == 0
    assert '"utterances": 200' in capsys.readouterr().out
    assert len(FeatureSet.load(out)) == 200


# ---- ../shared/data -------------------------------------------------------------------------


@pytest.mark.shared
@needs_shared
def test_iemocap_shared_counts_labels_and_audio():
    fs = load_iemocap_shared(SHARED, modalities="a")  # audio only: no text encoding, ~1 s
    table = pd.read_csv(SHARED / "iemocap" / "iemocap_erc.csv")
    assert len(fs) == 7_433 and len(fs.dialogues) == 151
    assert split_counts(fs) == {
        "train": {"dialogues": 108, "utterances": 5_163},
        "dev": {"dialogues": 12, "utterances": 647},
        "test": {"dialogues": 31, "utterances": 1_623},
    }
    assert np.bincount(fs.labels.numpy()).tolist() == [648, 1084, 1708, 1103, 1041, 1849]
    assert fs.labels.tolist() == table["label_id"].tolist()
    assert [u for d in fs.dialogues for u in d.utterance_ids] == table["utt_id"].tolist()
    assert fs.dims == {"a": 8} and fs.feature_spec["a"]["extractor"] == "iemocap-handcrafted-8"
    assert fs.feature_spec["a"]["columns"] == HANDCRAFTED
    assert int(fs.present["a"].sum()) == 7_429  # 4 Ses05M_script01_1b utterances lack a row
    train = torch.tensor([d.split == "train" for d in fs.dialogues for _ in range(d.length)])
    x = fs.features["a"][train & fs.present["a"]]  # [5163, 8]
    plain = [i for i, c in enumerate(HANDCRAFTED) if c != "harmonic"]  # harmonic: clipped tail
    assert x[:, plain].mean(0).abs().max() < 1e-3 and (x[:, plain].std(0) - 1).abs().max() < 1e-3
    assert fs.features["a"][~fs.present["a"]].abs().sum() == 0
    assert fs.features["a"].abs().max() <= 5.0
    assert presence_leaks(fs) == []


@pytest.mark.shared
@needs_shared
def test_shared_pyaudioanalysis_audio_is_refused_because_it_has_no_frustrated_utterance():
    # Its presence mask alone tells "fru" (0% covered) from the rest (92-100%): refused, with the
    # file, split, modality and classes named (pipeline/features/featureset.py, presence_leaks).
    with pytest.raises(PresenceLeakError) as err:
        load_iemocap_shared(SHARED, modalities="a", audio_source="pyaudioanalysis")
    msg = str(err.value)
    assert msg.startswith(str(SHARED / "iemocap" / "audio_pyaudioanalysis.npz") + ": ")
    assert "modality 'a' in split 'train'" in msg and "split 'test'" in msg
    assert "0% of 'fru'" in msg


@pytest.mark.shared
@needs_shared
def test_iemocap_shared_text_through_the_store(tmp_path):
    fs = load_iemocap_shared(
        SHARED, modalities="ta", text_model="minilm", store_root=tmp_path, limit_dialogues=1
    )
    assert [d.split for d in fs.dialogues] == ["train", "dev", "test"]
    x = fs.features["t"]  # [N, 384]
    assert x.shape == (len(fs), 384) and torch.isfinite(x).all()
    assert torch.allclose(x.norm(dim=1), torch.ones(len(fs)), atol=1e-3)
    spec = fs.feature_spec["t"]
    assert spec["extractor"] == "sbert" and len(spec["source_sha256"]) == 64
    assert spec["extractors"][0]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    entries = len(list((tmp_path / "objects").rglob("*.safetensors")))
    assert entries == len({t for d in fs.dialogues for t in d.extra["texts"]})  # one per text
    again = load_iemocap_shared(
        SHARED, modalities="t", text_model="minilm", store_root=tmp_path, limit_dialogues=1
    )
    assert torch.equal(again.features["t"], x)
    assert len(list((tmp_path / "objects").rglob("*.safetensors"))) == entries
    first = fs.dialogues[0]
    assert first.extra["texts"][0] == "Excuse me." and first.speakers[:2] == ["F", "M"]


def test_imported_text_is_the_text_extractors_own_output_and_spec(fake_shared_data, tmp_path):
    """The spec an import records is the one extraction records (extractor name, version,
    config and weights hash), and its vectors are the extractor's, so checkpoints trained on it
    accept features extracted from new videos."""
    from extractors.text import PACKAGED_MINILM, SentenceTextExtractor
    from pipeline.features.extract import feature_spec
    from pipeline.features.store import FeatureStore

    fs = load_iemocap_shared(
        fake_shared_data, modalities="t", text_model="minilm", store_root=tmp_path / "store"
    )
    ex = SentenceTextExtractor(PACKAGED_MINILM)
    want = feature_spec({"t": [ex]}, 2.0)["t"]
    got = fs.feature_spec["t"]
    assert {k: got[k] for k in want} == want
    assert got["extractors"] == [{**ex.spec.to_dict(), "config_hash": ex.spec.config_hash()}]
    assert got["source"] == "iemocap_erc.csv:text"
    texts = [t for d in fs.dialogues for t in d.extra["texts"]]
    np.testing.assert_array_equal(fs.features["t"].numpy(), np.stack(ex(texts)))
    assert fs.present["t"].all() and fs.dims == {"t": 384}
    with FeatureStore(tmp_path / "store") as store:  # the store is the cache: one entry per text
        assert len(list(store.entries())) == len(set(texts))


@pytest.mark.shared
@needs_shared
def test_meld_shared_counts_text_and_mojibake(tmp_path):
    table = read_meld_table(SHARED)
    per = table.groupby("split").agg(u=("utt_id", "size"), d=("dialogue", "nunique"))
    assert per.loc[["train", "dev", "test"], "u"].tolist() == [9_989, 1_109, 2_610]
    assert per.loc[["train", "dev", "test"], "d"].tolist() == [1_038, 114, 280]
    assert table["utt_id"].is_unique and not table["text"].str.contains("â€").any()
    first = table.iloc[0]
    assert first["utt_id"] == "train_dia0_utt0" and "company’s" in first["text"]
    assert repair_text("youâ€™re") == "you’re" and repair_text("Adiós.") == "Adiós."
    fs = load_meld_shared(SHARED, text_model="minilm", store_root=tmp_path, limit_dialogues=2)
    assert fs.modalities == "t" and fs.dims == {"t": 384}
    assert {d.split for d in fs.dialogues} == {"train", "dev", "test"} and len(fs.dialogues) == 6
    assert fs.label_names == ["neu", "sur", "fea", "sad", "joy", "dis", "ang"]
    raw = pd.read_csv(SHARED / "meld" / "train_sent_emo.csv")
    head = raw[raw.Dialogue_ID == 0].sort_values("Utterance_ID")
    n0 = fs.dialogues[0].length
    want = head["Emotion"].map(lambda e: fs.label_names.index(e[:3])).tolist()
    assert fs.labels[:n0].tolist() == want


@pytest.mark.shared
@needs_shared
def test_iemocap_table_split_names():
    assert set(read_iemocap_table(SHARED)["split"]) == {"train", "dev", "test"}
