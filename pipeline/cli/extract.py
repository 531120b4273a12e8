"""`erc extract`, `erc status`, `erc gc`, `erc store`, `erc check-media`: the feature-extraction
area of the CLI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from extractors.presets import EXTRACTOR_PRESETS
from model.config import parse_modalities
from pipeline.cli import parsed_by


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract",
        help="extract features of a manifest into a feature store",
        description="Compute every missing (utterance, extractor) entry; cached ones are skipped. "
        "Failures are listed in <store>/reports/failures.csv and .json.",
    )
    _common(p)
    p.add_argument("--strict", action="store_true", help="stop at the first failed utterance")
    p.add_argument("--device", default="cpu", help="torch device for the extractors (cpu, cuda)")
    p.add_argument("--speakers", help="comma-separated speaker list; others are failures")
    p.add_argument("--featureset", type=Path, help="then write a FeatureSet directory here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-index",
        action="store_true",
        help="write entry files only, never open the store's index.sqlite (a worker on another "
        "host; the index keeper then runs `erc store ingest`; docs/architecture.md)",
    )
    p.set_defaults(func=_extract)

    p = subparsers.add_parser(
        "status",
        help="what a manifest has cached / missing / stale in a store",
        description="Per extractor: cached, missing, stale (an older spec or input of the same "
        "utterance is stored), invalid (no key: missing file, bad row), damaged (an entry whose "
        "file fails its checks; extract recomputes it, gc deletes it). Works on a read-only store.",
    )
    _common(p)
    p.add_argument(
        "--verify",
        action="store_true",
        help="read and check every entry file (payload hash, finite values); without it only "
        "file sizes are checked",
    )
    p.set_defaults(func=_status)

    p = subparsers.add_parser(
        "gc",
        help="delete store entries no manifest needs",
        description="With --manifest: keep only the entries those manifests need under --preset. "
        "Without: remove only debris (orphan objects, rows without objects, old temp files). "
        "Either way every entry file is checked and damaged ones are deleted.",
    )
    p.add_argument("--store", required=True, type=Path, help="feature store directory")
    p.add_argument("--manifest", action="append", type=Path, help="manifest to keep (repeatable)")
    _preset(p)
    p.add_argument(
        "--modalities",
        default="tav",
        type=parsed_by(parse_modalities),
        help="modality letters to keep",
    )
    p.add_argument("--fps", type=float, default=2.0, help="frame rate the visual features used")
    p.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    _visual_weights(p)
    _text_model(p)
    p.set_defaults(func=_gc)

    p = subparsers.add_parser(
        "store",
        help="check a whole store, index entries written elsewhere, or rebuild its index",
        description="verify: read and check every entry file, list the damaged ones (exit 1 if "
        "any). ingest: index the entry files that have no index row (written with `erc extract "
        "--no-index`, e.g. on other hosts); each is checked first, damaged ones get no row. "
        "rebuild-index: rebuild index.sqlite from the entry files (each carries its key and "
        "provenance) when it is damaged or lost; the old index is renamed aside, not deleted. Run "
        "it while no extraction writes to the store. list: every entry with its provenance (tab "
        "separated); summary: entry counts per extractor spec (JSON). list and summary load "
        "neither torch nor Prefect.",
    )
    p.add_argument(
        "action",
        choices=["verify", "ingest", "rebuild-index", "list", "summary"],
        help="verify, ingest, rebuild-index, list or summary (see above)",
    )
    p.add_argument("--store", required=True, type=Path, help="feature store directory")
    p.set_defaults(func=_store)

    p = subparsers.add_parser(
        "check-media",
        help="sanity report of a manifest's media files",
        description="Per file: duration, streams, audio/video length, silence ratio, face-found "
        "rate (--faces), segments vs duration; suspect files listed. Writes media_check.csv/.md.",
    )
    p.add_argument("--manifest", required=True, type=Path, help="manifest (CSV, JSONL, Parquet)")
    p.add_argument("--out", type=Path, default=Path("media_check"), help="report folder")
    p.add_argument("--faces", action="store_true", help="also measure the face-found rate (MTCNN)")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second checked for faces")
    p.set_defaults(func=_check_media)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, type=Path, help="manifest (CSV, JSONL, Parquet)")
    p.add_argument("--store", required=True, type=Path, help="feature store directory")
    _preset(p)
    p.add_argument(
        "--modalities",
        default="tav",
        type=parsed_by(parse_modalities),
        help="modality letters, e.g. tav, ta, v",
    )
    p.add_argument(
        "--fps", type=float, default=2.0, help="face frames sampled per second (default 2)"
    )
    _visual_weights(p)
    _text_model(p)


def _preset(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        default="offline",
        choices=EXTRACTOR_PRESETS,
        help="extractor preset (default: offline)",
    )


def _visual_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--visual-weights",
        type=Path,
        help="your own fine-tuned DenseNet121 (safetensors, or a torch state_dict read with "
        "weights_only) for the paper preset's visual extractor, e.g. one trained on FER+ as the "
        "field's IEMOCAP/MELD features were; keys then depend on this file",
    )


def _text_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text-model",
        help="sentence encoder for the text instead of the preset's: mpnet, minilm, a "
        "sentence-transformers folder (e.g. one `erc finetune-text` wrote) or a model id; keys "
        "then depend on its weights",
    )


def _extract(args: argparse.Namespace) -> int:
    from pipeline.features.extract import extract_features, extract_featureset, load_extractors

    if args.no_index and args.featureset:
        raise SystemExit(
            "erc extract: --featureset needs the store's index; with --no-index, run "
            "`erc store ingest` where the index lives, then `erc extract --featureset` there "
            "(every entry is then cached)"
        )

    _warn_in_fold(args)
    exs = load_extractors(  # built once for both steps
        args.preset,
        args.modalities,
        args.device,
        visual_weights=_weights(args),
        text_model=_text(args),
    )
    speakers = [s.strip() for s in args.speakers.split(",")] if args.speakers else None
    common = dict(
        preset=args.preset,
        modalities=args.modalities,
        strict=args.strict,
        fps=args.fps,
        device=args.device,
        progress=not args.no_progress,
        extractors=exs,
        speakers=speakers,
    )
    if args.featureset:  # one pass: planned once, the FeatureSet assembled from the same plan
        summary, _ = extract_featureset(
            args.manifest, args.store, out_dir=args.featureset, **common
        )
    else:
        summary = extract_features(args.manifest, args.store, index=not args.no_index, **common)
    print(f"{summary.line()}  (failures: {summary.failures_path})")
    if args.no_index:
        print(f"entry files only: index them with `erc store ingest --store {args.store}`")
    print("seconds: " + json.dumps(summary.per_extractor_seconds))
    if args.featureset:
        print(f"featureset: {args.featureset}")
    return 0


def _weights(args: argparse.Namespace) -> str | None:
    return str(args.visual_weights) if args.visual_weights else None


def _text(args: argparse.Namespace) -> str | None:
    return args.text_model if "t" in args.modalities else None


def _warn_in_fold(args: argparse.Namespace) -> None:
    """A fine-tuned encoder's vectors of the dialogues it learnt from are in fold unless it has
    fold encoders: say so."""
    from pipeline.features.importers.text_features import in_fold_warning

    warning = in_fold_warning(_text(args), args.manifest)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _own_weights_extractors(args: argparse.Namespace):
    """Extractors built with --visual-weights or --text-model; None = let the planner build the
    preset's (after it has read the manifest, so a bad manifest fails before any model loads)."""
    if not args.visual_weights and not _text(args):
        return None
    from pipeline.features.extract import load_extractors

    return load_extractors(
        args.preset,
        args.modalities,
        "cpu",
        visual_weights=_weights(args),
        text_model=_text(args),
    )


def _status(args: argparse.Namespace) -> int:
    from pipeline.features.extract import manifest_tasks
    from pipeline.features.store import FeatureStore

    with FeatureStore(args.store, create=False) as store:
        exs = _own_weights_extractors(args)
        tasks, failures = manifest_tasks(
            args.manifest, store, args.preset, args.modalities, args.fps, extractors=exs
        )
        wanted = [(t.utterance_id, t.name, t.key) for t in tasks]
        wanted += [(f.utterance_id, f.extractor, None) for f in failures if f.extractor]
        counts = store.status(wanted, verify=args.verify)
        damaged = list(store.damaged)
    cols = ("cached", "missing", "stale", "invalid", "damaged")
    print(f"{'extractor':<24}" + "".join(f"{c:>9}" for c in cols))
    for name, c in counts.items():
        print(f"{name:<24}" + "".join(f"{getattr(c, col):>9}" for col in cols))
    for path, problem in damaged:
        print(f"damaged: {path}: {problem}")
    if store.read_only:
        print(f"(read-only store: {args.store})")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from pipeline.features.store import FeatureStore

    with FeatureStore(args.store, create=False) as store:
        keep = None
        if args.manifest:
            from pipeline.features.extract import referenced_keys

            exs = _own_weights_extractors(args)
            keep = referenced_keys(
                args.manifest, store, args.preset, args.modalities, args.fps, extractors=exs
            )
        report = store.gc(keep, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for line in report.damaged:
        print(f"damaged: {line}")
    damaged = f" ({len(report.damaged)} of them damaged)" if report.damaged else ""
    print(
        f"{verb} {report.objects_deleted} objects and {report.rows_deleted} index rows, "
        f"{report.bytes_freed / 2**20:.2f} MiB; kept {report.kept} objects{damaged}"
    )
    return 0


def _store(args: argparse.Namespace) -> int:
    from pipeline.features.store import FeatureStore, rebuild_index

    if args.action == "rebuild-index":
        report = rebuild_index(args.store)
        for line in report.damaged:
            print(f"damaged (no row; gc deletes it): {line}")
        for path in report.moved_aside:
            print(f"old index kept as {path}")
        print(
            f"rebuilt {args.store / 'index.sqlite'}: {report.entries} entries, "
            f"{len(report.damaged)} damaged"
        )
        return 0
    if args.action in ("list", "summary"):
        with FeatureStore(args.store, create=False) as store:
            if args.action == "list":
                cols = ["key", "status", "extractor", "version", "config_hash", "weights", "dim"]
                cols += ["utterance_id", "input_path", "start_s", "end_s", "fps", "created_at"]
                cols += ["host"]
                print("\t".join(cols))
                for r in store.entries():
                    print("\t".join("" if r.get(c) is None else str(r.get(c)) for c in cols))
            else:
                summary = store.summary()
                total = sum(v["ok"] + v["missing"] for v in summary.values())
                print(json.dumps({"root": str(store.root), "entries": total, "by_spec": summary}))
        return 0
    if args.action == "ingest":
        with FeatureStore(args.store, create=False) as store:
            report = store.ingest()
        for line in report.damaged:
            print(f"damaged (no row; gc deletes it): {line}")
        print(
            f"indexed {report.added} new entries ({report.already} already indexed, "
            f"{len(report.damaged)} damaged)"
        )
        return 1 if report.damaged else 0
    with FeatureStore(args.store, create=False) as store:
        sound, damaged = store.verify()
    for line in damaged:
        print(f"damaged: {line}")
    print(
        f"{sound} entries sound, {len(damaged)} damaged (`erc gc --store {args.store}` deletes them)"
    )
    return 1 if damaged else 0


def _check_media(args: argparse.Namespace) -> int:
    from pipeline.dataset.check_media import run_check, summary_markdown

    detector = None
    if args.faces:
        from extractors.visual import FaceVisualExtractor

        faces = FaceVisualExtractor(pretrained=False)  # only its MTCNN (shipped weights) is used
        detector = lambda frames: [len(d) > 0 for d in faces.detect_faces(list(frames))]  # noqa: E731
    report, csv, md = run_check(args.manifest, args.out, fps=args.fps, face_detector=detector)
    print(summary_markdown(report), end="")
    print(f"report: {csv} and {md}")
    return 0
