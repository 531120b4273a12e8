"""Extraction of the 52 real IEMOCAP clips on a real Dask cluster: one worker vs two.

    uv run python bench/dask_speedup.py [--repeats 2] [--shards 8] [--preset offline]

Starts a Prefect server, a `dask scheduler` and N `dask worker --no-nanny --nthreads 1` processes
on 127.0.0.1 (free ports, a temporary PREFECT_HOME), runs the `extract` flow (in a child process) with
``dask_address`` into a fresh output folder and store, and times the whole flow call (shards,
the shards on the workers, the FeatureSet). Workers are started anew for every run, and they are
ready (registered with the scheduler) before the clock starts; each shard task loads its models on
its worker, which is part of the time, as it is for a user. Runs alternate 1, 2, 1, 2 ... so
that a change of machine load hits both. Prints one JSON line per run, then a markdown row per
worker count: median wall seconds, speed-up over one worker, and the 1-minute load average
(os.getloadavg) at the start and end of that count's runs. ../shared is only read; the temp
folder (logs, stores) is removed after a successful run and kept after a failed one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def wait_http(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


# The flow runs in a child process (bench/ does not import flows/: tests/test_import_direction.py);
# the clock is inside it, around the flow call only.
FLOW = """
import json, sys, time
from flows.extract import extract
kw = json.loads(sys.argv[1])
t0 = time.perf_counter()
r = extract(**kw)
print("RESULT " + json.dumps({"wall_s": time.perf_counter() - t0, "failed": r["failed"],
                              "computed": r["counts"]["computed"]}))
"""


def one_run(address: str, n: int, manifest: Path, work: Path, env: dict, args) -> dict:
    from distributed import Client

    workers = [
        start(
            [
                str(BIN / "dask"),
                "worker",
                address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--local-directory",
                str(work / f"w{i}"),
            ],
            work / f"worker{i}.log",
            env,
        )  # fmt: skip
        for i in range(n)
    ]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(n, timeout=120)
        load = os.getloadavg()[0]
        kw = dict(
            manifest=str(manifest), out_dir=str(work / "out"), preset=args.preset,
            modalities=args.modalities, task_runner="dask", dask_address=address,
            shards=args.shards,
        )  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", FLOW, json.dumps(kw)], env=env, cwd=ROOT,
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode:
            raise SystemExit(f"the flow failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
    finally:
        stop(workers)
    return {
        "workers": n,
        "wall_s": round(r["wall_s"], 1),
        "computed": r["computed"],
        "failed": r["failed"],
        "load_start": round(load, 2),
        "load_end": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--shards", type=int, default=8)  # the flow's default for a remote cluster
    p.add_argument("--preset", default="offline")
    p.add_argument("--modalities", default="tav")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dask-speedup-"))
    api_port, sched_port = free_port(), free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{api_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    address = f"tcp://127.0.0.1:{sched_port}"
    services = [
        start(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(api_port)],
            tmp / "server.log",
            env,
        ),
        start(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(sched_port),
             "--no-dashboard"],
            tmp / "scheduler.log",
            env,
        ),
    ]  # fmt: skip
    try:
        wait_http(f"{env['PREFECT_API_URL']}/health")
        sys.path.insert(0, str(ROOT))
        from bench.extract_speed import clips_manifest

        manifest = clips_manifest(tmp)
        runs = []
        for rep in range(args.repeats):
            for n in (1, 2):
                work = tmp / f"run-{n}w-{rep}"
                work.mkdir()
                runs.append(one_run(address, n, manifest, work, env, args))
                print(json.dumps(runs[-1]), flush=True)
    finally:
        stop(services)
    shutil.rmtree(tmp)  # kept when a run fails: its logs are there
    base = statistics.median(r["wall_s"] for r in runs if r["workers"] == 1)
    print("\n| workers | wall s (median) | runs | speed-up | load 1-min (start-end) |")
    print("|---|---|---|---|---|")
    for n in (1, 2):
        mine = [r for r in runs if r["workers"] == n]
        med = statistics.median(r["wall_s"] for r in mine)
        walls = ", ".join(f"{r['wall_s']}" for r in mine)
        loads = f"{min(r['load_start'] for r in mine)}-{max(r['load_end'] for r in mine)}"
        print(f"| {n} | {med:.1f} | {walls} | {base / med:.2f}x | {loads} |")


if __name__ == "__main__":
    main()
