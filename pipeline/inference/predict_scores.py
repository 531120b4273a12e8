"""Scores of a labelled prediction run: when the manifest carries labels, how right the model was.

    score_predictions(groups, label_names) -> dict | None (None: no labelled utterance at all)

`groups` are the predicted tables of the run, one per dialogue (clip-per-utterance datasets) or
per video, with their `label` (true, "" = unlabelled) and `predicted` columns. The metrics are
pipeline.training.evaluate.compute_metrics (accuracy, weighted and macro F1, per class, confusion),
over the utterances whose label is one of the checkpoint's classes: an unlabelled utterance is
not scored, and a label outside the classes (another dataset's, a typo) is counted in
`unknown_labels` and not scored either, since the model cannot predict it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.training.evaluate import compute_metrics


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
