"""The `train` flow: a FeatureSet folder -> one Ada2I checkpoint per seed.

Each seed is one `train-model` task cached on the featureset's content, the model and training
code, and the parameters: training again with the same inputs returns the finished checkpoint, and
training never re-extracts (extraction is another flow).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows import artifacts, progress
from flows.caching import StageCache, content_name, run_cached, stamped, tree_digest
from flows.params import (
    DEFAULT_MODEL_PRESET,
    DEFAULT_OUT,
    Layout,
    Modalities,
    ModelPreset,
    Preset,
    check_dir,
    check_seeds,
    check_training,
)
from pipeline.files import jsonable

LATEST = "latest.json"  # <out>/train/latest.json: the last train run's checkpoints, for `evaluate`


@task(
    name="train-model",
    cache_policy=StageCache(stage="train", content={"featureset_dir": tree_digest}),
)
def train_model(
    featureset_dir: str,
    out_dir: str,
    model_preset: str,
    modalities: str,
    seed: int,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Train one seed into ``out_dir`` -> checkpoint folder, history file and best-epoch
    metrics, stamped with the state of ``out_dir``."""
    from pipeline.training.train import train_from_featureset

    # No progress bar in flow logs (the run's state and logs show progress); not part of the key.
    settings = {"progress": False, **overrides}
    report = progress.training(
        f"train {model_preset} {modalities} seed {seed}", progress.run_logger()
    )
    r = train_from_featureset(
        featureset_dir, out_dir, model_preset, modalities, seed, settings, on_progress=report
    )
    report.finish()
    result = {
        "seed": seed,
        "modalities": modalities,
        "model_preset": model_preset,
        "featureset_dir": featureset_dir,
        "checkpoint_dir": str(r.checkpoint_dir),
        "history_path": str(r.history_path) if r.history_path else "",
        "metrics": jsonable(r.metrics),
        # diagnostics plots (the paper's Figures 4-5) and the best checkpoint's test report
        "report_paths": jsonable(getattr(r, "report_paths", {}) or {}),
    }
    return stamped(result, out_dir)


def find_featureset(layout: Layout, preset: str, modalities: str) -> str:
    """The newest <out>/featureset/<preset>-<mods>-<key> whose modalities cover ``modalities``."""
    candidates = []
    if layout.featuresets.is_dir():
        for d in layout.featuresets.iterdir():
            parts = d.name.split("-")
            if len(parts) == 3 and parts[0] == preset and set(modalities) <= set(parts[1]):
                candidates.append(d)
    if not candidates:
        raise FileNotFoundError(
            f"no {preset!r} featureset with modalities {modalities!r} under {layout.featuresets}: "
            "run the extract flow first, or pass featureset_dir"
        )
    return str(max(candidates, key=lambda d: d.stat().st_mtime))


@flow(name="train", log_prints=True)
def train(
    featureset_dir: str | None = None,
    out_dir: str = DEFAULT_OUT,
    preset: Preset = "offline",
    model_preset: ModelPreset = DEFAULT_MODEL_PRESET,
    modalities: Modalities = "tav",
    seeds: tuple[int, ...] = (0,),
    overrides: dict[str, Any] | None = None,
    refresh: bool = False,
) -> list[dict[str, Any]]:
    """Train Ada2I on a FeatureSet, once per seed, one after the other.

    Args:
        featureset_dir: FeatureSet folder; default: the newest one the extract flow wrote into
            out_dir for this preset and modalities.
        out_dir: output folder (checkpoints under <out_dir>/train/).
        preset: extractor preset of the featureset (only to find the default featureset_dir).
        model_preset: Ada2I preset: "iemocap", "meld", "mosei" (paper Table 2) or "tiny".
        modalities: subset of "tav" to train on (the featureset may hold more).
        seeds: one training run per seed.
        overrides: Ada2I / training settings to change, e.g. {"epochs": 5}.
        refresh: ignore Prefect's cache.
    Returns:
        One dict per seed: seed, checkpoint_dir, history_path, metrics.
    """
    seeds = check_seeds(seeds)
    overrides = check_training(model_preset, modalities, overrides)  # typed and checked
    check_dir("featureset_dir", featureset_dir)
    logger = get_run_logger()
    layout = Layout.at(out_dir)
    featureset = str(
        Path(featureset_dir).expanduser().resolve()
        if featureset_dir
        else find_featureset(layout, preset, modalities)
    )
    runs = []
    for seed in seeds:
        inputs = dict(
            featureset_dir=featureset,
            model_preset=model_preset,
            modalities=modalities,
            seed=seed,
            overrides=overrides,
        )
        name = content_name(train_model, **inputs)
        run_dir = layout.train / f"{model_preset}-{modalities}-seed{seed}-{name}"
        result, cached = run_cached(
            train_model, layout.cache, refresh, out_dir=str(run_dir), **inputs
        )
        result = {**result, "status": "cached" if cached else "ran"}
        logger.info("seed %d %s: %s", seed, result["status"], result["checkpoint_dir"])
        runs.append(result)

    layout.train.mkdir(parents=True, exist_ok=True)
    (layout.train / LATEST).write_text(json.dumps(runs, indent=2))
    artifacts.publish_training(runs)
    for r in runs:
        print(f"train seed {r['seed']} ({r['status']}): {r['checkpoint_dir']}")
    return runs
