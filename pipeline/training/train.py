"""Training Ada2I on a FeatureSet: Adam, LR schedule, clipping, gradient modulation, early stopping
on dev weighted F1, best checkpoint, per-epoch imbalance diagnostics, resume from the last epoch.

    train(fs, model_cfg, cfg, run_dir) -> TrainResult    the driver, one run folder
    train_epoch(...) -> epoch statistics                 loss, per-modality s_m, rho_m, k_m, noise
    modulated_step(model, optimizer, scaler, k, ...)     eq. 18 update, eq. 19 noise
    train_from_featureset(featureset_dir, out_dir, ...)  the entry point of flows and the CLI
    save_train_state / load_train_state                  the resumable state in last/ (below)

train() reads as a sequence of named steps: prepare -> (train_epoch -> validate -> save)* -> test.
The process it runs in (device, seeding, glibc heap trimming) is set up here too; settings are
pipeline/training/train_config.py.

Resumable trainer state (save_train_state / load_train_state), without pickle: tensors in
safetensors, everything else in JSON. `last/` under a run directory holds the model (a normal
checkpoint) plus trainer.safetensors (optimizer moments, torch RNG) and trainer.json (epoch,
history, early-stopping state, scheduler, numpy/python RNG, and the sha256 of
trainer.safetensors). Written after every epoch, each file atomically, the JSON last: a run killed
mid-write resumes from the previous complete epoch. On resume every file is verified (hashes,
finite weights); a damaged one stops the run with a message naming it, never a resume from
damaged state. The two file names are part of the run folder's layout
(pipeline/training/run_folder.py).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.ada2i import Ada2I
from model.config import Ada2IConfig
from model.objective import (
    ada2i_loss,
    add_update_noise,
    coefficients,
    discrepancy_ratios,
    set_update_scales,
    unimodal_loss_totals,
    unimodal_score_totals,
)
from pipeline.features.featureset import FeatureSet, check_presence
from pipeline.files import atomic_write
from pipeline.progress_bar import progress_bar
from pipeline.training import run_folder
from pipeline.training.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_verified,
    read_checkpoint_meta,
    save_checkpoint,
    save_tensors,
    verify_meta,
    write_model_card,
)
from pipeline.training.data import (
    batch_counts,
    batch_dialogues,
    collate,
    crop_context,
    micro_batches,
)
from pipeline.training.diagnostics import plot_training
from pipeline.training.evaluate import compute_metrics, predict, selection_metrics, write_report
from pipeline.training.optim import Adam, CosineAnnealingLR, ReduceLROnPlateau
from pipeline.training.run_folder import STATE_JSON, STATE_TENSORS
from pipeline.training.train_config import TrainConfig, configs_for

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint_dir: Path
    history_path: Path
    metrics: dict[str, Any]  # test metrics of the best checkpoint (empty when no test split)
    best_epoch: int
    epochs_run: int
    seconds_per_epoch: float
    report_paths: dict[str, str] = field(default_factory=dict)


def train(
    fs: FeatureSet,
    model_cfg: Ada2IConfig,
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = True,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train into run_dir, one training at a time (a lock in the folder). resume=True continues
    the folder's last epoch only when settings and features match (pipeline.training.run_folder);
    resume=False discards its old training first. A feature set whose presence masks predict the
    label (presence_leaks, pipeline.features.featureset) is refused unless
    cfg.allow_presence_leak. on_progress gets one dict per epoch (epoch, epochs, loss, dev_wf1,
    best_wf1, best_epoch)."""
    fs.select_modalities(model_cfg.modalities)  # FeatureSetError naming the file and what it has
    if not cfg.allow_presence_leak:  # before anything is written to run_dir
        hint = "to study the leak anyway, not for results: --set allow_presence_leak=true"
        check_presence(fs, str(fs.path or fs.source), model_cfg.modalities, hint)
    with run_folder.locked(run_dir):
        return _train(fs, model_cfg, cfg, run_dir, resume, on_progress)


def _train(
    fs: FeatureSet,
    model_cfg: Ada2IConfig,
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = True,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Step 1: prepare data, model, optimiser.
    limit_heap_fragmentation()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, device)
    fs = fs.select_modalities(model_cfg.modalities)
    model_cfg = replace(
        model_cfg,
        input_dims={m: fs.dims[m] for m in model_cfg.modalities},
        n_classes=len(fs.label_names),
    )
    train_set, dev_set, test_set = _splits(fs, cfg)
    model = Ada2I(model_cfg).to(device)
    # One group per modality encoder, so eq. 18's k_m can scale that encoder's step.
    optimizer = Adam(model.parameter_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = _scheduler(optimizer, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    # Refuses (before config.json is written) a folder that holds other settings or features.
    ident = run_folder.identity(fs, model_cfg, cfg)
    meta = {
        "label_names": fs.label_names,
        "feature_spec": fs.feature_spec,
        "train_config": cfg.to_dict(),
        "dev_dialogues": [d.id for d in dev_set],
        "source": fs.source,
        # what predictions made with the checkpoint report as its training data
        "training_data": run_folder.training_data(fs, ident[run_folder.FEATURESET_KEY]),
    }
    run_folder.prepare(run_dir, ident, resume, {"model": model_cfg.to_dict(), **meta})

    progress = {"epoch": 0, "best_wf1": -1.0, "best_epoch": 0, "stale": 0, "history": []}
    if resume:
        restored = load_train_state(run_dir / "last", model, optimizer, scheduler)
        if restored is not None:
            progress = restored
            if use_amp and progress.get("grad_scaler"):  # the loss scale it had settled on
                scaler.load_state_dict(progress["grad_scaler"])
            log.info("resuming %s after epoch %d", run_dir, progress["epoch"])
    generator = torch.Generator()

    # Step 2: epochs.
    bar = progress_bar(
        total=cfg.epochs,
        initial=progress["epoch"],
        desc=f"train {model_cfg.modalities}",
        disable=not cfg.progress,
        unit="epoch",
    )
    epoch_seconds = []
    while progress["epoch"] < cfg.epochs and progress["stale"] < cfg.patience:
        epoch = progress["epoch"] + 1
        started = time.perf_counter()
        generator.manual_seed(cfg.seed * 1_000_003 + epoch)  # per-epoch order, same after a resume
        modulate = (
            cfg.modulation
            and epoch >= cfg.modulation_start
            and (not cfg.modulation_end or epoch <= cfg.modulation_end)
        )
        stats = train_epoch(
            model,
            fs,
            train_set,
            optimizer,
            scaler,
            cfg,
            model_cfg.alpha,
            modulate,
            generator,
            device,
            use_amp,
        )
        dev = predict(model, fs, dev_set, str(device), cfg.eval_batch_size)
        release_freed_heap()
        dev_metrics = selection_metrics(dev.y_true, dev.y_pred, len(fs.label_names))
        _step_scheduler(scheduler, cfg, dev.loss)
        epoch_seconds.append(time.perf_counter() - started)

        record = {
            "epoch": epoch,
            "seconds": epoch_seconds[-1],
            "lr": optimizer.param_groups[0]["lr"],
            "modulated": modulate,
            **stats,
            "dev_loss": dev.loss,
            "dev_wf1": dev_metrics["weighted_f1"],
            "dev_acc": dev_metrics["accuracy"],
            "dev_unimodal": dev.unimodal_metrics(len(fs.label_names)),  # each modality alone
            "class_weight_norms": model.class_weight_norms(),
        }
        progress["history"].append(record)
        progress["epoch"] = epoch
        if improves(dev_metrics["weighted_f1"], dev.loss, progress):
            progress.update(
                best_wf1=dev_metrics["weighted_f1"], best_loss=dev.loss, best_epoch=epoch, stale=0
            )
            save_checkpoint(
                run_dir / "best", model, **meta, epoch=epoch, dev_metrics=_brief(dev_metrics)
            )
        else:
            progress["stale"] += 1
        # Step 3: save everything needed to resume, after the best checkpoint (crash-safe order).
        if use_amp:  # plain numbers; a resume restarting at 2**16 would skip steps anew
            progress["grad_scaler"] = scaler.state_dict()
        save_train_state(
            run_dir / "last", model, optimizer, scheduler, progress, {**meta, "epoch": epoch}
        )
        bar.set_postfix(  # before update: the line update draws shows this epoch's scores
            loss=f"{stats['loss']:.3f}",
            dev_wf1=f"{dev_metrics['weighted_f1']:.3f}",
            best=f"{progress['best_wf1']:.3f}",
            refresh=False,
        )
        bar.update(1)
        if on_progress:
            on_progress({"epoch": epoch, "epochs": cfg.epochs, "loss": stats["loss"],
                         "dev_wf1": dev_metrics["weighted_f1"], "best_wf1": progress["best_wf1"],
                         "best_epoch": progress["best_epoch"]})  # fmt: skip
        log.debug(
            "epoch %d: %s", epoch, {k: v for k, v in record.items() if k != "class_weight_norms"}
        )
    bar.close()
    # The trained weights are on disk; free the model and optimiser before the report's imports
    # (scikit-learn, matplotlib) so the process peak stays that of training.
    del model, optimizer, scheduler, scaler
    release_freed_heap()

    # Step 4: evaluate the best checkpoint on test, save history and plots.
    history_path = run_dir / "history.json"
    history_path.write_text(json.dumps(progress["history"], indent=1))
    plots = plot_training(
        progress["history"], run_dir / "plots", progress["best_epoch"], fs.label_names
    )
    best, _ = load_checkpoint(run_dir / "best", device=device)
    metrics, paths = {}, {"plots": plots}
    if test_set:
        test = predict(best, fs, test_set, str(device), cfg.eval_batch_size)
        release_freed_heap()
        metrics = compute_metrics(test.y_true, test.y_pred, fs.label_names)
        metrics.update(
            split="test", best_epoch=progress["best_epoch"], modalities=model_cfg.modalities
        )
        paths.update(write_report(metrics, test, fs.label_names, run_dir / "test"))
        write_model_card(run_dir / "best", read_checkpoint_meta(run_dir / "best"), metrics)
    return TrainResult(
        run_dir=run_dir,
        checkpoint_dir=run_dir / "best",
        history_path=history_path,
        metrics=metrics,
        best_epoch=progress["best_epoch"],
        epochs_run=progress["epoch"],
        seconds_per_epoch=float(np.median(epoch_seconds)) if epoch_seconds else float("nan"),
        report_paths=paths,
    )


# ---- one epoch ----------------------------------------------------------------------------------


def train_epoch(
    model: Ada2I,
    fs: FeatureSet,
    dialogues,
    optimizer,
    scaler,
    cfg: TrainConfig,
    alpha: float,
    modulate: bool,
    generator: torch.Generator,
    device: torch.device,
    use_amp: bool,
) -> dict[str, Any]:
    """One pass over the training dialogues; returns mean losses and imbalance diagnostics
    (s_m, rho_m, k_m, per-modality loss). rho and k are computed every step, applied only when
    `modulate` is on, so unmodulated runs still show their imbalance."""
    model.train()
    sums: dict[str, float] = {}
    per_mod: dict[str, dict[str, list[float]]] = {
        "score": {},
        "rho": {},
        "k": {},
        "unimodal_loss": {},
    }
    n_steps = 0
    # Its own stream, so the noise draws leave the batch order of a seed unchanged.
    noise_generator = torch.Generator().manual_seed(generator.initial_seed() + 1)
    # And one for the context crops, so turning them on changes neither order nor noise.
    context_generator = torch.Generator().manual_seed(generator.initial_seed() + 2)
    for group in batch_dialogues(dialogues, cfg.batch_size, shuffle=True, generator=generator):
        group = crop_context(
            group,
            cfg.context_augment_p,
            cfg.context_subset_share,
            cfg.context_subset_max,
            context_generator,
        )
        whole = batch_counts(fs, group, model.modalities)
        if not whole.labelled:
            continue
        optimizer.zero_grad(set_to_none=True)
        score_totals: dict[str, tuple[float, int]] = {}
        loss_totals: dict[str, tuple[float, int]] = {}
        # One optimiser step per batch; its dialogues pass through the model in micro-batches
        # (a bounded peak memory), each loss weighted by its share so the summed gradients are
        # the whole batch's.
        for part in micro_batches(group, cfg.micro_batch_utterances):
            batch = collate(fs, part).to(device)
            with torch.autocast(device.type, enabled=use_amp):
                out = model(
                    {m: batch.features[m] for m in model.modalities},
                    batch.utterance_mask,
                    batch.modality_mask,
                )
                losses = ada2i_loss(out, batch.labels, whole)
            scaler.scale(losses.total).backward()
            for name, value in losses.as_floats().items():
                sums[name] = sums.get(name, 0.0) + value
            _add_totals(score_totals, unimodal_score_totals(out, batch.labels))
            _add_totals(loss_totals, unimodal_loss_totals(out, batch.labels))
            del out, losses, batch
        scaler.unscale_(optimizer)
        scores = {m: total / n for m, (total, n) in score_totals.items()}
        rho = discrepancy_ratios(scores)
        k = coefficients(rho, alpha) if modulate else {m: 1.0 for m in rho}
        modulated = modulate and len(model.modalities) > 1
        noise = modulated_step(
            model,
            optimizer,
            scaler,
            k if modulated else {},
            cfg.grad_clip,
            noise_generator if modulated and cfg.noise else None,
        )
        for m, v in noise.items():
            per_mod.setdefault("noise_rms", {}).setdefault(m, []).append(v)

        n_steps += 1
        for name, values in (
            ("score", scores),
            ("rho", rho),
            ("k", k),
            ("unimodal_loss", {m: total / n for m, (total, n) in loss_totals.items()}),
        ):
            for m, v in values.items():
                per_mod[name].setdefault(m, []).append(v)
    stats: dict[str, Any] = {
        ("loss" if k == "total" else f"loss_{k}"): v / max(n_steps, 1) for k, v in sums.items()
    }
    for name, values in per_mod.items():
        stats[name] = {m: float(np.mean(v)) for m, v in values.items()}
    return stats


def modulated_step(
    model: Ada2I,
    optimizer: Adam,
    scaler: torch.amp.GradScaler,
    k: dict[str, float],
    grad_clip: float,
    noise_generator: torch.Generator | None,
) -> dict[str, float]:
    """Clip, step with modality m's encoder update scaled by k_m (eq. 18), then, when a noise
    generator is given, add eq. 19's noise to the encoders. Gradients must already be unscaled
    (AMP). Returns m -> RMS of the noise added (empty without noise)."""
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    # Eq. 18 scales the update, not the gradient: Adam's m / sqrt(v) would cancel a gradient scale.
    set_update_scales(optimizer.param_groups, k)
    scaler.step(optimizer)
    scaler.update()
    if noise_generator is None or not torch.isfinite(grad_norm):  # a skipped AMP step adds none
        return {}
    lr = optimizer.param_groups[0]["lr"]
    return add_update_noise(model.encoder_parameters(), lr, noise_generator)


def _add_totals(into: dict[str, tuple[float, int]], more: dict[str, tuple[float, int]]) -> None:
    for m, (total, n) in more.items():
        old_total, old_n = into.get(m, (0.0, 0))
        into[m] = (old_total + total, old_n + n)


# ---- model selection, splits, LR schedule -------------------------------------------------------


def improves(dev_wf1: float, dev_loss: float, progress: dict[str, Any]) -> bool:
    """Model selection and early stopping: a higher dev weighted F1, or the same with a lower dev
    loss. The tie-break matters on small dev sets, where WF1 takes few values: on the benchmark's
    12 dev dialogues it reached 1.0 at epoch 11 and only tied it afterwards while the dev loss
    fell from 0.28 to 0.08, so strict WF1 picked epoch 11 and stopped at 31."""
    best_wf1, best_loss = progress["best_wf1"], progress.get("best_loss")
    if dev_wf1 != best_wf1:
        return dev_wf1 > best_wf1
    return math.isfinite(dev_loss) and (best_loss is None or dev_loss < best_loss)


def _splits(fs: FeatureSet, cfg: TrainConfig):
    where = fs.path or "feature set"
    train_set, dev_set, test_set = fs.split("train"), fs.split("dev"), fs.split("test")
    if not train_set:
        raise ValueError(f"{where}: no dialogues in the 'train' split")
    if not dev_set:
        # A fixed, seeded 10% of training dialogues (the authors' convention), recorded in the run.
        order = torch.randperm(
            len(train_set), generator=torch.Generator().manual_seed(cfg.seed)
        ).tolist()
        n_dev = max(1, round(cfg.dev_fraction * len(train_set)))
        if len(train_set) - n_dev < 1:
            raise ValueError(f"{where}: too few training dialogues to carve a dev split")
        dev_ids = {train_set[i].id for i in order[:n_dev]}
        dev_set = [d for d in train_set if d.id in dev_ids]
        train_set = [d for d in train_set if d.id not in dev_ids]
        log.warning(
            "%s: no 'dev' split, so %d of %d training dialogues (dev_fraction=%s, seed %d) are the "
            "dev set the checkpoint is chosen on: %s",
            where,
            n_dev,
            n_dev + len(train_set),
            cfg.dev_fraction,
            cfg.seed,
            ", ".join(sorted(dev_ids)[:10]) + (" ..." if n_dev > 10 else ""),
        )
    if not any(_n_labelled(fs, d) for d in dev_set):
        # Choosing a checkpoint on no labels picks the first epoch (dev W-F1 0.0) in silence.
        raise ValueError(
            f"{where}: the dev dialogues ({len(dev_set)}) have no labelled utterance to choose "
            "the checkpoint on; label some, or give the manifest a 'split' column with dev rows"
        )
    if not test_set:
        log.warning("%s: no 'test' split: the run reports no test metrics", where)
    return train_set, dev_set, test_set


def _n_labelled(fs: FeatureSet, d) -> int:
    return int((fs.labels[d.start : d.start + d.length] >= 0).sum())


def _scheduler(optimizer: Adam, cfg: TrainConfig):
    if cfg.lr_schedule == "plateau":  # on dev loss: lower is better
        return ReduceLROnPlateau(
            optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
    if cfg.lr_schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    if cfg.lr_schedule == "none":
        return None
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; choose plateau, cosine or none")


def _step_scheduler(scheduler, cfg: TrainConfig, dev_loss: float) -> None:
    if scheduler is None:
        return
    if cfg.lr_schedule == "plateau":
        if math.isfinite(dev_loss):
            scheduler.step(dev_loss)
    else:
        scheduler.step()


def _brief(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: metrics[k] for k in ("accuracy", "weighted_f1", "macro_f1") if k in metrics}


# ---- resumable state: last/ without pickle (module docstring) -----------------------------------


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


# ---- the process: device, seeding, heap ---------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _glibc():
    """The C library when it is glibc (mallopt, malloc_trim), else None."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def limit_heap_fragmentation() -> None:
    """Dialogue batches differ in length, so every step frees and allocates differently sized
    buffers, and glibc keeps freed heap. Trimming at once and serving buffers >= 1 MiB from mmap
    cut the benchmark's peak RSS by ~50 MiB at no speed cost; a 64 KiB threshold cut more but made
    epochs ~1.9x slower (every mmap'd buffer is zero-filled anew), so not that. Linux/glibc only;
    elsewhere a no-op."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-1, 0)  # M_TRIM_THRESHOLD: give freed heap at the top back at once
        libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD: buffers >= 1 MiB via mmap


def release_freed_heap() -> None:
    """Return freed heap pages inside glibc's arenas too (malloc_trim), after a phase that
    allocated a lot (a dev/test pass, the end of training): per step it saved little and cost ~6%
    speed. A no-op off glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def seed_everything(seed: int, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # CPU kernels are already deterministic for a fixed thread count. The switch is only for
    # CUDA, and only set there: it imports torch._dynamo, ~5 s of start-up on a CPU run.
    if device.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)


# ---- entry point --------------------------------------------------------------------------------


def train_from_featureset(
    featureset_dir: str | Path,
    out_dir: str | Path,
    model_preset: str = "iemocap",
    modalities: str | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    resume: bool = True,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """The entry point flows and the CLI call. modalities=None: every modality the feature set
    has; one it lacks is refused naming the file and the modalities it holds."""
    fs = FeatureSet.load(featureset_dir)
    modalities = modalities or fs.modalities
    model_cfg, train_cfg = configs_for(
        model_preset, modalities, {**(overrides or {}), "seed": seed}
    )
    return train(fs, model_cfg, train_cfg, out_dir, resume=resume, on_progress=on_progress)
