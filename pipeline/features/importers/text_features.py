"""Text features for the importers: the text extractor's own vectors, through the feature store.

    extract_texts(table, text_model, store_root, source) -> (x [N, D] float32, feature spec)

The vectors are exactly what `erc extract` and `erc predict` compute for the same transcripts
(extractors/text.py: the same extractor, spec and store keys), so a model trained on imported text
predicts new videos, and the store is the one cache: re-importing, or extracting the same
transcripts elsewhere, computes nothing twice. The default store is
${XDG_CACHE_HOME:-~/.cache}/ada2i-erc/store; the default model, the offline preset's text model.

Out-of-fold train rows: a text model fine-tuned on these labels (`erc finetune-text --folds K`,
pipeline/training/text_encoder.py) has learnt the train rows' labels, and its vectors of them
separate the classes better than those of dev or test rows, which a dialogue model trained on
them then over-trusts. Such a folder keeps K fold encoders in ``out_of_fold/fold<k>`` and, in its
finetune.json, which train dialogue each fold held out; each train row of those dialogues is
then encoded by the encoder that did not see it, every other row by the folder's own encoder
(the one the feature spec names, and `erc predict` rebuilds). The spec records it under
``out_of_fold``.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.features.extract import feature_spec, manifest_rows, plan_extraction, run_extraction
from pipeline.features.store import FeatureStore, default_store

log = logging.getLogger(__name__)

FINETUNE_RECORD = "finetune.json"  # in a fine-tuned text encoder's folder: how it was made
OUT_OF_FOLD = "out_of_fold"  # its fold encoders' subfolder, and the record's key for them


def default_text_model() -> str:
    from extractors.presets import OFFLINE_TEXT

    return OFFLINE_TEXT


@lru_cache(maxsize=2)
def text_extractor(text_model: str):
    """One SentenceTextExtractor per model for the process (loading mpnet takes seconds)."""
    from extractors.text import SentenceTextExtractor  # imported late: loads torch

    return SentenceTextExtractor(text_model)


def extract_texts(
    table: pd.DataFrame,
    text_model: str | Path | None = None,
    store_root: str | Path | None = None,
    source: str = "<table>",
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Text vectors [N, D] of ``table`` (columns dialogue, utt_id, speaker, split, text; one row
    per utterance, in order) and their feature spec ({extractor, version, dim, config_hash,
    weights, extractors: [the extractor's spec]}: the one extraction writes).

    ``text_model``: ``minilm``, ``mpnet``, a packaged name, a sentence-transformers folder or id
    (None: the offline preset's). Entries missing from the store are computed and stored."""
    from extractors.text import text_model_name

    ex = text_extractor(text_model_name(text_model or default_text_model()))
    frame = pd.DataFrame(
        {
            "dialogue_id": table["dialogue"].astype(str),
            "utterance_id": table["utt_id"].astype(str),
            "speaker": table["speaker"].astype(str),
            "start_s": 0.0,  # text is keyed on its bytes alone; no media is cut
            "end_s": np.nan,
            "text": table["text"].astype(str),
            "split": table["split"].astype(str),
        }
    )
    folds = _out_of_fold(text_model, frame)
    by_fold = {i for _, rows in folds for i in rows}
    own = [i for i in range(len(frame)) if i not in by_fold] or [0]  # [0]: for the spec alone
    x_own, spec = _embed_rows(frame.iloc[own], ex, store_root, source, progress)  # [n, D]
    x = np.empty((len(frame), x_own.shape[1]), np.float32)  # [N, D]; each row encoded once
    x[own] = x_own
    if folds:
        spec[OUT_OF_FOLD] = {"folds": len(folds), "train_rows": len(by_fold), "weights": []}
        for k, (fold_ex, rows) in enumerate(folds):
            if rows:
                x[rows], _ = _embed_rows(frame.iloc[rows], fold_ex, store_root, source, progress)
            spec[OUT_OF_FOLD]["weights"].append(fold_ex.weights_hash)
            log.info("text: %d train rows of fold %d encoded out of fold", len(rows), k)
    return x, spec


def read_finetune_record(folder: str | Path) -> dict[str, Any] | None:
    """The finetune.json of a fine-tuned text encoder's folder; None when it has none."""
    path = Path(str(folder)) / FINETUNE_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def in_fold_dialogues(text_model: str | Path | None, dialogue_ids) -> list[str]:
    """Those of ``dialogue_ids`` whose train rows fine-tuned ``text_model`` (a folder with
    finetune.json): its vectors of their utterances are in fold, and mislead a dialogue model
    trained on them (module docstring). [] for any other model."""
    record = read_finetune_record(text_model) if text_model else None
    if not record:
        return []
    learnt = record.get("train_dialogues") or record.get(OUT_OF_FOLD, {}).get("dialogue_fold", {})
    return sorted({str(d) for d in dialogue_ids} & set(learnt))


def in_fold_warning(text_model: str | Path | None, dialogue_ids, source: str) -> str | None:
    """The warning for a manifest (``source``) some of whose dialogues fine-tuned ``text_model``;
    None when none did. `erc extract` and the extract flow say the same."""
    seen = in_fold_dialogues(text_model, dialogue_ids)
    if not seen:
        return None
    return (
        f"{len(seen)} dialogue(s) of {source} (e.g. {seen[0]!r}) were in the train split "
        f"{text_model} was fine-tuned on: their text vectors carry the labels it learnt, and a "
        "model trained on them over-trusts text. For that dataset use `erc import ... "
        "--text-model`, which encodes them out of fold."
    )


def _embed_rows(frame: pd.DataFrame, ex, store_root, source: str, progress: bool):
    """(x [N, D], feature spec) of ``frame``'s rows by extractor ``ex``, through the store."""
    rows, source = manifest_rows(frame.reset_index(drop=True), source)
    root = Path(store_root) if store_root else default_store()
    with FeatureStore(root) as store:
        plan = plan_extraction(rows, store, source, "import", "t", extractors={"t": [ex]})
        # One worker: the text extractor runs at the process's torch thread count.
        summary = run_extraction(plan, store, progress=progress, workers=1)
        if summary.failed:
            first = summary.failures[0]
            raise ValueError(f"{source}: {summary.failed} text(s) not embedded; {first.message()}")
        key = {t.row: t.key for t in plan.tasks}
        x = np.stack([store.get(key[i]) for i in range(len(rows))]).astype(np.float32)  # [N, D]
    log.info("text %s: %s (store %s)", ex.spec.model, summary.line(), root)
    return x, feature_spec({"t": [ex]}, plan.fps)["t"]


def _out_of_fold(text_model, frame: pd.DataFrame) -> list[tuple[Any, list[int]]]:
    """[(fold k's extractor, positions of the train rows it held out)] for a fine-tuned folder
    with fold encoders; [] for any other text model."""
    folder = Path(str(text_model or ""))
    record = read_finetune_record(folder) if text_model else None
    if not record or OUT_OF_FOLD not in record:
        return []
    fold = record[OUT_OF_FOLD]["dialogue_fold"]
    train = (frame["split"] == "train").to_numpy()
    dialogues = frame["dialogue_id"].tolist()
    unknown = sorted({d for d, t in zip(dialogues, train, strict=True) if t and d not in fold})
    if unknown:
        raise ValueError(
            f"{folder / FINETUNE_RECORD}: its fold encoders were not trained on these data: train dialogue "
            f"{unknown[0]!r} is in none of its {record[OUT_OF_FOLD]['folds']} folds "
            f"({len(unknown)} such); use it on the data it was fine-tuned on"
        )
    out = []
    for k in range(record[OUT_OF_FOLD]["folds"]):
        rows = [
            i for i, (d, t) in enumerate(zip(dialogues, train, strict=True)) if t and fold[d] == k
        ]
        out.append((text_extractor(str(folder / OUT_OF_FOLD / f"fold{k}")), rows))
    return out
