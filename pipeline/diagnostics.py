"""Training curves and imbalance diagnostics as PNG plots (and diagnostics.json).

Plots: training_curves.png (losses, dev WF1/accuracy), discrepancy.png (s_m, rho_m, k_m per epoch,
the paper's Fig. 4), unimodal_loss.png (per-modality loss), weight_norms.png (per-class weight norms
per modality over epochs, the paper's Fig. 5).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}
COLOURS = {"t": "tab:blue", "a": "tab:orange", "v": "tab:green"}


def imbalance_series(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-epoch imbalance figures, modality by modality, from the training history."""
    out: dict[str, Any] = {"epoch": [h["epoch"] for h in history]}
    for key in ("score", "rho", "k", "unimodal_loss"):
        mods = sorted({m for h in history for m in h.get(key, {})}, key="tav".index)
        out[key] = {m: [h.get(key, {}).get(m) for h in history] for m in mods}
    out["class_weight_norms"] = [h.get("class_weight_norms", {}) for h in history]
    return out


def plot_training(history: list[dict[str, Any]], out_dir: str | Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not history:
        return {}
    series = imbalance_series(history)
    (out_dir / "diagnostics.json").write_text(json.dumps(series, indent=1))
    epochs = series["epoch"]
    paths = {"diagnostics_json": str(out_dir / "diagnostics.json")}

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (
        ("loss", "train L_main"),
        ("loss_cls", "L_cls"),
        ("loss_modal", "L_modal"),
        ("loss_feature", "L_feature"),
        ("dev_loss", "dev L_main"),
    ):
        if key in history[0]:
            ax1.plot(
                epochs,
                [h[key] for h in history],
                label=label,
                ls="--" if key == "dev_loss" else "-",
            )
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [h["dev_wf1"] for h in history], label="dev weighted F1")
    ax2.plot(epochs, [h["dev_acc"] for h in history], label="dev accuracy")
    best = int(np.nanargmax([h["dev_wf1"] for h in history]))
    ax2.axvline(epochs[best], color="grey", ls=":", label=f"best epoch {epochs[best]}")
    ax2.set_xlabel("epoch")
    ax2.legend()
    fig.tight_layout()
    paths["training_curves"] = _save(fig, out_dir / "training_curves.png")

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, title in zip(
        axes,
        ("score", "rho", "k"),
        (
            "unimodal score s_m (eq. 16)",
            "discrepancy ratio rho_m (eq. 17)",
            "modulation coefficient k_m",
        ),
        strict=True,
    ):
        for m, values in series[key].items():
            ax.plot(epochs, values, color=COLOURS[m], label=MODALITY_NAMES[m])
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    axes[1].axhline(1.0, color="grey", ls=":")
    modulated = [h["epoch"] for h in history if h.get("modulated")]
    if modulated:
        for ax in axes:
            ax.axvspan(min(modulated) - 0.5, max(modulated) + 0.5, color="yellow", alpha=0.12)
    fig.tight_layout()
    paths["discrepancy"] = _save(fig, out_dir / "discrepancy.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, values in series["unimodal_loss"].items():
        ax.plot(epochs, values, color=COLOURS[m], label=MODALITY_NAMES[m])
    ax.set_title("per-modality loss (unimodal scores)")
    ax.set_xlabel("epoch")
    ax.legend()
    fig.tight_layout()
    paths["unimodal_loss"] = _save(fig, out_dir / "unimodal_loss.png")

    norms = series["class_weight_norms"]
    mods = list(norms[-1])
    if mods:
        n_classes = len(norms[-1][mods[0]])
        fig, axes = plt.subplots(
            1, len(mods), figsize=(4.5 * len(mods), 3.8), squeeze=False, sharey=True
        )
        for ax, m in zip(axes[0], mods, strict=True):
            table = np.array([n[m] for n in norms])  # [epochs, C]
            for c in range(n_classes):
                ax.plot(epochs, table[:, c], label=f"class {c}")
            ax.set_title(f"{MODALITY_NAMES[m]}: per-class weight norm")
            ax.set_xlabel("epoch")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        paths["weight_norms"] = _save(fig, out_dir / "weight_norms.png")
    return paths


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
