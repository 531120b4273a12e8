"""Training speed on synthetic IEMOCAP-sized features: one JSON line per configuration.

    python -m bench.train_speed                      # ours, 2 threads, 5 timed epochs
    python -m bench.train_speed --config authors     # the authors' encoder sizes, same pipeline
    python -m bench.train_speed --compare --full     # both, each trained to early stop, in subprocesses

Data: 151 dialogues / 7,433 utterances (108/12/31 split), dims t=768 a=512 v=1024, a planted class
signal strongest in text and weakest in visual. Prints s_per_epoch (median), peak_rss_mib (the
process's max RSS), test_wf1 (best-dev checkpoint).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

# Text strongest, visual weakest; weak enough that neither model saturates in a few epochs (class
# means at 4.2 / 2.3 / 1.6 noise standard deviations), so test WF1 can tell the two apart.
BENCH_SIGNAL = {"t": 0.15, "a": 0.1, "v": 0.05}


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(
    config: str, epochs: int, threads: int, seed: int, full: bool, extra_set: dict | None = None
) -> dict:
    import torch

    # What the process holds before any of ours runs: the interpreter and the torch build.
    rss_torch = _rss_mib()

    from model.config import AUTHORS_ENCODERS, CONCAT_BASELINE
    from pipeline.features.importers.synthetic import make_synthetic
    from pipeline.training.train import configs_for, limit_heap_fragmentation, train

    limit_heap_fragmentation()  # before the data is made, so its temporaries are returned too
    torch.set_num_threads(threads)
    fs = make_synthetic(signal=BENCH_SIGNAL, seed=seed)
    extra = {"authors": AUTHORS_ENCODERS, "concat": {**CONCAT_BASELINE, "modulation": False}}.get(
        config, {}
    )
    overrides = {**extra, **(extra_set or {}), "progress": False, "threads": threads, "seed": seed}
    if not full:
        overrides.update(epochs=epochs, patience=epochs)
    model_cfg, train_cfg = configs_for("iemocap", "tav", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train(fs, model_cfg, train_cfg, tmp, resume=False)
        wall = time.perf_counter() - started
    return {
        "config": config,
        "s_per_epoch": round(result.seconds_per_epoch, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_import_torch_mib": round(rss_torch, 1),
        "test_wf1": round(result.metrics["weighted_f1"], 4),
        "test_acc": round(result.metrics["accuracy"], 4),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "wall_s": round(wall, 1),
        "threads": threads,
        "seed": seed,
        "settings": extra_set or {},
        "params_m": round(
            sum(
                p.numel()
                for p in __import__("model.ada2i", fromlist=["Ada2I"]).Ada2I(model_cfg).parameters()
            )
            / 1e6,
            2,
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", choices=["ours", "authors", "concat"], default="ours")
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs (ignored with --full)")
    ap.add_argument("--full", action="store_true", help="train to the preset's epochs / early stop")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--compare", action="store_true", help="run ours and authors in separate processes"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model/training setting, e.g. --set micro_batch_utterances=0",
    )
    args = ap.parse_args()
    from pipeline.cli.train import parse_overrides

    extra_set = parse_overrides(args.set)
    if args.compare:
        for config in ("authors", "ours"):
            cmd = [
                sys.executable,
                "-m",
                "bench.train_speed",
                "--config",
                config,
                "--epochs",
                str(args.epochs),
                "--threads",
                str(args.threads),
                "--seed",
                str(args.seed),
            ]
            cmd += ["--full"] if args.full else []
            cmd += [f"--set={s}" for s in args.set]
            subprocess.run(cmd, check=True)
        return
    print(
        json.dumps(
            run_one(args.config, args.epochs, args.threads, args.seed, args.full, extra_set)
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
