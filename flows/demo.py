"""The main job on the embedded default, without a server: ``python -m flows`` (or flows.demo).

Generates the demo conversations into the output folder, extracts features with the offline
extractors, trains Ada2I and evaluates it, all in this process (Prefect starts a temporary local
API for the run). Prints where the metrics, plots and checkpoints are. A second run reuses every
cached stage and takes seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from flows.params import DEFAULT_MODEL_PRESET, DEFAULT_OUT


def cli(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # the wait the user sees, Prefect's start-up included
    parser = argparse.ArgumentParser(
        prog="python -m flows",
        description="Run the extract-and-train flow locally (default: the demo data, offline).",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--manifest", help="a manifest instead of the demo data")
    parser.add_argument("--preset", default="offline", help="extractor preset: offline|paper|tiny")
    parser.add_argument("--model-preset", default=DEFAULT_MODEL_PRESET, help="Ada2I preset")
    parser.add_argument("--modalities", default="tav", help="subset of 'tav'")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--task-runner", default="default", choices=("default", "dask"))
    parser.add_argument("--refresh", action="store_true", help="ignore Prefect's cache")
    args = parser.parse_args(argv)

    # Before prefect is imported: no telemetry, and patience with the temporary local API server,
    # which can take over 20 s (its default limit) to start on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.extract_and_train import extract_and_train

    summary = extract_and_train(
        manifest=args.manifest,
        preset=args.preset,
        model_preset=args.model_preset,
        modalities=args.modalities,
        seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
        out_dir=args.out,
        task_runner=args.task_runner,
        refresh=args.refresh,
    )
    print(report(summary, time.perf_counter() - started))
    return 0


def report(summary: dict, wall_s: float) -> str:
    """The run summary as a few readable lines; wall_s: the whole command's wall time."""
    setup = wall_s - float(summary["seconds"])
    lines = [
        "",
        f"Done in {wall_s:.1f} s (the flow {summary['seconds']} s, Prefect's temporary API "
        f"and imports {setup:.1f} s). Outputs under {summary['out_dir']}",
        "stages: " + ", ".join(f"{k} {v}" for k, v in summary["stages"].items()),
    ]
    if summary["failed_utterances"]:
        lines.append(f"failed utterances: {summary['failed_utterances']} (see the failures report)")
    for row in summary["metrics"]:
        shown = {k: v for k, v in row.items() if isinstance(v, float)}
        lines.append(
            f"metrics {row['run']}: " + ", ".join(f"{k}={v:.4f}" for k, v in shown.items())
        )
    width = max((len(k) for k in summary["paths"]), default=0)
    lines += [f"  {k:<{width}}  {v}" for k, v in summary["paths"].items()]
    lines.append(f"  {'summary':<{width}}  {summary['out_dir']}/summary.json")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(cli())
