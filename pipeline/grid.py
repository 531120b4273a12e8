"""Every modality subset x N seeds -> one table of mean ± std weighted F1 and accuracy (CSV + Markdown)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from model.config import SUBSETS
from pipeline.featureset import FeatureSet
from pipeline.train import configs_for, train

log = logging.getLogger(__name__)


def run_grid(
    featureset_dir: str | Path,
    out_dir: str | Path,
    subsets: list[str] | None = None,
    seeds: list[int] | None = None,
    model_preset: str = "iemocap",
    overrides: dict[str, Any] | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Trains every (variant, subset, seed) under out_dir/<variant>/<subset>/seed<k> (each run
    resumes if interrupted) and writes grid.csv, grid.md and grid_runs.json; returns grid.md.
    Subsets default to those the feature set can serve; variants (name -> config overrides)
    default to {"ada2i": {}}, e.g. add {"concat": CONCAT_BASELINE} for the baseline."""
    fs = FeatureSet.load(featureset_dir)
    out_dir = Path(out_dir)
    subsets = subsets or [s for s in SUBSETS if set(s) <= set(fs.modalities)]
    bad = [s for s in subsets if not set(s) <= set(fs.modalities)]
    if bad:
        raise ValueError(
            f"{featureset_dir}: subsets {bad} need modalities the features lack ({fs.modalities!r})"
        )
    seeds = seeds or [0, 1, 2]
    variants = variants or {"ada2i": {}}
    runs = []
    for variant, extra in variants.items():
        for subset in subsets:
            for seed in seeds:
                model_cfg, train_cfg = configs_for(
                    model_preset, subset, {**(overrides or {}), **extra, "seed": seed}
                )
                result = train(fs, model_cfg, train_cfg, out_dir / variant / subset / f"seed{seed}")
                runs.append(
                    {
                        "variant": variant,
                        "subset": subset,
                        "seed": seed,
                        "weighted_f1": result.metrics.get("weighted_f1", float("nan")),
                        "accuracy": result.metrics.get("accuracy", float("nan")),
                        "best_epoch": result.best_epoch,
                        "seconds_per_epoch": result.seconds_per_epoch,
                    }
                )
                log.info(
                    "grid %s %s seed %d: WF1 %.4f", variant, subset, seed, runs[-1]["weighted_f1"]
                )
    (out_dir / "grid_runs.json").write_text(json.dumps(runs, indent=1))
    rows = summarise(runs)
    with open(out_dir / "grid.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = out_dir / "grid.md"
    md.write_text(to_markdown(rows, seeds))
    return md


def collect_runs(out_dir: str | Path) -> list[dict[str, Any]]:
    """Finished runs under out_dir (<variant>/<subset>/seed<k>/test/metrics.json), e.g. to table
    a grid that was stopped early."""
    runs = []
    for metrics_path in sorted(Path(out_dir).glob("**/seed*/test/metrics.json")):
        run = metrics_path.parent.parent
        m = json.loads(metrics_path.read_text())
        runs.append(
            {
                "variant": run.parent.parent.name,
                "subset": run.parent.name,
                "seed": int(run.name[4:]),
                "weighted_f1": m["weighted_f1"],
                "accuracy": m["accuracy"],
                "best_epoch": m.get("best_epoch"),
            }
        )
    return runs


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = list(dict.fromkeys((r["variant"], r["subset"]) for r in runs))
    rows = []
    for variant, subset in keys:
        mine = [r for r in runs if r["variant"] == variant and r["subset"] == subset]
        wf1 = np.array([r["weighted_f1"] for r in mine]) * 100
        acc = np.array([r["accuracy"] for r in mine]) * 100
        rows.append(
            {
                "variant": variant,
                "subset": subset.upper(),
                "seeds": len(mine),
                "wf1_mean": round(float(wf1.mean()), 2),
                "wf1_std": round(float(wf1.std(ddof=0)), 2),
                "acc_mean": round(float(acc.mean()), 2),
                "acc_std": round(float(acc.std(ddof=0)), 2),
            }
        )
    return rows


def to_markdown(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    lines = [
        f"Test weighted F1 and accuracy (%), mean ± std over seeds {seeds}.",
        "",
        "| variant | modalities | seeds | W-F1 | Acc |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['subset']} | {r['seeds']} | {r['wf1_mean']:.2f} ± {r['wf1_std']:.2f} | "
        f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
