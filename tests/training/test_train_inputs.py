"""What training accepts as input: the modalities a feature set has, dev and test splits."""

from __future__ import annotations

import logging

import pytest

from pipeline.features.featureset import FeatureSet, FeatureSetError
from pipeline.features.importers.synthetic import make_synthetic
from pipeline.training.train import train_from_featureset

FAST = {"progress": False, "epochs": 1}


def _saved(tmp_path, dims, n_dialogues, unlabel_dev=False):
    fs = make_synthetic(
        n_dialogues=n_dialogues,
        utterances=12 * sum(n_dialogues.values()),
        dims=dims,
        label_names=["neu", "hap", "sad"],
        seed=0,
    )
    if unlabel_dev:
        for d in fs.split("dev"):
            fs.labels[d.start : d.start + d.length] = -1
    fs.save(tmp_path / "fs")
    return tmp_path / "fs"


def test_modalities_default_to_those_the_feature_set_has(tmp_path):
    path = _saved(tmp_path, {"t": 8, "a": 6}, {"train": 6, "dev": 2, "test": 2})
    result = train_from_featureset(path, tmp_path / "run", "tiny", overrides=FAST)
    assert result.metrics["modalities"] == "ta"
    with pytest.raises(FeatureSetError, match=r"fs: modalities \['v'\] requested but only 'ta'"):
        train_from_featureset(path, tmp_path / "run2", "tiny", "tav", overrides=FAST)
    assert not (tmp_path / "run2").exists()  # refused before anything is written


def test_no_dev_split_is_carved_from_train_and_said(tmp_path, caplog):
    path = _saved(tmp_path, {"t": 8}, {"train": 10, "test": 2})
    with caplog.at_level(logging.WARNING):
        result = train_from_featureset(path, tmp_path / "run", "tiny", overrides=FAST)
    assert "no 'dev' split, so 1 of 10 training dialogues" in caplog.text
    assert result.metrics["n"] > 0


def test_no_test_split_is_said_and_reports_no_metrics(tmp_path, caplog):
    path = _saved(tmp_path, {"t": 8}, {"train": 6, "dev": 2})
    with caplog.at_level(logging.WARNING):
        result = train_from_featureset(path, tmp_path / "run", "tiny", overrides=FAST)
    assert "no 'test' split: the run reports no test metrics" in caplog.text
    assert result.metrics == {}


def test_a_dev_set_without_labels_is_refused(tmp_path):
    path = _saved(tmp_path, {"t": 8}, {"train": 6, "dev": 2, "test": 2}, unlabel_dev=True)
    assert FeatureSet.load(path).split("dev")
    with pytest.raises(ValueError, match=r"the dev dialogues \(2\) have no labelled utterance"):
        train_from_featureset(path, tmp_path / "run", "tiny", overrides=FAST)
