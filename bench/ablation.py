"""Ada2I ablations on the real data in ../shared: one command, one table.

    python -m bench.ablation --dataset iemocap      # IEMOCAP-6: TA, T, A
    python -m bench.ablation --dataset meld         # MELD-7: T
    python -m bench.ablation --dataset iemocap --subsets ta --variants ada2i,concat --seeds 0

Variants: Ada2I; without gradient modulation; without AFW; without AMW (concatenation head,
AFW kept); and the plain concatenation baseline (same encoders, no AFW, AMW or modulation). On a
single modality modulation never acts, so "w/o modulation" is the Ada2I run itself and is not
trained twice. The paper's schedule: the preset's 50 epochs, early stop after 20 without a better
dev checkpoint. Feature sets come from `erc import iemocap-shared|meld-shared`.

The table (OUT/<dataset>/ablation.md, printed at the end): test W-F1 and accuracy, mean ± sample
std over seeds; each modality's unimodal test accuracy (its own class scores: what that encoder
learned); the final epoch's rho_m; each variant's W-F1 difference from the concat baseline with
its Welch 95% confidence interval over seeds. Variants can run in separate processes side by side (--variants
one each, same --out); --table-only tables whatever has finished.

A second table reads the same runs on dev, where every choice is made: the best dev W-F1 (the
checkpoint kept), the epoch it came at, and at that epoch each modality's own dev accuracy and
rho_m. --text-model (e.g. minilm) imports the text with another sentence encoder, into a
features folder and a table of its own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.common import NAMES, diff_ci, mean_sd
from model.config import CONCAT_BASELINE
from pipeline.features.importers.shared_data import import_dataset
from pipeline.training.grid import run_grid

SUBSETS = {"iemocap": ["ta", "t", "a"], "meld": ["t"]}
VARIANTS = {
    "ada2i": {},
    "no_modulation": {"modulation": False},
    "no_afw": {"use_afw": False},
    "no_amw": {"use_amw": False},
    "concat": {**CONCAT_BASELINE, "modulation": False},
}
LABELS = {
    "ada2i": "Ada2I",
    "no_modulation": "w/o modulation",
    "no_afw": "w/o AFW",
    "no_amw": "w/o AMW",
    "concat": "concat baseline",
}


def train_all(args, features: Path, out: Path) -> None:
    overrides = {"progress": False, "threads": args.threads, **dict(args.set)}
    for variant in args.variants:
        subsets = [s for s in args.subsets if not (variant == "no_modulation" and len(s) == 1)]
        if subsets:
            run_grid(
                features,
                out,
                subsets,
                args.seeds,
                model_preset=args.dataset,
                overrides=overrides,
                variants={variant: VARIANTS[variant]},
            )


def table(out: Path) -> str:
    rows = [
        "Test W-F1 and accuracy (%), mean ± sample std (ddof=1) over seeds; unimodal accuracy = "
        "each modality's own class scores on test; rho_m at the last epoch trained.",
        "",
        "Δ vs concat: the difference in mean W-F1 with its Welch 95% confidence interval over seeds.",
        "",
        "| modalities | variant | seeds | W-F1 | Δ vs concat [95% CI] | Acc | unimodal acc | final rho |",
        "|---|---|---|---|---|---|---|---|",
    ]
    found = list(finished_runs(out))
    concat = {
        s: [read_test_metrics(r)["weighted_f1"] for r in runs]
        for s, v, _, runs in found
        if v == "concat"
    }
    for subset, variant, label, runs in found:
        metrics = [read_test_metrics(run) for run in runs]
        uni = [{m: v["accuracy"] for m, v in x["unimodal"].items()} for x in metrics]
        rho = [json.loads((run / "history.json").read_text())[-1]["rho"] for run in runs]
        uni_s = ", ".join(f"{NAMES[m]} {mean_sd([u[m] for u in uni])}" for m in subset)
        rho_s = ", ".join(f"{NAMES[m]} {np.mean([r[m] for r in rho]):.2f}" for m in subset)
        wf1 = [m["weighted_f1"] for m in metrics]
        rows.append(
            f"| {subset.upper()} | {label} | {len(runs)} | {mean_sd(wf1)} | "
            f"{'' if variant == 'concat' else diff_ci(wf1, concat.get(subset, []))} | "
            f"{mean_sd([m['accuracy'] for m in metrics])} | {uni_s} | {rho_s} |"
        )
    return "\n".join(rows) + "\n"


def dev_table(out: Path) -> str:
    """The same runs at their kept checkpoint, read on dev (history.json)."""
    rows = [
        "Dev, at each run's kept checkpoint (best dev W-F1): W-F1 %, the epoch it came at, each "
        "modality's own dev accuracy % and rho_m at that epoch; mean ± sample std over seeds.",
        "",
        "| modalities | variant | seeds | dev W-F1 | Δ vs concat [95% CI] | best epoch "
        "| dev unimodal acc | rho at best |",
        "|---|---|---|---|---|---|---|---|",
    ]

    found = list(finished_runs(out))
    concat = {
        s: [kept_epoch(r)["dev_wf1"] for r in runs] for s, v, _, runs in found if v == "concat"
    }
    for subset, variant, label, runs in found:
        best = [kept_epoch(run) for run in runs]
        wf1 = [e["dev_wf1"] for e in best]
        uni_s = ", ".join(
            f"{NAMES[m]} {mean_sd([e['dev_unimodal'][m]['accuracy'] for e in best])}"
            for m in subset
        )
        rho_s = ", ".join(f"{NAMES[m]} {np.mean([e['rho'][m] for e in best]):.2f}" for m in subset)
        epochs = "/".join(str(e["epoch"]) for e in best)
        rows.append(
            f"| {subset.upper()} | {label} | {len(best)} | {mean_sd(wf1)} | "
            f"{'' if variant == 'concat' else diff_ci(wf1, concat.get(subset, []))} | {epochs} | "
            f"{uni_s} | "
            f"{rho_s} |"
        )
    return "\n".join(rows) + "\n"


def finished_runs(out: Path):
    """(subset, variant, label, [run folders with a test/metrics.json]) for each subset and
    variant that has finished runs. On one modality modulation never acts, so "w/o modulation"
    reads the Ada2I runs."""
    for subset in subsets_found(out):
        for variant in VARIANTS:
            source = "ada2i" if variant == "no_modulation" and len(subset) == 1 else variant
            metrics = sorted((out / source / subset).glob("seed*/test/metrics.json"))
            if metrics:
                label = LABELS[variant] + (" (= Ada2I)" if source != variant else "")
                yield subset, variant, label, [p.parent.parent for p in metrics]


def read_test_metrics(run: Path) -> dict:
    return json.loads((run / "test" / "metrics.json").read_text())


def kept_epoch(run: Path) -> dict:
    """The history entry of the checkpoint a run kept: its best dev W-F1."""
    return max(json.loads((run / "history.json").read_text()), key=lambda e: e["dev_wf1"])


def subsets_found(out: Path) -> list[str]:
    found = {p.name for p in out.glob("*/*") if p.is_dir()}
    return [s for s in ("tav", "ta", "tv", "av", "t", "a", "v") if s in found]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", choices=sorted(SUBSETS), required=True)
    ap.add_argument("--out", default="outputs/bench_ablation")
    ap.add_argument("--subsets", default="", help="comma-separated (default: the dataset's)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"from {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument(
        "--text-model",
        help="sentence encoder for the imported text: mpnet (default), minilm, or a folder "
        "(e.g. from erc finetune-text)",
    )
    args = ap.parse_args()
    args.subsets = [s for s in args.subsets.split(",") if s] or SUBSETS[args.dataset]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    from pipeline.cli.train import parse_overrides

    args.set = parse_overrides(args.set).items()
    # A folder (e.g. a fine-tuned encoder) is named by its last part.
    suffix = f"_{Path(args.text_model).name}" if args.text_model else ""
    out = Path(args.out) / f"{args.dataset}{suffix}"
    features = Path(args.out) / f"features_{args.dataset}{suffix}"
    if not (features / "meta.json").is_file():
        import_dataset(f"{args.dataset}-shared", features, text_model=args.text_model)
    if not args.table_only:
        torch.set_num_threads(args.threads)
        train_all(args, features, out)
    out.mkdir(parents=True, exist_ok=True)  # --table-only before any run: an empty table
    md = table(out) + "\n" + dev_table(out)
    (out / "ablation.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
