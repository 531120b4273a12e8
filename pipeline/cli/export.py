"""`erc export`: a FeatureSet in the layouts other ERC baselines read (authors' pickle, MMSA)."""

from __future__ import annotations

import argparse
import json

EXAMPLE = """example:
  erc export --format authors-pickle --features features/iemocap --out iemocap_features.pkl
  erc export --format authors-pickle --layout tuple --features features/iemocap --out dgcn.pkl
  erc export --format mmsa --features features/iemocap --out iemocap_mmsa.pkl

Writes FILE and FILE.json (label names, feature spec, splits, zero-filled counts, notes).
A missing modality vector (no face, silent audio) is written as zeros; see pipeline/features/exporters.py
for the keys written and what does not match the target layout."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a feature set as the authors' per-dialogue pickle or MMSA's pickle",
        # Raw formatting keeps the examples' lines, so the description is wrapped by hand.
        description="Write a FeatureSet in the layout of other baselines: the authors'\n"
        "per-dialogue pickle (Ada2I, DialogueGCN, MMGCN) or MMSA's train/valid/test pickle.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--format",
        required=True,
        choices=("authors-pickle", "mmsa"),
        help="authors-pickle: per dialogue (trainVid/testVid/...); mmsa: per split",
    )
    p.add_argument("--features", required=True, help="feature set directory")
    p.add_argument("--out", required=True, help="pickle file to write")
    p.add_argument(
        "--layout",
        choices=("fields", "tuple"),
        default="fields",
        help="authors-pickle: 'fields' = Ada2I's dict with valVid (default); 'tuple' = the "
        "9-tuple DialogueGCN/MMGCN unpack, dev folded into trainVid",
    )
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from pipeline.features.exporters import export_featureset

    summary = export_featureset(args.features, args.out, args.format, layout=args.layout)
    print(json.dumps(summary.to_dict()))
    return 0
