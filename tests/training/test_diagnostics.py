"""The training-curve and imbalance plots: what they mark, label and explain (read from the
matplotlib figures the pipeline saves)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from pipeline.training.diagnostics import (
    discrepancy_figure,
    imbalance_figure,
    plot_training,
    training_curves_figure,
    unimodal_loss_figure,
)
from pipeline.training.train import improves

LABELS = ["hap", "sad", "neu", "ang"]
# Dev WF1 first peaks at epoch 3; epoch 5 ties it with a lower dev loss, so the checkpoint (the
# rule of pipeline.training.train.improves) is epoch 5, not the argmax of dev WF1.
DEV_WF1 = [0.30, 0.50, 0.80, 0.70, 0.80, 0.75]
DEV_LOSS = [1.50, 1.20, 0.90, 0.85, 0.60, 0.70]


def history():
    out = []
    for i, (wf1, loss) in enumerate(zip(DEV_WF1, DEV_LOSS, strict=True)):
        e = i + 1
        uni = {
            m: {
                "n": 40,
                "accuracy": acc,
                "weighted_f1": acc,
                "macro_f1": acc,
                "recall": [acc, acc / 2, 1 - acc, 0.0],
                "support": [10, 10, 10, 10],
            }
            for m, acc in (("t", 0.5 + 0.05 * e), ("a", 0.3), ("v", 0.2))
        }
        out.append(
            {
                "epoch": e,
                "loss": 2.0 / e,
                "loss_cls": 1.5 / e,
                "dev_loss": loss,
                "dev_wf1": wf1,
                "dev_acc": wf1 + 0.01,
                "modulated": e >= 3,
                "score": {"t": 0.4 + 0.05 * e, "a": 0.3, "v": 0.2},
                "rho": {"t": 2.0 + 0.2 * e, "a": 1.5, "v": 1.0},
                "k": {"t": 0.6, "a": 0.8, "v": 1.0} if e >= 3 else {"t": 1.0, "a": 1.0, "v": 1.0},
                "unimodal_loss": {"t": 1.0 / e, "a": 1.4, "v": 1.6},
                "dev_unimodal": uni,
                "class_weight_norms": {"t": [1.0] * 4, "a": [1.0] * 4, "v": [1.0] * 4},
            }
        )
    return out


def checkpoint_epoch(hist) -> int:
    progress = {"best_wf1": -1.0, "best_epoch": 0}
    for h in hist:
        if improves(h["dev_wf1"], h["dev_loss"], progress):
            progress.update(best_wf1=h["dev_wf1"], best_loss=h["dev_loss"], best_epoch=h["epoch"])
    return progress["best_epoch"]


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None, f"no legend on {ax.get_title()!r}"
    return [t.get_text() for t in legend.get_texts()]


def vertical_lines_at(ax) -> list[float]:
    return [
        line.get_xdata()[0]
        for line in ax.get_lines()
        if len(set(np.atleast_1d(line.get_xdata()))) == 1 and line.get_linestyle() == ":"
    ]


def assert_epoch_axis(ax):
    ax.figure.canvas.draw()
    assert ax.get_xlabel() == "epoch"
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_training_curves_mark_the_checkpoint_epoch_not_the_first_best_wf1():
    hist = history()
    best = checkpoint_epoch(hist)
    assert best == 5 and int(np.argmax(DEV_WF1)) + 1 == 3
    fig = training_curves_figure(hist, best)
    for ax in fig.axes:
        assert ax.get_ylabel(), ax.get_title()
        assert_epoch_axis(ax)
        assert vertical_lines_at(ax) == [5]
        assert "checkpoint (epoch 5)" in legend_texts(ax)
    assert {"dev weighted F1", "dev accuracy"} <= set(legend_texts(fig.axes[1]))
    assert "dev L_main" in legend_texts(fig.axes[0])


def test_equal_losses_stay_distinguishable():
    hist = [{**h, "loss_modal": h["loss_cls"]} for h in history()]  # identical curves
    fig = training_curves_figure(hist, 5)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines() if "L_" in ln.get_label()}
    looks = {(ln.get_linestyle(), ln.get_marker(), ln.get_linewidth()) for ln in lines.values()}
    assert len(looks) == len(lines)  # L_cls was hidden under an identical L_modal line


def test_discrepancy_plot_explains_shading_and_reference_lines():
    fig = discrepancy_figure(history(), 5)
    s_ax, rho_ax, k_ax = fig.axes
    for ax in fig.axes:
        texts = legend_texts(ax)
        assert {"text", "audio", "visual"} <= set(texts)  # names, not t/a/v
        assert "modulated epochs (eqs. 18-19)" in texts
        assert "checkpoint (epoch 5)" in texts
        assert ax.get_ylabel()
        assert_epoch_axis(ax)
    assert "rho = 1: the weakest modality" in legend_texts(rho_ax)
    assert "k = 1: no modulation" in legend_texts(k_ax)
    # the shading covers exactly the modulated epochs 3..6
    (span,) = [p for p in s_ax.patches if p.get_label().startswith("modulated")]
    assert (span.get_x(), span.get_x() + span.get_width()) == (2.5, 6.5)


def test_discrepancy_plot_says_when_modulation_was_off():
    hist = [{**h, "modulated": False} for h in history()]
    fig = discrepancy_figure(hist, 5)
    assert not any(t.startswith("modulated") for t in legend_texts(fig.axes[0]))
    assert "modulation off in this run" in [t.get_text() for t in fig.axes[2].texts]


def test_imbalance_plot_replaces_weight_norms_with_unimodal_accuracy_and_per_emotion_recall():
    fig = imbalance_figure(history(), 5, LABELS)
    acc_ax, score_ax, recall_ax = fig.axes
    assert {"text alone", "audio alone", "visual alone", "fused model"} <= set(legend_texts(acc_ax))
    text_line = next(line for line in acc_ax.get_lines() if line.get_label() == "text alone")
    np.testing.assert_allclose(text_line.get_ydata(), [0.5 + 0.05 * e for e in range(1, 7)])
    assert {"text", "audio", "visual"} <= set(legend_texts(score_ax))
    for ax in (acc_ax, score_ax):
        assert_epoch_axis(ax)
        assert vertical_lines_at(ax) == [5]
    for ax in fig.axes:
        assert ax.get_ylabel()
    # per-class panel: emotion names, the checkpoint epoch's recall, one bar per class and modality
    ticks = [t.get_text() for t in recall_ax.get_xticklabels()]
    assert ticks == [f"{n}\n(n=10)" for n in ("happy", "sad", "neutral", "angry")]
    assert "epoch 5" in recall_ax.get_title() and "checkpoint" in recall_ax.get_title()
    assert set(legend_texts(recall_ax)) == {"text", "audio", "visual"}
    heights = [p.get_height() for p in recall_ax.patches]
    acc_t5 = 0.5 + 0.05 * 5
    assert heights[:4] == pytest.approx([acc_t5, acc_t5 / 2, 1 - acc_t5, 0.0])
    assert len(heights) == 3 * len(LABELS)


def test_plot_training_writes_every_plot_and_no_weight_norm_plot(tmp_path):
    paths = plot_training(history(), tmp_path, best_epoch=5, label_names=LABELS)
    assert set(paths) == {
        "diagnostics_json",
        "training_curves",
        "discrepancy",
        "unimodal_loss",
        "imbalance",
    }
    for key, path in paths.items():
        if key != "diagnostics_json":
            assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "weight_norms.png").exists()
    fig = unimodal_loss_figure(history())
    assert fig.axes[0].get_ylabel() and {"text", "audio", "visual"} <= set(
        legend_texts(fig.axes[0])
    )


def test_plots_for_one_modality_and_a_history_resumed_from_before_unimodal_metrics(tmp_path):
    hist = history()
    for h in hist:
        for key in ("score", "rho", "k", "unimodal_loss", "dev_unimodal"):
            h[key] = {"t": h[key]["t"]}
    for h in hist[:2]:  # recorded before dev_unimodal existed
        del h["dev_unimodal"]
    fig = imbalance_figure(hist, 1, LABELS)  # the checkpoint epoch has no record: the last one
    acc_ax, _, recall_ax = fig.axes
    assert "last epoch 6" in recall_ax.get_title()
    assert len(recall_ax.patches) == len(LABELS)
    text_line = next(line for line in acc_ax.get_lines() if line.get_label() == "text alone")
    assert np.isnan(text_line.get_ydata().astype(float)[:2]).all()
    assert set(plot_training(hist, tmp_path, 1, LABELS)) >= {"imbalance", "discrepancy"}
