"""Training, evaluation, resume, diagnostics and the grid on small synthetic feature sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.ada2i import Ada2I
from model.objective import ada2i_loss, unimodal_score_totals
from pipeline.cli import main as cli_main
from pipeline.features.featureset import FeatureSet
from pipeline.features.importers.synthetic import make_synthetic
from pipeline.training.data import batch_counts, collate, micro_batches
from pipeline.training.evaluate import compute_metrics, evaluate_checkpoint, selection_metrics
from pipeline.training.grid import collect_runs, run_grid, summarise, to_markdown
from pipeline.training.train import configs_for, improves, train

DIMS = {"t": 16, "a": 12, "v": 20}
LABELS = ["neu", "hap", "sad", "ang"]


def small(seed=0, signal=None, **kw) -> FeatureSet:
    return make_synthetic(
        n_dialogues={"train": 24, "dev": 4, "test": 8},
        utterances=36 * 12,
        dims=DIMS,
        signal=signal or {"t": 0.9, "a": 0.5, "v": 0.3},
        label_names=LABELS,
        seed=seed,
        **kw,
    )


def tiny_run(fs, out, subset="tav", **overrides):
    mc, tc = configs_for("tiny", subset, {"progress": False, "epochs": 6, **overrides})
    return train(fs, mc, tc, out, resume=overrides.pop("resume", True))


def test_training_learns_the_planted_signal(tmp_path):
    result = tiny_run(small(), tmp_path / "run", epochs=12)
    assert result.metrics["weighted_f1"] > 0.7  # chance is ~0.25
    assert result.metrics["n"] == sum(d.length for d in small().split("test"))
    hist = json.loads(result.history_path.read_text())
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert (result.checkpoint_dir / "model.safetensors").is_file()


def test_same_seed_same_run(tmp_path):
    a = tiny_run(small(), tmp_path / "a", epochs=3)
    b = tiny_run(small(), tmp_path / "b", epochs=3)
    ha, hb = (json.loads(r.history_path.read_text()) for r in (a, b))
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]
    assert a.metrics["weighted_f1"] == b.metrics["weighted_f1"]


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = tiny_run(small(), tmp_path / "straight", epochs=5)
    tiny_run(small(), tmp_path / "resumed", epochs=3)
    resumed = tiny_run(small(), tmp_path / "resumed", epochs=5)
    hs = json.loads(straight.history_path.read_text())
    hr = json.loads(resumed.history_path.read_text())
    assert len(hr) == 5
    np.testing.assert_allclose([h["loss"] for h in hr], [h["loss"] for h in hs], rtol=1e-6)
    assert resumed.metrics["weighted_f1"] == pytest.approx(straight.metrics["weighted_f1"])


def test_early_stopping_stops_after_patience(tmp_path):
    noise_only = small(signal={"t": 0.0, "a": 0.0, "v": 0.0})
    result = tiny_run(noise_only, tmp_path / "run", epochs=30, patience=3)
    assert result.epochs_run == result.best_epoch + 3 < 30


def test_diagnostics_track_imbalance_and_modulation(tmp_path):
    result = tiny_run(
        small(signal={"t": 1.5, "a": 0.2, "v": 0.1}),
        tmp_path / "run",
        epochs=5,
        modulation_start=3,
        alpha=0.5,
    )
    diag = json.loads((result.run_dir / "plots" / "diagnostics.json").read_text())
    assert set(diag["rho"]) == {"t", "a", "v"}
    hist = json.loads(result.history_path.read_text())
    late = hist[-1]
    assert late["modulated"] and not hist[0]["modulated"]
    assert late["rho"]["t"] > 1.0  # text dominates the planted data
    # k is averaged over the epoch's batches; the weakest modality varies batch to batch
    assert late["k"]["t"] < min(late["k"]["a"], late["k"]["v"]) <= 1.0
    assert all(h["k"] == {"t": 1.0, "a": 1.0, "v": 1.0} for h in hist[:2])
    assert len(late["class_weight_norms"]["t"]) == len(LABELS)
    for name in ("training_curves", "discrepancy", "unimodal_loss", "imbalance"):
        png = result.run_dir / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_checkpoint_reproduces_test_metrics(tmp_path):
    fs = small()
    fs.save(tmp_path / "fs")
    result = tiny_run(FeatureSet.load(tmp_path / "fs"), tmp_path / "run", epochs=3)
    m = evaluate_checkpoint(result.checkpoint_dir, tmp_path / "fs", "test", tmp_path / "eval")
    assert m["weighted_f1"] == pytest.approx(result.metrics["weighted_f1"])
    assert np.array(m["confusion"]).sum() == m["n"]
    lines = (tmp_path / "eval" / "predictions.csv").read_text().splitlines()
    assert len(lines) == 1 + m["n"]


def test_checkpoint_refuses_mismatched_features(tmp_path):
    fs = small()
    result = tiny_run(fs, tmp_path / "run", subset="ta", epochs=1)
    other = make_synthetic(
        n_dialogues={"train": 2, "test": 2},
        utterances=20,
        dims={"t": 16, "a": 7},
        label_names=LABELS,
    )
    other.save(tmp_path / "other")
    with pytest.raises(ValueError, match="modality 'a' has dim 7, checkpoint expects 12"):
        evaluate_checkpoint(result.checkpoint_dir, tmp_path / "other")


def _sklearn_scores(predictions_csv: Path) -> tuple[int, float, float]:
    """(n, accuracy, weighted F1) by scikit-learn over a run's predictions.csv, labelled rows."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score

    table = pd.read_csv(predictions_csv, keep_default_na=False)
    known = table[table["label"] != ""]
    wf1 = f1_score(known["label"], known["predicted"], labels=LABELS, average="weighted",
                   zero_division=0)  # fmt: skip
    return len(known), accuracy_score(known["label"], known["predicted"]), wf1


def test_every_subset_and_the_baseline_train(tmp_path):
    fs = small()
    n_test = sum(d.length for d in fs.split("test"))
    wf1s = {}
    for subset in ("tav", "av", "v"):
        r = tiny_run(fs, tmp_path / subset, subset=subset, epochs=2)
        assert r.metrics["modalities"] == subset
        # The test scores are those of the predictions the run wrote, over every test utterance.
        n, acc, wf1 = _sklearn_scores(r.run_dir / "test" / "predictions.csv")
        assert r.metrics["n"] == n == n_test
        assert r.metrics["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert r.metrics["weighted_f1"] == pytest.approx(wf1, abs=1e-12)
        wf1s[subset] = r.metrics["weighted_f1"]
    # Two epochs learn each subset's planted signal (t 0.9, a 0.5, v 0.3): the scores order as
    # the signals do, the weakest alone still above chance (~0.25); measured 0.92, 0.68, 0.44.
    assert wf1s["tav"] > wf1s["av"] > wf1s["v"] > 0.35
    r = tiny_run(fs, tmp_path / "concat", epochs=2, use_afw=False, use_amw=False, modulation=False)
    assert json.loads(r.history_path.read_text())[-1]["loss_modal"] == 0.0
    assert r.metrics["weighted_f1"] > 0.7  # the concatenation baseline learns too (0.92)


def test_grid_writes_one_table(tmp_path):
    fs = small()
    fs.save(tmp_path / "fs")
    md = run_grid(
        tmp_path / "fs",
        tmp_path / "grid",
        subsets=["tav", "t"],
        seeds=[0, 1],
        model_preset="tiny",
        overrides={"epochs": 2, "progress": False},
        variants={"ada2i": {}, "concat": {"use_afw": False, "use_amw": False, "modulation": False}},
    )
    text = md.read_text()
    assert text.count("| ada2i |") == 2 and text.count("| concat |") == 2
    rows = (tmp_path / "grid" / "grid.csv").read_text().splitlines()
    assert (
        rows[0]
        == (
            "variant,subset,seeds,wf1_mean,wf1_std,mf1_mean,mf1_std,acc_mean,acc_std,featureset,"
            "featureset_sha256,model_preset,overrides,variants,date"
        )
        and len(rows) == 5
    )
    assert f"Feature set `{(tmp_path / 'fs').resolve()}`" in text  # what was run, heading the table
    assert "model preset `tiny`" in text and '"epochs": 2' in text
    from PIL import Image

    assert Image.open(tmp_path / "grid" / "grid.png").size[0] >= 400  # the bar chart
    runs = json.loads((tmp_path / "grid" / "grid_runs.json").read_text())
    assert all(Path(r["run_dir"], "best", "checkpoint.json").is_file() for r in runs)
    assert (tmp_path / "grid" / "ada2i" / "t" / "seed1" / "best" / "checkpoint.json").is_file()
    collected = collect_runs(tmp_path / "grid")  # what a stopped grid can still be tabled from
    assert len(collected) == 8 and {r["variant"] for r in collected} == {"ada2i", "concat"}
    assert "| ada2i | TAV | 2 |" in to_markdown(summarise(collected), [0, 1])


def test_featureset_validation_names_the_problem(tmp_path):
    fs = small()
    fs.features["a"][fs.dialogues[2].start + 1, 3] = float("nan")
    with pytest.raises(
        ValueError, match=r"dialogue 'syn0002' utterance 'syn0002_u001' has NaN/inf in modality a"
    ):
        fs.validate()
    fs = small()
    fs.labels[5] = 9
    with pytest.raises(ValueError, match="label id 9 outside the label set"):
        fs.validate()
    fs = small()
    fs.feature_spec["t"]["dim"] = 99
    with pytest.raises(ValueError, match="feat.t has dim 16 but its feature spec says 99"):
        fs.validate()
    fs = small()
    fs.dialogues[0].length = 0
    with pytest.raises(ValueError, match="is empty"):
        fs.validate()


def test_bad_featureset_on_disk_is_refused_and_nothing_half_written(tmp_path):
    fs = small()
    fs.save(tmp_path / "fs")
    (tmp_path / "fs" / "features.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="features.safetensors: not a readable safetensors file"):
        FeatureSet.load(tmp_path / "fs")
    bad = small()
    bad.labels[0] = -7
    with pytest.raises(ValueError):
        bad.save(tmp_path / "bad")
    assert not (tmp_path / "bad" / "features.safetensors").exists()


def test_cli_train_and_evaluate(tmp_path, capsys):
    small().save(tmp_path / "fs")
    code = cli_main(
        [
            "train",
            "--features",
            str(tmp_path / "fs"),
            "--out",
            str(tmp_path / "run"),
            "--model-preset",
            "tiny",
            "--modalities",
            "ta",
            "--set",
            "epochs=2",
            "--set",
            "progress=false",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "test weighted F1" in out and "checkpoint:" in out
    code = cli_main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "run" / "best"),
            "--features",
            str(tmp_path / "fs"),
        ]
    )
    assert code == 0
    assert (
        cli_main(["train", "--features", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")])
        == 2
    )
    assert "missing/features.safetensors: feature set file not found" in capsys.readouterr().err


def test_training_uses_cpu_when_no_gpu():
    from pipeline.training.train import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def _grads_and_scores(model, fs, dialogues, budget):
    """Summed gradients and s_m totals of one batch, run whole (budget 0) or in micro-batches."""
    model.zero_grad(set_to_none=True)
    whole = batch_counts(fs, dialogues, model.modalities)
    totals, loss_sum = {}, 0.0
    for part in micro_batches(dialogues, budget):
        b = collate(fs, part)
        out = model({m: b.features[m] for m in model.modalities}, b.utterance_mask, b.modality_mask)
        losses = ada2i_loss(out, b.labels, whole if budget else None)
        losses.total.backward()
        loss_sum += float(losses.total.detach())
        for m, (s, n) in unimodal_score_totals(out, b.labels).items():
            totals[m] = (totals.get(m, (0.0, 0))[0] + s, totals.get(m, (0.0, 0))[1] + n)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return grads, {m: s / n for m, (s, n) in totals.items()}, loss_sum


def test_micro_batches_give_the_whole_batch_gradient():
    fs = small(missing_rate={"v": 0.3})
    fs.labels[fs.dialogues[1].start : fs.dialogues[1].start + 4] = -1  # some unlabelled
    batch = fs.split("train")[:10]
    mc, _ = configs_for("tiny", "tav", {"dropout": 0.0})
    from dataclasses import replace

    torch.manual_seed(0)
    model = Ada2I(replace(mc, input_dims=fs.dims, n_classes=len(LABELS))).train()
    parts = micro_batches(batch, 30)
    assert len(parts) > 2  # really split
    g_whole, s_whole, l_whole = _grads_and_scores(model, fs, batch, 0)
    g_micro, s_micro, l_micro = _grads_and_scores(model, fs, batch, 30)
    assert l_micro == pytest.approx(l_whole, rel=1e-5)
    assert s_micro == pytest.approx(s_whole, rel=1e-5)
    assert g_micro.keys() == g_whole.keys()
    for name in g_whole:
        torch.testing.assert_close(g_micro[name], g_whole[name], atol=1e-6, rtol=1e-4)


def test_micro_batch_plan_respects_the_budget():
    fs = small()
    batch = fs.split("train")[:10]
    parts = micro_batches(batch, 40)
    assert sorted(d.id for p in parts for d in p) == sorted(d.id for d in batch)
    for p in parts:
        assert len(p) * max(d.length for d in p) <= 40 or len(p) == 1
        assert [d.length for d in p] == sorted((d.length for d in p), reverse=True)
    assert micro_batches(batch, 0) == [batch]
    longest = max(d.length for d in batch)
    assert [len(p) for p in micro_batches(batch, longest - 1)][0] == 1  # too long: alone


def test_weighted_f1_by_hand():
    # class 0: TP 1, support 2, predicted 2 -> F1 2/4; class 1: TP 2, support 2, predicted 3 ->
    # F1 4/5; class 2: never predicted -> F1 0. Weighted by support: (0.5*2 + 0.8*2 + 0*1) / 5.
    y_true = np.array([0, 0, 1, 1, 2, -1])  # -1: unlabelled, ignored
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    m = selection_metrics(y_true, y_pred, 3)
    assert m["n"] == 5 and m["accuracy"] == pytest.approx(0.6)
    assert m["weighted_f1"] == pytest.approx(0.52) and m["macro_f1"] == pytest.approx(1.3 / 3)


def test_metrics_equal_scikit_learn():
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    for n_classes, n in ((6, 300), (4, 17), (7, 5)):
        y_true = rng.integers(-1, n_classes, n)  # -1: unlabelled, ignored
        y_pred = rng.integers(0, n_classes - 1, n)  # the last class is never predicted
        ours = compute_metrics(y_true, y_pred, [f"c{i}" for i in range(n_classes)])
        keep, labels = y_true >= 0, list(range(n_classes))
        yt, yp = y_true[keep], y_pred[keep]
        assert ours["n"] == len(yt) and ours["accuracy"] == pytest.approx(np.mean(yt == yp))
        for avg in ("weighted", "macro"):
            sk = f1_score(yt, yp, labels=labels, average=avg, zero_division=0)
            assert ours[f"{avg}_f1"] == pytest.approx(sk, abs=1e-12), avg
        p, r, f, sup = precision_recall_fscore_support(yt, yp, labels=labels, zero_division=0)
        for i, row in enumerate(ours["per_class"].values()):
            assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]))
            assert row["support"] == sup[i]
        assert ours["confusion"] == confusion_matrix(yt, yp, labels=labels).tolist()
        short = selection_metrics(y_true, y_pred, n_classes)
        assert short == {k: ours[k] for k in ("n", "accuracy", "weighted_f1", "macro_f1")}
    assert np.isnan(selection_metrics(np.array([-1]), np.array([0]), 3)["weighted_f1"])


def test_training_process_does_not_import_a_compiler_or_scikit_learn(tmp_path):
    """torch.optim would import torch._dynamo (~130 MiB, ~4 s) and per-epoch metrics
    scikit-learn (+ pandas, SciPy: ~160 MiB); training needs neither until its test report."""
    make_synthetic(
        n_dialogues={"train": 6, "dev": 2},
        utterances=60,
        dims=DIMS,
        label_names=LABELS,
    ).save(tmp_path / "fs")
    script = f"""
import sys
from pipeline.features.featureset import FeatureSet
from pipeline.training.train import configs_for, train
mc, tc = configs_for("tiny", "tav", {{"epochs": 2, "progress": False, "micro_batch_utterances": 20}})
result = train(FeatureSet.load({str(tmp_path / "fs")!r}), mc, tc, {str(tmp_path / "run")!r})
assert result.epochs_run == 2, result
loaded = [m for m in ("torch._dynamo", "sklearn", "scipy", "pandas") if m in sys.modules]
print("loaded:", loaded)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded: []" in done.stdout


def test_selection_prefers_higher_wf1_then_lower_dev_loss():
    start = {"best_wf1": -1.0, "best_epoch": 0}
    assert improves(0.2, 9.0, start)
    best = {"best_wf1": 0.8, "best_loss": 0.5}
    assert improves(0.81, 2.0, best)  # WF1 decides first
    assert not improves(0.79, 0.1, best)
    assert improves(0.8, 0.4, best)  # a tie: the lower dev loss wins
    assert not improves(0.8, 0.5, best) and not improves(0.8, float("nan"), best)
    assert improves(0.8, 0.4, {"best_wf1": 0.8})  # a state saved before best_loss existed
