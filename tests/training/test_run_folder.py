"""Run folders: resume only with the same settings and features, refuse naming what differs,
start over for real, one training at a time, and a grid that reuses but never mixes runs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.features.featureset import FeatureSet
from pipeline.features.importers.synthetic import make_synthetic
from pipeline.training import run_folder
from pipeline.training.grid import run_grid, summarise, to_markdown
from pipeline.training.run_folder import RunFolderBusy, RunFolderMismatch
from pipeline.training.train import configs_for, train

DIMS = {"t": 8, "a": 6}
LABELS = ["neu", "hap", "sad", "ang"]
ROOT = Path(__file__).resolve().parents[2]


def small(seed=0, dims=None) -> FeatureSet:
    return make_synthetic(
        n_dialogues={"train": 6, "dev": 2, "test": 2},
        utterances=60,
        dims=dims or DIMS,
        signal={"t": 0.9, "a": 0.4},
        label_names=LABELS,
        seed=seed,
    )


def run(fs, out, resume=True, **overrides):
    mc, tc = configs_for("tiny", "ta", {"progress": False, "epochs": 1, **overrides})
    return train(fs, mc, tc, out, resume=resume)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of the run folder -> its bytes (what a refused rerun must leave alone)."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != run_folder.LOCK_FILE
    }


# ---- one training -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished 1-epoch run with the tiny preset's lr 2e-3, seed 0, alpha 0.1, modulation on;
    tests that change it work on a copy."""
    return run(small(), tmp_path_factory.mktemp("trained") / "run").run_dir


def copy_of(trained: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize(
    "key, old, new",
    [("lr", 2e-3, 1e-3), ("seed", 0, 1), ("alpha", 0.1, 0.5), ("modulation", True, False)],
)
def test_rerun_with_other_settings_is_refused_naming_the_key(trained, key, old, new):
    """The issue: such a rerun kept the old training and rewrote config.json to claim the new
    settings."""
    before = snapshot(trained)
    with pytest.raises(RunFolderMismatch) as info:
        run(small(), trained, **{key: new})
    message = str(info.value)
    assert f"{key}: {old!r} -> {new!r}" in message
    assert str(trained) in message and "--no-resume" in message
    assert "resume=False" in message and "another --out" in message
    assert snapshot(trained) == before  # config.json, last/, best/ untouched


def test_matching_rerun_resumes_and_raised_epochs_continue(trained, tmp_path, caplog):
    run_dir = copy_of(trained, tmp_path)
    first = json.loads((run_dir / "history.json").read_text())
    # settings that do not change what is learned may differ (identity excludes them)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        again = run(small(), run_dir, epochs=2, eval_batch_size=5, threads=1)
    history = json.loads(again.history_path.read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[:1] == first
    assert "continuing the run with epochs 1 -> 2 (after epoch 1)" in caplog.text
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train_config"]["epochs"] == 2 and config["identity"]["epochs"] == 2


def test_an_incompatible_feature_set_is_refused_and_config_json_kept(trained):
    """The issue: a failed rerun with an incompatible feature set overwrote config.json."""
    before = snapshot(trained)
    with pytest.raises(RunFolderMismatch) as info:
        run(small(dims={"t": 8, "a": 5}), trained)
    assert "input_dims: {'t': 8, 'a': 6} -> {'t': 8, 'a': 5}" in str(info.value)
    assert "featureset (content sha256)" in str(info.value)
    # same shapes, other values: only the content hash tells them apart
    with pytest.raises(RunFolderMismatch) as info:
        run(small(seed=7), trained)
    assert "featureset (content sha256)" in str(info.value)
    assert "input_dims" not in str(info.value)
    assert snapshot(trained) == before


def test_a_run_of_other_training_code_is_not_continued(trained, monkeypatch):
    """A model change between two runs of a grid must not continue (or reuse) the old run."""
    before = snapshot(trained)
    monkeypatch.setattr(run_folder, "code_digest", lambda: "0" * 64)
    with pytest.raises(
        RunFolderMismatch, match=r"code \(sha256 of pipeline.training.train and what it imports"
    ):
        run(small(), trained)
    assert snapshot(trained) == before


def test_the_feature_set_digest_is_its_content(tmp_path):
    fs = small()
    fs.save(tmp_path / "fs")
    loaded = FeatureSet.load(tmp_path / "fs")
    assert run_folder.featureset_digest(loaded) == run_folder.featureset_digest(fs)
    loaded.features["t"][3, 2] += 1e-3
    assert run_folder.featureset_digest(loaded) != run_folder.featureset_digest(fs)


def test_no_resume_discards_the_old_training(trained, tmp_path):
    run_dir = copy_of(trained, tmp_path)
    (run_dir / "test" / "stale.txt").write_text("from the old run")
    new = run(small(), run_dir, resume=False, lr=1e-3)
    assert len(json.loads(new.history_path.read_text())) == 1
    assert not (run_dir / "test" / "stale.txt").exists()
    assert not (run_dir / run_folder.TRASH).exists()
    assert (
        json.loads((run_dir / "best" / "checkpoint.json").read_text())["train_config"]["lr"] == 1e-3
    )
    assert json.loads((run_dir / "config.json").read_text())["identity"]["lr"] == 1e-3


def test_leftovers_without_a_resume_point_are_discarded(trained, tmp_path):
    """A start-over that crashed after moving last/ away leaves best/ and config.json of the old
    run; the next training must not mix them with its own."""
    run_dir = copy_of(trained, tmp_path)
    trash = run_dir / run_folder.TRASH
    trash.mkdir()
    os.replace(run_dir / "last", trash / "last")
    (run_dir / "test" / "stale.txt").write_text("from the old run")
    run(small(), run_dir, lr=1e-3)  # resume=True, but there is nothing to resume
    assert not trash.exists() and not (run_dir / "test" / "stale.txt").exists()
    assert (
        json.loads((run_dir / "best" / "checkpoint.json").read_text())["train_config"]["lr"] == 1e-3
    )
    assert json.loads((run_dir / "config.json").read_text())["identity"]["lr"] == 1e-3


def test_a_folder_from_before_identities_is_refused(trained, tmp_path):
    run_dir = copy_of(trained, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    del config["identity"]
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunFolderMismatch, match="records no run identity"):
        run(small(), run_dir)


def test_which_epochs_and_patience_changes_may_continue():
    base = {"epochs": 10, "patience": 5, "lr_schedule": "plateau", "lr": 1e-3}
    at = {"epoch": 6}
    assert run_folder.compare(base, {**base, "epochs": 20}, at) == (
        [],
        ["epochs 10 -> 20 (after epoch 6)"],
    )
    assert run_folder.compare(base, {**base, "epochs": 8}, at)[0] == []  # not trained past 8 yet
    assert run_folder.compare(base, {**base, "epochs": 5}, at)[0] == [("epochs", 10, 5)]
    cosine = {**base, "lr_schedule": "cosine"}  # its period is `epochs`
    assert run_folder.compare(cosine, {**cosine, "epochs": 20}, at)[0] == [("epochs", 10, 20)]
    assert run_folder.compare(base, {**base, "patience": 9}, at) == ([], ["patience 5 -> 9"])
    assert run_folder.compare(base, {**base, "patience": 3}, at)[0] == [("patience", 5, 3)]
    assert run_folder.compare(base, {**base, "lr": 2e-3}, at)[0] == [("lr", 1e-3, 2e-3)]


# ---- one training at a time ---------------------------------------------------------------------

HOLDER = """
import sys
from pipeline.features.importers.synthetic import make_synthetic
from pipeline.training.train import configs_for, train
fs = make_synthetic(n_dialogues={"train": 6, "dev": 2, "test": 2}, utterances=60,
                    dims={"t": 8, "a": 6}, label_names=["neu", "hap", "sad", "ang"])
mc, tc = configs_for("tiny", "ta", {"progress": False, "epochs": 100000, "patience": 100000})
train(fs, mc, tc, sys.argv[1])
"""


def test_a_second_training_into_the_folder_fails_at_once_naming_the_pid(tmp_path):
    """The issue: two trainings into one folder both "succeeded"."""
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], cwd=ROOT, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "last" / "trainer.json").is_file():  # it trains, holding the lock
            assert holder.poll() is None, holder.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the holder did not start training"
            time.sleep(0.2)
        config = (run_dir / "config.json").read_bytes()
        t0 = time.perf_counter()
        with pytest.raises(RunFolderBusy) as info:
            run(small(), run_dir, resume=False)  # would discard the other's training
        assert time.perf_counter() - t0 < 5  # at once, not after waiting for the lock
        assert f"pid {holder.pid}" in str(info.value) and str(run_dir) in str(info.value)
        assert (run_dir / "config.json").read_bytes() == config
        assert (run_dir / "last" / "trainer.json").is_file()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops its lock
        holder.wait()
    with run_folder.locked(run_dir):  # free again
        pass


# ---- the grid -----------------------------------------------------------------------------------


def grid(tmp_path, **kw):
    args = dict(subsets=["t"], seeds=[0, 1], model_preset="tiny")
    overrides = {"epochs": 1, "progress": False, **kw.pop("overrides", {})}
    return run_grid(tmp_path / "fs", tmp_path / "grid", overrides=overrides, **args, **kw)


def trainer_mtimes(tmp_path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted((tmp_path / "grid").rglob("trainer.json"))}


def test_grid_reuses_finished_runs_refuses_changed_ones_and_fresh_retrains(tmp_path, caplog):
    small().save(tmp_path / "fs")
    first = grid(tmp_path).read_text()
    trained = trainer_mtimes(tmp_path)
    assert len(trained) == 2
    with caplog.at_level(logging.INFO, logger="pipeline.training.grid"):
        again = grid(tmp_path).read_text()
    assert caplog.text.count(" reused: WF1") == 2
    assert trainer_mtimes(tmp_path) == trained and again == first

    # The issue: a re-run grid with new settings reported the old results.
    with pytest.raises(RunFolderMismatch) as info:
        grid(tmp_path, overrides={"lr": 1e-3})
    message = str(info.value)
    for seed in (0, 1):
        assert str(tmp_path / "grid" / "ada2i" / "t" / f"seed{seed}") in message
    assert message.count("lr: 0.002 -> 0.001") == 2 and "--fresh" in message
    assert trainer_mtimes(tmp_path) == trained  # refused before training anything

    grid(tmp_path, overrides={"lr": 1e-3}, fresh=True)
    assert all(trainer_mtimes(tmp_path)[p] != t for p, t in trained.items())
    for seed in (0, 1):
        config = tmp_path / "grid" / "ada2i" / "t" / f"seed{seed}" / "config.json"
        assert json.loads(config.read_text())["identity"]["lr"] == 1e-3

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.training.grid"):
        grid(tmp_path, overrides={"lr": 1e-3, "epochs": 2})  # continue both runs by one epoch
    assert caplog.text.count(" resumed: WF1") == 2
    history = tmp_path / "grid" / "ada2i" / "t" / "seed0" / "history.json"
    assert [h["epoch"] for h in json.loads(history.read_text())] == [1, 2]


def test_grid_table_reports_the_sample_std():
    runs = [
        {"variant": "ada2i", "subset": "ta", "seed": s, "weighted_f1": w, "accuracy": a,
         "macro_f1": w - 0.1}
        for s, w, a in [(0, 0.60, 0.5), (1, 0.64, 0.5), (2, 0.62, 0.8)]
    ] + [{"variant": "concat", "subset": "ta", "seed": 0, "weighted_f1": 0.5, "accuracy": 0.4,
          "macro_f1": 0.3}]  # fmt: skip
    rows = summarise(runs)
    assert rows[0]["wf1_mean"] == 62.0 and rows[0]["wf1_std"] == 2.0  # population std: 1.63
    assert rows[0]["acc_mean"] == 60.0 and rows[0]["acc_std"] == pytest.approx(17.32)
    assert rows[0]["acc_std"] == pytest.approx(np.std([50, 50, 80], ddof=1), abs=0.005)
    assert rows[1]["wf1_std"] is None  # one seed: undefined, not 0
    md = to_markdown(rows, [0, 1, 2])
    assert "mean ± sample std (ddof=1) over 3 seeds" in md
    assert "| ada2i | TA | 3 | 62.00 ± 2.00 | 52.00 ± 2.00 | 60.00 ± 17.32 |" in md
    assert "| concat | TA | 1 | 50.00 ± n/a | 30.00 ± n/a | 40.00 ± n/a |" in md
