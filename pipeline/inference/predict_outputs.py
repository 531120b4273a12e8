"""What batch inference writes: per-video results, the predictions table and the summary, each
naming the model that made the predictions.

prediction_table(segments, probs [N, C], support {m: [N]}, present [N, M]) -> DataFrame
PredictionWriter(out_dir, label_names, modalities, provenance), one per run, writes:
    .video      <name>.predictions.csv / .jsonl, <name>.report.html
    .failed     <name>.failures.csv
    .dialogue   dialogues/<dialogue>.predictions.csv / .jsonl / .report.html (clip-per-utterance)
    .summary    summary.csv, summary.md, index.html, run_info.json (over all videos) -> PredictSummary
metrics.json, confusion.png (when the manifest's labels allow scoring)
score_predictions(groups, label_names) -> dict | None   a labelled run's scores (None: no label)
checkpoint_provenance(checkpoint_dir, meta) -> Provenance   what produced the predictions

Provenance: the checkpoint (path, weights hash) and the data it was trained on. Every prediction
output names it: run_info.json beside the predictions (for programs), summary.md, index.html, each
report and the Prefect artifact. A checkpoint trained on generated data (the demo's conversations,
synthetic features: pipeline/features/featureset.py `generated_by`) carries a caveat that every
report shows first: its probabilities say how the generator planted its classes, nothing about
emotion in real speech. Checkpoints written before training recorded its data (checkpoint.json
without `training_data`) report "training data unknown".

HTML pages: self-contained, PNG plots embedded as base64, no external files.

    write_video_report(table, label_names, modalities, path, title) -> Path
    write_dialogue_report(table, label_names, modalities, path, dialogue_id, clip_reports) -> Path
    write_index(summary, label_names, path, provenance, scores, groups, confusion_png) -> Path

Every page starts with the model's provenance (an HTML fragment from Provenance: checkpoint,
weights hash, training data, and the caveat of a model trained on generated data as a banner). A
dialogue report (clip-per-utterance datasets) lays its clips end to end on one time axis, in
manifest order. The index scores a labelled run (metrics, unknown labels, confusion matrix, per
dialogue or video), and its chart has one horizontal bar per dialogue (or video), its height
growing with their number, so 50+ names stay readable.

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
import html
import io
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from model.config import MODALITY_NAMES
from pipeline.dataset.manifest import emotion_name
from pipeline.files import atomic_write, atomic_write_text, sha256_file
from pipeline.inference.segment import ASR_COLUMNS
from pipeline.training.checkpoint import WEIGHTS_FILE
from pipeline.training.evaluate import compute_metrics, confusion_title, plot_confusion

# ---- provenance: what produced the predictions --------------------------------------------------

UNKNOWN = (
    "training data unknown (the checkpoint does not record it: trained before it was recorded)"
)
GENERATORS = {
    "demo": "generated demo data",
    "synthetic": "synthetic features (noise with a planted class signal)",
}


@dataclass(frozen=True)
class Provenance:
    checkpoint: str  # resolved folder
    weights_sha256: str
    epoch: int | None
    modalities: str
    label_names: list[str]
    training_data: dict[str, Any] | None  # run_folder.training_data; None = not recorded

    @property
    def generated(self) -> str:
        return str((self.training_data or {}).get("generated") or "")

    @property
    def caveat(self) -> str:
        """The warning every report shows first; "" for a checkpoint trained on recorded data."""
        if self.generated:
            what = GENERATORS.get(self.generated, f"generated {self.generated} data")
            return f"trained on {what}: its predictions on real speech mean nothing"
        return ""

    def trained_on(self) -> str:
        """One line: what the training data was, its size and where it is."""
        td = self.training_data
        if td is None:
            return UNKNOWN
        return (
            f"{td.get('description') or 'unknown'}; {td.get('n_dialogues', '?')} dialogues, "
            f"{td.get('n_utterances', '?')} utterances ({td.get('n_labelled', '?')} labelled); "
            f"labels {' '.join(td.get('label_names', []))}"
        )

    def _epoch(self) -> str:
        return f"epoch {self.epoch}" if self.epoch is not None else "epoch not recorded"

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "weights_sha256": self.weights_sha256,
            "epoch": self.epoch,
            "modalities": self.modalities,
            "label_names": self.label_names,
            "training_data": self.training_data,
            "trained_on": self.trained_on(),
            "caveat": self.caveat,
        }

    def markdown(self) -> str:
        """The model section of summary.md (and of the Prefect artifact)."""
        td = self.training_data or {}
        lines = ["## Model", ""]
        if self.caveat:
            lines += [f"**Warning: {self.caveat}.**", ""]
        lines += [
            f"- checkpoint: `{self.checkpoint}` ({self._epoch()}, modalities {self.modalities})",
            f"- weights sha256: `{self.weights_sha256}`",
            f"- trained on: {self.trained_on()}",
        ]
        if td.get("featureset") or td.get("featureset_sha256"):
            lines.append(
                f"- feature set: `{td.get('featureset') or '(in memory)'}` "
                f"(content sha256 `{td.get('featureset_sha256', '?')}`)"
            )
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        """The same for the HTML reports: the caveat as a banner above everything else."""
        td = self.training_data or {}
        banner = (
            f"<p class='caveat' id='caveat'><strong>Warning: {html.escape(self.caveat)}.</strong></p>"
            if self.caveat
            else ""
        )
        items = [
            f"checkpoint <code>{html.escape(self.checkpoint)}</code> ({self._epoch()}, "
            f"modalities {html.escape(self.modalities)})",
            f"weights sha256 <code>{self.weights_sha256}</code>",
            f"trained on: {html.escape(self.trained_on())}",
        ]
        if td.get("featureset_sha256"):
            items.append(
                f"feature set <code>{html.escape(td.get('featureset') or '(in memory)')}</code> "
                f"(content sha256 <code>{html.escape(td['featureset_sha256'])}</code>)"
            )
        lis = "".join(f"<li>{i}</li>" for i in items)
        return f"{banner}<div id='provenance'><h3>Model</h3><ul>{lis}</ul></div>"


def checkpoint_provenance(checkpoint_dir: str | Path, meta: dict[str, Any]) -> Provenance:
    """From a loaded checkpoint's folder and checkpoint.json (load_checkpoint verified the weights
    against the recorded hash; an older checkpoint without one gets its file hashed here)."""
    folder = Path(checkpoint_dir).expanduser().resolve()
    sha = meta.get("weights_sha256") or sha256_file(folder / WEIGHTS_FILE)
    td = meta.get("training_data")
    return Provenance(
        checkpoint=str(folder),
        weights_sha256=str(sha),
        epoch=meta.get("epoch"),
        modalities=str(meta.get("model_config", {}).get("modalities", "")),
        label_names=list(meta.get("label_names", [])),
        training_data=td if isinstance(td, dict) else None,
    )


# ---- results ------------------------------------------------------------------------------------


@dataclass
class VideoResult:
    video: str
    status: str  # "ok" | "failed"
    reason: str = ""
    n_utterances: int = 0
    segment_source: str = ""  # "srt", "asr+vad", ...
    label_counts: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # csv, jsonl, html, manifest, failures
    seconds: dict[str, float] = field(default_factory=dict)  # per stage (+ per extractor)
    media_seconds: float = 0.0
    dialogue: str = ""  # clip-per-utterance: the dialogue predicted as a whole ("" = per video)
    # utterances not predicted: [{utterance_id, start_s, end_s, reason, cue}] (bad segments)
    failed_utterances: list[dict[str, Any]] = field(default_factory=list)
    # the predicted table as written (with the manifest's `label` when it had one): the summary
    # scores and charts it without reading the files back
    predictions: pd.DataFrame | None = field(default=None, repr=False)


@dataclass
class PredictSummary:
    out_dir: Path
    videos: list[VideoResult]
    label_names: list[str]
    summary_csv: Path
    summary_md: Path
    index_html: Path
    run_info: Path | None = None  # run_info.json: the model's provenance, the outputs
    provenance: Provenance | None = None
    # a labelled run's scores (score_predictions) and their files; None otherwise
    metrics: dict[str, Any] | None = None
    metrics_json: Path | None = None
    confusion_png: Path | None = None

    @property
    def ok(self) -> list[VideoResult]:
        return [v for v in self.videos if v.status == "ok"]

    @property
    def failed(self) -> list[VideoResult]:
        return [v for v in self.videos if v.status != "ok"]

    @property
    def n_failed_utterances(self) -> int:
        return sum(len(v.failed_utterances) for v in self.videos)

    def line(self) -> str:
        scored, m = "", self.metrics
        if m is not None and not m["n"]:
            scored = "; no utterance has a label the checkpoint knows"
        elif m is not None:
            scored = (
                f"; {m['n']} labelled utterances scored: accuracy {m['accuracy']:.3f}, "
                f"W-F1 {m['weighted_f1']:.3f}, macro F1 {m['macro_f1']:.3f}"
            )
        return (
            f"{len(self.ok)} videos predicted, {len(self.failed)} failed, "
            f"{self.n_failed_utterances} utterances failed{scored} ({self.summary_md})"
        )


def prediction_table(
    seg: pd.DataFrame,
    probs: np.ndarray,
    support: dict[str, np.ndarray],
    present: np.ndarray,
    labels: list[str],
    modalities: str,
) -> pd.DataFrame:
    """Segments [N rows] + probs [N, C], support {m: [N]}, present bool [N, M] -> output table."""
    pred = [labels[i] for i in probs.argmax(axis=1)]
    return pd.DataFrame(
        {
            "dialogue_id": seg["dialogue_id"].to_numpy(),
            "utterance_id": seg["utterance_id"].to_numpy(),
            "start_s": seg["start_s"].to_numpy(),
            "end_s": seg["end_s"].to_numpy(),
            "speaker": seg["speaker"].to_numpy(),
            "text": seg["text"].to_numpy(),
            "predicted": pred,
            **{f"p_{c}": probs[:, k] for k, c in enumerate(labels)},
            "segment_source": seg["segment_source"].to_numpy(),
            # the recogniser's confidence for automatic segments (NaN for the other sources)
            **{c: seg[c].to_numpy(float) if c in seg else np.nan for c in ASR_COLUMNS},
            **{f"support_{m}": support[m] for m in modalities},
            "missing": [
                "".join(m for j, m in enumerate(modalities) if not row[j]) for row in present
            ],
        }
    )


def _write_table(table: pd.DataFrame, stem: Path) -> tuple[Path, Path]:
    csv_path = stem.with_name(stem.name + ".predictions.csv")
    jsonl_path = stem.with_name(stem.name + ".predictions.jsonl")
    atomic_write(csv_path, lambda p: table.to_csv(p, index=False, float_format="%.6g"))
    atomic_write(
        jsonl_path, lambda p: table.to_json(p, orient="records", lines=True, force_ascii=False)
    )
    return csv_path, jsonl_path


# ---- scores of a labelled run: when the manifest carries labels, how right the model was -------
#
# `groups` are the predicted tables of the run, one per dialogue (clip-per-utterance datasets) or
# per video, with their `label` (true, "" = unlabelled) and `predicted` columns. The metrics are
# pipeline.training.evaluate.compute_metrics (accuracy, weighted and macro F1, per class,
# confusion), over the utterances whose label is one of the checkpoint's classes: an unlabelled
# utterance is not scored, and a label outside the classes (another dataset's, a typo) is counted
# in `unknown_labels` and not scored either, since the model cannot predict it.


def label_ids(labels: Sequence[str], label_names: list[str]) -> np.ndarray:
    """int64 [N]: the class id of each label; -1 for "" and for labels outside label_names."""
    index = {c: k for k, c in enumerate(label_names)}
    return np.asarray([index.get(str(lab), -1) for lab in labels], dtype=np.int64)


def _true_labels(table: pd.DataFrame) -> np.ndarray:
    """The manifest's labels of a predicted table, "" where none (a video without labels has no
    `label` column)."""
    if "label" not in table.columns:
        return np.full(len(table), "", dtype=object)
    return table["label"].fillna("").astype(str).to_numpy()


def score_predictions(
    groups: Sequence[tuple[str, str, str, pd.DataFrame]], label_names: list[str]
) -> dict[str, Any] | None:
    """groups: [(name, kind "dialogue" | "video", report href, table)] -> metrics dict:
    compute_metrics' keys (n, accuracy, weighted_f1, macro_f1, per_class, confusion, labels) plus
    n_predicted, n_unlabelled, unknown_labels {label: rows}, n_unknown and groups [{name, kind,
    report, n_utterances, n, accuracy, weighted_f1 (None when n is 0)}]. None when no utterance has
    a label; when every label is unknown, n is 0, the metrics NaN and there is no confusion."""
    if not groups:
        return None
    true = np.concatenate([_true_labels(t) for _, _, _, t in groups])  # [N] str, "" = none
    if not (true != "").any():
        return None
    pred = np.concatenate([t["predicted"].astype(str).to_numpy() for _, _, _, t in groups])
    known = set(label_names)
    unknown = Counter(lab for lab in true if lab and lab not in known)
    metrics = compute_metrics(
        label_ids(true, label_names), label_ids(pred, label_names), label_names
    )
    metrics.update(
        n_predicted=len(true),
        n_unlabelled=int((true == "").sum()),
        unknown_labels=dict(sorted(unknown.items())),
        n_unknown=int(sum(unknown.values())),
    )
    rows = []
    for name, kind, href, t in groups:
        m = compute_metrics(
            label_ids(_true_labels(t), label_names),
            label_ids(t["predicted"], label_names),
            label_names,
        )
        rows.append(
            {
                "name": name,
                "kind": kind,
                "report": href,
                "n_utterances": len(t),
                "n": m["n"],  # scored: labelled with a known class
                "accuracy": m["accuracy"] if m["n"] else None,
                "weighted_f1": m["weighted_f1"] if m["n"] else None,
            }
        )
    metrics["groups"] = rows
    return metrics


# ---- the writer ---------------------------------------------------------------------------------


FAILED_FIELDS = ("utterance_id", "start_s", "end_s", "reason", "cue")


@dataclass(frozen=True)
class PredictionWriter:
    """Writes one prediction run's files into out_dir: per video, per clip-per-utterance dialogue,
    the failed utterances, and the summary over all videos. Every report names the model
    (provenance; None: reports without it)."""

    out_dir: Path
    label_names: list[str]
    modalities: str
    provenance: Provenance | None = None

    def _provenance_html(self) -> str:
        return self.provenance.html() if self.provenance is not None else ""

    def video(self, table: pd.DataFrame, name: str, video: Path) -> dict[str, str]:
        """<name>.predictions.csv / .jsonl and <name>.report.html -> {csv, jsonl, html}."""
        csv_path, jsonl_path = _write_table(table, self.out_dir / name)
        report = write_video_report(
            table, self.label_names, self.modalities, self.out_dir / f"{name}.report.html",
            str(video), provenance=self._provenance_html(),
        )  # fmt: skip
        return {"csv": str(csv_path), "jsonl": str(jsonl_path), "html": str(report)}

    def dialogue(
        self, table: pd.DataFrame, name: str, dialogue_id: str, clip_reports: dict[str, str]
    ) -> dict[str, str]:
        """A clip-per-utterance dialogue's table (column `video` = the clip) -> its CSV, JSONL and
        report dialogues/<name>.*; ``clip_reports``: video -> the clip's report file."""
        stem = self.out_dir / "dialogues" / name
        stem.parent.mkdir(exist_ok=True)
        csv_path, jsonl_path = _write_table(table, stem)
        report = write_dialogue_report(
            table, self.label_names, self.modalities, stem.with_name(stem.name + ".report.html"),
            dialogue_id, {v: relative_href(p, stem.parent) for v, p in clip_reports.items()},
            index_href=relative_href(self.out_dir / "index.html", stem.parent),
            provenance=self._provenance_html(),
        )  # fmt: skip
        return {"dialogue_csv": str(csv_path), "dialogue_jsonl": str(jsonl_path),
                "dialogue_html": str(report)}  # fmt: skip

    def failed(self, failed: list[dict[str, Any]], name: str) -> str:
        """<name>.failures.csv: the utterances of a file that were not predicted (FAILED_FIELDS)."""
        path = self.out_dir / f"{name}.failures.csv"
        frame = pd.DataFrame(failed, columns=list(FAILED_FIELDS))
        atomic_write(path, lambda p: frame.to_csv(p, index=False))
        return str(path)

    def summary(
        self, results: list[VideoResult], speech_recognition: dict[str, Any] | None = None
    ) -> PredictSummary:
        """summary.csv / .md, index.html, run_info.json (and a labelled run's metrics.json and
        confusion.png) over every video's result, in the order given. ``speech_recognition``:
        the recogniser's settings where one transcribed (run_info.json, summary.md)."""
        out_dir, labels, provenance = self.out_dir, self.label_names, self.provenance
        rows = []
        for r in results:
            rows.append(
                {
                    "video": r.video,
                    "status": r.status,
                    "reason": r.reason,
                    "n_utterances": r.n_utterances,
                    "segment_source": r.segment_source,
                    "dialogue": r.dialogue,
                    "n_failed_utterances": len(r.failed_utterances),
                    "media_seconds": round(r.media_seconds, 3),
                    **{f"n_{c}": r.label_counts.get(c, 0) for c in labels},
                    "report": Path(r.outputs["html"]).name if "html" in r.outputs else "",
                }
            )
        df = pd.DataFrame(rows)
        csv_path, md_path = out_dir / "summary.csv", out_dir / "summary.md"
        atomic_write(csv_path, lambda p: df.to_csv(p, index=False))
        # Scores of a labelled run: over every predicted utterance, and per dialogue (or video).
        groups = _groups(out_dir, results)
        metrics = score_predictions(groups, labels)
        metrics_path = confusion_path = None
        for stale in ("metrics.json", "confusion.png"):  # an earlier run's, into the same folder
            (out_dir / stale).unlink(missing_ok=True)
        if metrics is not None and "confusion" in metrics:  # (not when every label was unknown)
            confusion_path = out_dir / "confusion.png"
            where = (
                f"{Path(provenance.checkpoint).parent.name}/{Path(provenance.checkpoint).name}"
                if provenance
                else "predictions"
            )
            title = confusion_title(f"{where} on {len(groups)} {groups[0][1]}(s)", metrics)
            plot_confusion(np.asarray(metrics["confusion"]), labels, confusion_path, title)
        if metrics is not None:
            metrics_path = out_dir / "metrics.json"
            body = {
                **metrics,
                "checkpoint": provenance.checkpoint if provenance else "",
                "weights_sha256": provenance.weights_sha256 if provenance else "",
                "caveat": provenance.caveat if provenance else "",
            }
            atomic_write_text(metrics_path, json.dumps(_no_nan(body), indent=1))
        md = ["# Predictions", ""]
        if provenance is not None:
            md += [provenance.markdown()]
        if speech_recognition:
            md += [
                "Speech recognised by "
                + ", ".join(f"{k} {v}" for k, v in speech_recognition.items())
                + " (in the videos without subtitles or manifest rows).",
                "",
            ]
        if metrics is not None:
            md += _scores_markdown(metrics, confusion_path)
        md += [
            "## Videos",
            "",
            "| video | status | utterances | failed utterances | source | labels | reason |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results:
            dist = " ".join(f"{c}:{r.label_counts[c]}" for c in labels if r.label_counts.get(c))
            md.append(
                f"| {Path(r.video).name} | {r.status} | {r.n_utterances} | "
                f"{len(r.failed_utterances)} | {r.segment_source} | {dist} | "
                f"{r.reason.replace('|', '/')} |"
            )
        n_bad = sum(len(r.failed_utterances) for r in results)
        if n_bad:
            md += [
                "",
                f"{n_bad} utterance(s) not predicted (bad segments): see <video>.failures.csv",
            ]
        atomic_write_text(md_path, "\n".join(md) + "\n")
        scored = {g["name"]: g for g in (metrics or {}).get("groups", [])}
        index_groups = [
            {
                "name": name,
                "kind": kind,
                "report": href,
                "n_videos": int(t["video"].nunique()) if "video" in t.columns else 1,
                "n_utterances": len(t),
                "counts": t["predicted"].value_counts().to_dict(),
                **{k: scored[name][k] for k in ("n", "accuracy", "weighted_f1") if name in scored},
            }
            for name, kind, href, t in groups
        ]
        index = write_index(
            df, labels, out_dir / "index.html", provenance=provenance.html() if provenance else "",
            scores=metrics, groups=index_groups, confusion_png=confusion_path,
        )  # fmt: skip
        info_path = out_dir / "run_info.json"
        outputs = {"summary_csv": csv_path, "summary_md": md_path, "index_html": index,
                   "metrics_json": metrics_path, "confusion_png": confusion_path}  # fmt: skip
        info = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": provenance.to_dict() if provenance else None,
            "speech_recognition": speech_recognition,
            "videos": len(results),
            "videos_ok": sum(r.status == "ok" for r in results),
            "outputs": {k: str(v) for k, v in outputs.items() if v is not None},
        }
        atomic_write_text(info_path, json.dumps(info, indent=1))
        return PredictSummary(
            out_dir, results, labels, csv_path, md_path, index, info_path, provenance, metrics,
            metrics_path, confusion_path,
        )  # fmt: skip


def _groups(out_dir: Path, results: list[VideoResult]) -> list[tuple[str, str, str, pd.DataFrame]]:
    """The units a run is scored and charted by: (name, kind, report href, predicted table), one per
    clip-per-utterance dialogue (its clips' tables in order) or per video, in result order."""
    out: list[tuple[str, str, str, pd.DataFrame]] = []
    seen: dict[str, int] = {}
    for r in results:
        if r.status != "ok" or r.predictions is None:
            continue
        if r.dialogue:
            if r.dialogue in seen:
                name, kind, href, t = out[seen[r.dialogue]]
                out[seen[r.dialogue]] = (name, kind, href, pd.concat([t, r.predictions]))
                continue
            seen[r.dialogue] = len(out)
            href = r.outputs.get("dialogue_html", "")
            href = relative_href(href, out_dir) if href else ""
            out.append((r.dialogue, "dialogue", href, r.predictions))
        else:
            href = Path(r.outputs["html"]).name if "html" in r.outputs else ""
            out.append((Path(r.video).name, "video", href, r.predictions))
    return out


def _scores_markdown(m: dict[str, Any], confusion: Path | None) -> list[str]:
    line = (
        f"{m['n']} of {m['n_predicted']} predicted utterances scored against the manifest's "
        f"labels: accuracy **{m['accuracy']:.3f}**, weighted F1 **{m['weighted_f1']:.3f}**, "
        f"macro F1 **{m['macro_f1']:.3f}**."
        if m["n"]
        else f"None of the {m['n_predicted']} predicted utterances has a label the checkpoint "
        "knows: nothing scored."
    )
    md = ["## Scores", "", line, ""]
    if m["n_unlabelled"]:
        md += [f"{m['n_unlabelled']} utterance(s) have no label and are not scored.", ""]
    if m["unknown_labels"]:
        listed = ", ".join(f"{k} ({v})" for k, v in m["unknown_labels"].items())
        md += [
            f"**{m['n_unknown']} utterance(s) carry labels the checkpoint does not know: "
            f"{listed}**; they are not scored.",
            "",
        ]
    if confusion is not None:
        md += [f"Confusion matrix: {confusion.name}; all figures: metrics.json.", ""]
    kind = "dialogue" if any(g["kind"] == "dialogue" for g in m["groups"]) else "video"
    md += [f"| {kind} | utterances | scored | accuracy | W-F1 |", "|---|---|---|---|---|"]
    for g in m["groups"]:
        acc, wf1 = (f"{g[k]:.3f}" if g["n"] else "–" for k in ("accuracy", "weighted_f1"))
        md.append(f"| {g['name']} | {g['n_utterances']} | {g['n']} | {acc} | {wf1} |")
    return md + [""]


def _no_nan(value: Any) -> Any:
    """NaN -> None, nested: metrics.json stays strict JSON (no NaN tokens) for other readers."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def stage_seconds(results: Sequence[VideoResult]) -> dict[str, float]:
    """Seconds per stage summed over videos (the benchmark's per-stage figures)."""
    total: dict[str, float] = {}
    for r in results:
        for k, v in r.seconds.items():
            total[k] = total.get(k, 0.0) + (0.0 if math.isnan(v) else v)
    return total


# ---- HTML pages ---------------------------------------------------------------------------------

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
    the model's HTML fragment (Provenance, above)."""
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
