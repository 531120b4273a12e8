"""Self-contained HTML reports of predictions: PNG plots embedded as base64, no external files.

    write_video_report(table, label_names, modalities, path, title) -> Path
    write_index(summary, label_names, path) -> Path

The per-video figure has three panels on one time axis:
    1. utterance spans, one lane per speaker, coloured by the predicted emotion
    2. per-class probability of each utterance: a step over the utterance's span with a marker at
       its centre (utterances are separate decisions, so nothing joins them)
    3. per-modality share of support for the predicted class (stacked, one bar per utterance); a
       modality the utterance lacks is marked with an x above its bar and "missing" in the table
Legends sit outside the panels; emotions are shown by name (pipeline.training.diagnostics.emotion_name).
`table` is the predictions frame of pipeline.inference.predict (columns start_s, end_s, speaker, text,
predicted, p_<label>, support_<m>, segment_source).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.training.diagnostics import emotion_name

MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}
MODALITY_COLORS = {"t": "#4c72b0", "a": "#dd8452", "v": "#55a868"}


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


def timeline_png(table: pd.DataFrame, label_names: list[str], modalities: str) -> str:
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
    ax.set_xlabel("time (s)")
    _legend_outside(ax)
    fig.tight_layout()
    return _png(fig)


_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1500px}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
    "th{background:#eee}img{max-width:100%}.failed{color:#b00}.missing{color:#888;font-style:italic}"
)


def _page(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _cell(column: str, value) -> str:
    if column.startswith("support_") and not (isinstance(value, float) and np.isfinite(value)):
        return "<td class='missing'>missing</td>"
    if column == "predicted" or column == "label":
        return f"<td>{html.escape(emotion_name(str(value)))}</td>"
    return f"<td>{f'{value:.3f}' if isinstance(value, float) else html.escape(str(value))}</td>"


def _header(column: str) -> str:
    if column.startswith("p_"):
        return f"p({emotion_name(column[2:])})"
    if column.startswith("support_"):
        return f"{MODALITY_NAMES.get(column[8:], column[8:])} support"
    return column


def write_video_report(
    table: pd.DataFrame,
    label_names: list[str],
    modalities: str,
    path: Path,
    title: str,
    index_href: str = "index.html",
) -> Path:
    """One video's report: its timeline figure and one table row per utterance; ``index_href``
    is the link back to the index of all videos (written next to the reports)."""
    counts = table["predicted"].value_counts()
    dist = ", ".join(f"{emotion_name(c)}: {int(counts.get(c, 0))}" for c in label_names)
    sources = ", ".join(dict.fromkeys(table["segment_source"]))
    cols = ["start_s", "end_s", "speaker", "text", "predicted",
            *[f"p_{c}" for c in label_names], *[f"support_{m}" for m in modalities]]  # fmt: skip
    head = "".join(f"<th>{html.escape(_header(c))}</th>" for c in cols)
    rows = []
    for row in table[cols].itertuples(index=False):
        rows.append("<tr>" + "".join(_cell(c, v) for c, v in zip(cols, row, strict=True)) + "</tr>")
    body = (
        f"<p><a id='index' href='{html.escape(index_href)}'>&larr; all videos</a></p>"
        f"<h1>{html.escape(Path(title).name)}</h1><p>{html.escape(title)}<br>"
        f"{len(table)} utterances; segments from: {html.escape(sources)}; "
        f"predicted: {html.escape(dist)}</p>"
        f"<img alt='timeline' src='data:image/png;base64,{timeline_png(table, label_names, modalities)}'>"
        "<p>Modality share: each modality's unimodal probability of the predicted class, "
        "normalised over the modalities the utterance has; <em>missing</em>: the utterance has "
        "no such input (marked x in the chart).</p>"
        f"<table id='utterances'><tr>{head}</tr>{''.join(rows)}</table>"
    )
    path.write_text(_page(Path(title).name, body), encoding="utf-8")
    return path


def _distribution_png(summary: pd.DataFrame, label_names: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = summary[summary["status"] == "ok"]
    colors = _colors(label_names)
    fig, ax = plt.subplots(figsize=(min(14, 3 + 0.6 * len(ok)), 3.5))
    names = [Path(v).name for v in ok["video"]]
    bottom = np.zeros(len(ok))
    for c in label_names:
        vals = ok[f"n_{c}"].to_numpy(float)
        ax.bar(names, vals, bottom=bottom, color=colors[c], label=emotion_name(c))
        bottom += vals
    ax.set_ylabel("utterances")
    ax.set_title("predicted emotions per video")
    _legend_outside(ax)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    return _png(fig)


def write_index(summary: pd.DataFrame, label_names: list[str], path: Path) -> Path:
    """index.html: one row per video (status, utterances, source, label counts, link or reason)."""
    head = "<tr><th>video</th><th>status</th><th>utterances</th><th>source</th>"
    head += (
        "".join(f"<th>{html.escape(emotion_name(c))}</th>" for c in label_names)
        + "<th>report / reason</th></tr>"
    )
    rows = []
    for r in summary.to_dict("records"):
        link = (
            f"<a href='{html.escape(r['report'])}'>{html.escape(r['report'])}</a>"
            if r["report"]
            else f"<span class='failed'>{html.escape(r['reason'])}</span>"
        )
        counts = "".join(f"<td>{r.get(f'n_{c}', 0)}</td>" for c in label_names)
        rows.append(
            f"<tr><td>{html.escape(Path(r['video']).name)}</td><td>{r['status']}</td>"
            f"<td>{r['n_utterances']}</td><td>{html.escape(r['segment_source'])}</td>"
            f"{counts}<td>{link}</td></tr>"
        )
    body = (
        f"<h1>Predictions: {len(summary)} videos</h1>"
        f"<table id='videos'>{head}{''.join(rows)}</table>"
    )
    if (summary["status"] == "ok").any():
        body += f"<img alt='distribution' src='data:image/png;base64,{_distribution_png(summary, label_names)}'>"
    path.write_text(_page("predictions", body), encoding="utf-8")
    return path
