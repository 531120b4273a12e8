"""A throwaway Prefect stack for the integration tests: scripts/prefect-up.sh on a free port in a
temporary PREFECT_HOME (never the project's .prefect/ or prefect.toml), torn down even when a test
fails, and `prefect deployment run` against it. Shared by the SQLite, PostgreSQL and fault tests;
free_port also by the Dask cluster test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
# extract-and-train/local on a tiny demo set: random-init extractors and model, seconds per stage.
PARAMS = {
    "preset": "tiny",
    "modalities": "ta",
    "model_preset": "tiny",
    "demo_dialogues": 3,
    "demo_utterances": 4,
    "overrides": {"epochs": 2},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ours(pid: int) -> bool:
    """Still our prefect process (not a reused pid)?"""
    try:
        return b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def logs(home: Path) -> str:
    """The last 40 lines of every log of the stack in ``home``, for assertion messages."""
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
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{logs(home)}"
        yield {"env": env, "home": home, "pids": pids, "up": up.stdout}
    finally:
        subprocess.run(
            [str(ROOT / "scripts" / "prefect-down.sh")], env=env, capture_output=True, timeout=180
        )
        pids += [int(p.read_text()) for p in home.glob("*.pid")]
        for pid in set(pids):  # whatever prefect-down.sh left (it should leave nothing)
            if ours(pid):
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
    report = f"{run.stdout}\n{run.stderr}\n{logs(stack['home'])}"
    assert run.returncode == 0 and "Completed" in run.stdout, report
    return report
