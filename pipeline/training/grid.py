"""Every modality subset x N seeds -> one table of mean ± sample std weighted F1, macro F1 and
accuracy (grid.csv, grid.md, each saying what was run: feature set, preset, overrides, date) and
a bar chart (grid.png). Each run folder is reused when it holds the finished run of the same settings
and features, resumed when it holds an interrupted one, and refused when it holds other settings
(unless fresh=True); see pipeline.training.run_folder."""

from __future__ import annotations

import csv
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model.config import SUBSETS
from pipeline.features.featureset import FeatureSet
from pipeline.training import run_folder
from pipeline.training.train import configs_for, train

log = logging.getLogger(__name__)


def run_grid(
    featureset_dir: str | Path,
    out_dir: str | Path,
    subsets: list[str] | None = None,
    seeds: list[int] | None = None,
    model_preset: str = "iemocap",
    overrides: dict[str, Any] | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
    fresh: bool = False,
) -> Path:
    """Trains every (variant, subset, seed) under out_dir/<variant>/<subset>/seed<k> and writes
    grid.csv, grid.md and grid_runs.json; returns grid.md. A finished run with the same settings
    and features is reused, an interrupted one resumes, one with other settings is refused
    (RunFolderMismatch); fresh=True discards every existing run and trains all anew.
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
    plan = []  # (variant, subset, seed, configs, run folder, identity)
    for variant, extra in variants.items():
        for subset in subsets:
            for seed in seeds:
                model_cfg, train_cfg = configs_for(
                    model_preset, subset, {**(overrides or {}), **extra, "seed": seed}
                )
                run_dir = out_dir / variant / subset / f"seed{seed}"
                ident = run_folder.identity(fs, model_cfg, train_cfg)
                plan.append((variant, subset, seed, model_cfg, train_cfg, run_dir, ident))
    if not fresh:  # refuse before training anything, naming every folder that holds other runs
        problems = []
        for *_, run_dir, ident in plan:
            try:
                run_folder.check(run_dir, ident, hint=False)
            except run_folder.RunFolderMismatch as exc:
                problems.append(str(exc))
        if problems:
            hint = (
                "To discard the old runs and train the grid anew: `erc grid ... --fresh` "
                "(run_grid(..., fresh=True)); or give the grid another --out."
            )
            raise run_folder.RunFolderMismatch("\n".join([*problems, hint]))
    runs = []
    for variant, subset, seed, model_cfg, train_cfg, run_dir, ident in plan:
        if not fresh and run_folder.finished(run_dir, ident):
            run, status = _finished_run(run_dir), "reused"
        else:
            status = "resumed" if not fresh and run_folder.saved_progress(run_dir) else "trained"
            result = train(fs, model_cfg, train_cfg, run_dir, resume=not fresh)
            run = _result_run(result)
        runs.append({"variant": variant, "subset": subset, "seed": seed, **run})
        log.info(
            "grid %s %s seed %d %s: WF1 %.4f", variant, subset, seed, status, run["weighted_f1"]
        )
    (out_dir / "grid_runs.json").write_text(json.dumps(runs, indent=1))
    rows = summarise(runs)
    what = {
        "featureset": str(Path(featureset_dir).resolve()),
        "featureset_sha256": run_folder.featureset_digest(fs),
        "model_preset": model_preset,
        "overrides": json.dumps(overrides or {}, sort_keys=True),
        "variants": json.dumps(variants, sort_keys=True),
        # when the newest of its results was made (a rerun that reuses every run: the same)
        "date": datetime.fromtimestamp(
            max(Path(r["run_dir"], "history.json").stat().st_mtime for r in runs), UTC
        ).isoformat(timespec="seconds"),
    }
    with open(out_dir / "grid.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*rows[0], *what])
        w.writeheader()
        w.writerows({**r, **what} for r in rows)
    md = out_dir / "grid.md"
    md.write_text(to_markdown(rows, seeds, what))
    plot_grid(rows, seeds, out_dir / "grid.png", Path(featureset_dir).name)
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
                "macro_f1": m.get("macro_f1", float("nan")),
                "accuracy": m["accuracy"],
                "best_epoch": m.get("best_epoch"),
                "run_dir": str(run),
            }
        )
    return runs


def _result_run(result: Any) -> dict[str, Any]:
    return {
        "weighted_f1": result.metrics.get("weighted_f1", float("nan")),
        "macro_f1": result.metrics.get("macro_f1", float("nan")),
        "accuracy": result.metrics.get("accuracy", float("nan")),
        "best_epoch": result.best_epoch,
        "seconds_per_epoch": result.seconds_per_epoch,
        "run_dir": str(result.run_dir),
    }


def _finished_run(run_dir: Path) -> dict[str, Any]:
    """The grid entry of a finished run, read from its folder instead of training it again."""
    m = json.loads((run_dir / "test" / "metrics.json").read_text())
    seconds = [h["seconds"] for h in json.loads((run_dir / "history.json").read_text())]
    return {
        "weighted_f1": m["weighted_f1"],
        "macro_f1": m.get("macro_f1", float("nan")),
        "accuracy": m["accuracy"],
        "best_epoch": m.get("best_epoch"),
        "seconds_per_epoch": float(np.median(seconds)) if seconds else float("nan"),
        "run_dir": str(run_dir),
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (variant, subset): mean and *sample* standard deviation (ddof=1, as papers
    report) over its seeds; the std is None (undefined) for a single seed."""
    keys = list(dict.fromkeys((r["variant"], r["subset"]) for r in runs))
    rows = []
    for variant, subset in keys:
        mine = [r for r in runs if r["variant"] == variant and r["subset"] == subset]
        row = {"variant": variant, "subset": subset.upper(), "seeds": len(mine)}
        for short, key in (("wf1", "weighted_f1"), ("mf1", "macro_f1"), ("acc", "accuracy")):
            values = np.array([r.get(key, float("nan")) for r in mine]) * 100
            row[f"{short}_mean"] = round(float(values.mean()), 2)
            row[f"{short}_std"] = _sample_std(values)
        rows.append(row)
    return rows


def _sample_std(values: np.ndarray) -> float | None:
    return round(float(values.std(ddof=1)), 2) if len(values) > 1 else None


def to_markdown(
    rows: list[dict[str, Any]], seeds: list[int], what: dict[str, str] | None = None
) -> str:
    """The table as Markdown; ``what`` (feature set, preset, overrides, date) heads it."""
    lines = []
    if what:
        lines += [
            f"Feature set `{what['featureset']}` (content sha256 {what['featureset_sha256'][:12]}…), "
            f"model preset `{what['model_preset']}`, overrides `{what['overrides']}`, "
            f"variants `{what['variants']}`; {what['date']}.",
            "",
        ]
    lines += [
        f"Test weighted F1, macro F1 and accuracy (%), mean ± sample std (ddof=1) over "
        f"{len(seeds)} seeds {list(seeds)} (n/a: one seed).",
        "",
        "| variant | modalities | seeds | W-F1 | macro F1 | Acc |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['subset']} | {r['seeds']} | "
        f"{_mean_std(r['wf1_mean'], r['wf1_std'])} | "
        f"{_mean_std(r.get('mf1_mean', float('nan')), r.get('mf1_std'))} | "
        f"{_mean_std(r['acc_mean'], r['acc_std'])} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def plot_grid(rows: list[dict[str, Any]], seeds: list[int], path: Path, title: str) -> str:
    """Grouped bars: test W-F1 per modality subset (x) and variant (colour), sample-std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subsets = list(dict.fromkeys(r["subset"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(subsets) + 2), 3.6))
    for k, variant in enumerate(variants):
        mine = {r["subset"]: r for r in rows if r["variant"] == variant}
        xs = [i + (k - (len(variants) - 1) / 2) * width for i, s in enumerate(subsets) if s in mine]
        means = [mine[s]["wf1_mean"] for s in subsets if s in mine]
        stds = [mine[s]["wf1_std"] or 0.0 for s in subsets if s in mine]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=variant)
    ax.set_xticks(range(len(subsets)), subsets)
    ax.set_xlabel("modalities (T text, A audio, V visual)")
    ax.set_ylabel("test weighted F1 (%)")
    ax.set_title(f"{title}: mean ± sample std over {len(seeds)} seed(s)")
    ax.legend(title="variant", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.2f} ± {'n/a' if std is None else f'{std:.2f}'}"
