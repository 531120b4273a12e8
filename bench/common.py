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


def diff_ci(values, baseline, scale: float = 100.0) -> str:
    """Difference of means (values - baseline) with its Welch 95% confidence interval over seeds,
    e.g. '+0.46 [-1.92, +2.84]'; '-' when either side has fewer than 2 values. With 3 seeds a side
    the interval is wide: it says how much of a difference the seeds can resolve."""
    from scipy.stats import ttest_ind

    a = np.asarray(values, dtype=float) * scale
    b = np.asarray(baseline, dtype=float) * scale
    if len(a) < 2 or len(b) < 2:
        return "-"
    ci = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return f"{a.mean() - b.mean():+.2f} [{ci.low:+.2f}, {ci.high:+.2f}]"
