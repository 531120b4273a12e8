"""What batch inference writes: per-video results, the predictions table and the summary.

prediction_table(segments, probs [N, C], support {m: [N]}, present [N, M]) -> DataFrame
<name>.predictions.csv / .jsonl, <name>.report.html, <name>.failures.csv
summary.csv, summary.md, index.html (over all videos) -> PredictSummary
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.inference.report_html import write_index, write_video_report
from pipeline.inference.segment import ASR_COLUMNS


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


@dataclass
class PredictSummary:
    out_dir: Path
    videos: list[VideoResult]
    label_names: list[str]
    summary_csv: Path
    summary_md: Path
    index_html: Path

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
        return (
            f"{len(self.ok)} videos predicted, {len(self.failed)} failed, "
            f"{self.n_failed_utterances} utterances failed ({self.summary_md})"
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
    table.to_csv(csv_path, index=False, float_format="%.6g")
    table.to_json(jsonl_path, orient="records", lines=True, force_ascii=False)
    return csv_path, jsonl_path


def _write_video_outputs(
    table: pd.DataFrame, name: str, video: Path, ctx: dict[str, Any]
) -> dict[str, str]:
    out_dir = ctx["out_dir"]
    csv_path, jsonl_path = _write_table(table, out_dir / name)
    html = write_video_report(
        table, ctx["label_names"], ctx["modalities"], out_dir / f"{name}.report.html", str(video)
    )
    return {"csv": str(csv_path), "jsonl": str(jsonl_path), "html": str(html)}


FAILED_FIELDS = ("utterance_id", "start_s", "end_s", "reason", "cue")


def _write_failed(failed: list[dict[str, Any]], path: Path) -> str:
    pd.DataFrame(failed, columns=list(FAILED_FIELDS)).to_csv(path, index=False)
    return str(path)


def _write_summary(out_dir: Path, results: list[VideoResult], labels: list[str]) -> PredictSummary:
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
    df.to_csv(csv_path, index=False)
    md = [
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
        md += ["", f"{n_bad} utterance(s) not predicted (bad segments): see <video>.failures.csv"]
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    index = write_index(df, labels, out_dir / "index.html")
    return PredictSummary(out_dir, results, labels, csv_path, md_path, index)


def stage_seconds(results: Sequence[VideoResult]) -> dict[str, float]:
    """Seconds per stage summed over videos (the benchmark's per-stage figures)."""
    total: dict[str, float] = {}
    for r in results:
        for k, v in r.seconds.items():
            total[k] = total.get(k, 0.0) + (0.0 if math.isnan(v) else v)
    return total
