"""Per-modality (unimodal) predictions and metrics: predict(), dev metrics, test metrics.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.ada2i import Ada2I
from model.config import preset
from pipeline.features.importers.synthetic import make_synthetic
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.data import collate
from pipeline.training.evaluate import (
    Predictions,
    compute_metrics,
    predict,
    unimodal_report,
    write_report,
)
from pipeline.training.train import configs_for, train

LABELS = ["neu", "hap", "sad", "ang"]


def featureset(seed=0):
    return make_synthetic(
        n_dialogues={"train": 10, "dev": 3, "test": 4},
        utterances=17 * 10,
        dims={"t": 8, "a": 6, "v": 5},
        label_names=LABELS,
        seed=seed,
        missing_rate={"v": 0.4},
    )


def test_predict_gives_each_modalitys_own_argmax_and_minus_one_where_missing():
    fs = featureset()
    torch.manual_seed(0)
    cfg = preset("tiny", modalities="tav", input_dims=fs.dims, n_classes=len(LABELS))
    model = Ada2I(cfg).eval()
    dialogues = fs.split("test")
    preds = predict(model, fs, dialogues, batch_size=3)

    batch = collate(fs, dialogues)
    with torch.no_grad():
        out = model(dict(batch.features), batch.utterance_mask, batch.modality_mask)
    for m in "tav":
        want = np.concatenate(
            [
                np.where(
                    batch.modality_mask[m][i, : d.length].numpy(),
                    out.unimodal[m][i, : d.length].argmax(-1).numpy(),
                    -1,
                )
                for i, d in enumerate(dialogues)
            ]
        )
        np.testing.assert_array_equal(preds.unimodal_pred[m], want)
    rows = np.concatenate([np.arange(d.start, d.start + d.length) for d in dialogues])
    missing = ~fs.present["v"][rows].numpy()
    assert missing.sum() > 5  # the planted missing faces are there
    assert (preds.unimodal_pred["v"][missing] == -1).all()
    assert (preds.unimodal_pred["v"][~missing] >= 0).all()
    assert (preds.unimodal_pred["t"] >= 0).all()


def test_unimodal_metrics_numpy_equal_scikit_learn_and_skip_missing_utterances():
    rng = np.random.default_rng(1)
    n, c = 200, 4
    y_true = rng.integers(-1, c, n)  # -1 = unlabelled
    pred_v = np.where(rng.random(n) < 0.3, -1, rng.integers(0, c, n))  # -1 = no face
    preds = Predictions(
        utterance_ids=[f"u{i}" for i in range(n)],
        dialogue_ids=["d"] * n,
        y_true=y_true,
        y_pred=rng.integers(0, c, n),
        probs=np.zeros((n, c), np.float32),
        loss=0.0,
        unimodal_pred={"t": y_true.clip(0), "v": pred_v},
    )
    ours = preds.unimodal_metrics(c)
    sk = unimodal_report(preds, LABELS)
    keep = (y_true >= 0) & (pred_v >= 0)
    assert ours["v"]["n"] == sk["v"]["n"] == keep.sum()
    assert ours["v"]["accuracy"] == pytest.approx((y_true[keep] == pred_v[keep]).mean())
    assert ours["t"]["accuracy"] == 1.0 and ours["t"]["n"] == (y_true >= 0).sum()
    for m in "tv":
        for key in ("accuracy", "weighted_f1"):
            assert ours[m][key] == pytest.approx(sk[m][key], abs=1e-12), (m, key)
        sk_recall = [c["recall"] for c in sk[m]["per_class"].values()]
        assert ours[m]["recall"] == pytest.approx(sk_recall, abs=1e-12)
    assert ours["v"]["support"] == np.bincount(y_true[keep], minlength=c).tolist()
    # the fused metrics are untouched by the unimodal ones
    assert compute_metrics(y_true, preds.y_pred, LABELS)["n"] == (y_true >= 0).sum()


def test_write_report_adds_unimodal_metrics_and_columns(tmp_path):
    y = np.array([0, 1, 2, -1])
    preds = Predictions(
        ["a", "b", "c", "d"],
        ["x"] * 4,
        y,
        np.array([0, 1, 1, 0]),
        np.full((4, 4), 0.25, np.float32),
        0.0,
        {"t": np.array([0, 1, 2, 3]), "v": np.array([-1, 1, 0, -1])},
    )
    metrics = compute_metrics(y, preds.y_pred, LABELS)
    write_report(metrics, preds, LABELS, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["unimodal"]["t"]["accuracy"] == 1.0 and saved["unimodal"]["t"]["n"] == 3
    assert saved["unimodal"]["v"]["n"] == 2 and saved["unimodal"]["v"]["accuracy"] == 0.5
    recall = {n: c["recall"] for n, c in saved["unimodal"]["v"]["per_class"].items()}
    assert recall == {"neu": 0.0, "hap": 1.0, "sad": 0.0, "ang": 0.0}
    assert metrics["unimodal"] == saved["unimodal"]  # the caller's dict carries it too
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert lines[0].endswith(",predicted_t,predicted_v")
    assert lines[1].endswith(",neu,") and lines[3].endswith(",sad,neu")


def test_training_records_dev_unimodal_metrics_and_writes_them_to_test_metrics(tmp_path):
    fs = featureset()
    mc, tc = configs_for("tiny", "tav", {"progress": False, "epochs": 2})
    result = train(fs, mc, tc, tmp_path / "run")
    history = json.loads(result.history_path.read_text())
    # Counted from the feature set: the labelled dev utterances that have each modality.
    dev = fs.split("dev")
    rows = np.concatenate([np.arange(d.start, d.start + d.length) for d in dev])
    labelled = fs.labels[rows].numpy() >= 0
    n_dev = {m: int((labelled & fs.present[m][rows].numpy()).sum()) for m in "tav"}
    assert n_dev["v"] < n_dev["t"]  # missing faces
    for h in history:
        assert set(h["dev_unimodal"]) == {"t", "a", "v"}
        for m, row in h["dev_unimodal"].items():
            assert row["n"] == sum(row["support"]) == n_dev[m]
            # accuracy = correct / n = sum over classes of recall x support
            correct = sum(r * s for r, s in zip(row["recall"], row["support"], strict=True))
            assert row["accuracy"] == pytest.approx(correct / row["n"], abs=1e-12)
    # The best epoch's figures again, from the saved checkpoint's own predictions on dev.
    model, _ = load_checkpoint(result.checkpoint_dir)
    again = predict(model, fs, dev)
    for m, row in history[result.best_epoch - 1]["dev_unimodal"].items():
        pred = again.unimodal_pred[m]
        keep = (again.y_true >= 0) & (pred >= 0)
        assert row["accuracy"] == pytest.approx((pred[keep] == again.y_true[keep]).mean())
        assert row["support"] == np.bincount(again.y_true[keep], minlength=len(LABELS)).tolist()
    saved = json.loads((result.run_dir / "test" / "metrics.json").read_text())
    assert set(saved["unimodal"]) == {"t", "a", "v"}
    assert saved["unimodal"]["v"]["n"] < saved["unimodal"]["t"]["n"] == saved["n"]
    assert result.metrics["unimodal"] == saved["unimodal"]
