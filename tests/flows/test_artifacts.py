"""What the Prefect UI shows, as markdown: the parent run's result, images, links, counts.

The functions under test build the artifacts' text; tests/flows/test_flows.py checks they reach the
server on a real run.
"""

from __future__ import annotations

import json
import re

import matplotlib
import numpy as np
import pandas as pd

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


def test_prediction_page_names_the_model_and_shows_the_scores(tmp_path):
    """A labelled predict run's artifact: the demo caveat first, the scores (as scikit-learn
    computes them from the predictions), the confusion matrix embedded, one row per dialogue."""
    from sklearn.metrics import accuracy_score, f1_score

    from pipeline.inference.predict_outputs import Provenance, score_predictions
    from pipeline.training.evaluate import plot_confusion

    labels = ["ang", "hap", "neu", "sad"]
    d1 = pd.DataFrame(
        {"label": ["hap", "sad", "neu", "fru"], "predicted": ["hap", "neu", "neu", "neu"]}
    )
    d2 = pd.DataFrame({"label": ["ang", ""], "predicted": ["ang", "sad"]})
    scores = score_predictions([("d1", "dialogue", "dialogues/d1.report.html", d1),
                                ("d2", "dialogue", "dialogues/d2.report.html", d2)], labels)  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps(scores))
    plot_confusion(np.asarray(scores["confusion"]), labels, tmp_path / "confusion.png", "run: x")
    (tmp_path / "summary.md").write_text("# Predictions\n\n## Model\n\nold\n\n## Videos\n\n| a |\n")
    prov = Provenance(str(tmp_path / "ck"), "ab" * 32, 3, "ta", labels,
                      {"description": "demo features", "generated": "demo", "n_dialogues": 3,
                       "n_utterances": 15, "n_labelled": 15, "label_names": labels})  # fmt: skip
    result = {
        "model": prov.to_dict(),
        "metrics_json": str(tmp_path / "metrics.json"),
        "confusion_png": str(tmp_path / "confusion.png"),
        "summary_md": str(tmp_path / "summary.md"),
    }
    md = artifacts.predictions_markdown(result, {"metrics_json": result["metrics_json"]})
    assert md.index("**Warning: trained on generated demo data") < md.index("## Scores")
    assert "`" + "ab" * 32 + "`" in md and "demo features; 3 dialogues, 15 utterances" in md
    true, pred = ["hap", "sad", "neu", "ang"], ["hap", "neu", "neu", "ang"]
    acc, wf1 = accuracy_score(true, pred), f1_score(true, pred, labels=labels, average="weighted")
    assert f"accuracy **{acc:.3f}**, weighted F1 **{wf1:.3f}**" in md and "1 unlabelled" in md
    assert "not scored): fru (1)" in md
    assert (
        len(re.findall(r"!\[confusion matrix\]\(data:image/png;base64,[A-Za-z0-9+/=]+\)", md)) == 1
    )
    assert "| d1 | 4 | 3 | 0.667 |" in md and "| d2 | 2 | 1 | 1.000 | 1.000 |" in md
    assert "## Videos" in md and "\nold\n" not in md  # summary.md's own model section replaced
    assert re.search(r"- metrics_json: \[`/[^`]+metrics\.json`\]\(file://", md)
    # an unlabelled run from an older checkpoint: no scores, the model not recorded
    bare = artifacts.predictions_markdown({"summary_md": result["summary_md"]}, {})
    assert "## Scores" not in bare and "not recorded" in bare
