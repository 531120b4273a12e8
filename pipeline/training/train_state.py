"""Resumable trainer state without pickle: tensors in safetensors, everything else in JSON.

`last/` under a run directory holds the model (a normal checkpoint) plus trainer.safetensors
(optimizer moments, torch RNG) and trainer.json (epoch, history, early-stopping state, scheduler,
numpy/python RNG, and the sha256 of trainer.safetensors). Written after every epoch, each file
atomically, the JSON last: a run killed mid-write resumes from the previous complete epoch. On
resume every file is verified (hashes, finite weights); a damaged one stops the run with a message
naming it, never a resume from damaged state.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.ada2i import Ada2I
from pipeline.files import atomic_write
from pipeline.training.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    load_verified,
    save_checkpoint,
    save_tensors,
    verify_meta,
)
from pipeline.training.optim import Adam

STATE_TENSORS = "trainer.safetensors"
STATE_JSON = "trainer.json"


def save_train_state(
    directory: Path,
    model: Ada2I,
    optimizer: Adam,
    scheduler: Any,
    progress: dict[str, Any],
    meta: dict[str, Any],
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_checkpoint(directory, model, **meta)
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    # Dropout on a GPU draws from the CUDA generator, not the CPU one: without its state a
    # resumed CUDA run would diverge from an uninterrupted one (bench/gpu_check.py checks it).
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in opt["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    body = {
        "tensors_sha256": save_tensors(directory / STATE_TENSORS, tensors),
        "progress": progress,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": {"numpy": _numpy_state(), "python": _python_state()},
    }
    atomic_write(directory / STATE_JSON, lambda p: Path(p).write_text(json.dumps(body)))


def load_train_state(
    directory: Path, model: Ada2I, optimizer: Adam, scheduler: Any
) -> dict[str, Any] | None:
    """Restore in place; returns the saved progress dict, or None when there is nothing to resume.

    ValueError naming the file when any part of the saved state is damaged.
    """
    if not (directory / STATE_JSON).is_file():
        return None
    hint = f"cannot resume from {directory}: delete it (or train with --no-resume) to start over"
    try:
        body = _read_json(directory / STATE_JSON)
        meta = _read_json(directory / META_FILE)
        verify_meta(meta, directory / META_FILE)
        weights = load_verified(directory / WEIGHTS_FILE, meta.get("weights_sha256"), META_FILE)
        tensors = load_verified(directory / STATE_TENSORS, body.get("tensors_sha256"), STATE_JSON)
        model.load_state_dict(weights, strict=True)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise ValueError(f"{exc}; {hint}") from exc
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, slots in body["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(slots)
    optimizer.load_state_dict({"state": state, "param_groups": body["optimizer"]["param_groups"]})
    if scheduler is not None and body["scheduler"] is not None:
        scheduler.load_state_dict(body["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [
        tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors
    ]
    # Restored only onto the same number of GPUs; a CPU resume of a CUDA run has none to set.
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    np.random.set_state(_numpy_restore(body["rng"]["numpy"]))
    random.setstate(_python_restore(body["rng"]["python"]))
    return body["progress"]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: damaged JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise ValueError(f"{path}: damaged JSON (not an object)")
    return body


def _numpy_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _numpy_restore(s: list[Any]) -> tuple[Any, ...]:
    return (s[0], np.asarray(s[1], dtype=np.uint32), s[2], s[3], s[4])


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _python_restore(s: list[Any]) -> tuple[Any, ...]:
    return (s[0], tuple(s[1]), s[2])
