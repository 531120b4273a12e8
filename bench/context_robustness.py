"""Context robustness: does training on cropped dialogues help a text-only Ada2I predict dialogues
it sees only in part? Prints one JSON line per training run, then a markdown table.

    python -m bench.context_robustness --work DIR [--epochs 50] [--seeds 0 1 2] [--arms off p50]

Setup as bench.predict_speed part (b): an Ada2I (`iemocap` preset, text only) trained on the IEMOCAP
utterances of ../shared/data/iemocap/iemocap_erc.csv outside the 13 dialogues of the 52 real clips,
text features from the pipeline's own extraction (--text-model: the packaged MiniLM by default, any
sentence-transformers id or folder). One arm per setting of the context augmentation
(TrainConfig.context_augment_p and co., pipeline.training.data.crop_context), the same seeds each.
Every checkpoint is scored on:
- dev (the 12 whole IEMOCAP dev dialogues, what model selection reads) and two dev views made for
  choosing a setting without looking at the clips: "dev_alone" (each dev utterance a one-utterance
  dialogue) and "dev_sparse" (each dev dialogue cut into ordered random subsets of about
  SPARSE_SIZE utterances, fixed seed: like the clips, a few non-adjacent utterances of a dialogue);
- the 36 labelled clips "in_dialogue" (each dialogue's clips together, in clip order: erc predict's
  default), "per_clip" (each alone: erc predict --per-clip) and "full_dialogue" (inside their
  complete dialogues, transcripts only: the context the model was trained with);
- the test split (31 whole dialogues) of the best checkpoint.
The clips are scored from FeatureSets built from their transcripts (the text erc predict extracts
for them), grouped as erc predict groups them; no video is decoded.
--modalities ta instead trains text + audio on the whole of IEMOCAP (`erc import iemocap-shared`:
MiniLM text + the audio descriptors) and reports dev, dev_alone, dev_sparse and test only (the
clips have no such audio features): does the augmentation cost a modulated multimodal model?
--finetune-text first fine-tunes the text model on the same utterances (their train rows learnt,
dev choosing the epoch: `erc finetune-text`'s recipe, with its two out-of-fold encoders), so the
clips' dialogues stay unseen; extraction then encodes the training set's train rows out of fold
(each by the fold encoder that never saw its dialogue), everything else by the full encoder.
Nothing from ../shared is copied; everything else goes under --work (kept, so the feature store
and finished runs are reused: a run folder that holds a finished training is read, not retrained).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import diff_ci, mean_sd

SPARSE_SIZE = 5  # the clips: 2-9 of a dialogue, 4 on average
ARMS: dict[str, dict[str, float | int]] = {
    "off": {"context_augment_p": 0.0},
    "p50": {"context_augment_p": 0.5, "context_subset_share": 0.5, "context_subset_max": 10},
    "p80": {"context_augment_p": 0.8, "context_subset_share": 0.5, "context_subset_max": 10},
}
VIEWS = ("dev", "dev_alone", "dev_sparse", "in_dialogue", "per_clip", "full_dialogue", "test")


def prepare(work: Path, text_model: str) -> dict[str, Path]:
    """Extract once into work/store; FeatureSets for training and the three clip groupings."""
    from extractors.text import SentenceTextExtractor
    from pipeline.dataset.adapters.shared import load_shared_clips, load_shared_iemocap
    from pipeline.dataset.manifest import write_manifest
    from pipeline.features.extract import build_featureset, extract_features
    from pipeline.features.featureset import FeatureSet

    work.mkdir(parents=True, exist_ok=True)
    exs = {"t": [SentenceTextExtractor(text_model)]}
    clips = load_shared_clips()
    full = load_shared_iemocap()
    held_out = full["dialogue_id"].isin(set(clips["dialogue_id"]))
    alone = clips.assign(dialogue_id=clips["utterance_id"])  # one-utterance dialogues
    frames = {
        "train": full[~held_out],
        "in_dialogue": clips,
        "per_clip": alone,
        "full_dialogue": full[held_out],
    }
    paths: dict[str, Path] = {}
    names = None
    for name, df in frames.items():
        if (work / f"fs_{name}" / "meta.json").is_file():  # built by an earlier call
            paths[name] = work / f"fs_{name}"
            names = names or FeatureSet.load(paths[name]).label_names
            continue
        m = write_manifest(df.reset_index(drop=True), work / f"{name}.csv")
        extract_features(m, work / "store", "offline", "t", extractors=exs, progress=False)
        paths[name] = build_featureset(
            m, work / "store", "offline", "t", work / f"fs_{name}", exs, label_names=names
        )
        names = names or FeatureSet.load(paths[name]).label_names  # the training set's order
    return paths


def finetune_without_clips(work: Path, base: str) -> Path:
    """`erc finetune-text iemocap-shared`'s encoder and fold encoders, learnt from the IEMOCAP
    rows outside the clips' dialogues (test rows unread); reused when already made."""
    from pipeline.dataset.adapters.shared import load_shared_clips
    from pipeline.features.importers.shared_data import IEMOCAP_LABELS, read_iemocap_table
    from pipeline.training.text_encoder import FinetuneSettings, finetune_text_encoder

    df = read_iemocap_table(None)
    df = df[~df["dialogue"].astype(str).isin(set(load_shared_clips()["dialogue_id"]))]
    out = work / "text-finetuned"
    finetune_text_encoder(
        df["text"].tolist(), df["label_id"].astype(int).tolist(), df["split"].tolist(),
        list(IEMOCAP_LABELS), out, FinetuneSettings(base=base),
        source="iemocap-shared without the clips' dialogues",
        dialogues=df["dialogue"].astype(str).tolist(),
    )  # fmt: skip
    return out


def sparse_views(dialogues, seed: int = 0):
    """(dev_alone, dev_sparse): every utterance alone; each dialogue cut into ordered random
    subsets of about SPARSE_SIZE utterances (each utterance in exactly one)."""
    from pipeline.training.data import sub_dialogue

    rng = np.random.default_rng(seed)
    alone, sparse = [], []
    for d in dialogues:
        alone.extend(sub_dialogue(d, [i]) for i in range(d.length))
        groups = rng.integers(0, max(1, round(d.length / SPARSE_SIZE)), d.length)  # [L]
        for g in np.unique(groups):
            sparse.append(sub_dialogue(d, np.flatnonzero(groups == g).tolist()))
    return alone, sparse


def score(model, fs, dialogues, only: set[str] | None = None) -> dict[str, float]:
    """Accuracy and weighted F1 over the labelled utterances (those in `only`, when given)."""
    from pipeline.training.evaluate import predict, selection_metrics

    pred = predict(model, fs, dialogues)
    y_true = pred.y_true  # [n]
    if only is not None:
        y_true = np.where([u in only for u in pred.utterance_ids], y_true, -1)  # [n]
    m = selection_metrics(y_true, pred.y_pred, len(fs.label_names))
    return {"n": int(m["n"]), "accuracy": m["accuracy"], "weighted_f1": m["weighted_f1"]}


def _train_and_score_dev(
    features: Path, run_dir: Path, modalities: str, arm: str, seed: int, epochs: int
) -> tuple[dict, object, object]:
    """Train one arm on ``features``; its run-summary row (dev views, test, timing), the model and
    the FeatureSet, so that callers can score further views."""
    from pipeline.features.featureset import FeatureSet
    from pipeline.training.checkpoint import load_checkpoint
    from pipeline.training.train import train_from_featureset

    overrides = {**ARMS[arm], "epochs": epochs, "progress": False, "threads": 1}
    t0 = time.perf_counter()
    run = train_from_featureset(features, run_dir, "iemocap", modalities, seed=seed,
                                overrides=overrides)  # fmt: skip
    train_s = time.perf_counter() - t0
    model, _ = load_checkpoint(run.checkpoint_dir)
    fs = FeatureSet.load(features)
    alone, sparse = sparse_views(fs.split("dev"))
    row = {
        "arm": arm,
        "seed": seed,
        "modalities": modalities,
        **ARMS[arm],
        "epochs": epochs,
        "best_epoch": run.best_epoch,
        "epochs_run": run.epochs_run,
        "dev": score(model, fs, fs.split("dev")),
        "dev_alone": score(model, fs, alone),
        "dev_sparse": score(model, fs, sparse),
        "test": {k: run.metrics[k] for k in ("n", "accuracy", "weighted_f1")},
        "train_seconds": round(train_s, 1),
        "load_average": round(os.getloadavg()[0], 2),
    }
    return row, model, fs


def run_arm(paths: dict[str, Path], work: Path, arm: str, seed: int, epochs: int) -> dict:
    """Text only: the dev views, the test split and the labelled clips in three views."""
    from pipeline.features.featureset import FeatureSet

    row, model, _ = _train_and_score_dev(paths["train"], work / "runs" / f"{arm}_s{seed}", "t",
                                         arm, seed, epochs)  # fmt: skip
    clip_ids = {u for d in FeatureSet.load(paths["in_dialogue"]).dialogues for u in d.utterance_ids}
    for view in ("in_dialogue", "per_clip", "full_dialogue"):
        clip_fs = FeatureSet.load(paths[view])
        row[view] = score(model, clip_fs, clip_fs.dialogues, only=clip_ids)  # labelled clips
    return row


def run_arm_ta(work: Path, arm: str, seed: int, epochs: int) -> dict:
    """Text + audio on the whole of IEMOCAP: the dev views and the test split, no clips."""
    from pipeline.dataset.adapters.shared import find_shared_root
    from pipeline.features.importers.shared_data import import_dataset

    features = work / "fs_iemocap_ta"
    if not (features / "meta.json").is_file():
        import_dataset("iemocap-shared", features, data_dir=find_shared_root() / "data")
    row, _, _ = _train_and_score_dev(features, work / "runs_ta" / f"{arm}_s{seed}", "ta", arm,
                                     seed, epochs)  # fmt: skip
    return row


def table(rows: list[dict], baseline: str = "off") -> str:
    """Mean ± sample std over seeds per arm and view (accuracy and weighted F1, in %), and each
    arm's difference from the baseline arm with its Welch 95% CI."""
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    views = [v for v in VIEWS if all(v in r for r in rows)]
    lines = [
        "| arm | seeds | " + " | ".join(views) + " |",
        "|---|---|" + "---|" * len(views),
    ]
    for metric in ("accuracy", "weighted_f1"):
        for arm in arms:
            got = [r for r in rows if r["arm"] == arm]
            cells = [mean_sd([r[v][metric] for r in got]) for v in views]
            lines.append(f"| {arm} {metric} | {len(got)} | " + " | ".join(cells) + " |")
            if arm != baseline and any(r["arm"] == baseline for r in rows):
                base = [r for r in rows if r["arm"] == baseline]
                diffs = [diff_ci([r[v][metric] for r in got], [r[v][metric] for r in base])
                         for v in views]  # fmt: skip
                lines.append(f"| {arm} - {baseline} | | " + " | ".join(diffs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from extractors.text import PACKAGED_MINILM

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (kept and reused)")
    p.add_argument("--epochs", type=int, default=50, help="training epochs (paper: 50)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["off", "p50"])
    p.add_argument("--text-model", default=PACKAGED_MINILM, help="sentence-transformers model")
    p.add_argument("--finetune-text", action="store_true",
                   help="fine-tune --text-model on the training rows first (above)")  # fmt: skip
    p.add_argument("--modalities", choices=("t", "ta"), default="t", help="ta: no clips (above)")
    p.add_argument("--prepare-only", action="store_true", help="extract and build, no training")
    p.add_argument("--table", action="store_true", help="only print the table of rows.jsonl")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    rows_path = args.work / ("rows.jsonl" if args.modalities == "t" else "rows_ta.jsonl")
    if not args.table:
        if args.finetune_text:
            args.text_model = str(finetune_without_clips(args.work, args.text_model))
        paths = prepare(args.work, args.text_model) if args.modalities == "t" else {}
        for arm in [] if args.prepare_only else args.arms:
            for seed in args.seeds:
                if args.modalities == "ta":
                    row = run_arm_ta(args.work, arm, seed, args.epochs)
                else:
                    row = {**run_arm(paths, args.work, arm, seed, args.epochs),
                           "text_model": args.text_model}  # fmt: skip
                print(json.dumps(row), flush=True)
                with rows_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    if rows_path.is_file():
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line]
        rows = [r for r in rows if r["arm"] in args.arms and r["seed"] in args.seeds]
        print(table(list({(r["arm"], r["seed"]): r for r in rows}.values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
