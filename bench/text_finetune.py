"""Fine-tuned text features for the dialogue model: plain and out-of-fold (cross-fitted).

    python -m bench.text_finetune --work DIR                    # IEMOCAP-6: both feature sets
    python -m bench.ablation --dataset iemocap --out DIR --text-model finetuned --subsets t,ta
    python -m bench.ablation --dataset iemocap --out DIR --text-model crossfit --subsets t,ta

`erc finetune-text` fine-tunes the sentence encoder on the train split's labels
(pipeline/training/text_encoder.py). Encoding the train utterances with that encoder gives the
dialogue model features of utterances whose labels the encoder has learnt: they separate the
classes better than dev or test features do, and the dialogue model learns to trust them too
much (stacking). This writes two IEMOCAP-6 feature sets (text + the audio descriptors) beside
each other in DIR, named so that bench.ablation finds them:

- features_iemocap_finetuned: every utterance encoded by the encoder fine-tuned on all of train;
- features_iemocap_crossfit: the same, except each train utterance is encoded by an encoder
  fine-tuned without its dialogue (K folds of the train dialogues, ``--folds``), the way stacked
  features are made; dev and test as in the first.

Every encoder is chosen on dev (utterance-level W-F1); test is never read while fine-tuning.
Encoders are kept in DIR/encoders and reused by a rerun with the same data and settings.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch

from pipeline.features.featureset import FeatureSet
from pipeline.features.importers.shared_data import (
    IEMOCAP_LABELS,
    import_dataset,
    read_iemocap_table,
)
from pipeline.training.text_encoder import FinetuneSettings, finetune_text_encoder


def fold_of_dialogue(dialogues: list[str], folds: int, seed: int) -> dict[str, int]:
    """Train dialogues dealt into ``folds`` folds after a seeded shuffle."""
    order = sorted(set(dialogues))
    random.Random(seed).shuffle(order)
    return {d: i % folds for i, d in enumerate(order)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="folder for encoders and feature sets")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--full", help="an encoder already fine-tuned on all of train (default: fine-tune one)"
    )
    args = ap.parse_args()
    work = Path(args.work)
    (work / "encoders").mkdir(parents=True, exist_ok=True)
    settings = FinetuneSettings(epochs=args.epochs, trainable_layers=args.layers, seed=args.seed)

    df = read_iemocap_table()
    texts, labels = df["text"].tolist(), df["label_id"].astype(int).tolist()
    splits = df["split"].tolist()
    full = Path(args.full) if args.full else work / "encoders" / "full"
    if not args.full:
        finetune_text_encoder(
            texts, labels, splits, IEMOCAP_LABELS, full, settings, "iemocap-shared"
        )

    finetuned = work / "features_iemocap_finetuned"
    if not (finetuned / "meta.json").is_file():
        import_dataset("iemocap-shared", finetuned, text_model=str(full), progress=True)
    fs = FeatureSet.load(finetuned)

    train = df["split"] == "train"
    fold = fold_of_dialogue(df.loc[train, "dialogue"].tolist(), args.folds, args.seed)
    x = fs.features["t"].clone()  # [N, D]; rows in the table's order (import_dataset keeps it)
    row_of = {u: i for d in fs.dialogues for i, u in enumerate(d.utterance_ids, start=d.start)}
    from extractors.text import SentenceTextExtractor

    record = {"folds": args.folds, "encoders": {}}
    for k in range(args.folds):
        inside = [bool(t) and fold[d] != k for t, d in zip(train, df["dialogue"], strict=True)]
        fold_splits = ["train" if i else ("dev" if s == "dev" else "") for i, s in
                       zip(inside, splits, strict=True)]  # fmt: skip
        out = work / "encoders" / f"fold{k}of{args.folds}"
        rec = finetune_text_encoder(
            texts, labels, fold_splits, IEMOCAP_LABELS, out, settings, f"iemocap-shared fold {k}"
        )
        held_out = df.index[train & df["dialogue"].map(lambda d, k=k: fold.get(d) == k)]
        held_out = [i for i in held_out if texts[i].strip()]
        encoder = SentenceTextExtractor(str(out))
        vectors = encoder([texts[i] for i in held_out])
        for i, v in zip(held_out, vectors, strict=True):
            x[row_of[df["utt_id"].iloc[i]]] = torch.from_numpy(v)
        best = rec["epochs"][rec["best_epoch"] - 1]
        record["encoders"][out.name] = {"train_rows": rec["rows"]["train"], **best}
        print(f"fold {k}: {len(held_out)} train utterances encoded out of fold; {best}")
    fs.features["t"] = x
    fs.source += f" | text: train rows out-of-fold ({args.folds} folds), dev/test by {full}"
    fs.save(work / "features_iemocap_crossfit")
    (work / "crossfit.json").write_text(json.dumps(record, indent=2) + "\n")
    moved = (x - FeatureSet.load(finetuned).features["t"]).norm(dim=1)
    print(f"train rows replaced: {int((moved > 0).sum())}; mean change {float(moved.mean()):.3f}")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
