"""Checkpoints: weights in safetensors + a JSON with everything needed to rebuild and use them.

A checkpoint directory holds model.safetensors and checkpoint.json
({format, model_config, label_names, feature_spec, ...}). Loading never unpickles, so a
checkpoint from anywhere is safe to open; it loads on CPU or GPU without the training data.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.ada2i import Ada2I
from model.config import Ada2IConfig

FORMAT = "ada2i-erc.checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "checkpoint.json"


def save_checkpoint(directory: str | Path, model: Ada2I, **meta: Any) -> Path:
    """meta: label_names, feature_spec, train_config, epoch, metrics, ... (JSON-serialisable)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    body = {"format": FORMAT, "model_config": model.cfg.to_dict(), **meta}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, p))
    atomic_write(directory / META_FILE, lambda p: Path(p).write_text(json.dumps(body, indent=1)))
    return directory


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint (no {META_FILE})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT}"
        )
    return meta


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[Ada2I, dict[str, Any]]:
    meta = read_checkpoint_meta(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: checkpoint weights missing")
    model = Ada2I(Ada2IConfig.from_dict(meta["model_config"]))
    try:
        state = load_file(str(weights), device=str(device))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise ValueError(
            f"{weights}: weights do not match the config in {META_FILE} ({exc})"
        ) from exc
    return model.to(device).eval(), meta


def atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
