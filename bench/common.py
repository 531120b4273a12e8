"""Helpers the benchmark scripts share."""

from __future__ import annotations

import numpy as np

NAMES = {"t": "text", "a": "audio", "v": "visual"}


def mean_sd(values, scale: float = 100.0) -> str:
    """'mean ± sample std' (ddof=1); 'n/a' for the std of a single value."""
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 0:
        return "-"
    sd = f"{v.std(ddof=1):.2f}" if len(v) > 1 else "n/a"
    return f"{v.mean():.2f} ± {sd}"
