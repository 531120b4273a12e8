"""A training run folder that cannot silently lie about what it holds.

A run folder (the `out` of `erc train`, one cell of `erc grid`) holds one training: config.json,
best/, last/ (what a resume needs), history.json, test/ and plots/. Its *identity* is what the
results depend on: the model config, the training settings minus NOT_IDENTITY, a content hash
of the feature set as training reads it, and a hash of the training code (the import closure of
pipeline.training.train: pipeline/code_identity.py). config.json records it.

- A rerun resumes from last/ only when its identity matches the folder's; otherwise
  RunFolderMismatch names each differing key with both values and says how to start over.
  `epochs` and `patience` may be raised to continue a finished or early-stopped run (the result
  is then the one a fresh run with the new value gives), see `compare`.
- Starting over (resume=False) discards the old outputs before anything new is written.
- config.json is written only after the check passed: a refused rerun leaves it as it was.
- One training at a time: `locked` holds an flock on <run>/.lock while it trains; a second
  training into the folder fails at once with RunFolderBusy naming the holder's pid. The kernel
  drops the lock when the holder exits or crashes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from model.config import Ada2IConfig
from pipeline.code_identity import STAGE_MODULES, stage_identity
from pipeline.features.featureset import FeatureSet, describe_source, generated_by
from pipeline.files import atomic_write

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
# The resume state beside the model in last/ (written and read by pipeline/training/train.py).
STATE_TENSORS = "trainer.safetensors"
STATE_JSON = "trainer.json"
TRASH = ".discarded"  # outputs being discarded; removed at the next start
# What one training writes, in the order a start-over discards it: first the marker of a finished
# run (test/), the resume point (last/) before the checkpoint it belongs with (best/), config.json
# last, so a crash half-way leaves a folder that is either still the old run or has no last/
# (and then nothing resumes and the leftovers are discarded at the next start).
OUTPUTS = ("test", "history.json", "plots", "last", "best", CONFIG_FILE)

# TrainConfig settings that change how a run is computed, not what it learns, so resuming with
# another value is fine: progress bar; CPU threads, device and CUDA mixed precision (the same
# computation at other rounding: a run trained on a GPU may continue on a CPU); eval batch size
# and micro-batch budget (padding and grouping only; masked, and micro-batch gradients add up to
# the whole batch's). All of them still go into config.json.
NOT_IDENTITY = frozenset(
    {
        "progress",
        "threads",
        "device",
        "amp",
        "eval_batch_size",
        "micro_batch_utterances",
        "allow_presence_leak",
    }
)
FEATURESET_KEY = "featureset"  # identity key of the feature set's content hash
CODE_KEY = "code"  # identity key of the training code's hash


class RunFolderError(ValueError):
    """A run folder refuses the requested training (a ValueError: the CLI prints one line)."""


class RunFolderMismatch(RunFolderError):
    """The folder holds a training with other settings or features."""


class RunFolderBusy(RunFolderError):
    """Another process trains into the folder."""


# ---- identity -----------------------------------------------------------------------------------


def featureset_digest(fs: FeatureSet) -> str:
    """sha256 of what training reads: each modality's features and presence mask, the labels, the
    label names and feature specs, and the dialogues' ids, splits and rows. Its `source` text and
    on-disk path are not content (a copied feature set trains the same)."""
    h = hashlib.sha256()
    tensors = {"labels": fs.labels}
    for m in sorted(fs.features):
        tensors[f"feat.{m}"], tensors[f"present.{m}"] = fs.features[m], fs.present[m]
    for name, t in sorted(tensors.items()):
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{name} {a.dtype} {list(a.shape)}\n".encode())
        h.update(memoryview(a).cast("B"))
    meta = {
        "label_names": fs.label_names,
        "feature_spec": {m: fs.feature_spec.get(m, {}) for m in sorted(fs.features)},
        "dialogues": [[d.id, d.split, d.start, d.length, d.utterance_ids] for d in fs.dialogues],
    }
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


def training_data(fs: FeatureSet, digest: str) -> dict[str, Any]:
    """What a checkpoint was trained on, for everything that reports its predictions: the feature
    set's path, content hash (``digest``: featureset_digest), source and one-line description,
    what generated it ("" = recorded data), its size per split and its label set."""
    labels = fs.labels.numpy()
    splits: dict[str, dict[str, int]] = {}
    for d in fs.dialogues:
        row = splits.setdefault(d.split or "(none)", {"dialogues": 0, "utterances": 0})
        row["dialogues"] += 1
        row["utterances"] += d.length
    return {
        "featureset": str(Path(fs.path).resolve()) if fs.path else "",
        "featureset_sha256": digest,
        "source": fs.source,
        "description": describe_source(fs.source),
        "generated": generated_by(fs.source),
        "n_dialogues": len(fs.dialogues),
        "n_utterances": len(fs),
        "n_labelled": int((labels >= 0).sum()),
        "splits": splits,
        "label_names": list(fs.label_names),
        "modalities": fs.modalities,
    }


@cache
def code_digest() -> str:
    """sha256 of the training code (its import closure: pipeline/code_identity.py), once per
    process. A run trained by other code is not continued or reused (a grid rerun after a model
    change must not report old results); the train flow's cache keys on the same identity."""
    return stage_identity("train")


def identity(fs: FeatureSet, model_cfg: Ada2IConfig, train_cfg: Any) -> dict[str, Any]:
    """Flat {setting: value, "featureset": digest, "code": digest} of a training; the model config as train()
    builds it (input dims and classes from the feature set), so it is the same whether given the
    whole feature set and preset config or train()'s derived ones."""
    fs = fs.select_modalities(model_cfg.modalities)
    model_cfg = replace(
        model_cfg,
        input_dims={m: fs.dims[m] for m in model_cfg.modalities},
        n_classes=len(fs.label_names),
    )
    settings = {k: v for k, v in train_cfg.to_dict().items() if k not in NOT_IDENTITY}
    ident = {
        **model_cfg.to_dict(),
        **settings,
        FEATURESET_KEY: featureset_digest(fs),
        CODE_KEY: code_digest(),
    }
    return json.loads(json.dumps(ident))  # as config.json will hold it: compares equal after a read


def recorded_identity(run_dir: Path) -> dict[str, Any] | None:
    """The identity config.json records; None when it records none (written before identities)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("identity")
    except json.JSONDecodeError:
        return None


def saved_progress(run_dir: Path) -> dict[str, Any] | None:
    """The resume point's progress (epoch, stale, best_epoch, history), None without one."""
    path = run_dir / "last" / STATE_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["progress"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path}: damaged resume state ({exc}); cannot resume from {path.parent}: delete it "
            "(or train with --no-resume) to start over"
        ) from exc


def compare(
    old: dict[str, Any], new: dict[str, Any], progress: dict[str, Any]
) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """(differences that forbid resuming as (key, old, new), notes on allowed changes).

    `epochs` may change unless the LR schedule is cosine (its period is `epochs`) or the run has
    already trained past the new value; `patience` may be raised. Either way, continuing gives
    exactly what a fresh run with the new value gives. Lowering patience is refused: the old run
    may have gone on past where the new value would have stopped it."""
    diffs, notes = [], []
    hashes = (FEATURESET_KEY, CODE_KEY)
    for key in sorted(old.keys() | new.keys(), key=lambda k: (k in hashes, k)):
        a, b = old.get(key, "(not recorded)"), new.get(key, "(not recorded)")
        if a == b:
            continue
        if key == "epochs" and new.get("lr_schedule") != "cosine" and progress["epoch"] <= b:
            notes.append(f"epochs {a} -> {b} (after epoch {progress['epoch']})")
        elif key == "patience" and isinstance(a, int) and b > a:
            notes.append(f"patience {a} -> {b}")
        else:
            diffs.append((key, a, b))
    return diffs, notes


START_OVER = (
    "To discard the old training and start over: `erc train ... --no-resume` "
    "(Python: train(..., resume=False)); for a grid `erc grid ... --fresh` "
    "(run_grid(..., fresh=True)); or train into another --out."
)


def mismatch_message(run_dir: Path, diffs: list[tuple[str, Any, Any]], epoch: int) -> str:
    lines = [
        f"{run_dir}: holds a training (last epoch {epoch}) with other settings, so it cannot "
        "resume with these; differing (in the folder -> now):"
    ]
    for key, a, b in diffs:
        was, now = repr(a), repr(b)
        if key == FEATURESET_KEY:
            was, now = (str(v)[:12] + "…" for v in (a, b))
            key = "featureset (content sha256)"
        elif key == CODE_KEY:
            was, now = (str(v)[:12] + "…" for v in (a, b))
            key = f"code (sha256 of {', '.join(STAGE_MODULES['train'])} and what it imports)"
        elif key == "epochs":
            now += f" (cosine LR schedule, or fewer than the {epoch} epochs already trained)"
        elif key == "patience":
            now += " (patience may only be raised)"
        lines.append(f"  {key}: {was} -> {now}")
    return "\n".join(lines)


# ---- the folder ---------------------------------------------------------------------------------


def check(run_dir: Path, ident: dict[str, Any], hint: bool = True) -> list[str]:
    """May a training of `ident` resume in run_dir? Returns notes on allowed changes (raised
    epochs/patience), [] when there is nothing to resume; RunFolderMismatch otherwise."""
    progress = saved_progress(run_dir)
    if progress is None:
        return []
    old = recorded_identity(run_dir)
    if old is None:
        message = (
            f"{run_dir}: holds a training (last epoch {progress['epoch']}) whose {CONFIG_FILE} "
            "records no run identity (written by an older version), so it is not known what "
            "it was trained with."
        )
    else:
        diffs, notes = compare(old, ident, progress)
        if not diffs:
            return notes
        message = mismatch_message(run_dir, diffs, progress["epoch"])
    raise RunFolderMismatch(f"{message}\n{START_OVER}" if hint else message)


def prepare(run_dir: Path, ident: dict[str, Any], resume: bool, config: dict[str, Any]) -> None:
    """Before training writes anything: check the folder against `ident` (resume) or discard its
    old training (resume=False, or no resume point), then write config.json with the identity."""
    if resume and saved_progress(run_dir) is not None:
        notes = check(run_dir, ident)
        if notes:
            log.info("%s: continuing the run with %s", run_dir, ", ".join(notes))
    else:
        discard(run_dir)  # starting over, or leftovers of a run that never finished an epoch
    body = json.dumps({**config, "identity": ident}, indent=1)
    atomic_write(run_dir / CONFIG_FILE, lambda p: Path(p).write_text(body))


def finished(run_dir: Path, ident: dict[str, Any]) -> bool:
    """True when the folder holds a complete run of exactly this identity: trained to its end
    (epochs, or early stop) and tested. Such a run is reused rather than trained again."""
    progress = saved_progress(run_dir)
    if progress is None or recorded_identity(run_dir) != ident:
        return False
    done = progress["epoch"] >= ident["epochs"] or progress["stale"] >= ident["patience"]
    return done and (run_dir / "test" / "metrics.json").is_file()


def discard(run_dir: Path) -> None:
    """Remove a previous training's outputs: each is first renamed into <run>/.discarded (atomic,
    in OUTPUTS' crash-safe order), then that folder is deleted."""
    trash = run_dir / TRASH
    shutil.rmtree(trash, ignore_errors=True)
    present = [name for name in OUTPUTS if (run_dir / name).exists()]
    if not present:
        return
    trash.mkdir()
    for name in present:
        os.replace(run_dir / name, trash / name)
    log.info("%s: discarded the previous training (%s)", run_dir, ", ".join(present))
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def locked(run_dir: str | Path) -> Iterator[Path]:
    """Hold <run>/.lock (flock) for one training; RunFolderBusy at once if another holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderBusy(
                f"{run_dir}: another training is running into this run folder (pid {holder}); "
                "wait for it to finish, or train into another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock
