"""bench/common.py: the mean ± sample std and the Welch interval the benchmark tables print."""

from __future__ import annotations

import math

from scipy.stats import t as student_t

from bench.common import diff_ci, mean_sd


def test_mean_sd_uses_the_sample_std():
    assert mean_sd([0.60, 0.62, 0.64]) == "62.00 ± 2.00"  # ddof=1; population std would be 1.63
    assert mean_sd([0.5]) == "50.00 ± n/a"


def test_diff_ci_is_the_welch_interval():
    a, b = [63.0, 64.0, 65.0], [62.0, 62.0, 63.0]
    va, vb = 1.0 / 3, (1.0 / 3) / 3  # sample variances over n: 1/3, 1/9
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)  # Welch-Satterthwaite
    half = student_t.ppf(0.975, df) * se
    diff = 64.0 - 62.0 - 1.0 / 3
    assert diff_ci(a, b, scale=1) == f"{diff:+.2f} [{diff - half:+.2f}, {diff + half:+.2f}]"
    assert diff_ci([63.0], b, scale=1) == "-"


def test_ablation_table_gives_each_variant_its_difference_from_concat(tmp_path):
    import json

    from bench.ablation import table

    for variant, wf1s in {"ada2i": [0.64, 0.65], "concat": [0.62, 0.63]}.items():
        for seed, wf1 in enumerate(wf1s):
            run = tmp_path / variant / "ta" / f"seed{seed}"
            (run / "test").mkdir(parents=True)
            unimodal = {"t": {"accuracy": 0.5}, "a": {"accuracy": 0.4}}
            metrics = {"weighted_f1": wf1, "accuracy": wf1, "unimodal": unimodal}
            (run / "test" / "metrics.json").write_text(json.dumps(metrics))
            (run / "history.json").write_text(json.dumps([{"rho": {"t": 1.5, "a": 1.0}}]))
    rows = {r.split(" | ")[1]: r for r in table(tmp_path).splitlines() if r.startswith("| TA")}
    assert set(rows) == {"Ada2I", "concat baseline"}
    assert f"| 64.50 ± 0.71 | {diff_ci([0.64, 0.65], [0.62, 0.63])} |" in rows["Ada2I"]
    assert "| 62.50 ± 0.71 |  |" in rows["concat baseline"]


def test_ablation_dev_table_reads_each_run_at_its_kept_checkpoint(tmp_path):
    """The dev table reports the epoch of best dev W-F1, not the last epoch trained."""
    import json

    from bench.ablation import dev_table

    def epoch(n: int, dev_wf1: float, text_acc: float, rho: float) -> dict:
        unimodal = {"t": {"accuracy": text_acc}, "a": {"accuracy": 0.3}}
        return {
            "epoch": n,
            "dev_wf1": dev_wf1,
            "dev_unimodal": unimodal,
            "rho": {"t": rho, "a": 1.0},
        }

    for variant, best in {"ada2i": 0.66, "concat": 0.60}.items():
        for seed in (0, 1):
            run = tmp_path / variant / "ta" / f"seed{seed}"
            (run / "test").mkdir(parents=True)
            (run / "test" / "metrics.json").write_text("{}")
            history = [
                epoch(1, 0.50, 0.40, 1.2),
                epoch(2, best + (seed - 0.5) * 0.02, 0.55, 1.8),  # seeds 1.41 apart
                epoch(3, 0.58, 0.70, 2.5),
            ]
            (run / "history.json").write_text(json.dumps(history))
    rows = {r.split(" | ")[1]: r for r in dev_table(tmp_path).splitlines() if r.startswith("| TA")}
    assert rows["Ada2I"].startswith("| TA | Ada2I | 2 | 66.00 ± 1.41 | +6.00 [")
    assert (
        "| 2/2 | text 55.00 ± 0.00, audio 30.00 ± 0.00 | text 1.80, audio 1.00 |" in rows["Ada2I"]
    )
    assert rows["concat baseline"].startswith("| TA | concat baseline | 2 | 60.00 ± 1.41 |  |")
