"""Text features for the importers: the text extractor's own vectors, through the feature store.

    extract_texts(table, text_model, store_root, source) -> (x [N, D] float32, feature spec)

The vectors are exactly what `erc extract` and `erc predict` compute for the same transcripts
(extractors/text.py: the same extractor, spec and store keys), so a model trained on imported text
predicts new videos, and the store is the one cache: re-importing, or extracting the same
transcripts elsewhere, computes nothing twice. The default store is
${XDG_CACHE_HOME:-~/.cache}/ada2i-erc/store; the default model, the offline preset's text model.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.features.extract import feature_spec, manifest_rows, plan_extraction, run_extraction
from pipeline.features.store import FeatureStore, default_store

log = logging.getLogger(__name__)


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
    rows, source = manifest_rows(frame, source)
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
