"""One training epoch: micro-batched losses, the modulation coefficients, one modulated step per batch.

train_epoch(...) -> epoch statistics (loss, per-modality s_m / rho_m / k_m, noise RMS)
modulated_step(model, optimizer, scaler, k, grad_clip, noise) -> eq. 18 update, eq. 19 noise
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from model.ada2i import Ada2I
from model.losses import ada2i_loss, unimodal_loss_totals
from model.modulation import (
    add_update_noise,
    coefficients,
    discrepancy_ratios,
    set_update_scales,
    unimodal_score_totals,
)
from pipeline.features.featureset import FeatureSet
from pipeline.training.data import (
    batch_counts,
    batch_dialogues,
    collate,
    crop_context,
    micro_batches,
)
from pipeline.training.optim import Adam
from pipeline.training.train_config import TrainConfig


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
