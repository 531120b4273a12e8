"""A real Prefect server and worker, started by scripts/prefect-up.sh on a free port.

Deploys prefect.yaml, runs `prefect deployment run extract-and-train/local` twice on a tiny demo set
(the second run must come from the caches), then stops everything with scripts/prefect-down.sh.
The stack lives in a temporary PREFECT_HOME and never touches the project's .prefect/ or writes
prefect.toml; it is torn down even when a test fails.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from _stack import (
    PARAMS,
    PREFECT,
    ROOT,
    alive,
    deployment_run,
    free_port,
    ours,
    running_stack,
    stack_env,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    with running_stack(stack_env(home, free_port())) as running:
        yield running


def _run_deployment(stack, out: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    report = deployment_run(stack, "extract-and-train/local", {**PARAMS, "out_dir": str(out)}, 900)
    seconds = time.perf_counter() - t0
    assert (out / "summary.json").is_file(), report
    return json.loads((out / "summary.json").read_text()), seconds


def test_deployments_exist(stack):
    env = {**stack["env"], "COLUMNS": "250"}  # one table row per line
    ls = subprocess.run(
        [PREFECT, "deployment", "ls"], env=env, capture_output=True, text=True, timeout=120
    )
    assert ls.returncode == 0, ls.stderr
    for name in ("extract-and-train/local", "extract/local", "train/local", "evaluate/local"):
        assert name in ls.stdout, ls.stdout
    assert "predict/local" in ls.stdout and "train/gpu" in ls.stdout


def test_deployment_run_end_to_end_then_from_cache(stack, tmp_path_factory):
    out = tmp_path_factory.mktemp("deployed") / "demo"
    first, _ = _run_deployment(stack, out)
    assert set(first["stages"].values()) == {"ran"}, first["stages"]
    assert first["failed_utterances"] == 0
    [row] = first["metrics"]
    [metrics_json] = [Path(p) for p in first["paths"].values() if Path(p).name == "metrics.json"]
    written = json.loads(metrics_json.read_text())  # the evaluation's own file
    assert row["accuracy"] == pytest.approx(written["accuracy"])
    assert row["weighted_f1"] == pytest.approx(written["weighted_f1"])
    assert all(Path(p).exists() for p in first["paths"].values())
    names = {Path(p).name for p in first["paths"].values()}
    assert {"confusion.png", "per_class.csv", "predictions.csv", "metrics.json"} <= names
    assert (Path(first["paths"]["checkpoint seed 0"]) / "model.safetensors").is_file()

    second, _ = _run_deployment(stack, out)
    assert set(second["stages"].values()) == {"cached"}, second["stages"]
    assert second["metrics"] == first["metrics"]  # (no timing comparison: load varies)


def test_prefect_down_stops_worker_and_server(stack):
    env = stack["env"]
    down = subprocess.run(
        [str(ROOT / "scripts" / "prefect-down.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert "worker: stopped" in down.stdout and "server: stopped" in down.stdout
    assert not any(alive(pid) and ours(pid) for pid in stack["pids"])
    assert not list(stack["home"].glob("*.pid"))
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):  # nothing listens any more
        s.connect(("127.0.0.1", int(env["ERC_PREFECT_PORT"])))
