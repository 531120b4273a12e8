"""Does gradient modulation change what is learned? Synthetic features with a planted imbalance.

    python -m bench.modulation_effect [--seeds 0,1] [--epochs 30] [--alpha 0.4] [--out DIR]

Text carries a strong class signal, audio a weaker one, visual a weak one (all three modalities).
Ada2I is trained with and without modulation (eqs. 16-19), same seeds and everything else equal.
Prints, per setting, mean ± sample std over seeds of the test W-F1 and of each modality's
unimodal test accuracy (the argmax of its own AMW scores: what that encoder + its class vectors
learned), and writes OUT/modulation_effect.png: rho_m and k_m per epoch, and the weak modality's
unimodal accuracy with and without modulation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import NAMES, mean_sd
from pipeline.features.importers.synthetic import make_synthetic
from pipeline.training.train import configs_for, train

SIGNAL = {"t": 1.2, "a": 0.45, "v": 0.25}  # class-mean norm per unit noise: text >> audio > visual
SIZES = {"train": 60, "dev": 10, "test": 20}
DIMS = {"t": 96, "a": 64, "v": 64}


def run(seed: int, modulation: bool, epochs: int, alpha: float) -> dict:
    fs = make_synthetic(SIZES, utterances=2_700, dims=DIMS, signal=SIGNAL, seed=100 + seed)
    model_cfg, train_cfg = configs_for(
        "iemocap",
        "tav",
        {
            "hidden": 96,
            "rank": 6,
            "alpha": alpha,
            "modulation": modulation,
            "epochs": epochs,
            "patience": epochs,
            "lr": 5e-4,
            "seed": seed,
            "progress": False,
            "threads": 1,
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train(fs, model_cfg, train_cfg, tmp, resume=False)
        history = json.loads(result.history_path.read_text())
    return {
        "seed": seed,
        "modulation": modulation,
        "test_wf1": result.metrics["weighted_f1"],
        "unimodal_acc": {m: v["accuracy"] for m, v in result.metrics["unimodal"].items()},
        "rho": [h["rho"] for h in history],
        "k": [h["k"] for h in history],
    }


def plot(runs: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    colours = {"t": "tab:blue", "a": "tab:orange", "v": "tab:green"}
    for r in runs:
        epochs = np.arange(1, len(r["rho"]) + 1)
        first = r["seed"] == runs[0]["seed"]
        style = "-" if r["modulation"] else ":"
        for m in "tav":
            label = f"{NAMES[m]}, {'with' if r['modulation'] else 'without'} modulation"
            axes[0].plot(
                epochs,
                [x[m] for x in r["rho"]],
                style,
                color=colours[m],
                label=label if first else None,
                alpha=0.8,
            )
            if r["modulation"]:
                axes[1].plot(
                    epochs,
                    [x[m] for x in r["k"]],
                    color=colours[m],
                    label=NAMES[m] if first else None,
                    alpha=0.8,
                )
    axes[0].axhline(1.0, color="grey", lw=0.8, ls="--", label="rho = 1 (the weakest modality)")
    axes[0].set(
        title="Discrepancy ratio rho_m, one line per seed",
        xlabel="epoch",
        ylabel="rho_m = s_m / min_j s_j",
    )
    axes[1].set(
        title="Modulation coefficient k_m (modulated runs)",
        xlabel="epoch",
        ylabel="k_m (step scale of encoder m)",
    )
    axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    axes[1].legend(fontsize=9)
    for ax in axes[:2]:
        ax.xaxis.get_major_locator().set_params(integer=True)
    width = 0.38
    for i, modulation in enumerate((False, True)):
        mine = [r for r in runs if r["modulation"] == modulation]
        means = [np.mean([r["unimodal_acc"][m] for r in mine]) for m in "tav"]
        errs = [
            np.std([r["unimodal_acc"][m] for r in mine], ddof=1) if len(mine) > 1 else 0
            for m in "tav"
        ]
        axes[2].bar(
            np.arange(3) + (i - 0.5) * width,
            means,
            width,
            yerr=errs,
            capsize=3,
            label="with modulation" if modulation else "without modulation",
        )
    axes[2].set_xticks(np.arange(3), [NAMES[m] for m in "tav"])
    axes[2].set(
        title="Unimodal test accuracy\n(mean ± sample std over seeds)",
        xlabel="modality",
        ylabel="accuracy of the modality's own scores",
    )
    axes[2].legend(fontsize=9)
    fig.tight_layout()
    path = out / "modulation_effect.png"
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--alpha", type=float, default=0.4, help="paper Table 2: MELD/MOSEI 0.4")
    ap.add_argument("--out", default="outputs/bench_modulation")
    ap.add_argument("--plot-only", action="store_true", help="redraw OUT/runs.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot_only:
        print(f"plot: {plot(json.loads((out / 'runs.json').read_text()), out)}")
        return
    runs = [
        run(seed, modulation, args.epochs, args.alpha)
        for seed in (int(s) for s in args.seeds.split(","))
        for modulation in (False, True)
    ]
    (out / "runs.json").write_text(json.dumps(runs, indent=1))
    for modulation in (False, True):
        mine = [r for r in runs if r["modulation"] == modulation]
        ms = mean_sd
        uni = ", ".join(f"{NAMES[m]} {ms([r['unimodal_acc'][m] for r in mine])}" for m in "tav")
        last_rho = {m: np.mean([r["rho"][-1][m] for r in mine]) for m in "tav"}
        print(
            f"modulation={'on ' if modulation else 'off'}  test W-F1 {ms([r['test_wf1'] for r in mine])}"
            f"  unimodal acc: {uni}  final rho: "
            + ", ".join(f"{NAMES[m]} {v:.2f}" for m, v in last_rho.items())
        )
    print(f"plot: {plot(runs, out)}")


if __name__ == "__main__":
    main()
