"""The extract flow on a real Dask cluster (separate processes), with a worker killed mid-run.

    a Prefect server, `dask scheduler` and two `dask worker --no-nanny --nthreads 1` processes,
    all on 127.0.0.1 at free ports, in a temporary PREFECT_HOME
      -> `extract(task_runner="dask", dask_address=...)` on the demo set, several shards, one store
      -> once worker 1 has stored part of a shard (its progress log says so): SIGKILL worker 1
      -> the scheduler hands its shard to worker 2; the run completes
      -> the FeatureSet equals a single-process run's (task_runner="default", own store)

Byte-identical needs the same shards in the reference: extractors run in batches, and a padded
batch of other utterances rounds differently (measured against a 1-shard run: audio 6e-8, visual
6e-6 apart, text equal). So the reference runs the same shards one after another in one process.

Why a Prefect server: a task run on a Dask worker reaches the Prefect API through the worker's own
settings. Without PREFECT_API_URL every worker process starts its own temporary server (20-40 s
each on 2 cores, and its task runs land in a database the flow's user never sees; on one machine
they fight over the same SQLite file: "database is locked"). With a server, the flow process and
the workers all report to it, and the test reads the shards' task runs back from it.

Why --no-nanny: a nanny restarts a killed worker process, and the point is that the work moves to
the OTHER worker. Every process is stopped at the end, even when an assertion fails.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _stack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~3-5 min on 2 shared cores

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PRESET, MODALITIES = "tiny", "tav"  # random-init debug models: seconds per shard, no downloads
DEMO = (4, 4)  # dialogues x utterances: 16 utterances, 4 shards of one dialogue each
SHARDS = 4

FLOW = """
import json, sys
from flows.extract import extract
kw = json.loads(sys.argv[1])
r = extract(**kw)
print("RESULT " + json.dumps({k: r[k] for k in ("featureset_dir", "failed", "counts", "shards")}))
"""


class Processes:
    """Background processes, each in its own session, each with a log file; stop() ends them all."""

    def __init__(self, logs: Path, env: dict[str, str]):
        self.logs, self.env, self.procs = logs, env, {}

    def start(self, name: str, *cmd: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        p = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip
        self.procs[name] = (p, log)
        return p

    def kill(self, name: str) -> None:
        p, _ = self.procs[name]
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)

    def tail(self, name: str, n: int = 40) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return f"--- {name}\n" + "\n".join(text.splitlines()[-n:])

    def stop(self) -> None:
        for p, _ in self.procs.values():  # SIGTERM all first: they shut down in parallel
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p, log in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
            log.close()


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(scheduler address, Processes, env): a Prefect server, a scheduler and two workers."""
    pytest.importorskip("prefect_dask")  # the optional extra `dask` (make install has it)
    from distributed import Client

    tmp = tmp_path_factory.mktemp("dask-cluster")
    api_port, sched_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",  # two workers share 2 cores: no OpenMP spin-waits
    }
    procs = Processes(tmp, env)
    address = f"tcp://127.0.0.1:{sched_port}"
    try:
        server = procs.start(
            "server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
            "--port", str(api_port),
        )  # fmt: skip
        procs.start(
            "scheduler", str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
            "--port", str(sched_port), "--no-dashboard",
        )  # fmt: skip
        for name in ("worker1", "worker2"):
            procs.start(
                name, str(BIN / "dask"), "worker", address, "--name", name, "--nthreads", "1",
                "--no-nanny", "--host", "127.0.0.1", "--no-dashboard",
                "--local-directory", str(tmp / name),
            )  # fmt: skip
        _wait_http(f"{api}/health", server, timeout=180)
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, procs, env
    except Exception:
        print("\n".join(procs.tail(n) for n in procs.procs))
        raise
    finally:
        procs.stop()


def _run_flow(env: dict[str, str], log: Path, **kwargs) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 (the child holds it; closed when the process ends)
    return subprocess.Popen(
        [sys.executable, "-c", FLOW, json.dumps(kwargs)], stdout=out, stderr=subprocess.STDOUT,
        env=env, cwd=ROOT, start_new_session=True,
    )  # fmt: skip


def _result(proc: subprocess.Popen, log: Path, timeout: float) -> dict:
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    return json.loads(text.split("RESULT ", 1)[1].splitlines()[0])


def _entries(store: Path, utterances: list[str] | None = None) -> int:
    """Entry files in the store (of these utterances only, when given). Read from the files: with
    a remote cluster the workers write entry files only and the flow indexes them at the end."""
    from pipeline.features.store import DamagedEntryError, check

    wanted = set(utterances or [])
    n = 0
    for path in (store / "objects").glob("*/*.safetensors"):
        try:
            prov = check(path).provenance
        except (FileNotFoundError, DamagedEntryError):  # replaced meanwhile
            continue
        refs = set(prov.get("refs") or [prov.get("utterance_id")])
        n += not wanted or bool(refs & wanted)
    return n


def _utterances(out_dir: Path, shard: str) -> list[str]:
    """The utterance ids of a shard, from the shard manifest the flow wrote."""
    (path,) = out_dir.glob(f"shards/*/{shard}.csv")
    with open(path, newline="") as fh:
        return [row["utterance_id"] for row in csv.DictReader(fh)]


SHARD_LOG = re.compile(r"extract (shard-\d+-of-\d+): (\d+)/(\d+) entries")


def _shards(log: Path) -> tuple[set[str], set[str]]:
    """From a worker's log: (shards it stored part of and has not finished, shards it finished)."""
    partial, finished = set(), set()
    text = log.read_text(errors="replace") if log.is_file() else ""
    for shard, done, total in SHARD_LOG.findall(text):
        (finished if done == total else partial).add(shard)
    return partial - finished, finished


def _task_runs(api: str, prefix: str) -> list[dict]:
    """Every task run the server knows whose name starts with ``prefix`` (REST: no client state)."""
    req = urllib.request.Request(
        f"{api}/task_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return [t for t in json.load(r) if t["name"].startswith(prefix)]


def test_worker_killed_mid_run_its_shard_runs_on_the_other(cluster, tmp_path):
    from pipeline.dataset.demo import make_demo_dataset
    from pipeline.features.store import FeatureStore

    address, procs, env = cluster
    manifest = make_demo_dataset(tmp_path / "demo", *DEMO)
    common = dict(manifest=str(manifest), preset=PRESET, modalities=MODALITIES)

    # 1. the reference: one process, the same shards one after another, its own store
    ref_log = tmp_path / "ref.log"
    ref = _result(
        _run_flow(
            env,
            ref_log,
            out_dir=str(tmp_path / "ref"),
            task_runner="default",
            shards=SHARDS,
            **common,
        ),
        ref_log,
        timeout=300,
    )

    # 2. the cluster run; SIGKILL worker 1 while it runs a shard and the store holds an entry
    store = tmp_path / "dask" / "store"
    run_log = tmp_path / "dask.log"
    run = _run_flow(
        env, run_log, out_dir=str(tmp_path / "dask"), task_runner="dask", dask_address=address,
        shards=SHARDS, **common,
    )  # fmt: skip
    # Progress lines are logged as a batch's results arrive, just before they are stored: wait
    # until the store holds some of that shard's entries, so the kill lands between two batches.
    deadline, partial, stored = time.monotonic() + 300, set(), 0
    while time.monotonic() < deadline and run.poll() is None:
        partial = _shards(procs.logs / "worker1.log")[0]  # started, not finished
        if partial:
            stored = _entries(store, _utterances(tmp_path / "dask", min(partial)))
            if stored:
                procs.kill("worker1")
                break
        time.sleep(0.05)
    assert stored, "worker 1 never stored part of a shard:\n" + procs.tail("worker1")
    res = _result(run, run_log, timeout=300)
    (moved,) = partial
    print(f"killed worker 1 in {moved} with {stored} of its entries stored")
    _, finished_on_2 = _shards(procs.logs / "worker2.log")
    assert moved in finished_on_2  # the shard ran again on worker 2 and finished there
    again = next(s for s in res["shards"] if s["shard"] == f"{moved}.csv")
    assert again["from_store"] >= stored  # what worker 1 had stored was reused, not recomputed

    # the run completed with every entry, none failed
    assert res["failed"] == 0 and ref["failed"] == 0
    assert len(res["shards"]) == SHARDS
    n_ref = ref["counts"]["computed"]
    assert sum(s["computed"] + s["from_store"] for s in res["shards"]) == n_ref

    # 3. the FeatureSets: tensors byte for byte; meta.json equal but for the store's path
    a, b = Path(ref["featureset_dir"]), Path(res["featureset_dir"])
    assert (a / "features.safetensors").read_bytes() == (b / "features.safetensors").read_bytes()
    meta_a, meta_b = (json.loads((d / "meta.json").read_text()) for d in (a, b))
    src_a, src_b = json.loads(meta_a.pop("source")), json.loads(meta_b.pop("source"))
    assert src_a.pop("store") != src_b.pop("store")
    # the content digest covers meta.json's source too, so it differs with the store's path; each
    # FeatureSet must still load (its digest checked), and everything else must be equal
    from pipeline.features.featureset import DIGEST_KEY, FeatureSet

    for d in (a, b):
        FeatureSet.load(d)
    assert meta_a.pop(DIGEST_KEY) != meta_b.pop(DIGEST_KEY)
    assert (meta_a, src_a) == (meta_b, src_b)

    # 4. the store: no damage, as many entries as the reference, every entry file indexed. With a
    # dask_address, store_index "auto" is "keeper": the workers never opened index.sqlite (no
    # claims at all, so none of the dead worker's can block a key) and the flow ingested them.
    with FeatureStore(store) as fs, FeatureStore(tmp_path / "ref" / "store") as rs:
        sound, damaged = fs.verify()
        assert damaged == [] and sound == len(fs.entries()) == len(rs.entries())
        assert {e["key"] for e in fs.entries()} == {e["key"] for e in rs.entries()}
        assert fs._db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0

    # 5. the workers reported to the server: every shard's task run (both runs') completed
    runs = _task_runs(env["PREFECT_API_URL"], "extract-shard-")
    assert len(runs) == 2 * SHARDS, [r["name"] for r in runs]
    assert all(r["state_type"] == "COMPLETED" for r in runs)
