"""A FeatureSet whose bytes changed after it was written is refused, not read as good."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.features.featureset import DIGEST_KEY, FeatureSet, FeatureSetError
from pipeline.features.importers.synthetic import make_synthetic


@pytest.fixture
def saved(tmp_path):
    fs = make_synthetic(n_dialogues={"train": 3, "dev": 1, "test": 1}, utterances=40,
                        dims={"t": 4, "a": 3}, label_names=["neu", "hap", "sad"], seed=0)  # fmt: skip
    return fs.save(tmp_path / "fs")


def _rewrite_tensor(path, key, change):
    tensors = load_file(str(path / "features.safetensors"))
    change(tensors[key])
    save_file(tensors, str(path / "features.safetensors"))


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("feat.t", lambda x: x.view(-1)[5].add_(1e-3)),  # one value
        ("labels", lambda y: y.__setitem__(0, (int(y[0]) + 1) % 3)),  # sad -> happy
        ("present.a", lambda p: p.__setitem__(2, 1 - int(p[2]))),  # one presence bit
    ],
)
def test_one_changed_tensor_entry_is_refused(saved, key, change):
    assert FeatureSet.load(saved)  # as written: loads
    _rewrite_tensor(saved, key, change)
    with pytest.raises(FeatureSetError, match=r"fs: content does not match its content_sha256"):
        FeatureSet.load(saved)


def test_an_edited_meta_json_is_refused(saved):
    meta = json.loads((saved / "meta.json").read_text())
    meta["label_names"] = ["neu", "sad", "hap"]  # two labels swapped
    (saved / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FeatureSetError, match="was changed or damaged after it was written"):
        FeatureSet.load(saved)


def test_a_feature_set_without_its_digest_is_refused(saved):
    meta = json.loads((saved / "meta.json").read_text())
    del meta[DIGEST_KEY]
    (saved / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FeatureSetError, match="no 'content_sha256', so its content cannot be"):
        FeatureSet.load(saved)


def test_a_resave_after_a_deliberate_change_loads(saved):
    fs = FeatureSet.load(saved)
    fs.labels[0] = (int(fs.labels[0]) + 1) % 3
    fs.save(saved)
    assert torch.equal(FeatureSet.load(saved).labels, fs.labels)
