"""What a run shows in the Prefect UI: tables, reports, images and links to every output.

Artifact keys are stable (``erc-metrics``, ``erc-confusion-matrix``, ...) so the UI's Artifacts page
keeps one versioned entry per kind across runs. Images are embedded as ``data:`` URLs (the UI runs in
a browser that cannot open the worker's files) inside markdown artifacts: Prefect's own image
artifact prints its whole URL as visible "Image URL" text, which for a data URL is a page of
base64. Output paths are file:// links (they open where the UI runs on the worker's machine; the
link text is the path, to copy otherwise).

The parent `extract-and-train` run gets ``erc-summary``: metrics per run and seed, the training
curves and confusion matrices, what each stage did, and links to the outputs. A `predict` run gets
``erc-prediction-files``: the model that predicted (checkpoint, weights hash, training data, and
in bold the caveat of one trained on generated data), a labelled run's scores with its confusion
matrix and per-dialogue table, then summary.md's videos and links to every file.
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
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.params import run_name

MAX_TABLE_ROWS = 500  # the UI pages tables, but very large ones are slow to load
MAX_IMAGE_BYTES = 2 << 20  # larger images are linked, not embedded
MAX_EMBEDDED_BYTES = 8 << 20  # per markdown artifact: later images are linked, not embedded


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


def file_link(path: str | Path) -> str:
    """A markdown link to a local file or folder; its text is the absolute path."""
    p = Path(path).expanduser().absolute()  # not resolve(): a link (runs/demo/best) stays one
    return f"[`{p}`]({p.as_uri()})"


def image_markdown(title: str, path: str | Path, embed: bool = True) -> str:
    """A heading, the image embedded as a data: URL (unless too large or embed=False), its link."""
    path = Path(path)
    if not path.is_file():
        return ""
    lines = [f"**{title}**", ""]
    if embed and path.stat().st_size <= MAX_IMAGE_BYTES:
        mime = "image/png" if path.suffix.lower() == ".png" else "image/" + path.suffix.lower()[1:]
        data = base64.b64encode(path.read_bytes()).decode()
        lines += [f"![{title}](data:{mime};base64,{data})", ""]
    return "\n".join([*lines, file_link(path), ""])


def image(key: str, path: str | Path, description: str) -> None:
    md = image_markdown(description, path)
    if md:
        create_markdown_artifact(markdown=md, key=key, description=description)


def paths_markdown(title: str, paths: Mapping[str, str]) -> str:
    """A list of links (a table of long paths is cut off at the page's width)."""
    lines = [f"### {title}", ""]
    lines += [f"- {name}: {file_link(path)}" for name, path in paths.items() if path]
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
        "Entries per manifest shard in this run: computed, reused from the feature store, or "
        "served from Prefect's cache of an earlier run (from_cache)",
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


def unimodal_accuracy(report: Mapping[str, Any]) -> dict[str, float]:
    """{modality: accuracy of its classifier alone} from a report, else from its metrics.json."""
    uni = report.get("unimodal")
    if uni is None:
        path = report.get("paths", {}).get("metrics")
        if path and Path(path).is_file():
            uni = json.loads(Path(path).read_text()).get("unimodal")
    return {m: v["accuracy"] for m, v in (uni or {}).items() if "accuracy" in v}


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def metrics_markdown(trained: list[dict[str, Any]], evaluated: list[dict[str, Any]]) -> str:
    """One row per run and seed: accuracy, weighted F1, macro F1, each modality's own accuracy."""
    seeds = {r["checkpoint_dir"]: r["seed"] for r in trained}
    mods = sorted({m for r in evaluated for m in unimodal_accuracy(r["report"])}, key="tav".find)
    head = ["run", "seed", "split", "accuracy", "W-F1", "macro F1", *[f"{m} alone" for m in mods]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in evaluated:
        rep, uni = r["report"], unimodal_accuracy(r["report"])
        cells = [
            f"`{run_name(r['checkpoint_dir'])}`",
            str(seeds.get(r["checkpoint_dir"], "–")),
            r["split"],
            *(_num(rep.get(k)) for k in ("accuracy", "weighted_f1", "macro_f1")),
            *(_num(uni.get(m)) for m in mods),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def counts_line(extracted: Mapping[str, Any]) -> str:
    c = extracted.get("counts", {})
    return (
        f"Extraction in this run: **{c.get('computed', 0)}** entries computed, "
        f"{c.get('from_store', 0)} reused from the feature store, {c.get('from_cache', 0)} "
        f"served from an earlier run (Prefect cache); {extracted.get('failed', 0)} failed."
    )


def result_markdown(
    summary: Mapping[str, Any],
    extracted: Mapping[str, Any],
    trained: list[dict[str, Any]],
    evaluated: list[dict[str, Any]],
) -> str:
    stages = ", ".join(f"{s} {status}" for s, status in summary.get("stages", {}).items())
    split = evaluated[0]["split"] if evaluated else "test"
    out = [
        "## Result",
        "",
        f"Output folder {file_link(summary['out_dir'])}, {summary.get('seconds', 0)} s.",
        "",
        f"Stages: {stages}.",
        "",
        counts_line(extracted),
        "",
        f"### Metrics on {split}",
        "",
        "*alone*: the accuracy of each modality's own classifier (the unimodal heads).",
        "",
        metrics_markdown(trained, evaluated),
    ]
    budget = MAX_EMBEDDED_BYTES
    by_checkpoint = {r["checkpoint_dir"]: r for r in evaluated}
    for r in trained:
        images = [("training curves", r.get("report_paths", {}).get("plots", {}).get(
            "training_curves"))]  # fmt: skip
        ev = by_checkpoint.get(r["checkpoint_dir"], {})
        for name, path in report_paths(ev.get("report", {}).get("paths", {})).items():
            if path.endswith(".png") and "confusion" in name:
                images.append((f"confusion matrix ({ev['split']})", path))
        out += [f"### {run_name(r['checkpoint_dir'])} (seed {r['seed']})", ""]
        for title, path in images:
            if path and Path(path).is_file():
                size = Path(path).stat().st_size
                out.append(image_markdown(f"seed {r['seed']}: {title}", path, embed=size <= budget))
                budget -= size
    out.append(paths_markdown("Outputs", summary.get("paths", {})))
    return "\n".join(out)


def publish_result(
    summary: Mapping[str, Any],
    extracted: Mapping[str, Any],
    trained: list[dict[str, Any]],
    evaluated: list[dict[str, Any]],
) -> None:
    """The parent run's artifact: what a person opening the run wants to see first."""
    create_markdown_artifact(
        markdown=result_markdown(summary, extracted, trained, evaluated),
        key="erc-summary",
        description="The result: metrics per run and seed, plots, what ran, links to the outputs",
    )


def prediction_scores(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """A predict result's metrics.json (a labelled run), None when there is none."""
    path = result.get("metrics_json")
    if not path or not Path(path).is_file():
        return None
    scores = json.loads(Path(path).read_text())
    scores["groups"] = [{k: _scalar(v) for k, v in g.items()} for g in scores.get("groups", [])]
    return scores


def predictions_markdown(result: Mapping[str, Any], paths: Mapping[str, str]) -> str:
    """The predict run's page: the model first (with its caveat), the scores and confusion matrix
    of a labelled run, summary.md (its model and score sections are replaced by these), links."""
    model = result.get("model") or {}
    out = ["## Model", ""]
    if model.get("caveat"):
        out += [f"**Warning: {model['caveat']}.**", ""]
    if model:
        out += [
            f"- checkpoint: {file_link(model['checkpoint'])}",
            f"- weights sha256: `{model.get('weights_sha256', '')}`",
            f"- trained on: {model.get('trained_on', '')}",
            "",
        ]
    else:
        out += ["(not recorded: a prediction made before the model was recorded)", ""]
    scores = prediction_scores(result)
    if scores:
        out += [
            "## Scores",
            "",
            f"{scores['n']} of {scores['n_predicted']} utterances scored: accuracy "
            f"**{_num(scores['accuracy'])}**, weighted F1 **{_num(scores['weighted_f1'])}**, "
            f"macro F1 **{_num(scores['macro_f1'])}**; {scores['n_unlabelled']} unlabelled.",
            "",
        ]
        if scores.get("unknown_labels"):
            listed = ", ".join(f"{k} ({v})" for k, v in scores["unknown_labels"].items())
            out += [f"**Labels the checkpoint does not know (not scored): {listed}.**", ""]
        out.append(image_markdown("confusion matrix", result.get("confusion_png", "")))
        kind = "dialogue" if any(g["kind"] == "dialogue" for g in scores["groups"]) else "video"
        out += [f"| {kind} | utterances | scored | accuracy | W-F1 |", "|---|---|---|---|---|"]
        for g in scores["groups"][:MAX_TABLE_ROWS]:
            acc, wf1 = (_num(g[k]) if g["n"] else "–" for k in ("accuracy", "weighted_f1"))
            out.append(f"| {g['name']} | {g['n_utterances']} | {g['n']} | {acc} | {wf1} |")
        out.append("")
    summary_md = Path(result.get("summary_md", ""))
    if summary_md.is_file():  # its videos table; the sections above replace its own
        text = summary_md.read_text()
        out.append(text[text.index("## Videos") :] if "## Videos" in text else text)
    out.append(paths_markdown("Prediction files", paths))
    return "\n".join(out)
