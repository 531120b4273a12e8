"""Two concurrent `extract_features` runs on one store, with and without key claims.

    uv run python bench/concurrent_extract.py [--dialogues 3] [--utterances 6] [--out DIR]

Generates the demo set (pipeline/dataset/demo.py: real mp4 with a face and voice), then for each mode
(a single run; two at once without claims; two at once with claims) extracts it into a fresh
store with the offline preset and reports wall time and entries computed per process.
Wall time runs from the moment all workers have built their models (they then start together).
"Without claims" replaces FeatureStore.claim in the worker with one that claims nothing, i.e.
the behaviour before claims existed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import sys, time
from pathlib import Path
from pipeline.features.store import FeatureStore
if sys.argv[3] == "off":
    FeatureStore.claim = lambda self, keys: {}
from extractors.presets import build_extractors
from pipeline.features.extract import extract_features
exs = build_extractors("offline", "tav")
Path(sys.argv[4]).touch()  # ready: models built; start together (model loading is not compared)
while not Path(sys.argv[5]).exists():
    time.sleep(0.05)
import resource
r0 = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = r0.ru_utime + r0.ru_stime
t0 = time.perf_counter()
s = extract_features(sys.argv[1], sys.argv[2], extractors=exs, progress=False)
import resource
r = resource.getrusage(resource.RUSAGE_SELF)
print("RESULT", s.done, s.cached, s.failed, round(time.perf_counter() - t0, 2),
      round(r.ru_utime + r.ru_stime - cpu0, 1), flush=True)
"""


def run(manifest: Path, store: Path, n: int, claims: str) -> dict:
    if store.exists():
        shutil.rmtree(store)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sync = Path(tempfile.mkdtemp(prefix="sync-"))
    go = sync / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(manifest),
                str(store),
                claims,
                str(sync / f"r{i}"),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(n)
    ]
    while not all((sync / f"r{i}").exists() for i in range(n)):
        if any(p.poll() is not None for p in procs):
            break  # a worker died before it was ready: its error is reported below
        time.sleep(0.05)
    t0 = time.perf_counter()
    go.touch()
    per = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            raise SystemExit(err)
        done, cached, failed, secs, cpu = out.split("RESULT")[1].split()
        per.append(
            {
                "done": int(done),
                "cached": int(cached),
                "failed": int(failed),
                "s": float(secs),
                "cpu_s": float(cpu),
            }
        )
    return {
        "processes": n,
        "claims": claims,
        "wall_s": round(time.perf_counter() - t0, 1),
        "per_process": per,
    }


def main() -> None:
    from pipeline.dataset.demo import make_demo_dataset

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dialogues", type=int, default=3)
    p.add_argument("--utterances", type=int, default=6)
    p.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="bench-claims-")))
    args = p.parse_args()
    manifest = make_demo_dataset(args.out / "demo", args.dialogues, args.utterances)
    for n, claims in ((1, "on"), (2, "off"), (2, "on")):
        print(json.dumps(run(manifest, args.out / "store", n, claims)), flush=True)


if __name__ == "__main__":
    main()
