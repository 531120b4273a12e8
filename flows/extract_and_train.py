"""The `extract-and-train` flow: the whole job, as three subflows.

    extract  (dataset/manifest -> feature store -> FeatureSet)
      -> train     (FeatureSet -> one checkpoint per seed)
      -> evaluate  (checkpoints -> metrics, per-class report, confusion matrix, diagnostics)
      -> <out>/summary.json + the erc-summary artifact: which stage ran or came from the cache,
         and where every output is.

With its defaults it runs on the embedded demo: conversations generated into the output folder,
offline extractors, the tiny Ada2I preset.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow

from flows import artifacts
from flows.evaluate import evaluate
from flows.extract import extract, require_dask
from flows.params import (
    DEFAULT_MODEL_PRESET,
    DEFAULT_OUT,
    Dataset,
    Layout,
    Modalities,
    ModelPreset,
    Preset,
    Split,
    StoreIndexChoice,
    TaskRunnerChoice,
    check_manifest_source,
    check_seeds,
    check_training,
    run_name,
)
from flows.train import train
from pipeline.files import atomic_symlink


def summarize(
    layout: Layout, extracted: dict, trained: list[dict], evaluated: list[dict], seconds: float
) -> dict[str, Any]:
    """What ran, what came from the cache, and the paths a user looks for."""
    stages = dict(extracted["stages"])
    stages["train"] = "cached" if all(r["status"] == "cached" for r in trained) else "ran"
    stages["evaluate"] = "cached" if all(r["status"] == "cached" for r in evaluated) else "ran"
    paths: dict[str, str] = {
        "manifest": extracted["manifest"],
        "featureset": extracted["featureset_dir"],
        "feature store": extracted["store_root"],
    }
    for r in trained:
        paths[f"checkpoint seed {r['seed']}"] = r["checkpoint_dir"]
        for name, path in artifacts.report_paths(
            r.get("report_paths", {}).get("plots", {})
        ).items():
            paths[f"diagnostics seed {r['seed']} {name}"] = path
    for r in evaluated:
        seed = run_name(r["checkpoint_dir"])
        for name, path in artifacts.report_paths(r["report"].get("paths", {})).items():
            paths[f"{r['split']} {name} ({seed})"] = path
    return {
        "out_dir": str(layout.out),
        "seconds": round(seconds, 1),
        "stages": stages,
        "failed_utterances": extracted["failed"],
        "extraction": extracted["counts"],  # what this run computed, reused, took from the cache
        "metrics": [
            {"run": run_name(r["checkpoint_dir"]), **artifacts.flat_metrics(r["report"])}
            for r in evaluated
        ],
        "paths": paths,
    }


def link_best(layout: Layout, trained: list[dict]) -> str:
    """<out>/best -> the first seed's best checkpoint: a stable path for `erc predict
    --checkpoint runs/demo/best`. Replaced atomically; a real folder of that name is left alone."""
    link = layout.out / "best"
    if link.exists() and not link.is_symlink():
        return ""
    target = Path(trained[0]["checkpoint_dir"])
    atomic_symlink(link, os.path.relpath(target, layout.out))
    return str(link)


@flow(name="extract-and-train", log_prints=True)
def extract_and_train(
    manifest: str | None = None,
    dataset: Dataset = "demo",
    root: str | None = None,
    preset: Preset = "offline",
    modalities: Modalities = "tav",
    text_model: str | None = None,
    model_preset: ModelPreset = DEFAULT_MODEL_PRESET,
    seeds: tuple[int, ...] = (0,),
    out_dir: str = DEFAULT_OUT,
    store_root: str | None = None,
    strict: bool = False,
    split: Split = "test",
    overrides: dict[str, Any] | None = None,
    task_runner: TaskRunnerChoice = "default",
    dask_address: str | None = None,
    dask_workers: int = 2,
    store_index: StoreIndexChoice = "auto",
    demo_dialogues: int = 6,
    demo_utterances: int = 8,
    refresh: bool = False,
) -> dict[str, Any]:
    """Extract features, train Ada2I (one run per seed) and evaluate, on a dataset or manifest.

    Defaults: the demo conversations, generated into out_dir, with offline extractors.
    Parameters are those of the extract, train and evaluate flows (see their docstrings).
    Returns the run summary, also written to <out_dir>/summary.json.
    """
    # Every parameter is checked before any work starts.
    seeds = check_seeds(seeds)
    check_training(model_preset, modalities, overrides)
    check_manifest_source(manifest, dataset, root)
    if task_runner == "dask":
        require_dask()
    layout = Layout.at(out_dir)
    start = time.perf_counter()

    extracted = extract(
        manifest=manifest,
        dataset=dataset,
        root=root,
        preset=preset,
        modalities=modalities,
        text_model=text_model,
        out_dir=str(layout.out),
        store_root=store_root,
        strict=strict,
        task_runner=task_runner,
        dask_address=dask_address,
        dask_workers=dask_workers,
        store_index=store_index,
        demo_dialogues=demo_dialogues,
        demo_utterances=demo_utterances,
        refresh=refresh,
    )
    trained = train(
        featureset_dir=extracted["featureset_dir"],
        out_dir=str(layout.out),
        preset=preset,
        model_preset=model_preset,
        modalities=modalities,
        seeds=seeds,
        overrides=overrides,
        refresh=refresh,
    )
    evaluated = evaluate(
        checkpoint_dirs=[r["checkpoint_dir"] for r in trained],
        featureset_dir=extracted["featureset_dir"],
        split=split,
        out_dir=str(layout.out),
        refresh=refresh,
    )

    summary = summarize(layout, extracted, trained, evaluated, time.perf_counter() - start)
    best = link_best(layout, trained)
    if best:
        summary["paths"][f"best checkpoint (seed {trained[0]['seed']})"] = best
    layout.out.mkdir(parents=True, exist_ok=True)
    layout.summary.write_text(json.dumps(summary, indent=2))
    artifacts.publish_result(summary, extracted, trained, evaluated)
    print("stages: " + ", ".join(f"{k} {v}" for k, v in summary["stages"].items()))
    print(artifacts.counts_line(extracted).replace("**", ""))
    print(f"summary: {layout.summary}")
    return summary
