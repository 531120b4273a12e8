"""pipeline.training.optim against torch.optim: the same updates, LR schedules and state layout."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.training.optim import Adam, CosineAnnealingLR, ReduceLROnPlateau


def params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(7, 5, generator=g)),
        torch.nn.Parameter(torch.randn(5, generator=g)),
        torch.nn.Parameter(torch.randn(3, 2, 4, generator=g)),
    ]


def run_steps(optimizer, ps, steps, seed=1, skip_every=0):
    """Random gradients (the same for every optimiser given the seed); every `skip_every`-th step
    one parameter has no gradient, as an unused modality would."""
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        optimizer.zero_grad(set_to_none=True)
        for j, p in enumerate(ps):
            grad = torch.randn(p.shape, generator=g)
            if not (skip_every and i % skip_every == 0 and j == 1):
                p.grad = grad
        optimizer.step()


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_matches_torch_optim_adam_bit_for_bit(weight_decay):
    ours, theirs = params(), params()
    run_steps(Adam(ours, lr=3e-2, weight_decay=weight_decay), ours, 25, skip_every=4)
    run_steps(
        torch.optim.Adam(theirs, lr=3e-2, weight_decay=weight_decay), theirs, 25, skip_every=4
    )
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0], params()[0])  # it did move


def test_adam_state_round_trip_resumes_exactly():
    straight = params()
    run_steps(Adam(straight, lr=1e-2, weight_decay=1e-3), straight, 10)

    first = params()
    opt = Adam(first, lr=1e-2, weight_decay=1e-3)
    run_steps(opt, first, 5)
    saved = opt.state_dict()
    assert saved["param_groups"][0]["params"] == [0, 1, 2]
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}

    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    opt2 = Adam(resumed, lr=0.5)  # the saved lr wins
    opt2.load_state_dict(saved)
    # the second half must see the same gradients as the straight run's steps 6-10
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        for p in resumed:
            torch.randn(p.shape, generator=g)
    for _ in range(5):
        opt2.zero_grad()
        for p in resumed:
            p.grad = torch.randn(p.shape, generator=g)
        opt2.step()
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)


def test_adam_loads_a_torch_optim_state():
    """Trainer states written before pipeline.training.optim (by torch.optim.Adam) still resume."""
    ours, theirs = params(), params()
    torch_opt = torch.optim.Adam(theirs, lr=1e-2)
    run_steps(torch_opt, theirs, 3)
    with torch.no_grad():
        for a, b in zip(ours, theirs, strict=True):
            a.copy_(b)
    adam = Adam(ours, lr=1e-2)
    adam.load_state_dict(torch_opt.state_dict())
    run_steps(adam, ours, 3, seed=5)
    run_steps(torch_opt, theirs, 3, seed=5)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_adam_refuses_mismatched_state_and_bad_settings():
    opt = Adam(params(), lr=1e-2)
    run_steps(opt, opt.param_groups[0]["params"], 1)
    state = opt.state_dict()
    other = Adam([torch.nn.Parameter(torch.zeros(7, 6)), *params()[1:]], lr=1e-2)
    with pytest.raises(
        ValueError, match=r"state 0.exp_avg has shape \(7, 5\), parameter has \(7, 6\)"
    ):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="parameter groups"):
        Adam(params()[:2], lr=1e-2).load_state_dict(state)
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([], lr=1e-2)
    with pytest.raises(ValueError, match="invalid Adam settings"):
        Adam(params(), lr=-1.0)


def test_grad_scaler_drives_adam_and_skips_overflowing_steps():
    ps = params()
    opt = Adam(ps, lr=1e-1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = [p.detach().clone() for p in ps]
    loss = sum((p**2).sum() for p in ps)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.testing.assert_close(ps[0].grad, 2 * before[0])  # unscaled back to the true gradient
    scaler.step(opt)
    scaler.update()
    assert not torch.equal(ps[0], before[0])

    moved = [p.detach().clone() for p in ps]
    opt.zero_grad()
    (sum((p**2).sum() for p in ps) * float("inf")).backward()
    scaler.step(opt)  # inf gradients: the step is skipped and the scale backs off
    scaler.update()
    assert all(torch.equal(p, q) for p, q in zip(ps, moved, strict=True))
    assert scaler.get_scale() < 2.0**10


def test_plateau_schedule_matches_torch():
    ours_opt, torch_opt = Adam(params(), lr=1.0), torch.optim.Adam(params(), lr=1.0)
    ours = ReduceLROnPlateau(ours_opt, factor=0.5, patience=2, cooldown=1, min_lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(
        torch_opt, mode="min", factor=0.5, patience=2, cooldown=1, min_lr=0.1
    )
    losses = [5, 4, 4.2, 4.1, 4.3, 3.0, 3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0]
    lrs = []
    for loss in losses:
        ours.step(loss)
        theirs.step(loss)
        lrs.append(ours_opt.param_groups[0]["lr"])
        assert ours_opt.param_groups[0]["lr"] == torch_opt.param_groups[0]["lr"]
        assert ours.num_bad_epochs == theirs.num_bad_epochs and ours.best == theirs.best
    assert lrs[-1] == 0.1 and min(lrs) == 0.1 and lrs[0] == 1.0  # it reduced, down to min_lr

    restored = ReduceLROnPlateau(Adam(params(), lr=1.0), factor=0.5, patience=2)
    restored.load_state_dict(theirs.state_dict())  # torch's state (older trainer states) loads
    assert restored.state_dict() == ours.state_dict()


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_cosine_schedule_matches_torch():
    ours_opt, torch_opt = Adam(params(), lr=0.3), torch.optim.Adam(params(), lr=0.3)
    ours = CosineAnnealingLR(ours_opt, T_max=10)
    theirs = torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=10)
    for _ in range(10):
        ours.step()
        theirs.step()
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(
            torch_opt.param_groups[0]["lr"], abs=1e-12
        )
    assert ours_opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)
    ours.step()  # past T_max the LR stays at its floor
    assert ours_opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)
    half = CosineAnnealingLR(Adam(params(), lr=0.3), T_max=10)
    half.load_state_dict({"last_epoch": 4, "base_lrs": [0.3]})
    half.step()
    assert half.optimizer.param_groups[0]["lr"] == pytest.approx(0.15 * (1 + math.cos(math.pi / 2)))


def test_update_scale_multiplies_the_step_of_its_group_only():
    ours, ref = params(), params()
    opt = Adam([{"params": ours[:1], "update_scale": 0.5}, {"params": ours[1:]}], lr=1e-2)
    ref_opt = Adam(ref, lr=1e-2)
    start = [p.detach().clone() for p in ours]
    run_steps(opt, ours, 1)
    run_steps(ref_opt, ref, 1)
    torch.testing.assert_close(ours[0] - start[0], 0.5 * (ref[0] - start[0]))
    for a, b in zip(ours[1:], ref[1:], strict=True):
        assert torch.equal(a, b)


def test_a_single_group_state_loads_into_named_groups():
    """Trainer states saved before the per-modality groups still resume."""
    old = params()
    opt = Adam(old, lr=1e-2, weight_decay=1e-3)
    run_steps(opt, old, 3)
    saved = opt.state_dict()
    same = [torch.nn.Parameter(p.detach().clone()) for p in old]
    grouped = Adam([{"params": same[:2], "name": "encoder.t"}, {"params": same[2:]}], lr=0.5)
    grouped.load_state_dict(saved)
    assert [g["lr"] for g in grouped.param_groups] == [1e-2, 1e-2]
    run_steps(opt, old, 2, seed=5)
    run_steps(grouped, same, 2, seed=5)
    for a, b in zip(old, same, strict=True):
        assert torch.equal(a, b)
