"""A presence mask that predicts the label is refused by the importers and by training."""

from __future__ import annotations

import pytest

from pipeline.features.featureset import PresenceLeakError, check_presence, presence_leaks
from pipeline.features.importers.synthetic import make_synthetic
from pipeline.training.train import configs_for, train

LABELS = ["neu", "hap", "sad", "ang"]


def small(missing_rate=None):
    return make_synthetic(
        n_dialogues={"train": 24, "dev": 4, "test": 8},
        utterances=36 * 12,
        dims={"t": 16, "a": 12},
        signal={"t": 0.9, "a": 0.5},
        label_names=LABELS,
        missing_rate=missing_rate,
    )


def hide_class(fs, modality, label):
    """Mark `modality` absent for every utterance of class `label` (a leak, as in ../shared's
    pyaudioanalysis audio, which has no "fru" utterance)."""
    of_class = fs.labels == LABELS.index(label)
    fs.present[modality] = fs.present[modality].clone()
    fs.present[modality][of_class] = 0
    fs.features[modality][of_class] = 0.0
    return fs


def test_random_missingness_is_not_a_leak():
    fs = small(missing_rate={"a": 0.3})
    assert 0.6 < float(fs.present["a"].float().mean()) < 0.8
    assert presence_leaks(fs) == []
    check_presence(fs, "x")  # does not raise


def test_a_class_without_the_modality_is_a_leak_named_by_split_modality_and_class():
    fs = hide_class(small(), "a", "sad")
    problems = presence_leaks(fs)
    # dev has under MIN_CLASS_UTTERANCES per class here, so it is not judged
    assert {p.split("'")[3] for p in problems} == {"train", "test"}
    assert all("modality 'a'" in p and "0% of 'sad'" in p for p in problems)
    assert presence_leaks(fs, modalities="t") == []  # text is complete
    with pytest.raises(PresenceLeakError, match=r"^somewhere/features: modality 'a'"):
        check_presence(fs, "somewhere/features")


def test_training_refuses_a_leaking_feature_set_before_writing_anything(tmp_path):
    fs = hide_class(small(), "a", "sad")
    mc, tc = configs_for("tiny", "ta", {"progress": False, "epochs": 1})
    with pytest.raises(
        PresenceLeakError, match=r"predicts the label \(.*allow_presence_leak=true\)$"
    ):
        train(fs, mc, tc, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # Text alone does not use the leaking mask, and the escape hatch trains anyway.
    mc_t, tc_t = configs_for("tiny", "t", {"progress": False, "epochs": 1})
    assert train(fs, mc_t, tc_t, tmp_path / "text").best_epoch == 1
    _, tc_allow = configs_for("tiny", "ta", {"progress": False, "epochs": 1,
                                              "allow_presence_leak": "true"})  # fmt: skip
    assert train(fs, mc, tc_allow, tmp_path / "allowed").best_epoch == 1
