"""A real Prefect server and worker, started by scripts/prefect-up.sh on a free port.

Deploys prefect.yaml, runs `prefect deployment run extract-and-train/local` twice on a tiny demo set
(the second run must come from the caches), then stops everything with scripts/prefect-down.sh.
The stack lives in a temporary PREFECT_HOME and never touches the project's .prefect/ or writes
prefect.toml; it is torn down even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
PARAMS = {
    "preset": "tiny",
    "modalities": "ta",
    "model_preset": "tiny",
    "demo_dialogues": 3,
    "demo_utterances": 4,
    "overrides": {"epochs": 2},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ours(pid: int) -> bool:
    """Still our prefect process (not a reused pid)?"""
    try:
        return b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _logs(home: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:])
        for p in sorted(home.glob("*.log"))
    )


def stack_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a throwaway stack in ``home`` (never the project's .prefect/)."""
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "ERC_PREFECT_PORT": str(port),
        "ERC_PREFECT": PREFECT,
        "ERC_PREFECT_TOML": "0",  # never write prefect.toml into the project here
        "ERC_STOP_WAIT": "10",
        **extra,
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


@contextlib.contextmanager
def running_stack(env: dict[str, str]):
    """scripts/prefect-up.sh with ``env``; yields {"env", "home", "pids", "up"} (up = its stdout).
    Always torn down: prefect-down.sh, then SIGKILL to whatever it left."""
    home = Path(env["PREFECT_HOME"])
    pids = []
    try:
        up = subprocess.run(
            [str(ROOT / "scripts" / "prefect-up.sh")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        pids = [int(p.read_text()) for p in home.glob("*.pid")]
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{_logs(home)}"
        yield {"env": env, "home": home, "pids": pids, "up": up.stdout}
    finally:
        subprocess.run(
            [str(ROOT / "scripts" / "prefect-down.sh")], env=env, capture_output=True, timeout=180
        )
        pids += [int(p.read_text()) for p in home.glob("*.pid")]
        for pid in set(pids):  # whatever prefect-down.sh left (it should leave nothing)
            if _ours(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # prefect-up.sh starts each in its own session


def deployment_run(stack, name: str, params: dict, timeout: int = 600) -> str:
    """`prefect deployment run NAME --watch` with params; asserts it Completed -> its report."""
    cmd = [PREFECT, "deployment", "run", name, "--watch", "--watch-timeout", str(timeout)]
    for k, v in params.items():
        cmd += ["--param", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    run = subprocess.run(
        cmd, cwd=ROOT, env=stack["env"], capture_output=True, text=True, timeout=timeout + 60
    )
    report = f"{run.stdout}\n{run.stderr}\n{_logs(stack['home'])}"
    assert run.returncode == 0 and "Completed" in run.stdout, report
    return report


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    with running_stack(stack_env(home, _free_port())) as running:
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
    assert not any(_alive(pid) and _ours(pid) for pid in stack["pids"])
    assert not list(stack["home"].glob("*.pid"))
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):  # nothing listens any more
        s.connect(("127.0.0.1", int(env["ERC_PREFECT_PORT"])))
