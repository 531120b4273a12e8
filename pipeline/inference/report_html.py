"""Self-contained HTML reports of predictions: PNG plots embedded as base64, no external files.

    write_video_report(table, label_names, modalities, path, title) -> Path
    write_dialogue_report(table, label_names, modalities, path, dialogue_id, clip_reports) -> Path
    write_index(summary, label_names, path, provenance, scores, groups, confusion_png) -> Path

Every page starts with the model's provenance (an HTML fragment from
pipeline.inference.predict_outputs.Provenance: checkpoint, weights hash, training data, and the
caveat of a model trained on generated data as a banner). A dialogue report (clip-per-utterance
datasets) lays its clips end to end on one time axis, in manifest order. The index scores a labelled run (metrics,
unknown labels, confusion matrix, per dialogue or video), and its chart has one horizontal bar per
dialogue (or video), its height growing with their number, so 50+ names stay readable.

The markup lives in Jinja2 templates (pipeline/inference/templates/*.html.j2, shipped with the
package), rendered with autoescaping: every value is escaped except the provenance fragment, which
is HTML already. This module computes what the pages show and draws their figures.

The per-video figure has three panels on one time axis:
    1. utterance spans, one lane per speaker, coloured by the predicted emotion
    2. per-class probability of each utterance: a step over the utterance's span with a marker at
       its centre (utterances are separate decisions, so nothing joins them)
    3. per-modality share of support for the predicted class (stacked, one bar per utterance); a
       modality the utterance lacks is marked with an x above its bar and "missing" in the table
Legends sit outside the panels; emotions are shown by name (pipeline.dataset.manifest.emotion_name).
`table` is the predictions frame of pipeline.inference.predict (columns start_s, end_s, speaker, text,
predicted, p_<label>, support_<m>, segment_source).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from model.config import MODALITY_NAMES
from pipeline.dataset.manifest import emotion_name
from pipeline.files import atomic_write_text

MODALITY_COLORS = {"t": "#4c72b0", "a": "#dd8452", "v": "#55a868"}


def _score(value: Any) -> str:
    """A score to three decimals; "–" where there is none (no scored utterance)."""
    return f"{value:.3f}" if isinstance(value, float) and np.isfinite(value) else "–"


_TEMPLATES = Environment(
    loader=PackageLoader("pipeline.inference", "templates"),
    autoescape=True,  # every value is text; the one HTML fragment (provenance) is marked |safe
    undefined=StrictUndefined,  # a misspelt name fails the render instead of printing nothing
    trim_blocks=True,  # a line holding only a {% tag %} leaves no blank line behind
    lstrip_blocks=True,
)
_TEMPLATES.filters["score"] = _score


def _colors(label_names: list[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {c: cmap(k % 10) for k, c in enumerate(label_names)}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")  # keeps the outside legends
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def modality_shares(table: pd.DataFrame, modalities: str) -> np.ndarray:
    """support_<m> columns -> float [N, M] shares summing to 1 over present modalities (0 if absent)."""
    s = np.nan_to_num(
        np.stack([table[f"support_{m}"].to_numpy(float) for m in modalities], axis=1)
    )  # [N, M]
    total = s.sum(axis=1, keepdims=True)  # [N, 1]
    return np.divide(s, total, out=np.zeros_like(s), where=total > 0)


def _legend_outside(ax, **kw) -> None:
    """A legend right of the axes, so it never covers data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0, fontsize=8, **kw)


def timeline_png(
    table: pd.DataFrame, label_names: list[str], modalities: str, xlabel: str = "time (s)"
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = _colors(label_names)
    start, end = table["start_s"].to_numpy(float), table["end_s"].to_numpy(float)
    mid = (start + end) / 2  # [N]
    speakers = list(dict.fromkeys(table["speaker"]))
    width = min(18.0, 7.0 + 0.08 * len(table))
    fig, axes = plt.subplots(3, 1, figsize=(width, 7.5), sharex=True,
                             gridspec_kw={"height_ratios": [1.2, 2, 1.3]})  # fmt: skip
    ax = axes[0]
    for i, row in enumerate(table.itertuples(index=False)):
        lane = speakers.index(row.speaker)
        ax.broken_barh([(start[i], end[i] - start[i])], (lane - 0.4, 0.8),
                       facecolors=colors[row.predicted], edgecolor="black", linewidth=0.4)  # fmt: skip
    ax.set_yticks(range(len(speakers)), speakers)
    ax.set_ylim(-0.6, len(speakers) + 0.4)  # headroom for the legend
    ax.set_ylabel("speaker")
    ax.set_title("predicted emotion per utterance")
    _legend_outside(
        ax, handles=[Patch(color=colors[c], label=emotion_name(c)) for c in label_names]
    )
    ax = axes[1]
    for c in label_names:
        p = table[f"p_{c}"].to_numpy(float)
        ax.hlines(p, start, end, color=colors[c], linewidth=2)  # the utterance's span
        ax.plot(mid, p, "o", ms=4, color=colors[c], label=emotion_name(c))
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probability")
    _legend_outside(ax)
    ax = axes[2]
    shares, bottom = modality_shares(table, modalities), np.zeros(len(table))
    for j, m in enumerate(modalities):
        ax.bar(start, shares[:, j], width=end - start, bottom=bottom, align="edge",
               color=MODALITY_COLORS[m], label=MODALITY_NAMES[m])  # fmt: skip
        bottom += shares[:, j]
    missing = [(m, ~np.isfinite(table[f"support_{m}"].to_numpy(float))) for m in modalities]
    for k, (m, gone) in enumerate(missing):
        if gone.any():  # one row of x marks per modality, above the bars
            ax.plot(mid[gone], np.full(gone.sum(), 1.06 + 0.08 * k), "x", color=MODALITY_COLORS[m],
                    ms=6, mew=2, clip_on=False, label=f"{MODALITY_NAMES[m]} missing")  # fmt: skip
    ax.set_ylim(0, 1)
    ax.set_ylabel("modality share")
    ax.set_xlabel(xlabel)
    _legend_outside(ax)
    fig.tight_layout()
    return _png(fig)


def _cell(column: str, value) -> str | None:
    """A table cell's text; None for a modality the utterance lacks (shown as "missing")."""
    if column.startswith("support_") and not (isinstance(value, float) and np.isfinite(value)):
        return None
    if column == "predicted" or column == "label":
        return emotion_name(str(value))
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _header(column: str) -> str:
    if column == "label":
        return "true label"  # the manifest's, beside the predicted one
    if column.startswith("p_"):
        return f"p({emotion_name(column[2:])})"
    if column.startswith("support_"):
        return f"{MODALITY_NAMES.get(column[8:], column[8:])} support"
    return column


def _utterance_columns(table: pd.DataFrame, label_names: list[str], modalities: str) -> list[str]:
    true = ["label"] if "label" in table.columns else []  # the manifest's, when it had one
    return ["start_s", "end_s", "speaker", "text", *true, "predicted",
            *[f"p_{c}" for c in label_names], *[f"support_{m}" for m in modalities]]  # fmt: skip


def _utterance_table(table: pd.DataFrame, cols: list[str]) -> dict[str, Any]:
    """The utterance_report template's table: its headers and one row of cells per utterance."""
    rows = [
        [_cell(c, v) for c, v in zip(cols, row, strict=True)]
        for row in table[cols].itertuples(index=False)
    ]
    return {"headers": [_header(c) for c in cols], "rows": rows}


def _predicted_line(table: pd.DataFrame, label_names: list[str]) -> str:
    counts = table["predicted"].value_counts()
    dist = ", ".join(f"{emotion_name(c)}: {int(counts.get(c, 0))}" for c in label_names)
    sources = ", ".join(dict.fromkeys(table["segment_source"]))
    return f"{len(table)} utterances; segments from: {sources}; predicted: {dist}"


def write_video_report(
    table: pd.DataFrame,
    label_names: list[str],
    modalities: str,
    path: Path,
    title: str,
    index_href: str = "index.html",
    provenance: str = "",
) -> Path:
    """One video's report: its timeline figure and one table row per utterance; ``index_href``
    is the link back to the index of all videos (written next to the reports); ``provenance``
    the model's HTML fragment (pipeline.inference.predict_outputs.Provenance)."""
    page = _TEMPLATES.get_template("video_report.html.j2").render(
        name=Path(title).name,
        title=title,
        predicted_line=_predicted_line(table, label_names),
        index_href=index_href,
        provenance=provenance,
        timeline_png=timeline_png(table, label_names, modalities),
        clips=None,
        **_utterance_table(table, _utterance_columns(table, label_names, modalities)),
    )
    atomic_write_text(path, page)
    return path


CLIP_GAP_S = 0.5  # between clips laid end to end on a dialogue's time axis


def dialogue_timeline(table: pd.DataFrame) -> pd.DataFrame:
    """A dialogue's rows (column `video` = the clip) with start_s/end_s moved onto one axis: the
    clips end to end in row order, CLIP_GAP_S apart (each clip's own times start at its offset).
    The times in the dialogue's recording are not used: clips are often a sparse sample of it."""
    out = table.copy()
    offset, offsets = 0.0, {}
    for video, rows in table.groupby("video", sort=False):
        offsets[video] = offset
        ends = rows[["start_s", "end_s"]].to_numpy(float)  # [n, 2]; a NaN end = the whole clip
        length = float(ends[np.isfinite(ends)].max()) if np.isfinite(ends).any() else 0.0
        offset += length + CLIP_GAP_S
    shift = table["video"].map(offsets).to_numpy(float)
    out["start_s"] = table["start_s"].to_numpy(float) + shift
    out["end_s"] = table["end_s"].to_numpy(float) + shift
    return out


def write_dialogue_report(
    table: pd.DataFrame,
    label_names: list[str],
    modalities: str,
    path: Path,
    dialogue_id: str,
    clip_reports: dict[str, str],
    index_href: str = "../index.html",
    provenance: str = "",
) -> Path:
    """A clip-per-utterance dialogue's report: the timeline of its clips laid end to end, and one
    row per utterance linking to its clip's report (``clip_reports``: video -> href)."""
    png = timeline_png(
        dialogue_timeline(table), label_names, modalities,
        xlabel="time in the dialogue (s): its clips end to end, in manifest order",
    )  # fmt: skip
    page = _TEMPLATES.get_template("dialogue_report.html.j2").render(
        dialogue_id=dialogue_id,
        n_clips=table["video"].nunique(),
        predicted_line=_predicted_line(table, label_names),
        index_href=index_href,
        provenance=provenance,
        timeline_png=png,
        clips=[{"name": Path(v).name, "href": clip_reports.get(v)} for v in table["video"]],
        **_utterance_table(table, _utterance_columns(table, label_names, modalities)),
    )
    atomic_write_text(path, page)
    return path


MAX_CHART_ROWS = 200  # bars in the index chart; beyond it the figure would be too tall to read
CHART_ROW_INCHES = 0.28  # per bar: names at font size 8 do not overlap


def distribution_png(
    names: list[str], counts: np.ndarray, label_names: list[str], what: str = "video"
) -> str:
    """Predicted emotions as one horizontal stacked bar per name (counts int [R, C]), the first
    at the top; the figure grows CHART_ROW_INCHES per bar, so every name has its own line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = len(names)
    names, counts = names[:MAX_CHART_ROWS], np.asarray(counts, float)[:MAX_CHART_ROWS]  # [R, C]
    colors = _colors(label_names)
    fig, ax = plt.subplots(figsize=(10, 1.6 + CHART_ROW_INCHES * len(names)))
    y = np.arange(len(names))
    left = np.zeros(len(names))
    for k, c in enumerate(label_names):
        ax.barh(y, counts[:, k], left=left, color=colors[c], label=emotion_name(c), height=0.75)
        left += counts[:, k]
    ax.set_yticks(y, names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)  # the first name at the top, as in the tables
    ax.set_xlabel("utterances")
    ax.set_ylabel(what)
    shown = f" (the first {len(names)} of {total})" if total > len(names) else ""
    ax.set_title(
        f"predicted emotions per {what}: {total} {what}s, {int(counts.sum())} utterances{shown}"
    )
    _legend_outside(ax)
    fig.tight_layout()
    return _png(fig)


def write_index(
    summary: pd.DataFrame,
    label_names: list[str],
    path: Path,
    provenance: str = "",
    scores: dict[str, Any] | None = None,
    groups: list[dict[str, Any]] | None = None,
    confusion_png: Path | None = None,
) -> Path:
    """index.html: the model's provenance, the scores of a labelled run, one row per dialogue
    (clip-per-utterance runs, or any scored run) and one per video (status, utterances, source,
    label counts, link or reason), and the chart of predicted emotions.

    groups: [{name, kind "dialogue" | "video", report (href), n_videos, n_utterances, counts
    {label: n}, and for a scored run n, accuracy, weighted_f1}]."""
    groups = groups or []
    by_dialogue = any(g["kind"] == "dialogue" for g in groups)
    if by_dialogue:  # one bar per dialogue: a clip alone is one utterance
        names = [g["name"] for g in groups]
        counts = np.array([[g["counts"].get(c, 0) for c in label_names] for g in groups])
        png = distribution_png(names, counts.reshape(len(groups), -1), label_names, "dialogue")
    elif (summary["status"] == "ok").any():
        ok = summary[summary["status"] == "ok"]
        names = [Path(v).name for v in ok["video"]]
        png = distribution_png(names, ok[[f"n_{c}" for c in label_names]].to_numpy(), label_names)
    else:
        png = ""
    videos = [
        {"name": Path(r["video"]).name, "status": r["status"], "n_utterances": r["n_utterances"],
         "segment_source": r["segment_source"], "counts": [r.get(f"n_{c}", 0) for c in label_names],
         "report": r["report"], "reason": r["reason"]}
        for r in summary.to_dict("records")
    ]  # fmt: skip
    confusion = Path(confusion_png) if confusion_png is not None else None
    page = _TEMPLATES.get_template("index.html.j2").render(
        provenance=provenance,
        scores=scores,
        confusion_png=(
            base64.b64encode(confusion.read_bytes()).decode("ascii")
            if scores and confusion is not None and confusion.is_file()
            else ""
        ),
        # per dialogue for clip-per-utterance runs, else per video where there are scores
        groups=groups if scores or by_dialogue else [],
        group_kind="dialogue" if by_dialogue else "video",
        emotion_names=[emotion_name(c) for c in label_names],
        videos=videos,
        distribution_png=png,
    )
    atomic_write_text(path, page)
    return path


def relative_href(target: str | Path, start: str | Path) -> str:
    """A link from a page in folder ``start`` to ``target`` (both on this machine)."""
    return Path(os.path.relpath(target, start)).as_posix()
