"""`make demo`'s closing lines report the wait the user had, not only the flow's own time."""

from __future__ import annotations

from flows.demo import report


def test_the_demo_reports_the_whole_wall_time():
    summary = {
        "seconds": 8.4,  # a rerun: every stage cached
        "out_dir": "/x/runs/demo",
        "stages": {"manifest": "cached", "train": "cached"},
        "failed_utterances": 0,
        "metrics": [{"run": "r0", "accuracy": 0.875}],
        "paths": {"best checkpoint (seed 0)": "/x/runs/demo/best"},
    }
    text = report(summary, 94.04)
    assert "Done in 94.0 s (the flow 8.4 s, Prefect's temporary API and imports 85.6 s)" in text
    assert "stages: manifest cached, train cached" in text
    assert "metrics r0: accuracy=0.8750" in text
