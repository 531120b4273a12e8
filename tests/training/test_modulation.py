"""Gradient modulation acts on the update (eq. 18) and adds eq. 19's noise after the step.

The bug these guard against: k_m multiplied the gradient handed to Adam, whose m / sqrt(v)
cancels the factor, so a modulated encoder moved exactly as far as an unmodulated one.
"""

from __future__ import annotations

import copy

import pytest
import torch

from model.ada2i import Ada2I
from model.config import preset
from model.objective import IGNORE, ada2i_loss
from pipeline.training.optim import Adam
from pipeline.training.train import modulated_step

DIMS = {"t": 12, "a": 8, "v": 10}


def one_step(model: Ada2I, k: dict[str, float], noise_seed: int | None = None) -> dict[str, float]:
    """One Adam step of L_main on a fixed batch; returns how far each group moved (L2)."""
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(2, 6, d, generator=g) for m, d in DIMS.items()}
    mask = torch.ones(2, 6, dtype=torch.bool)
    labels = torch.randint(0, 4, (2, 6), generator=g)
    labels[1, 4:] = IGNORE
    groups = model.parameter_groups()
    before = {gr["name"]: [p.detach().clone() for p in gr["params"]] for gr in groups}
    opt = Adam(groups, lr=1e-3)
    ada2i_loss(model(feats, mask), labels).total.backward()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    generator = None if noise_seed is None else torch.Generator().manual_seed(noise_seed)
    modulated_step(model, opt, scaler, k, grad_clip=2.0, noise_generator=generator)
    return {
        gr["name"]: float(
            sum(
                (p.detach() - b).pow(2).sum()
                for p, b in zip(gr["params"], before[gr["name"]], strict=True)
            )
            ** 0.5
        )
        for gr in groups
    }


def fresh_pair():
    torch.manual_seed(0)
    model = Ada2I(preset("tiny", input_dims=DIMS, modalities="tav", dropout=0.0))
    return model, copy.deepcopy(model)


@pytest.mark.parametrize("k_t", [0.9, 0.5, 0.1])
def test_k_scales_the_encoder_step_and_nothing_else(k_t):
    plain, modulated = fresh_pair()
    moved_plain = one_step(plain, {})
    moved = one_step(modulated, {"t": k_t, "a": 1.0, "v": 1.0})
    assert moved["encoder.t"] == pytest.approx(k_t * moved_plain["encoder.t"], rel=1e-4)
    for name in ("encoder.a", "encoder.v", "shared"):
        assert moved[name] == pytest.approx(moved_plain[name], rel=1e-6)
    assert moved_plain["encoder.t"] > 0


def test_scaling_the_gradient_instead_would_do_nothing_under_adam():
    """Why eq. 18 goes to the optimiser: a gradient scale is cancelled by Adam's normalisation
    (the authors' code and the previous version here did this)."""
    a, b = torch.nn.Parameter(torch.ones(50)), torch.nn.Parameter(torch.ones(50))
    grad = torch.randn(50, generator=torch.Generator().manual_seed(0))
    for p, scale in ((a, 1.0), (b, 0.5)):
        p.grad = grad * scale
        Adam([p], lr=1e-2).step()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_noise_goes_to_every_encoder_after_the_step_only_when_asked():
    quiet, noisy = fresh_pair()
    one_step(quiet, {"t": 0.5})
    one_step(noisy, {"t": 0.5}, noise_seed=3)
    for m in "tav":
        q = torch.cat([p.detach().flatten() for p in quiet.encoders[m].parameters()])
        n = torch.cat([p.detach().flatten() for p in noisy.encoders[m].parameters()])
        assert not torch.equal(q, n)
    for pq, pn in zip(quiet.head.parameters(), noisy.head.parameters(), strict=True):
        assert torch.equal(pq, pn)  # the classifier gets no noise
