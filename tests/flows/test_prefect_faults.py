"""What a user sees when the Prefect server dies mid-run: prefect-down says so and stops every
process of the stack, and the run that lost its infrastructure ends Crashed, not Running.

A real stack (scripts/prefect-up.sh) in a throwaway PREFECT_HOME; a long extract-and-train run
is started, the server is SIGKILLed while the run is Running, `prefect-down.sh` is run, the stack
is started again on the same database, and the run must turn Crashed (the zombie automation:
scripts/zombie-automation.yaml, heartbeats every 30 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from _stack import PARAMS, PREFECT, ROOT, free_port, logs, running_stack, stack_env

pytestmark = pytest.mark.integration


def _state(api: str, run_id: str) -> str:
    return httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state_type"]


def _wait_for(what, check, timeout: float, report=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(2)
    pytest.fail(f"{what} not within {timeout:.0f} s\n{report()}")


def _stack_processes(home: Path) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if f"PREFECT_HOME={home}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
    return [p for p in found if p != os.getpid()]


def _zombie_state(home: Path, run_id: str) -> dict:
    """What the server's database says of ``run_id``'s heartbeats: the heartbeat events stored and
    whether the zombie automation holds a bucket (the armed proactive trigger) for the run."""
    with contextlib.closing(sqlite3.connect(f"file:{home / 'prefect.db'}?mode=ro", uri=True,
                                            timeout=30)) as con:  # fmt: skip
        resource = f"prefect.flow-run.{run_id}"
        beats = con.execute(
            "SELECT COUNT(*) FROM events WHERE event = 'prefect.flow-run.heartbeat' "
            "AND resource_id = ?",
            (resource,),
        ).fetchone()[0]
        buckets = con.execute(
            "SELECT COUNT(*) FROM automation_bucket WHERE bucketing_key LIKE ?", (f"%{resource}%",)
        ).fetchone()[0]
    return {"heartbeats": beats, "buckets": buckets, "armed": beats > 0 and buckets > 0}


def test_server_killed_mid_run(tmp_path):
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = stack_env(home, free_port())
    api = env["PREFECT_API_URL"]
    params = {**PARAMS, "out_dir": str(tmp_path / "out"), "overrides": {"epochs": 5000}}
    with running_stack(env) as stack:
        assert "automation: erc: crash zombie flow runs (created)" in stack["up"]
        cmd = [PREFECT, "deployment", "run", "extract-and-train/local"]
        for k, v in params.items():
            cmd += ["--param", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
        started = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=300)  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
        report = lambda: logs(home)  # noqa: E731
        _wait_for("the run Running", lambda: _state(api, run_id) == "RUNNING", 600, report)
        # The automation can only end a run whose heartbeat the server has seen: wait until the
        # server's database holds the trigger's bucket for this run (a fixed sleep was not enough
        # under load: the first heartbeat comes 30 s in, then goes through the event pipeline).
        db = lambda: _zombie_state(home, run_id)  # noqa: E731
        _wait_for("the run's heartbeat seen by the automation", lambda: db()["armed"], 300,
                  lambda: f"{db()}\n{report()}")  # fmt: skip

        server = int((home / "erc-server.pid").read_text())
        os.killpg(server, signal.SIGKILL)  # the server dies; the worker and the run do not know
        time.sleep(5)
        down = subprocess.run([str(ROOT / "scripts" / "prefect-down.sh")], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"server: was not running: pid {server} had exited" in down.stdout, down.stdout
        assert "flow runs: stopped" in down.stdout, down.stdout
        assert _stack_processes(home) == [], down.stdout  # nothing of the stack left running

    with running_stack(env) as stack:  # the same database, started again
        assert "automation: erc: crash zombie flow runs (exists)" in stack["up"]
        # Before, the run showed Running for good; the zombie automation now ends it.
        _wait_for("the dead run Crashed", lambda: _state(api, run_id) == "CRASHED", 300, report)
        state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
        assert "no heartbeat for 90 s" in state["message"], state
