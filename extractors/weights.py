"""Weight provenance: hashes of the weights an extractor actually loaded, and clear load errors.

The feature store keys tensors on ``ExtractorSpec.config_hash()``, which includes
``weights_hash``; two different checkpoints under one model name must never share a cache entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # torch is imported where it is used: the preset names need no torch
    import torch

from extractors.file_digest import stat_key, update_from_file

T = TypeVar("T")

# Files that hold weights in a Hugging Face / sentence-transformers folder. ONNX / OpenVINO exports
# are other backends' copies of the same weights and are not loaded by the torch backend.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# "out_of_fold": the fold encoders a fine-tuned text encoder keeps in its folder
# (pipeline/training/text_encoder.py) are other models, not its weights.
SKIPPED_DIRS = {"onnx", "openvino", ".git", ".cache", "out_of_fold"}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be loaded (offline, not cached, or a wrong name)."""


def weight_files(folder: str | Path) -> list[Path]:
    """Weight files under ``folder`` (recursively: sentence-transformers keeps Dense layers in
    subfolders), sorted by relative path so the hash does not depend on listing order."""
    root = Path(folder)
    found = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix in WEIGHT_SUFFIXES
        and not (set(p.relative_to(root).parts[:-1]) & SKIPPED_DIRS)
        and not p.name.startswith("training_args")
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def sha256_files(folder: str | Path) -> str:
    """sha256 over (relative path, bytes) of every weight file in ``folder``; "" when none."""
    root = Path(folder).resolve()
    files = weight_files(root)
    if not files:
        return ""
    stats = tuple((f.relative_to(root).as_posix(), *stat_key(f)) for f in files)
    return _sha256_files_cached(str(root), stats)


@lru_cache(maxsize=32)
def _sha256_files_cached(root: str, stats: tuple[tuple[str | int, ...], ...]) -> str:
    # Keyed on each file's stat_key so re-creating an extractor in the same process (one per
    # Prefect task, say) does not re-read hundreds of MB, yet an edited file is re-hashed.
    digest = hashlib.sha256()
    for rel, *_ in stats:
        digest.update(str(rel).encode())
        update_from_file(digest, Path(root) / str(rel))
    return digest.hexdigest()


def sha256_state_dict(*modules: torch.nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every parameter and buffer, in name order.

    Exactly the weights in memory, whatever file format they came from.
    """
    import torch

    digest = hashlib.sha256()
    for index, module in enumerate(modules):
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{index}:{name}:{t.dtype}:{tuple(t.shape)}".encode())
            # view as bytes: numpy has no bfloat16, and the raw bytes are what we want anyway
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_or_explain(what: str, name: str, load: Callable[[], T], hint: str = "") -> T:
    """Run ``load``; turn the many "not downloadable / not cached" errors into one clear one."""
    try:
        return load()
    except (OSError, ValueError, RuntimeError, ConnectionError) as err:
        if isinstance(err, WeightsUnavailableError):
            raise
        raise WeightsUnavailableError(
            f"could not load {what} {name!r}: {type(err).__name__}: {err}. Pretrained weights load "
            "by name from the network or a local cache (Hugging Face / torch hub); offline, pass a "
            "local folder or use the 'offline' or 'tiny' preset." + (f" {hint}" if hint else "")
        ) from err
