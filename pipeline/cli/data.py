"""`erc import`: existing feature data (authors' pickle, ../shared/data, synthetic) -> FeatureSet."""

from __future__ import annotations

import argparse
import json
import time

from model.config import parse_modalities
from pipeline.cli import parsed_by

NAMES = ("iemocap-shared", "meld-shared", "authors-pickle", "synthetic")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "manifest",
        help="build a manifest from a raw dataset layout (iemocap, meld, mosei, shared)",
        description="Read a dataset's own folder layout (its adapter in pipeline/dataset/adapters/) and "
        "write one manifest row per utterance: dialogue, speaker, times, text, label, media path.",
    )
    p.add_argument(
        "dataset",
        choices=("iemocap", "meld", "mosei", "shared"),
        help="raw layout to read: iemocap, meld, mosei (under --root), or shared (../shared/data)",
    )
    p.add_argument("--root", help="the dataset's root folder (optional for shared)")
    p.add_argument("--out", required=True, help="manifest file (.csv, .jsonl or .parquet)")
    p.set_defaults(func=_manifest)

    p = subparsers.add_parser(
        "import",
        help="import existing features into a FeatureSet directory",
        description="Write a FeatureSet (features.safetensors + meta.json) from existing data.",
    )
    p.add_argument(
        "name",
        choices=NAMES,
        help="what to import: iemocap-shared / meld-shared (../shared/data), authors-pickle "
        "(--path), synthetic (random features, for tests)",
    )
    p.add_argument("--out", required=True, help="output FeatureSet directory")
    p.add_argument("--data-dir", help="../shared/data by default (iemocap-shared, meld-shared)")
    p.add_argument(
        "--text-model",
        help="iemocap-shared / meld-shared: the text extractor's model: mpnet (default, the "
        "offline preset's, 768-d), minilm (384-d), or a sentence-transformers folder or id",
    )
    p.add_argument(
        "--store",
        help="feature store the text vectors are computed into and reused from (default "
        "${XDG_CACHE_HOME:-~/.cache}/ada2i-erc/store; `erc extract --store` takes the same)",
    )
    p.add_argument(
        "--modalities",
        default="ta",
        type=parsed_by(parse_modalities),
        help="iemocap-shared: t, a or ta (default ta)",
    )
    p.add_argument(
        "--audio-source",
        choices=("handcrafted", "pyaudioanalysis"),
        default="handcrafted",
        help="iemocap-shared: which audio features (default handcrafted)",
    )
    p.add_argument("--limit-dialogues", type=int, help="first K dialogues per split (quick runs)")
    p.add_argument("--path", help="authors-pickle: the pickle file")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="authors-pickle: you trust the file (unpickling can run code); read restricted",
    )
    p.add_argument(
        "--dataset",
        choices=("iemocap", "meld", "mosei"),
        default="iemocap",
        help="authors-pickle: which dataset the pickle holds (default iemocap)",
    )
    p.add_argument(
        "--mosei-classes",
        type=int,
        choices=(7, 2),
        default=7,
        help="authors-pickle, mosei: the 7- or 2-class labels of the pickle (default 7)",
    )
    p.add_argument("--dev-seed", type=int, default=12, help="authors-pickle dev draw (default 12)")
    p.add_argument(
        "--dev-fraction",
        type=float,
        default=0.1,
        help="authors-pickle: share of training dialogues held out as dev (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="synthetic: seed")
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    from pipeline.features.featureset import FeatureSet, split_counts
    from pipeline.features.importers.shared_data import import_dataset

    kw: dict = {}
    if args.name in ("iemocap-shared", "meld-shared"):
        kw = {
            "data_dir": args.data_dir,
            "text_model": args.text_model,
            "store_root": args.store,
            "limit_dialogues": args.limit_dialogues,
            "progress": True,
        }
        if args.name == "iemocap-shared":
            kw.update(modalities=args.modalities, audio_source=args.audio_source)
    elif args.name == "authors-pickle":
        kw = {
            "path": args.path,
            "trust": args.trust_pickle,
            "dataset": args.dataset,
            "mosei_classes": args.mosei_classes,
            "dev_seed": args.dev_seed,
            "dev_fraction": args.dev_fraction,
        }
    else:
        kw = {"seed": args.seed}
    t0 = time.perf_counter()
    out = import_dataset(args.name, args.out, **kw)
    fs = FeatureSet.load(out, validate=False)
    summary = {
        "out": str(out),
        "utterances": len(fs),
        "dims": fs.dims,
        "splits": split_counts(fs),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary))
    return 0


def _manifest(args: argparse.Namespace) -> int:
    from pipeline.dataset.adapters import load_dataset
    from pipeline.dataset.manifest import write_manifest

    df = load_dataset(args.dataset, args.root)
    path = write_manifest(df, args.out)
    print(f"{path}: {len(df)} utterances in {df['dialogue_id'].nunique()} dialogues")
    return 0
