"""Checkpoints and resumable state: damage is refused by file name, never loaded as a model.

A model.safetensors with an intact header and a damaged payload used to load (evaluate
exited 0 on NaN probabilities); a truncated one gave a traceback without the file; files were 0600.
Each test damages real files written by a real (tiny) training run.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch

from pipeline.features.featureset import FeatureSet
from pipeline.features.importers.synthetic import make_synthetic
from pipeline.inference.predict import run_model
from pipeline.training.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    CheckpointUnavailableError,
    checkpoint_folder,
    load_checkpoint,
)
from pipeline.training.evaluate import evaluate_checkpoint
from pipeline.training.evaluate import predict as evaluate_predict
from pipeline.training.train import configs_for, train

DIMS = {"t": 16, "a": 12, "v": 20}
LABELS = ["neu", "hap", "sad", "ang"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch tiny run (its best/ and last/ folders) and the FeatureSet it used."""
    root = tmp_path_factory.mktemp("ckpt")
    old = os.umask(0o022)
    try:
        fs = make_synthetic(
            n_dialogues={"train": 8, "dev": 2, "test": 4},
            utterances=12 * 8,
            dims=DIMS,
            label_names=LABELS,
            seed=0,
        )
        fs.save(root / "fs")
        mc, tc = configs_for("tiny", "tav", {"progress": False, "epochs": 2})
        result = train(FeatureSet.load(root / "fs"), mc, tc, root / "run", resume=False)
    finally:
        os.umask(old)
    return result, root


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_checkpoint_files_follow_the_umask_and_record_a_hash(trained):
    result, _ = trained
    for path in [
        *result.checkpoint_dir.iterdir(),
        *(result.checkpoint_dir.parent / "last").iterdir(),
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # not mkstemp's 0600
    meta = json.loads((result.checkpoint_dir / META_FILE).read_text())
    assert len(meta["weights_sha256"]) == 64
    model, _ = load_checkpoint(result.checkpoint_dir)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoint_records_its_training_data(trained):
    """What predictions report as the model's training data: the feature set's path, the content
    hash the run's identity holds, its size and labels, and that synthetic data generated it."""
    result, root = trained
    td = json.loads((result.checkpoint_dir / META_FILE).read_text())["training_data"]
    identity = json.loads((result.run_dir / "config.json").read_text())["identity"]
    assert td["featureset_sha256"] == identity["featureset"]
    assert td["featureset"] == str((root / "fs").resolve())
    assert td["generated"] == "synthetic" and "synthetic features" in td["description"]
    assert (td["n_dialogues"], td["n_utterances"], td["n_labelled"]) == (14, 96, 96)
    assert {s: v["dialogues"] for s, v in td["splits"].items()} == {"train": 8, "dev": 2, "test": 4}
    assert td["label_names"] == LABELS and td["modalities"] == "tav"
    load_checkpoint(result.checkpoint_dir)  # the weights hash still verifies


def test_damaged_payload_is_refused_naming_the_file(trained, tmp_path):
    result, root = trained
    ckpt = _copy(result.checkpoint_dir, tmp_path / "ckpt")
    weights = ckpt / WEIGHTS_FILE
    blob = bytearray(weights.read_bytes())
    blob[-64:] = np.full(16, np.nan, np.float32).tobytes()  # header intact, last tensor NaN
    weights.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=rf"{weights}: damaged or replaced: its sha256"):
        load_checkpoint(ckpt)
    with pytest.raises(ValueError, match="sha256 does not match"):
        evaluate_checkpoint(ckpt, root / "fs", "test", tmp_path / "eval")
    assert not (tmp_path / "eval").exists()  # no metrics from a damaged model


def test_truncated_weights_are_refused_naming_the_file(trained, tmp_path):
    result, _ = trained
    ckpt = _copy(result.checkpoint_dir, tmp_path / "ckpt")
    weights = ckpt / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"{weights}: damaged or replaced"):
        load_checkpoint(ckpt)
    # the hash of the truncated file recorded too: still named, by the safetensors check
    from pipeline.files import sha256_file
    from pipeline.training.checkpoint import meta_digest

    meta = json.loads((ckpt / META_FILE).read_text())
    meta["weights_sha256"] = sha256_file(weights)
    meta["content_sha256"] = meta_digest(meta)
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{weights}: not a valid safetensors file, truncated"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["label_names"].__setitem__(0, "hbp"),  # a label name edited
        lambda m: m["label_names"].reverse(),  # labels swapped
        lambda m: m["model_config"].__setitem__("cosine_scale", 90.0),  # 10 -> 90
        lambda m: m.pop("weights_sha256"),  # the weights' hash dropped
        lambda m: m.pop("content_sha256"),  # the JSON's own hash dropped
    ],
)
def test_an_edited_checkpoint_json_is_refused(trained, tmp_path, edit):
    result, _ = trained
    ckpt = _copy(result.checkpoint_dir, tmp_path / "ckpt")
    meta = json.loads((ckpt / META_FILE).read_text())
    edit(meta)
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{ckpt / META_FILE}: (changed or damaged|no content)"):
        load_checkpoint(ckpt)


def test_non_finite_weights_are_refused_even_with_a_matching_hash(trained, tmp_path):
    from pipeline.training.checkpoint import save_checkpoint

    result, _ = trained
    model, meta = load_checkpoint(result.checkpoint_dir)
    name, param = next(iter(model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("inf")
    meta = {k: v for k, v in meta.items() if k not in ("format", "model_config", "weights_sha256")}
    save_checkpoint(tmp_path / "inf", model, **meta)  # a consistent hash of bad weights
    with pytest.raises(ValueError, match=rf"tensor '{name}' has 1 non-finite values; refused"):
        load_checkpoint(tmp_path / "inf")


def test_non_finite_outputs_are_refused_by_predict_and_evaluate(trained):
    result, root = trained
    fs = FeatureSet.load(root / "fs")
    model, _ = load_checkpoint(result.checkpoint_dir)
    probs, _ = run_model(model, fs)
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1, atol=1e-5)
    with torch.no_grad():  # what damaged weights that got past the checks would do
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite probabilities in dialogues"):
        run_model(model, fs)
    with pytest.raises(ValueError, match="non-finite probabilities in dialogues"):
        evaluate_predict(model, fs, fs.split("test"))


@pytest.mark.parametrize("victim", ["model.safetensors", "trainer.safetensors", "trainer.json"])
def test_damaged_last_state_stops_resume_naming_the_file(trained, tmp_path, victim):
    result, root = trained
    run = tmp_path / "run"
    shutil.copytree(result.checkpoint_dir.parent, run)
    path = run / "last" / victim
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    mc, tc = configs_for("tiny", "tav", {"progress": False, "epochs": 3})
    with pytest.raises(ValueError, match=rf"{path}: .*cannot resume from {run / 'last'}"):
        train(FeatureSet.load(root / "fs"), mc, tc, run, resume=True)
    assert (run / "best" / WEIGHTS_FILE).read_bytes() == (
        result.checkpoint_dir / WEIGHTS_FILE
    ).read_bytes()  # nothing else touched


def test_a_model_card_describes_the_checkpoint(trained):
    result, _ = trained
    card = (result.checkpoint_dir / "README.md").read_text()
    meta = json.loads((result.checkpoint_dir / META_FILE).read_text())
    assert card.startswith(
        f"# Ada2I emotion recognition in conversation ({meta['model_config']['modalities']})"
    )
    assert ", ".join(meta["label_names"]) in card
    assert "## Results" in card and "On the test split:" in card
    assert f"weighted f1: {result.metrics['weighted_f1']:.4f}" in card
    assert "Generated data (synthetic)" in card  # trained on synthetic features: said
    assert f"erc predict VIDEO.mp4 --checkpoint {result.checkpoint_dir}" in card


# --- a checkpoint published as a Hugging Face Hub model repository, loaded by its repo id


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_checkpoint_loads_by_its_hub_repo_id(trained, hub_cache, tmp_path, monkeypatch):
    result, root = trained
    revision = hub_cache(result.checkpoint_dir, "someone/ada2i-synthetic")
    local, local_meta = load_checkpoint(result.checkpoint_dir)
    for name in ("someone/ada2i-synthetic", f"someone/ada2i-synthetic@{revision}"):
        model, meta = load_checkpoint(name)
        assert _same_weights(model, local) and meta == local_meta
    assert checkpoint_folder("someone/ada2i-synthetic").parts[-2:] == ("snapshots", revision)
    # evaluation reports land in the working directory, never inside the Hub cache
    monkeypatch.chdir(tmp_path)
    report = evaluate_checkpoint("someone/ada2i-synthetic", root / "fs", "test")
    assert (tmp_path / "eval_test").is_dir() and report["split"] == "test"
    assert not list((tmp_path / "hub-cache").rglob("eval_test"))


def test_a_damaged_hub_snapshot_is_refused_naming_the_file(trained, hub_cache):
    result, _ = trained
    revision = hub_cache(result.checkpoint_dir, "someone/ada2i-damaged")
    weights = checkpoint_folder("someone/ada2i-damaged") / WEIGHTS_FILE
    assert revision in str(weights)
    blob = bytearray(weights.read_bytes())
    blob[-8:] = b"\x00" * 8
    weights.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=f"{weights}: damaged or replaced"):
        load_checkpoint("someone/ada2i-damaged")


def test_an_unknown_repo_offline_and_a_local_folder_named_like_a_repo(
    trained, hub_cache, tmp_path, monkeypatch
):
    result, _ = trained
    with pytest.raises(CheckpointUnavailableError, match="'someone/never-published'.*offline"):
        load_checkpoint("someone/never-published")
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder here"):
        load_checkpoint("runs/best")  # not here, and not on the (offline) Hub either
    monkeypatch.chdir(tmp_path)  # a folder that exists is a folder, whatever it looks like
    shutil.copytree(result.checkpoint_dir, tmp_path / "runs" / "best")
    model, _ = load_checkpoint("runs/best")
    assert _same_weights(model, load_checkpoint(result.checkpoint_dir)[0])
