"""The `grid` flow: one training run per seed, each a flow run of a train deployment, all at once.

extract-and-train trains its seeds one after the other in one process. `grid` instead submits one
run of a deployment (default train/local) per seed and waits for them all, so every worker of that
deployment's pool trains seeds at the same time: two workers, two seeds at a time. It then gathers
each seed's checkpoint and test metrics, with the worker that ran it, into <out>/grid/summary.json
and the erc-grid table artifact, with the mean and sample standard deviation over seeds (the
summary of `erc grid`, pipeline/training/grid.py).

    prefect deployment run extract-and-train/local            # once: the featureset
    prefect deployment run grid/local --param seeds='[0,1,2,3]'

Seed s trains into <out>/grid/seed<s>/ (its own folder: runs on different workers never write the
same file). The workers must see the same files as the grid's run, at the same paths: one machine,
or a shared volume mounted at the same place. How many runs a worker takes at once is its own
limit (`prefect worker start --limit`, ERC_WORKER_LIMIT in scripts/prefect-up.sh); without one, a
single worker may take every seed. Runs still going at ``timeout_s`` are reported as such; the grid
run then fails, as it does when any seed's run does not complete.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger
from prefect.deployments import run_deployment
from prefect.exceptions import FlowRunWaitTimeout
from prefect.flow_runs import wait_for_flow_run
from prefect.utilities.asyncutils import run_coro_as_sync

from flows import artifacts
from flows.params import (
    DEFAULT_MODEL_PRESET,
    DEFAULT_OUT,
    Layout,
    Modalities,
    ModelPreset,
    Preset,
    check_choice,
    check_dir,
    check_seeds,
    check_training,
)
from flows.train import LATEST, find_featureset
from pipeline.files import atomic_write_text
from pipeline.training.grid import summarise

DEPLOYMENTS = ("train/local", "train/gpu")  # prefect.yaml: the train flow on the two pools
VARIANT = "ada2i"  # the variant column of pipeline/training/grid.py's table: no baseline here


def seed_dir(layout: Layout, seed: int) -> Path:
    return layout.out / "grid" / f"seed{seed}"


def wait_all(flow_run_ids: list, timeout_s: float) -> dict:
    """Wait (Prefect's wait_for_flow_run: state events, no polling) until every flow run is in a
    final state or ``timeout_s`` has passed -> {id: FlowRun}, the last state of each."""

    async def wait_one(client, run_id):
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                run = await wait_for_flow_run(run_id, timeout=max(int(left), 1), client=client)
            except FlowRunWaitTimeout:
                return await client.read_flow_run(run_id)  # still going: reported as such
            # Seen once under load: the wait came back with the run still Running. Wait on until
            # it is final or the time is up, so a live run is never reported as unfinished.
            if (run.state and run.state.is_final()) or time.monotonic() >= deadline:
                return run
            await asyncio.sleep(1)

    async def wait_every():
        async with get_client() as client:
            runs = await asyncio.gather(*(wait_one(client, r) for r in flow_run_ids))
        return dict(zip(flow_run_ids, runs, strict=True))

    return run_coro_as_sync(wait_every())


def seed_row(seed: int, run: Any, layout: Layout) -> dict[str, Any]:
    """One seed's line of the summary: its flow run, worker, checkpoint and test metrics (from the
    train/latest.json the seed's train run wrote)."""
    state = run.state.name if run.state else "Unknown"
    row: dict[str, Any] = {
        "seed": seed,
        "state": state,
        "flow_run": run.name,
        "flow_run_id": str(run.id),
        "worker": (run.labels or {}).get("prefect.worker.name", ""),
        "start_time": run.start_time.isoformat() if run.start_time else None,
        "end_time": run.end_time.isoformat() if run.end_time else None,
    }
    latest = seed_dir(layout, seed) / "train" / LATEST
    if state == "Completed" and latest.is_file():
        [trained] = json.loads(latest.read_text())  # one seed per run
        row["checkpoint_dir"] = trained["checkpoint_dir"]
        row["metrics"] = {
            k: v for k, v in trained.get("metrics", {}).items() if isinstance(v, int | float)
        }
    return row


def spread(rows: list[dict[str, Any]], modalities: str) -> dict[str, Any]:
    """The row `erc grid` writes for these seeds (pipeline.training.grid.summarise): over the seeds
    that completed, test W-F1, macro F1 and accuracy in %, mean and sample std (None for one
    seed); {} when none completed."""
    runs = [
        {**r["metrics"], "variant": VARIANT, "subset": modalities, "seed": r["seed"]}
        for r in rows
        if "metrics" in r
    ]
    return summarise(runs)[0] if runs else {}


@flow(name="grid", log_prints=True)
def grid(
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    featureset_dir: str | None = None,
    out_dir: str = DEFAULT_OUT,
    preset: Preset = "offline",
    model_preset: ModelPreset = DEFAULT_MODEL_PRESET,
    modalities: Modalities = "tav",
    overrides: dict[str, Any] | None = None,
    deployment: str = "train/local",
    timeout_s: float = 12 * 3600,
    refresh: bool = False,
) -> dict[str, Any]:
    """Train one seed per flow run of ``deployment``, all submitted at once; gather the results.

    Args:
        seeds: one run of ``deployment`` per seed, e.g. [0, 1, 2, 3].
        featureset_dir: FeatureSet folder; default: the newest one the extract flow wrote into
            out_dir for this preset and modalities (run extract-and-train or extract first).
        out_dir: output folder; seed s trains into <out_dir>/grid/seed<s>/.
        preset: extractor preset of the featureset (only to find the default featureset_dir).
        model_preset, modalities, overrides, refresh: as in the train flow, for every seed.
        deployment: "train/local" (the process pool) or "train/gpu" (the GPU pool).
        timeout_s: how long to wait for all runs, in seconds.
    Returns:
        The grid summary (also <out_dir>/grid/summary.json): one row per seed (state, flow run,
        worker, start and end time, checkpoint_dir, test metrics) and "spread": mean and standard
        deviation of the test metrics over seeds (pipeline.training.grid.summarise's row).
    """
    # Every parameter is checked before any run is submitted.
    check_choice("deployment", deployment, DEPLOYMENTS)
    seeds = check_seeds(seeds)
    overrides = check_training(model_preset, modalities, overrides)
    check_dir("featureset_dir", featureset_dir)
    if not timeout_s > 0:
        raise ValueError(f"timeout_s {timeout_s!r}: expected a number of seconds > 0")
    logger = get_run_logger()
    layout = Layout.at(out_dir)
    featureset = str(
        Path(featureset_dir).expanduser().resolve()
        if featureset_dir
        else find_featureset(layout, preset, modalities)
    )

    # Step 1: one flow run per seed, created at once (timeout=0: do not wait here).
    submitted = {}
    for seed in seeds:
        run = run_deployment(
            deployment,
            parameters={
                "featureset_dir": featureset,
                "out_dir": str(seed_dir(layout, seed)),
                "preset": preset,
                "model_preset": model_preset,
                "modalities": modalities,
                "seeds": [seed],
                "overrides": overrides,
                "refresh": refresh,
            },
            flow_run_name=f"grid-seed{seed}",
            timeout=0,
        )
        submitted[seed] = run.id
        logger.info("seed %d: flow run %s of %s", seed, run.name, deployment)

    # Step 2: wait for all of them, then one row per seed.
    finished = wait_all(list(submitted.values()), timeout_s)
    rows = [seed_row(seed, finished[run_id], layout) for seed, run_id in submitted.items()]
    summary = {
        "deployment": deployment,
        "featureset_dir": featureset,
        "out_dir": str(layout.out),
        "seeds": rows,
        "spread": spread(rows, modalities),
    }
    (layout.out / "grid").mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.out / "grid" / "summary.json", json.dumps(summary, indent=2))
    artifacts.table(
        "erc-grid",
        [{k: r[k] for k in ("seed", "state", "worker")} | r.get("metrics", {}) for r in rows],
        "Grid: one training run per seed, with the worker that ran it",
    )
    for r in rows:
        print(f"seed {r['seed']} {r['state']} on {r['worker'] or '?'}: {r.get('metrics', {})}")
    print(f"spread over seeds: {summary['spread']}")

    failed = [f"seed {r['seed']}: {r['state']}" for r in rows if r["state"] != "Completed"]
    if failed:
        raise RuntimeError(
            f"grid: {len(failed)} of {len(rows)} runs did not complete ({'; '.join(failed)}); "
            f"see {layout.out / 'grid' / 'summary.json'}"
        )
    return summary
