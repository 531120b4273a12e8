"""Fine-tuning the sentence encoder on labelled transcripts, before its vectors become text features.

    finetune_text_encoder(texts, labels, splits, label_names, out) -> the record (finetune.json)
    erc finetune-text iemocap-shared --out models/mpnet-iemocap       (pipeline/cli/train.py)
    erc finetune-text --manifest data/mine.csv --out models/mpnet-mine   (any labelled manifest)

Why: a frozen sentence-BERT vector says what an utterance is about, not how its speaker feels;
strong ERC text features (COSMIC, Ghosal et al. 2020; most systems since) come from an encoder
fine-tuned on the training split's emotion labels first. This does that, utterance by utterance:
cross-entropy through a linear head on the encoder's own sentence embedding (mean pooling and
the unit-norm layer the packaged models end in, logits scaled by LOGIT_SCALE), the top
``trainable_layers`` transformer layers and the head trained with AdamW, linear warm-up then
linear decay, and the epoch with the best dev weighted F1 kept.

Data discipline: only ``train`` rows are learnt from, ``dev`` chooses the epoch, ``test`` rows are
never read (they may be passed; they are dropped first). Rows with no words are skipped, as
extraction skips them (their text modality is absent).

Output: ``out`` is a plain sentence-transformers folder (the head is dropped), so `erc import
--text-model OUT`, `erc extract` and `erc predict` load it like any encoder, and its weights hash
enters every feature spec made with it. ``out/finetune.json`` records the base model, the
settings, the data's sha256 and each epoch's loss and dev scores. The folder is built beside
``out`` and renamed into place when complete. Asking again with the same data and settings
returns the record without training; a folder made from other data or settings is refused, never
reused or overwritten. An interrupted fine-tune starts over (minutes per epoch; nothing partial
is published).

Out-of-fold encoders (``folds`` = K, 2 by default): the full encoder has learnt the train rows'
labels, so its vectors of them separate the classes better than its vectors of dev, test or new
utterances, and a dialogue model trained on them over-trusts text (measured on IEMOCAP-6: 5 dev
W-F1 points lost in TA; BENCHMARKS.md "Fine-tuned text"). So K more encoders are trained, each
without the train dialogues dealt to its fold (a seeded shuffle), into ``out/out_of_fold/fold<k>``
(not part of the folder's weights hash), with the dialogue -> fold map in finetune.json;
extraction (`erc import`, `erc extract`, the flows) then encodes each train row of those
dialogues with the encoder that never saw it, as stacked features are made
(pipeline/features/extract.py, `_out_of_fold_encoder`). Dev, test and new videos use the full
encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from extractors.text import (
    FINETUNE_RECORD,
    OUT_OF_FOLD,
    SentenceTextExtractor,
    read_finetune_record,
)
from model.config import POSITIVE, Count, Range, Size, check_fields
from pipeline.files import atomic_write_text
from pipeline.progress_bar import progress_bar
from pipeline.training.evaluate import selection_metrics

log = logging.getLogger(__name__)

LOGIT_SCALE = 20.0  # the embeddings are unit vectors: cosine-range logits need a scale to train


@dataclass(frozen=True)
class FinetuneSettings:
    """What a fine-tune depends on besides its data; recorded, and compared before any reuse."""

    base: str = "mpnet"  # a packaged name (mpnet, minilm), a sentence-transformers folder or id
    epochs: Count = 3
    trainable_layers: Count = 6  # the top transformer layers trained; the rest stays frozen
    lr: Annotated[float, POSITIVE] = 3e-5  # encoder layers
    head_lr: Annotated[float, POSITIVE] = 1e-3  # the linear head, which starts from nothing
    batch_size: Count = 32
    max_length: Count = 128  # tokens; IEMOCAP and MELD utterances are far shorter
    warmup: Annotated[float, Range(0, 1, high_open=True)] = 0.1  # share of steps warming up
    weight_decay: Annotated[float, Range(0)] = 0.01
    seed: int = 0
    # K >= 2: also K out-of-fold encoders for the train rows' features (module doc); 0: none,
    # for an encoder meant only for other data. 2 by default: without them, features of the
    # train rows made by the full encoder cost 5 dev W-F1 points (BENCHMARKS.md).
    folds: Size = 2

    def __post_init__(self) -> None:
        check_fields(self)  # each field's declared range, as for the model's and training's
        if self.folds == 1:
            raise ValueError("folds=1: expected 0 (none) or at least 2")


def data_digest(
    texts: list[str], labels: list[int], splits: list[str], dialogues: list[str] | None = None
) -> str:
    """sha256 of the rows a fine-tune reads (train and dev; order included; with their
    dialogues when folds are dealt by dialogue)."""
    h = hashlib.sha256()
    for i, (text, label, split) in enumerate(zip(texts, labels, splits, strict=True)):
        row = [text, int(label), split] + ([dialogues[i]] if dialogues is not None else [])
        h.update(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def finetune_text_encoder(
    texts: list[str],
    labels: list[int],
    splits: list[str],
    label_names: list[str],
    out: str | Path,
    settings: FinetuneSettings | None = None,
    source: str = "",
    progress: bool = True,
    dialogues: list[str] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``settings.base`` on the train rows, keep the best dev epoch in ``out``; with
    ``settings.folds`` = K >= 2, also K fold encoders in ``out/out_of_fold/fold<k>``, each
    trained without the train dialogues dealt to fold k (``dialogues``: each row's dialogue id).

    texts / labels / splits: one entry per utterance; labels are indices into ``label_names``
    (-1 = unlabelled, skipped); splits "train", "dev" or "test" (test rows are dropped unread).
    Returns the record written to ``out/finetune.json``."""
    settings = settings or FinetuneSettings()
    out = Path(out)
    train, dev = _rows(texts, labels, splits, label_names, source)
    if settings.folds and dialogues is None:
        raise ValueError(f"{source or 'fine-tune data'}: fold encoders need each row's dialogue")
    used = train + dev
    digest = data_digest(
        [texts[i] for i in used], [labels[i] for i in used], [splits[i] for i in used],
        [dialogues[i] for i in used] if dialogues is not None else None,
    )  # fmt: skip
    reused = _reusable(out, settings, digest)
    if reused:
        log.info("%s: fine-tuned already with these data and settings; reused", out)
        return reused

    work = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    record: dict[str, Any] = {
        "base": str(settings.base),
        "base_weights_sha256": SentenceTextExtractor(settings.base).weights_hash,
        "label_names": list(label_names),
        "settings": asdict(settings),
        "data_sha256": digest,
        "source": source,
    }
    if dialogues is not None:  # whose labels it learnt: `erc extract` warns on their rows
        record["train_dialogues"] = sorted({str(dialogues[i]) for i in train})
    try:
        record.update(_fit(texts, labels, train, dev, len(label_names), settings, work, progress))
        if settings.folds:
            fold = fold_of_dialogue([dialogues[i] for i in train], settings.folds, settings.seed)
            record[OUT_OF_FOLD] = {"folds": settings.folds, "dialogue_fold": fold, "encoders": []}
            for k in range(settings.folds):
                inside = [i for i in train if fold[dialogues[i]] != k]
                fit = _fit(
                    texts, labels, inside, dev, len(label_names), settings,
                    work / OUT_OF_FOLD / f"fold{k}", progress, f" fold {k + 1}/{settings.folds}",
                )  # fmt: skip
                record[OUT_OF_FOLD]["encoders"].append({"fold": k, **fit})
        atomic_write_text(work / FINETUNE_RECORD, json.dumps(record, indent=2) + "\n")
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return record


def fold_of_dialogue(dialogues: list[str], folds: int, seed: int) -> dict[str, int]:
    """Dialogue id -> fold: the distinct dialogues, shuffled by ``seed``, dealt round-robin."""
    order = sorted(set(dialogues))
    random.Random(seed).shuffle(order)
    return {d: i % folds for i, d in enumerate(order)}


def _fit(
    texts: list[str], labels: list[int], train: list[int], dev: list[int], n_classes: int,
    settings: FinetuneSettings, save_to: Path, progress: bool, what: str = "",
) -> dict[str, Any]:  # fmt: skip
    """One encoder from ``settings.base`` trained on ``train``; its best dev epoch saved in
    ``save_to``. Returns {rows, epochs: [per-epoch scores], best_epoch}."""
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    model = SentenceTextExtractor(settings.base).model
    model.max_seq_length = settings.max_length
    trainable = _unfreeze_top_layers(model, settings.trainable_layers)
    head = torch.nn.Linear(model.get_embedding_dimension(), n_classes)
    optimiser = torch.optim.AdamW(
        [
            {"params": trainable, "lr": settings.lr},
            {"params": list(head.parameters()), "lr": settings.head_lr},
        ],
        weight_decay=settings.weight_decay,
    )
    steps = settings.epochs * math.ceil(len(train) / settings.batch_size)
    warm = max(1, round(settings.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: s / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm))
    )
    y = torch.tensor(labels)
    fit: dict[str, Any] = {"rows": {"train": len(train), "dev": len(dev)}, "epochs": []}
    best = -1.0
    t0 = time.perf_counter()
    for epoch in range(settings.epochs):
        model.train()
        batches = _length_batches(train, texts, settings.batch_size)
        rng.shuffle(batches)
        total, seen = 0.0, 0
        bar = progress_bar(
            total=len(train), desc=f"fine-tune text{what} {epoch + 1}/{settings.epochs}",
            unit="utt", disable=not progress,
        )  # fmt: skip
        for batch in batches:
            logits = head(_embed(model, [texts[i] for i in batch], settings.max_length))
            loss = torch.nn.functional.cross_entropy(logits, y[batch])  # logits [B, C]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
            bar.update(len(batch))
            bar.set_postfix(loss=f"{total / seen:.3f}")
        bar.close()
        scores = _dev_scores(model, head, dev, texts, labels, n_classes, settings)
        row = {"epoch": epoch + 1, "train_loss": round(total / seen, 5), **scores}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        fit["epochs"].append(row)
        log.info(
            "fine-tune%s epoch %d: loss %.3f, dev accuracy %.4f, W-F1 %.4f",
            what, epoch + 1, total / seen, scores["dev_accuracy"], scores["dev_weighted_f1"],
        )  # fmt: skip
        if scores["dev_weighted_f1"] > best:
            best = scores["dev_weighted_f1"]
            fit["best_epoch"] = epoch + 1
            shutil.rmtree(save_to, ignore_errors=True)  # (fold encoders are trained after)
            model.save(str(save_to))  # the encoder alone: the head is not part of the features
    return fit


# ---- steps ------------------------------------------------------------------------------------


def _rows(
    texts: list[str], labels: list[int], splits: list[str], label_names: list[str], source: str
) -> tuple[list[int], list[int]]:
    """Positions of the labelled train and dev rows that have words; clear errors otherwise."""
    where = source or "fine-tune data"
    if not (len(texts) == len(labels) == len(splits)):
        raise ValueError(f"{where}: {len(texts)} texts, {len(labels)} labels, {len(splits)} splits")
    for i, label in enumerate(labels):
        if not -1 <= int(label) < len(label_names):
            raise ValueError(f"{where}: row {i}: label {label} outside 0..{len(label_names) - 1}")
    usable = [i for i in range(len(texts)) if labels[i] >= 0 and str(texts[i]).strip()]
    train = [i for i in usable if splits[i] == "train"]
    dev = [i for i in usable if splits[i] == "dev"]
    if not train or not dev:
        raise ValueError(
            f"{where}: fine-tuning needs labelled rows with words in both train and dev "
            f"(found {len(train)} train, {len(dev)} dev)"
        )
    return train, dev


def _reusable(out: Path, settings: FinetuneSettings, digest: str) -> dict[str, Any] | None:
    """The record of ``out`` when it was made from these data and settings; None when ``out``
    does not exist; ValueError when it holds anything else."""
    if not out.exists():
        return None
    record = read_finetune_record(out)
    if record is None:
        raise ValueError(
            f"{out}: exists and is not a fine-tuned encoder ({FINETUNE_RECORD} missing)"
        )
    differ = [k for k, v in asdict(settings).items() if record["settings"].get(k) != v]
    if record.get("data_sha256") != digest:
        differ.append("data")
    if differ:
        raise ValueError(
            f"{out}: fine-tuned with other {', '.join(differ)}; choose another --out or remove it"
        )
    return record


def _unfreeze_top_layers(model, n: int) -> list[torch.nn.Parameter]:
    """Freeze the encoder, then make its top ``n`` transformer layers trainable; returns them."""
    transformer = getattr(model[0], "auto_model", None)
    layers = getattr(getattr(transformer, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(
            "fine-tuning needs a sentence-transformers model whose first module is a "
            "transformer with encoder.layer (BERT, MPNet, RoBERTa families)"
        )
    for p in model.parameters():
        p.requires_grad = False
    trainable = [p for layer in layers[-n:] for p in layer.parameters()]
    for p in trainable:
        p.requires_grad = True
    return trainable


def _length_batches(rows: list[int], texts: list[str], size: int) -> list[list[int]]:
    """Rows sorted by length, cut into batches: similar lengths pad little."""
    ordered = sorted(rows, key=lambda i: (len(texts[i]), i))
    return [ordered[k : k + size] for k in range(0, len(ordered), size)]


def _embed(model, batch: list[str], max_length: int) -> torch.Tensor:
    features = model.tokenizer(
        batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )  # input_ids, attention_mask: [B, L]
    return model(dict(features))["sentence_embedding"] * LOGIT_SCALE  # [B, D]


def _dev_scores(model, head, dev, texts, labels, n_classes, settings) -> dict[str, float]:
    model.eval()
    predicted = {}
    with torch.inference_mode():
        for batch in _length_batches(dev, texts, 2 * settings.batch_size):
            logits = head(_embed(model, [texts[i] for i in batch], settings.max_length))
            predicted.update(zip(batch, logits.argmax(1).tolist(), strict=True))
    y_true = np.array([labels[i] for i in dev])
    y_pred = np.array([predicted[i] for i in dev])
    metrics = selection_metrics(y_true, y_pred, n_classes)
    return {
        "dev_accuracy": round(float(metrics["accuracy"]), 5),
        "dev_weighted_f1": round(float(metrics["weighted_f1"]), 5),
    }
