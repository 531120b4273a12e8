"""Adam and the two LR schedules training uses, without torch.optim.

Why not torch.optim: constructing any torch.optim optimizer imports torch._dynamo (its
add_param_group is wrapped in torch._disable_dynamo), which on this CPU machine costs ~130 MiB of
RSS and ~4 s of start-up in every training process, for a compiler training never uses. The update
rules below are torch.optim.Adam's and ReduceLROnPlateau's / CosineAnnealingLR's, operation for
operation; tests/training/test_optim.py checks them against torch.optim step by step.

The state_dict layouts match torch.optim's (state keyed by parameter index with step / exp_avg /
exp_avg_sq, param_groups with "params" as indices; the scheduler attributes keep torch's names),
so trainer states saved by earlier versions still resume. torch.amp.GradScaler only needs
`param_groups` and `step()`, which Adam has.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class Adam:
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, as torch.optim.Adam with
    amsgrad=False, maximize=False.

    `params` is an iterable of parameters (one group) or, as in torch.optim, of group dicts
    {"params": [...], **overrides}. A group may carry `update_scale` (default 1.0), which multiplies
    its step, not its gradient: Ada2I's eq. 18 scales the *update* of a modality's encoder by k_m.
    Scaling the gradient instead does nothing under Adam, whose m / sqrt(v) cancels any slowly
    varying factor (docs/ada2i.md #20).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        params = list(params)
        if not params:
            raise ValueError("Adam got an empty parameter list")
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid Adam settings lr={lr} betas={betas} eps={eps}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "update_scale": 1.0,
        }
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict[str, Any]] = [
            {**defaults, **g, "params": list(g["params"])} for g in groups
        ]
        if any(not g["params"] for g in self.param_groups):
            raise ValueError("Adam got an empty parameter group")
        self.state: dict[nn.Parameter, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            scale = group.get("update_scale", 1.0)
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if weight_decay:
                    grad = grad.add(p, alpha=weight_decay)
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {
                        # A float32 tensor on the CPU, as torch.optim keeps it (same saved layout).
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
                state["step"] += 1
                step = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = lr / (1 - beta1**step)
                if scale != 1.0:  # only then: a scale of 1 stays bit-equal to torch.optim
                    step_size = step_size * scale
                denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict[str, Any]:
        index = {p: i for i, p in enumerate(self._all_params())}
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append(
                {
                    **{k: v for k, v in group.items() if k != "params"},
                    "params": list(range(start, start + n)),
                }
            )
            start += n
        return {"state": {index[p]: dict(s) for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        params = self._all_params()
        saved_groups = state_dict["param_groups"]
        sizes = [len(g["params"]) for g in self.param_groups]
        if (
            len(saved_groups) == 1
            and len(sizes) > 1
            and len(saved_groups[0]["params"]) == sum(sizes)
        ):
            # A state saved with one group (before per-modality groups) over the same parameters
            # in the same order: its settings apply to every group.
            saved_groups = [saved_groups[0]] * len(sizes)
        elif [len(g["params"]) for g in saved_groups] != sizes:
            raise ValueError("optimizer state does not match the model's parameter groups")
        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            for key in ("lr", "eps", "weight_decay"):
                group[key] = float(saved[key])
            group["betas"] = tuple(float(b) for b in saved["betas"])
        self.state = {}
        for idx, slots in state_dict["state"].items():
            p = params[int(idx)]
            for name in ("exp_avg", "exp_avg_sq"):
                if tuple(slots[name].shape) != tuple(p.shape):
                    raise ValueError(
                        f"optimizer state {idx}.{name} has shape {tuple(slots[name].shape)}, "
                        f"parameter has {tuple(p.shape)}"
                    )
            step = slots["step"]
            self.state[p] = {
                "step": step.detach().float().cpu().clone()
                if isinstance(step, torch.Tensor)
                else torch.tensor(float(step)),
                "exp_avg": slots["exp_avg"].to(p.device, p.dtype).clone(),
                "exp_avg_sq": slots["exp_avg_sq"].to(p.device, p.dtype).clone(),
            }

    def _all_params(self) -> list[nn.Parameter]:
        return [p for group in self.param_groups for p in group["params"]]


class ReduceLROnPlateau:
    """Multiply the LR by `factor` once the monitored value (lower is better) has not improved by
    a relative `threshold` for more than `patience` epochs; torch's defaults otherwise."""

    def __init__(
        self,
        optimizer: Adam,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ):
        if factor >= 1.0:
            raise ValueError(f"factor must be < 1, got {factor}")
        self.optimizer = optimizer
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.best = math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def step(self, metric: float) -> None:
        current = float(metric)
        self.last_epoch += 1
        if current < self.best * (1.0 - self.threshold):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group in self.optimizer.param_groups:
                new_lr = max(group["lr"] * self.factor, self.min_lr)
                if group["lr"] - new_lr > self.eps:
                    group["lr"] = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    _STATE = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in self._STATE:
            if k in state:
                setattr(self, k, type(getattr(self, k))(state[k]))


class CosineAnnealingLR:
    """lr_t = eta_min + (lr_0 - eta_min) * (1 + cos(pi * t / T_max)) / 2, stepped once per epoch."""

    def __init__(self, optimizer: Adam, T_max: int, eta_min: float = 0.0):  # noqa: N803 (torch's name)
        self.optimizer, self.T_max, self.eta_min = optimizer, max(int(T_max), 1), eta_min
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_epoch = 0

    def step(self) -> None:
        self.last_epoch += 1
        t = min(self.last_epoch, self.T_max)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = (
                self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
            )

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
