"""Prefect on PostgreSQL with two workers: a real cluster, server, pool and workers.

scripts/postgres.sh starts a throwaway PostgreSQL cluster on 127.0.0.1 (a free port, password
login); scripts/prefect-up.sh starts the Prefect server on it (ERC_PREFECT_DB_URL) with two process
workers on the erc-process pool (ERC_WORKERS=2, at most three runs each) and deploys prefect.yaml.
Then extract-and-train/local runs on a tiny demo set and grid/local trains four seeds from its
featureset. Checked: every run completed with sane metrics in its own folder, the server's rows
are in PostgreSQL, the seeds ran on both workers and at overlapping times. Everything is stopped at
the end (also when a test fails) and checked to be gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from glob import glob
from pathlib import Path

import pytest
from _stack import PARAMS, ROOT, alive, deployment_run, free_port, ours, running_stack, stack_env

SEEDS = [0, 1, 2, 3]


def _postgres_missing() -> str:
    """Why this machine cannot run the cluster ('' when it can)."""
    if not (shutil.which("initdb") or glob("/usr/lib/postgresql/*/bin/initdb")):
        return "no PostgreSQL binaries (initdb): install Debian's postgresql package"
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode:
        return "running as root without a 'postgres' user to own the cluster"
    return ""


MISSING = _postgres_missing()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(MISSING), reason=MISSING)]


def _sql(url: str, query: str) -> list[dict]:
    """Rows of ``query`` on the cluster, read with asyncpg (the driver the Prefect server uses)."""
    import asyncpg

    async def fetch():
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [dict(r) for r in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _postmaster_pid(pg_dir: str) -> int | None:
    pidfile = Path(pg_dir) / "data" / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.is_file() else None


@pytest.fixture(scope="module")
def postgres():
    up = subprocess.run(
        [str(ROOT / "scripts" / "postgres.sh"), "start"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    settings = dict(
        line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines() if "=" in line
    )
    pid = _postmaster_pid(settings["ERC_PG_DIR"])
    try:
        yield {**settings, "pid": pid}
    finally:
        subprocess.run(
            [str(ROOT / "scripts" / "postgres.sh"), "stop", settings["ERC_PG_DIR"]],
            capture_output=True,
            timeout=120,
        )
        if pid and alive(pid):  # pg_ctl could not stop it: end it (it is our postmaster)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def stack(postgres, tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-pg-home")
    env = stack_env(
        home,
        free_port(),
        ERC_PREFECT_DB_URL=postgres["ERC_PREFECT_DB_URL"],
        ERC_WORKERS="2",
        ERC_WORKER_LIMIT="3",  # 4 seeds + the grid run in one wave; no worker takes all
        PREFECT_WORKER_QUERY_SECONDS="2",  # workers look for runs every 2 s (default 10)
        OMP_NUM_THREADS="1",  # 4 tiny trainings share 2 cores: threads would only contend
    )
    with running_stack(env) as running:
        yield {**running, "db": postgres}


def test_server_keeps_its_state_in_postgres(stack):
    url = stack["db"]["ERC_PREFECT_DB_URL"]
    assert "database: postgresql+asyncpg://erc@127.0.0.1:" in stack["up"]  # password not shown
    tables = {
        r["table_name"] for r in _sql(url, "select table_name from information_schema.tables")
    }
    assert {"flow_run", "deployment", "work_pool", "worker", "log"} <= tables
    deployments = _sql(
        url, "select d.name, f.name as flow from deployment d join flow f on f.id = d.flow_id"
    )
    assert {("local", "extract-and-train"), ("local", "grid"), ("gpu", "train")} <= {
        (d["name"], d["flow"]) for d in deployments
    }
    workers = _sql(
        url,
        "select w.name from worker w join work_pool p on p.id = w.work_pool_id where p.name = 'erc-process'",
    )
    assert len({w["name"] for w in workers}) == 2, workers
    assert not list(stack["home"].glob("*.db"))  # no SQLite database beside it


def test_extract_and_train_then_a_grid_of_seeds_on_both_workers(stack, tmp_path_factory):
    out = tmp_path_factory.mktemp("pg-runs") / "demo"
    deployment_run(stack, "extract-and-train/local", {**PARAMS, "out_dir": str(out)})
    first = json.loads((out / "summary.json").read_text())
    assert set(first["stages"].values()) == {"ran"}, first["stages"]
    [row] = first["metrics"]
    [metrics_json] = [Path(p) for p in first["paths"].values() if Path(p).name == "metrics.json"]
    assert row["accuracy"] == pytest.approx(json.loads(metrics_json.read_text())["accuracy"])

    grid_params = {k: PARAMS[k] for k in ("preset", "modalities", "model_preset", "overrides")}
    t0 = time.perf_counter()
    report = deployment_run(
        stack, "grid/local", {**grid_params, "seeds": SEEDS, "out_dir": str(out)}
    )
    grid_seconds = time.perf_counter() - t0
    summary = json.loads((out / "grid" / "summary.json").read_text())
    rows = summary["seeds"]
    assert [r["seed"] for r in rows] == SEEDS and {r["state"] for r in rows} == {"Completed"}
    assert summary["featureset_dir"] in first["paths"].values()
    for r in rows:
        assert Path(r["checkpoint_dir"]).is_relative_to(out / "grid" / f"seed{r['seed']}")
        assert (Path(r["checkpoint_dir"]) / "model.safetensors").is_file()
        own = json.loads((Path(r["checkpoint_dir"]).parent / "test" / "metrics.json").read_text())
        assert r["metrics"]["weighted_f1"] == pytest.approx(own["weighted_f1"])
    assert len({r["checkpoint_dir"] for r in rows}) == len(SEEDS)
    # Seed 0 of the grid trains the same featureset with the same settings as extract-and-train's
    # seed 0, on another worker: CPU training is deterministic, so its test scores are the same.
    [seed0] = [r for r in rows if r["seed"] == 0]
    for name in ("accuracy", "weighted_f1"):
        assert seed0["metrics"][name] == pytest.approx(row[name], abs=1e-6), (seed0, row)
    spread = summary["spread"]  # the row `erc grid` tables: percent, rounded to 0.01
    values = [r["metrics"]["weighted_f1"] for r in rows]
    assert spread["seeds"] == len(SEEDS)
    assert spread["wf1_mean"] == pytest.approx(100 * sum(values) / len(values), abs=0.006)

    # The server's own record, read from PostgreSQL: which worker ran each seed, and when.
    runs = _sql(
        stack["db"]["ERC_PREFECT_DB_URL"],
        "select name, state_type, labels->>'prefect.worker.name' as worker, start_time, end_time "
        "from flow_run where name like 'grid-seed%' order by name",
    )
    assert [r["name"] for r in runs] == [f"grid-seed{s}" for s in SEEDS]
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
    assert {r["worker"] for r in runs} == {r["worker"] for r in rows}  # the summary says the same
    assert len({r["worker"] for r in runs}) == 2, report  # both workers trained seeds
    overlaps = [
        (a["name"], b["name"])
        for a in runs
        for b in runs
        if a["worker"] < b["worker"]
        and a["start_time"] < b["end_time"]
        and b["start_time"] < a["end_time"]
    ]
    assert overlaps, runs  # ... at the same time
    print(f"grid of {len(SEEDS)} seeds on 2 workers: {grid_seconds:.1f} s")


def test_everything_stops(stack):
    down = subprocess.run(
        [str(ROOT / "scripts" / "prefect-down.sh")],
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    for what in ("worker: stopped", "worker 2: stopped", "server: stopped"):
        assert what in down.stdout, down.stdout
    assert not any(alive(pid) and ours(pid) for pid in stack["pids"])
    assert not list(stack["home"].glob("*.pid"))

    pg_dir, pg_pid = stack["db"]["ERC_PG_DIR"], stack["db"]["pid"]
    stop = subprocess.run(
        [str(ROOT / "scripts" / "postgres.sh"), "stop", pg_dir],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stop.returncode == 0, stop.stderr
    assert pg_pid and not alive(pg_pid) and not Path(pg_dir).exists()
    for port in (stack["env"]["ERC_PREFECT_PORT"], stack["db"]["ERC_PG_PORT"]):
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):  # nothing listens
            s.connect(("127.0.0.1", int(port)))
