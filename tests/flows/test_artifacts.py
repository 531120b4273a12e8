"""What the Prefect UI shows, as markdown: the parent run's result, images, links, counts.

The functions under test build the artifacts' text; tests/flows/test_flows.py checks they reach the
server on a real run.
"""

from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("prefect")

from flows import artifacts  # noqa: E402
from flows.extract import shard_counts  # noqa: E402


@pytest.fixture()
def outputs(tmp_path):
    """A trained run and its evaluation, as the flows return them, with real PNG files."""
    run = tmp_path / "out" / "train" / "tiny-ta-seed0-abc"
    (run / "plots").mkdir(parents=True)
    ev = tmp_path / "out" / "eval" / "tiny-ta-seed0-abc-test-def"
    ev.mkdir(parents=True)
    for path in (run / "plots" / "training_curves.png", ev / "confusion.png"):
        plt.figure(figsize=(2, 2))
        plt.plot([0, 1])
        plt.savefig(path)
        plt.close()
    metrics = {"accuracy": 0.5, "unimodal": {"t": {"accuracy": 0.25}, "a": {"accuracy": 0.75}}}
    (ev / "metrics.json").write_text(json.dumps(metrics))
    trained = [
        {
            "seed": 0,
            "checkpoint_dir": str(run / "best"),
            "report_paths": {"plots": {"training_curves": str(run / "plots/training_curves.png")}},
        }
    ]
    evaluated = [
        {
            "checkpoint_dir": str(run / "best"),
            "split": "test",
            # no "unimodal" in the report itself: it is read from metrics.json
            "report": {
                "accuracy": 0.5,
                "weighted_f1": 0.4,
                "macro_f1": 0.3,
                "paths": {"metrics": str(ev / "metrics.json"), "confusion_png": str(ev / "confusion.png")},
            },
        }
    ]  # fmt: skip
    summary = {
        "out_dir": str(tmp_path / "out"),
        "seconds": 1.5,
        "stages": {"extract": "cached", "train": "ran"},
        "paths": {"metrics": str(ev / "metrics.json"), "folder with space": str(tmp_path)},
    }
    extracted = {"counts": {"computed": 0, "from_store": 0, "from_cache": 144}, "failed": 0}
    return summary, extracted, trained, evaluated


def test_result_has_metrics_per_seed_images_and_links(outputs):
    md = artifacts.result_markdown(*outputs)
    # the metrics row, unimodal accuracies in modality order
    assert "| run | seed | split | accuracy | W-F1 | macro F1 | t alone | a alone |" in md
    assert "| `tiny-ta-seed0-abc` | 0 | test | 0.500 | 0.400 | 0.300 | 0.250 | 0.750 |" in md
    # both images embedded as markdown images, never as raw URL text
    assert len(re.findall(r"!\[[^\]]+\]\(data:image/png;base64,[A-Za-z0-9+/=]+\)", md)) == 2
    assert "Image URL" not in md
    assert md.count("data:image/png") == 2  # the data appears only inside the image syntax
    # outputs as file:// links whose text is the path
    assert "(file://" in md and "folder%20with%20space" not in md.split("file://")[0]
    assert re.search(r"\[`/[^`]+/metrics\.json`\]\(file:///[^)]+/metrics\.json\)", md)
    # a fully cached run says nothing was computed
    assert "**0** entries computed" in md and "144 served from an earlier run" in md


def test_images_beyond_the_budget_are_linked_not_embedded(outputs, monkeypatch):
    monkeypatch.setattr(artifacts, "MAX_EMBEDDED_BYTES", 1)
    md = artifacts.result_markdown(*outputs)
    assert "data:image" not in md
    assert "training_curves.png`](file://" in md and "confusion.png`](file://" in md


def test_cached_shard_reports_reuse_not_computation():
    raw = {"shard": "s1.csv", "done": 144, "cached": 0, "failed": 0, "failures_path": ""}
    assert shard_counts(raw, cached=True) == {
        "shard": "s1.csv", "status": "cached", "computed": 0, "from_store": 0, "from_cache": 144,
        "failed": 0, "failures_path": "",
    }  # fmt: skip
    ran = shard_counts({**raw, "done": 100, "cached": 44}, cached=False)
    assert (ran["computed"], ran["from_store"], ran["from_cache"]) == (100, 44, 0)


def test_paths_are_a_list_of_links_not_a_table(tmp_path):
    md = artifacts.paths_markdown("Outputs", {"store": str(tmp_path / "a b"), "none": ""})
    assert "|" not in md
    assert f"- store: [`{tmp_path / 'a b'}`](file://" in md and "a%20b)" in md
    assert "none" not in md
