"""What a run shows in the Prefect UI: tables, reports, images and the paths of every output.

Artifact keys are stable (``erc-metrics``, ``erc-confusion-matrix``, ...) so the UI's Artifacts page
keeps one versioned entry per kind across runs. Images are embedded as ``data:`` URLs (the UI runs in
a browser that cannot open the worker's files); their paths are listed next to them.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from flows.params import run_name

MAX_TABLE_ROWS = 500  # the UI pages tables, but very large ones are slow to load
MAX_IMAGE_BYTES = 2 << 20  # larger images are listed by path only


def _scalar(value: Any) -> float | int | str | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    try:  # numpy scalars
        return _scalar(value.item())
    except (AttributeError, ValueError):
        return None


SKIP_IN_TABLES = ("per_class", "paths", "confusion", "labels")  # shown as their own artifacts


def flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'test': {'wf1': 0.5}} -> {'test.wf1': 0.5}; non-scalars, paths and SKIP_IN_TABLES dropped."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key in SKIP_IN_TABLES:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_metrics(value, prefix=f"{name}."))
        elif not isinstance(value, list | tuple | dict):
            scalar = _scalar(value)
            if scalar is not None and not (isinstance(scalar, str) and _looks_like_path(scalar)):
                out[name] = scalar
    return out


def _looks_like_path(value: str) -> bool:
    return "/" in value and Path(value).suffix != ""


def report_paths(report: Mapping[str, Any]) -> dict[str, str]:
    """Every value of ``report`` (nested) that is an existing file or folder path."""
    found: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        elif isinstance(value, str | Path) and str(value) and Path(value).exists():
            found[prefix] = str(value)

    walk("", report)
    return found


def artifact_key(*parts: str) -> str:
    """Artifact keys allow only lowercase letters, digits and dashes."""
    raw = "-".join(parts).lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", raw)).strip("-")


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    if not rows:
        return
    clipped = rows[:MAX_TABLE_ROWS]
    if len(rows) > MAX_TABLE_ROWS:
        description += f" (first {MAX_TABLE_ROWS} of {len(rows)} rows)"
    create_table_artifact(table=clipped, key=key, description=description)


def image(key: str, path: str | Path, description: str) -> None:
    path = Path(path)
    if not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
        return
    mime = "image/png" if path.suffix.lower() == ".png" else "image/" + path.suffix.lower()[1:]
    url = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
    create_image_artifact(image_url=url, key=key, description=f"{description}\n\n`{path}`")


def paths_markdown(title: str, paths: Mapping[str, str]) -> str:
    lines = [f"### {title}", "", "| what | path |", "|---|---|"]
    lines += [f"| {name} | `{path}` |" for name, path in paths.items()]
    return "\n".join(lines) + "\n"


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """A CSV / JSONL / JSON report -> list of row dicts (NaN -> None)."""
    path = Path(path)
    if path.suffix == ".csv":
        df = pd.read_csv(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        df = pd.read_json(path, lines=True)
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        df = pd.DataFrame(data if isinstance(data, list) else [data])
    else:
        return []
    df = df.astype(object).where(df.notna(), None)
    return df.to_dict(orient="records")


def publish_extraction(shards: list[dict[str, Any]], failures: Iterable[str]) -> None:
    """Extraction counts per shard, and the failures table when some utterances failed."""
    table(
        "erc-extraction",
        [{k: v for k, v in s.items() if k != "failures_path"} for s in shards],
        "Utterances extracted per manifest shard (done = computed now, cached = from the store)",
    )
    rows: list[dict[str, Any]] = []
    for path in failures:
        if path and Path(path).is_file():
            rows += read_rows(path)
    if rows:
        table("erc-failures", rows, "Utterances or videos that failed extraction, with the reason")


def publish_training(runs: list[dict[str, Any]]) -> None:
    """Test metrics per seed, checkpoint/history/plot paths, and the diagnostics plots as images."""
    rows = [
        {"seed": r["seed"], "modalities": r["modalities"], **flat_metrics(r.get("metrics", {}))}
        for r in runs
    ]
    table("erc-training", rows, "Training: the best checkpoint's test metrics per seed")
    md = []
    for r in runs:
        paths = {"checkpoint": r["checkpoint_dir"], "history": r["history_path"]}
        paths.update(report_paths(r.get("report_paths", {})))
        md.append(paths_markdown(f"seed {r['seed']}", {k: v for k, v in paths.items() if v}))
    if md:
        create_markdown_artifact(
            markdown="\n".join(md),
            key="erc-checkpoints",
            description="Checkpoints, training histories and diagnostic plots",
        )
    # The imbalance diagnostics of the first seed (the paper's Figures 4 and 5) as images.
    plots = report_paths(runs[0].get("report_paths", {}).get("plots", {})) if runs else {}
    for name, path in plots.items():
        if path.endswith(".png"):
            image(artifact_key("erc-diagnostics", name), path, f"Diagnostics: {name}")


def publish_evaluation(reports: list[dict[str, Any]]) -> None:
    """Metrics table, per-class report, confusion matrix image and the report files' paths."""
    rows = [{"run": run_name(r["checkpoint_dir"]), **flat_metrics(r["report"])} for r in reports]
    table("erc-metrics", rows, "Evaluation metrics per checkpoint")
    md: list[str] = []
    for r in reports:
        paths = report_paths(r["report"].get("paths", {}))
        for name, path in paths.items():
            if path.endswith(".csv") and "class" in name:
                table("erc-per-class", read_rows(path), f"Per-class report: {path}")
            elif path.endswith(".png") and "confusion" in name:
                image("erc-confusion-matrix", path, "Confusion matrix")
        md.append(paths_markdown(f"{run_name(r['checkpoint_dir'])} on {r['split']}", paths))
    if md:
        create_markdown_artifact(
            markdown="\n".join(md),
            key="erc-reports",
            description="Report files: metrics, per-class CSV, predictions, confusion matrix",
        )


def publish_summary(summary: Mapping[str, Any]) -> None:
    stages = summary.get("stages", {})
    lines = ["## Run summary", "", "| stage | status |", "|---|---|"]
    lines += [f"| {s} | {status} |" for s, status in stages.items()]
    lines += ["", paths_markdown("Outputs", summary.get("paths", {}))]
    create_markdown_artifact(
        markdown="\n".join(lines), key="erc-summary", description="Where everything is"
    )
