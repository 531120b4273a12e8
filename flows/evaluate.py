"""The `evaluate` flow: checkpoints + a FeatureSet split -> metrics, reports and plots.

One `evaluate-checkpoint` task per checkpoint, cached on the checkpoint's and the featureset's
content. The UI gets the metrics table, the per-class report, the confusion matrix and the paths of
every report file (diagnostic plots included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows import artifacts
from flows.caching import StageCache, content_name, run_cached, stamped, tree_digest
from flows.params import DEFAULT_OUT, Layout, Split, check_dir, run_name
from flows.train import LATEST
from pipeline.files import jsonable


@task(
    name="evaluate-checkpoint",
    cache_policy=StageCache(
        stage="evaluate",
        content={"checkpoint_dir": tree_digest, "featureset_dir": tree_digest},
    ),
)
def evaluate_model(
    checkpoint_dir: str, featureset_dir: str, split: str, out_dir: str
) -> dict[str, Any]:
    """One checkpoint on one split -> its report (metrics + paths of the report files), stamped
    with the state of ``out_dir``."""
    from pipeline.training.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(checkpoint_dir, featureset_dir, split, out_dir)
    result = {
        "checkpoint_dir": checkpoint_dir,
        "featureset_dir": featureset_dir,
        "split": split,
        "out_dir": out_dir,
        "report": jsonable(report),
    }
    return stamped(result, out_dir)


def last_trained(layout: Layout) -> list[dict[str, Any]]:
    """The checkpoints of the last `train` run into this output folder."""
    latest = layout.train / LATEST
    if not latest.is_file():
        raise FileNotFoundError(
            f"no checkpoints recorded in {latest}: run the train flow first, or pass "
            "checkpoint_dirs and featureset_dir"
        )
    return json.loads(latest.read_text())


@flow(name="evaluate", log_prints=True)
def evaluate(
    checkpoint_dirs: list[str] | None = None,
    featureset_dir: str | None = None,
    split: Split = "test",
    out_dir: str = DEFAULT_OUT,
    refresh: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate checkpoints on a split of a FeatureSet.

    Args:
        checkpoint_dirs: checkpoint folders; default: those of the last train run in out_dir.
        featureset_dir: FeatureSet folder; default: the one each checkpoint was trained on.
        split: "train", "dev" or "test".
        out_dir: output folder (reports under <out_dir>/eval/).
        refresh: ignore Prefect's cache.
    Returns:
        One dict per checkpoint: checkpoint_dir, split, out_dir, report (metrics + file paths).
    """
    check_dir("featureset_dir", featureset_dir)
    for d in checkpoint_dirs or []:
        check_dir("checkpoint", d)
    logger = get_run_logger()
    layout = Layout.at(out_dir)
    if checkpoint_dirs:
        if not featureset_dir:
            raise ValueError("checkpoint_dirs given: also give featureset_dir")
        jobs = [
            (str(Path(d).resolve()), str(Path(featureset_dir).resolve())) for d in checkpoint_dirs
        ]
    else:
        jobs = [
            (
                r["checkpoint_dir"],
                str(Path(featureset_dir).resolve()) if featureset_dir else r["featureset_dir"],
            )
            for r in last_trained(layout)
        ]

    reports = []
    for checkpoint, featureset in jobs:
        inputs = dict(checkpoint_dir=checkpoint, featureset_dir=featureset, split=split)
        name = run_name(checkpoint)
        out = layout.eval / f"{name}-{split}-{content_name(evaluate_model, **inputs)}"
        result, cached = run_cached(
            evaluate_model, layout.cache, refresh, out_dir=str(out), **inputs
        )
        result = {**result, "status": "cached" if cached else "ran"}
        logger.info("%s on %s (%s): %s", name, split, result["status"], result["out_dir"])
        reports.append(result)

    artifacts.publish_evaluation(reports)
    for r in reports:
        metrics = artifacts.flat_metrics(r["report"])
        shown = ", ".join(f"{k}={v}" for k, v in metrics.items() if isinstance(v, float))
        print(f"evaluate {run_name(r['checkpoint_dir'])} on {split}: {shown or metrics}")
    return reports
