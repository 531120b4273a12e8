"""Real data: Ada2I vs a plain concatenation baseline, every available modality subset x 3 seeds.

    python -m bench.real_data --dataset iemocap    # IEMOCAP-6: real text (MiniLM) + real audio descriptors
    python -m bench.real_data --dataset meld       # MELD-7: real text (MiniLM)

Feature sets come from `erc import iemocap-shared|meld-shared` (../shared/data); the tables go to
OUT/<dataset>/grid.md and print at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from model.config import CONCAT_BASELINE
from pipeline.features.importers.shared_data import import_dataset
from pipeline.training.grid import run_grid

SUBSETS = {"iemocap": ["ta", "t", "a"], "meld": ["t"]}
VARIANTS = {"ada2i": {}, "concat": {**CONCAT_BASELINE, "modulation": False}}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", choices=sorted(SUBSETS), required=True)
    ap.add_argument("--out", default="outputs/bench_real")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--variant",
        choices=("both", "ada2i", "concat"),
        default="both",
        help="one variant per process lets two run side by side",
    )
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. epochs=30"
    )
    ap.add_argument("--table-only", action="store_true", help="table the finished runs under OUT")
    ap.add_argument(
        "--fresh", action="store_true", help="retrain every run (e.g. after a code change)"
    )
    args = ap.parse_args()
    if args.table_only:
        from pipeline.training.grid import collect_runs, summarise, to_markdown

        runs = collect_runs(Path(args.out) / args.dataset)
        print(to_markdown(summarise(runs), sorted({r["seed"] for r in runs})))
        return
    torch.set_num_threads(args.threads)
    out = Path(args.out) / args.dataset
    features = out / "features"
    if args.variant != "both":
        out = out / args.variant
    if not (features / "meta.json").is_file():
        import_dataset(f"{args.dataset}-shared", features)
    from pipeline.cli.train import parse_overrides

    overrides = {"progress": False, "threads": args.threads, **parse_overrides(args.set)}
    md = run_grid(
        features,
        out,
        SUBSETS[args.dataset],
        [int(s) for s in args.seeds.split(",")],
        model_preset=args.dataset,
        overrides=overrides,
        variants={k: v for k, v in VARIANTS.items() if args.variant in ("both", k)},
        fresh=args.fresh,
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
