"""A planned manifest + the store -> a FeatureSet (in memory; the caller saves it if wanted).

A modality's extractors are concatenated in preset order: feat.<m> [N, sum of dims]. An utterance
lacks a modality (zeros, present.<m> = 0) when any of its extractors failed, returned None or was
never extracted. Labels: ids index ``label_names`` (default: the manifest's declared label set in
its canonical order, else its non-empty labels sorted alphabetically: pipeline/dataset/manifest.py);
"" -> -1. Dialogues and utterances in manifest order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from extractors.base import Extractor
from pipeline.dataset.manifest import GENERATED_COLUMN, declared_set, label_order
from pipeline.features.featureset import GENERATED_KEY, FeatureSet, from_arrays

if TYPE_CHECKING:  # the plan's type only; extract.py imports this module
    from pipeline.features.extract import ExtractionPlan

log = logging.getLogger(__name__)


def feature_spec(extractors: dict[str, Sequence[Extractor]], fps: float) -> dict[str, dict]:
    """Per modality: what its columns came from, so checkpoints can refuse mismatched features.

    {m: {extractor: "a+b", version: "1+2", dim: D_m, config_hash, extractors: [spec + hash], fps?}}
    """
    out = {}
    for m, exs in extractors.items():
        parts = [{**ex.spec.to_dict(), "config_hash": ex.spec.config_hash()} for ex in exs]
        out[m] = {
            "extractor": "+".join(p["name"] for p in parts),
            "version": "+".join(p["version"] for p in parts),
            "dim": sum(p["dim"] for p in parts),
            "config_hash": "+".join(p["config_hash"] for p in parts),
            "weights": "+".join(p["weights"] for p in parts),
            "extractors": parts,
            **({"fps": fps} if m == "v" else {}),
        }
    return out


def assemble_featureset(
    plan: ExtractionPlan, store, label_names: Sequence[str] | None = None
) -> FeatureSet:
    """Every planned entry read from ``store`` (a FeatureStore or UnindexedWriter) -> FeatureSet."""
    df, exs, n = plan.rows, plan.extractors, len(plan.rows)
    by_pair = {(t.row, t.name): t.key for t in plan.tasks}
    feats, present = {}, {}
    for m, mexs in exs.items():
        dims = [ex.spec.dim for ex in mexs]
        x = np.zeros((n, sum(dims)), np.float32)  # [N, D_m]
        ok = np.ones(n, bool)  # [N]
        offset = 0
        for ex, dim in zip(mexs, dims, strict=True):
            for i in range(n):
                key = by_pair.get((i, ex.spec.name))
                vec = _get_or_none(store, key) if ok[i] and key else None
                if vec is None:
                    ok[i] = False
                else:
                    x[i, offset : offset + dim] = vec
            offset += dim
        x[~ok] = 0.0  # a partial row (one extractor of several) is not a feature
        feats[m], present[m] = x, ok
        if not ok.all():
            log.warning("modality %s: %d of %d utterances have no features", m, (~ok).sum(), n)
    labels_col = df["label"].tolist()
    label_set = declared_set(df, plan.source)
    names = list(label_names) if label_names else label_order(labels_col, label_set)
    for i, lab in enumerate(labels_col):
        if lab and lab not in names:
            raise ValueError(
                f"{plan.source}: row {i} (utterance {df['utterance_id'].iat[i]!r}): label "
                f"{lab!r} is not in label_names {names}"
            )
    labels = np.array([names.index(lab) if lab else -1 for lab in labels_col], np.int64)  # [N]
    dialogues = []  # manifest rows keep a dialogue's rows contiguous, so rows stay aligned
    for did, rows in df.groupby("dialogue_id", sort=False):
        dialogues.append(
            {
                "id": str(did),
                "split": rows["split"].iat[0],
                "utterance_ids": rows["utterance_id"].tolist(),
                "speakers": rows["speaker"].tolist(),
                "start_s": [float(v) for v in rows["start_s"]],
                "end_s": [None if np.isnan(v) else float(v) for v in rows["end_s"]],
                "texts": rows["text"].tolist(),
            }
        )
    generated = sorted({str(v) for v in df.get(GENERATED_COLUMN, []) if isinstance(v, str) and v})
    source = json.dumps(
        {
            "manifest": plan.source,
            "store": str(Path(store.root).resolve()),
            "preset": plan.preset,
            "modalities": "".join(exs),
            "fps": plan.fps,
            **({GENERATED_KEY: "+".join(generated)} if generated else {}),
        }
    )
    return from_arrays(
        dialogues,
        feats,
        labels,
        names,
        present=present,
        feature_spec=feature_spec(exs, plan.fps),
        source=source,
    )


def _get_or_none(store, key: str) -> np.ndarray | None:
    try:
        return store.get(key)
    except KeyError:
        return None
