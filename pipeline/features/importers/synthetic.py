"""Synthetic dialogues with a planted class signal, for tests, the demo and benchmarks.

Each utterance's features are Gaussian noise plus a class-dependent mean direction scaled by a
per-modality signal strength, so a model can learn from each modality in proportion to it (the
benchmark plants text strongest and visual weakest, like real ERC data). A slowly drifting
dialogue-level "mood" makes neighbouring labels correlated, so context helps as in real dialogue.
"""

from __future__ import annotations

import json

import numpy as np

from pipeline.dataset.manifest import IEMOCAP
from pipeline.features.featureset import GENERATED_KEY, FeatureSet, from_arrays

# IEMOCAP-sized defaults: 151 dialogues, 7,433 utterances (../shared/data/README.md).
IEMOCAP_SIZES = {"train": 108, "dev": 12, "test": 31}
IEMOCAP_DIMS = {"t": 768, "a": 512, "v": 1024}  # paper Table 2 feature dims
IEMOCAP_LABELS = list(IEMOCAP)  # the canonical order (pipeline/dataset/manifest.py)


def make_synthetic(
    n_dialogues: dict[str, int] | None = None,
    utterances: int = 7_433,
    dims: dict[str, int] | None = None,
    signal: dict[str, float] | None = None,
    label_names: list[str] | None = None,
    seed: int = 0,
    missing_rate: dict[str, float] | None = None,
) -> FeatureSet:
    """Dialogue lengths are drawn around utterances / dialogues; `signal[m]` is the class-mean norm
    relative to unit noise per dimension (0 = pure noise)."""
    rng = np.random.default_rng(seed)
    n_dialogues = n_dialogues or dict(IEMOCAP_SIZES)
    dims = dims or dict(IEMOCAP_DIMS)
    signal = signal or {"t": 1.0, "a": 0.6, "v": 0.35}
    label_names = label_names or list(IEMOCAP_LABELS)
    n_classes = len(label_names)
    total_dialogues = sum(n_dialogues.values())

    lengths = _dialogue_lengths(rng, total_dialogues, utterances)
    splits = [s for s, k in n_dialogues.items() for _ in range(k)]
    class_means = {
        m: rng.standard_normal((n_classes, d)).astype(np.float32) / np.sqrt(d)
        for m, d in dims.items()
    }
    dialogues, labels = [], []
    for i, (n, split) in enumerate(zip(lengths, splits, strict=True)):
        mood = rng.integers(n_classes)
        y = []
        for _ in range(n):
            if rng.random() < 0.3:  # mood drift keeps labels correlated along the dialogue
                mood = rng.integers(n_classes)
            y.append(mood)
        labels.extend(y)
        dialogues.append(
            {
                "id": f"syn{i:04d}",
                "split": split,
                "utterance_ids": [f"syn{i:04d}_u{j:03d}" for j in range(n)],
                "speakers": ["A" if j % 2 == 0 else "B" for j in range(n)],
            }
        )
    y = np.asarray(labels, dtype=np.int64)
    features, present = {}, {}
    for m, d in dims.items():
        # float32 throughout and in place: an IEMOCAP-sized set stays ~70 MB, with no float64 copy.
        x = rng.standard_normal((len(y), d), dtype=np.float32)
        x += np.float32(signal.get(m, 0.0) * np.sqrt(d)) * class_means[m][y]
        rate = (missing_rate or {}).get(m, 0.0)
        present[m] = rng.random(len(y)) >= rate
        x[~present[m]] = 0.0
        features[m] = x
    source = {
        GENERATED_KEY: "synthetic",
        "description": f"synthetic features: Gaussian noise with a planted class signal (seed {seed})",
        "seed": seed,
    }
    return from_arrays(
        dialogues, features, y, label_names, present=present, source=json.dumps(source)
    )


def _dialogue_lengths(rng: np.random.Generator, n: int, total: int) -> list[int]:
    """n positive lengths summing exactly to total, spread like real dialogues (x0.5 .. x1.5)."""
    raw = rng.uniform(0.5, 1.5, size=n)
    lengths = np.maximum(1, np.floor(raw / raw.sum() * total)).astype(int)
    for k in range(total - lengths.sum()):
        lengths[k % n] += 1
    return lengths.tolist()
