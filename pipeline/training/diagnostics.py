"""Training curves and imbalance diagnostics as PNG plots (and diagnostics.json).

Plots (each built by a *_figure function that returns the matplotlib Figure, so tests can read its
axes, labels and legends; plot_training saves them):
    training_curves.png  losses; dev weighted F1 and accuracy; the saved checkpoint's epoch
    discrepancy.png      s_m, rho_m and k_m per epoch (the paper's Fig. 4), modulated epochs shaded
    unimodal_loss.png    each modality's own cross-entropy per epoch
    imbalance.png        what the imbalance is: each modality's dev accuracy alone per epoch, its
                         train s_m per epoch, and its dev recall per emotion at the checkpoint epoch

The paper's Fig. 5 plots the raw class-weight norms ||W_k^m||; AMW L2-normalises W before use
(cosine scores), so raw norms do not change what the model predicts and explain nothing here. The
history still records them (class_weight_norms), diagnostics.json keeps them, no plot shows them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.config import MODALITY_NAMES
from pipeline.dataset.manifest import emotion_name

COLOURS = {"t": "tab:blue", "a": "tab:orange", "v": "tab:green"}
CHECKPOINT_STYLE = dict(color="black", ls=":", lw=1.2)
MODULATED_STYLE = dict(color="gold", alpha=0.18)


def imbalance_series(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-epoch imbalance figures, modality by modality, from the training history."""
    out: dict[str, Any] = {"epoch": [h["epoch"] for h in history]}
    for key in ("score", "rho", "k", "unimodal_loss"):
        mods = sorted({m for h in history for m in h.get(key, {})}, key="tav".index)
        out[key] = {m: [h.get(key, {}).get(m) for h in history] for m in mods}
    mods = sorted({m for h in history for m in h.get("dev_unimodal", {})}, key="tav".index)
    out["dev_unimodal_acc"] = {
        m: [h.get("dev_unimodal", {}).get(m, {}).get("accuracy") for h in history] for m in mods
    }
    out["class_weight_norms"] = [h.get("class_weight_norms", {}) for h in history]
    return out


def plot_training(
    history: list[dict[str, Any]],
    out_dir: str | Path,
    best_epoch: int | None = None,
    label_names: list[str] | None = None,
) -> dict[str, str]:
    """All plots and diagnostics.json into out_dir. best_epoch: the epoch of the saved checkpoint
    (pipeline.training.train's choice, with its dev-loss tie-break; not recomputed here); None = unmarked.
    label_names: class names in class order, for the per-class panel."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not history:
        return {}
    series = imbalance_series(history)
    (out_dir / "diagnostics.json").write_text(json.dumps(series, indent=1))
    paths = {"diagnostics_json": str(out_dir / "diagnostics.json")}
    paths["training_curves"] = _save(
        training_curves_figure(history, best_epoch), out_dir / "training_curves.png"
    )
    paths["discrepancy"] = _save(
        discrepancy_figure(history, best_epoch), out_dir / "discrepancy.png"
    )
    paths["unimodal_loss"] = _save(unimodal_loss_figure(history), out_dir / "unimodal_loss.png")
    if series["dev_unimodal_acc"]:
        fig = imbalance_figure(history, best_epoch, label_names)
        paths["imbalance"] = _save(fig, out_dir / "imbalance.png")
    return paths


# ---- figures ----------------------------------------------------------------------------------


def training_curves_figure(history: list[dict[str, Any]], best_epoch: int | None = None):
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5))
    # Each curve its own line style and marker: L_cls and L_modal can be nearly equal, and one
    # hid the other when both were plain lines.
    for key, label, style in (
        ("loss", "train L_main", {"ls": "-", "lw": 2.0}),
        ("loss_cls", "train L_cls", {"ls": "-", "lw": 4.0, "alpha": 0.45}),
        ("loss_modal", "train L_modal", {"ls": ":", "marker": "x", "markersize": 4}),
        ("loss_feature", "train L_feature", {"ls": "-.", "marker": "."}),
        ("dev_loss", "dev L_main", {"ls": "--"}),
    ):
        if key in history[0]:
            ax1.plot(epochs, [h[key] for h in history], label=label, **style)
    ax1.set_title("losses")
    ax1.set_ylabel("loss (mean per batch)")
    ax2.plot(epochs, [h["dev_wf1"] for h in history], marker=".", label="dev weighted F1")
    ax2.plot(epochs, [h["dev_acc"] for h in history], marker=".", label="dev accuracy")
    ax2.set_title("dev scores (fused prediction)")
    ax2.set_ylabel("score (0-1)")
    for ax in (ax1, ax2):
        _mark_checkpoint(ax, best_epoch)
        _epoch_axis(ax)
        _legend_below(ax)
    fig.tight_layout()
    return fig


def discrepancy_figure(history: list[dict[str, Any]], best_epoch: int | None = None):
    plt = _pyplot()
    series = imbalance_series(history)
    epochs = series["epoch"]
    modulated = [h["epoch"] for h in history if h.get("modulated")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.8))
    panels = (
        ("score", "unimodal score s_m (eq. 16)", "s_m: mean train softmax of the true class"),
        ("rho", "discrepancy ratio rho_m (eq. 17)", "rho_m = s_m / min_j s_j"),
        ("k", "modulation coefficient k_m (eq. 18)", "k_m: gradient scale (1 = not slowed)"),
    )
    for ax, (key, title, ylabel) in zip(axes, panels, strict=True):
        for m, values in series[key].items():
            ax.plot(epochs, values, color=COLOURS[m], marker=".", label=MODALITY_NAMES[m])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if modulated:
            ax.axvspan(
                min(modulated) - 0.5,
                max(modulated) + 0.5,
                **MODULATED_STYLE,
                label="modulated epochs (eqs. 18-19)",
            )
        _epoch_axis(ax)
    axes[1].axhline(1.0, color="grey", ls="--", lw=1, label="rho = 1: the weakest modality")
    axes[2].axhline(1.0, color="grey", ls="--", lw=1, label="k = 1: no modulation")
    if not modulated:
        axes[2].text(
            0.5, 0.04, "modulation off in this run", transform=axes[2].transAxes, ha="center"
        )
    for ax in axes:
        _mark_checkpoint(ax, best_epoch)
        _legend_below(ax)
    fig.tight_layout()
    return fig


def unimodal_loss_figure(history: list[dict[str, Any]]):
    plt = _pyplot()
    series = imbalance_series(history)
    fig, ax = plt.subplots(figsize=(6, 4.8))
    for m, values in series["unimodal_loss"].items():
        ax.plot(series["epoch"], values, color=COLOURS[m], marker=".", label=MODALITY_NAMES[m])
    ax.set_title("per-modality loss (unimodal scores)")
    ax.set_ylabel("train cross-entropy of s_m's scores")
    _epoch_axis(ax)
    _legend_below(ax)
    fig.tight_layout()
    return fig


def imbalance_figure(
    history: list[dict[str, Any]],
    best_epoch: int | None = None,
    label_names: list[str] | None = None,
):
    """(a) dev accuracy of each modality alone (argmax of its own scores) per epoch, the fused
    model's for reference; (b) train s_m per epoch, what modulation compares; (c) dev recall per
    emotion and modality at the checkpoint epoch (else the last epoch that recorded it)."""
    import numpy as np

    plt = _pyplot()
    series = imbalance_series(history)
    epochs = series["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [1, 1, 1.3]})

    ax = axes[0]
    for m, values in series["dev_unimodal_acc"].items():
        ax.plot(epochs, values, color=COLOURS[m], marker=".", label=f"{MODALITY_NAMES[m]} alone")
    ax.plot(epochs, [h["dev_acc"] for h in history], color="black", ls="--", label="fused model")
    ax.set_title("(a) dev accuracy of each modality alone")
    ax.set_ylabel("dev accuracy (0-1)")

    ax = axes[1]
    for m, values in series["score"].items():
        ax.plot(epochs, values, color=COLOURS[m], marker=".", label=MODALITY_NAMES[m])
    ax.set_title("(b) unimodal score s_m (train)")
    ax.set_ylabel("mean softmax of the true class")
    for ax in axes[:2]:
        _mark_checkpoint(ax, best_epoch)
        _epoch_axis(ax)
        _legend_below(ax)

    ax = axes[2]
    # A run resumed from before dev_unimodal was recorded lacks it in its first epochs.
    recorded = [h["epoch"] for h in history if h.get("dev_unimodal")]
    at = best_epoch if best_epoch in recorded else recorded[-1]
    record = history[epochs.index(at)]["dev_unimodal"]
    mods = list(series["dev_unimodal_acc"])
    n_classes = len(next(iter(record.values()))["recall"])
    names = [emotion_name(n) for n in (label_names or [f"class {c}" for c in range(n_classes)])]
    width = 0.8 / len(mods)
    x = np.arange(n_classes)
    for i, m in enumerate(mods):
        ax.bar(
            x + (i - (len(mods) - 1) / 2) * width,
            record[m]["recall"],
            width,
            color=COLOURS[m],
            label=MODALITY_NAMES[m],
        )
    # Labelled dev utterances per class; a modality missing for some has fewer (its own recall
    # is over those it has).
    support = np.max([record[m]["support"] for m in mods], axis=0)
    ax.set_xticks(x, [f"{n}\n(n={s})" for n, s in zip(names, support, strict=True)], fontsize=8)
    ax.set_ylim(0, 1.0)
    which = "checkpoint" if at == best_epoch else "last"
    ax.set_title(f"(c) dev recall per emotion, {which} epoch {at}")
    ax.set_ylabel("recall of each modality alone (0-1)")
    _legend_below(ax, bars=True)
    fig.tight_layout()
    return fig


# ---- helpers ----------------------------------------------------------------------------------


def _mark_checkpoint(ax, best_epoch: int | None) -> None:
    if best_epoch is not None:
        ax.axvline(best_epoch, **CHECKPOINT_STYLE, label=f"checkpoint (epoch {best_epoch})")


def _legend_below(ax, bars: bool = False) -> None:
    """The legend under the axes, never on the data; two or three columns."""
    labels = ax.get_legend_handles_labels()[1]
    n = len(labels)
    wide_labels = max(map(len, labels)) > 24
    ax.legend(
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2 if bars else -0.16),
        ncols=min(n, 3 if n <= 6 and not wide_labels else 2),
        frameon=False,
    )


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
