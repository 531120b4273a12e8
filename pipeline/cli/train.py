"""`erc train`, `erc evaluate`, `erc grid`: the model stages over a FeatureSet directory;
`erc finetune-text`: the text encoder fine-tuned on labelled transcripts before extraction."""

from __future__ import annotations

import argparse
from typing import Any

from model.config import CONCAT_BASELINE, MODEL_PRESETS, parse_modalities
from pipeline.cli import parsed_by
from pipeline.dataset import SPLITS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train Ada2I on a feature set",
        description="Train Ada2I on a FeatureSet directory into OUT: the best checkpoint (by dev "
        "weighted F1) in OUT/best, the last epoch's state in OUT/last (an interrupted run resumes "
        "from it), history.json, training plots, and the best checkpoint's test report.",
    )
    _common(p)
    p.add_argument(
        "--modalities",
        default=None,
        type=parsed_by(parse_modalities),
        help="subset of t, a, v (default: every modality the feature set has)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of initialisation and batch order (default 0)"
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="discard the training in OUT and start over (default: resume it when its settings "
        "and features match, refuse otherwise)",
    )
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a feature set split",
        description="Metrics (accuracy, weighted and macro F1, per-modality accuracy), per-class "
        "report, predictions and confusion matrix of a checkpoint on one split of a FeatureSet.",
    )
    p.add_argument(
        "--checkpoint", required=True,
        help="checkpoint folder (…/best), or a Hugging Face Hub repo id ORG/NAME[@REVISION]",
    )  # fmt: skip
    p.add_argument("--features", required=True, help="feature set directory")
    p.add_argument(
        "--split",
        default="test",
        choices=SPLITS,
        help="feature set split to evaluate on (default: test)",
    )
    p.add_argument("--out", default=None, help="report folder (default: next to the checkpoint)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 (default cpu)")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser(
        "grid",
        help="every modality subset x seeds -> one table",
        description="Train and test one run per modality subset and seed (and variant) under OUT, "
        "then write grid.md and grid.csv: mean and spread of each metric over the seeds.",
    )
    _common(p)
    p.add_argument(
        "--subsets",
        default="",
        type=parsed_by(parse_subsets),
        help="comma-separated, e.g. tav,ta,t (default: all available)",
    )
    p.add_argument(
        "--seeds", default="0,1,2", help="comma-separated seeds, one run each (default: 0,1,2)"
    )
    p.add_argument(
        "--baseline", action="store_true", help="also train the plain concatenation baseline"
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="discard every run already under OUT and train all anew (default: reuse finished "
        "runs with the same settings, resume interrupted ones, refuse ones with other settings)",
    )
    p.set_defaults(func=_grid)

    p = subparsers.add_parser(
        "finetune-text",
        help="fine-tune the sentence encoder on labelled transcripts (train split; dev chooses)",
        description="Fine-tune a sentence-transformers encoder on the emotion labels of the "
        "train rows (utterance by utterance; the epoch with the best dev weighted F1 is kept) "
        "and save it as a sentence-transformers folder with finetune.json. Use it as the text "
        "model: erc import ... --text-model OUT, or erc extract --manifest M --text-model OUT. "
        "Test rows are never read.",
    )
    p.add_argument(
        "data",
        nargs="?",
        choices=("iemocap-shared", "meld-shared"),
        help="the labelled transcripts to learn from (../shared/data, or --data-dir); the "
        "encoder is then used by `erc import` of the same data. Or --manifest",
    )
    p.add_argument(
        "--manifest",
        help="instead of DATA: a labelled manifest (CSV/JSONL/Parquet; its text, label, split "
        "and dialogue_id columns), e.g. one `erc data` wrote; then `erc extract --manifest M "
        "--text-model OUT` encodes its train rows out of fold",
    )
    p.add_argument("--out", required=True, help="output folder (the fine-tuned encoder)")
    p.add_argument("--data-dir", help="../shared/data by default (iemocap-shared, meld-shared)")
    p.add_argument(
        "--base", default="mpnet",
        help="encoder to start from: mpnet (default), minilm, or a sentence-transformers folder",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, default=3, help="passes over the train rows (default 3)")
    p.add_argument(
        "--layers", type=int, default=6,
        help="top transformer layers trained; the rest stays frozen (default 6)",
    )  # fmt: skip
    p.add_argument("--lr", type=float, default=3e-5, help="encoder learning rate (default 3e-5)")
    p.add_argument(
        "--folds", type=int, default=2,
        help="also train K encoders, each without 1/K of the train dialogues, so that `erc "
        "import` and `erc extract` with --text-model OUT encode each train utterance with one "
        "that never saw it "
        "(default 2: twice the training time; 0 = none, for an encoder meant for other data "
        "only: features of its own train rows mislead the dialogue model)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the head, batches and folds")
    p.set_defaults(func=_finetune_text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--features", required=True, help="feature set directory (features.safetensors + meta.json)"
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument(
        "--model-preset",
        default="iemocap",
        choices=MODEL_PRESETS,
        help="model and training preset (paper Table 2; tiny: small, for tests and the demo)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model or training setting, e.g. --set epochs=10 --set use_afw=false "
        "(checked against the setting's type and range)",
    )


def parse_subsets(text: str) -> list[str]:
    """'tav,at,t' -> ['tav', 'ta', 't']; '' -> [] (every subset the feature set allows)."""
    return [parse_modalities(s) for s in text.split(",") if s.strip()]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings -> settings typed and checked against the config fields
    (pipeline.training.train_config): `use_afw=False` is False, `epochs=abc` an error naming key
    and value."""
    from pipeline.training.train_config import coerce_settings

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = raw.strip()
    return coerce_settings(out)


def _train(args: argparse.Namespace) -> int:
    from pipeline.training.train import train_from_featureset

    result = train_from_featureset(
        args.features,
        args.out,
        args.model_preset,
        args.modalities,
        args.seed,
        parse_overrides(args.set),
        resume=not args.no_resume,
    )
    m = result.metrics
    print(
        f"best epoch {result.best_epoch}/{result.epochs_run}, {result.seconds_per_epoch:.2f} s/epoch"
    )
    if m:
        print(
            f"test weighted F1 {m['weighted_f1']:.4f}  accuracy {m['accuracy']:.4f}  (n={m['n']})"
        )
    print(f"checkpoint: {result.checkpoint_dir}")
    for name, path in result.report_paths.items():
        if isinstance(path, str):
            print(f"{name}: {path}")
    print(f"plots: {result.run_dir / 'plots'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.training.evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(args.checkpoint, args.features, args.split, args.out, args.device)
    print(
        f"{args.split}: weighted F1 {m['weighted_f1']:.4f}  accuracy {m['accuracy']:.4f}  (n={m['n']})"
    )
    for name, path in m["paths"].items():
        print(f"{name}: {path}")
    return 0


def _grid(args: argparse.Namespace) -> int:
    from pipeline.training.grid import run_grid

    variants = {"ada2i": {}}
    if args.baseline:
        variants["concat"] = dict(CONCAT_BASELINE, modulation=False)
    md = run_grid(
        args.features,
        args.out,
        args.subsets or None,
        [int(s) for s in args.seeds.split(",")],
        args.model_preset,
        parse_overrides(args.set),
        variants,
        fresh=args.fresh,
    )
    print(md.read_text())
    print(f"table: {md} (and grid.csv)")
    return 0


def _finetune_text(args: argparse.Namespace) -> int:
    from pipeline.training.text_encoder import FinetuneSettings, finetune_text_encoder

    if (args.data is None) == (args.manifest is None):
        raise ValueError("give the data to learn from: iemocap-shared, meld-shared or --manifest M")
    texts, labels, splits, dialogues, label_names, source = (
        _manifest_texts(args.manifest)
        if args.manifest
        else _labelled_texts(args.data, args.data_dir)
    )
    settings = FinetuneSettings(
        base=args.base, epochs=args.epochs, trainable_layers=args.layers, lr=args.lr,
        seed=args.seed, folds=args.folds,
    )  # fmt: skip
    record = finetune_text_encoder(
        texts, labels, splits, label_names, args.out, settings, source, dialogues=dialogues
    )
    best = record["epochs"][record["best_epoch"] - 1]
    print(
        f"best epoch {record['best_epoch']}/{settings.epochs}: dev W-F1 "
        f"{best['dev_weighted_f1']:.4f}, accuracy {best['dev_accuracy']:.4f} (utterances alone)"
    )
    for fold in record.get("out_of_fold", {}).get("encoders", []):
        scores = fold["epochs"][fold["best_epoch"] - 1]
        print(
            f"fold {fold['fold']} encoder ({fold['rows']['train']} train rows): best epoch "
            f"{fold['best_epoch']}, dev W-F1 {scores['dev_weighted_f1']:.4f}"
        )
    use = f"erc extract --manifest {args.manifest}" if args.manifest else "erc import ..."
    print(f"encoder: {args.out}  (use: {use} --text-model {args.out})")
    return 0


def _manifest_texts(manifest: str):
    """(texts, label indices, splits, dialogue ids, label names, source) of a labelled manifest;
    label names as a feature set extracted from it has them (the declared set's order, else
    sorted), so the encoder's classes line up with the dialogue model's."""
    from pipeline.dataset.manifest import declared_set, label_order, read_manifest

    df = read_manifest(manifest)
    names = label_order(df["label"], declared_set(df, manifest))
    return (
        df["text"].tolist(), [names.index(v) if v else -1 for v in df["label"]],
        df["split"].tolist(), df["dialogue_id"].astype(str).tolist(), names, str(manifest),
    )  # fmt: skip


def _labelled_texts(data: str, data_dir: str | None):
    """(texts, label indices, splits, dialogue ids, label names, source) of a shared dataset:
    the labelled train/dev/test transcripts `erc import` reads (its out-of-fold encoding needs
    the dialogues the encoder was fine-tuned on)."""
    from pipeline.features.importers import shared_data

    if data == "iemocap-shared":
        df, names = shared_data.read_iemocap_table(data_dir), shared_data.IEMOCAP_LABELS
    else:
        df, names = shared_data.read_meld_table(data_dir), shared_data.MELD_LABELS
    return (
        df["text"].tolist(), df["label_id"].astype(int).tolist(), df["split"].tolist(),
        df["dialogue"].astype(str).tolist(), list(names), data,
    )  # fmt: skip
