"""Settings from the edges (`--set KEY=VALUE`, a flow's `overrides`), coerced and checked.

Every key of Ada2IConfig (model/config.py) or TrainConfig (pipeline/training/train_config.py) can be overridden.
A value is coerced to the field's annotated type with pydantic (so "10" -> 10, "False" -> False,
"1e-3" -> 0.001), then checked against RULES below, keyed by field name. An error names the key,
the value and what is expected, for every bad setting at once.

Types come from the dataclasses, so a new field needs no code here; its allowed values do:
tests/training/test_settings.py fails for a field that is not a plain bool and has no entry in RULES.
model/ stays torch-only: the ranges live here, not in the config classes.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from dataclasses import dataclass, fields
from functools import cache
from typing import Annotated, Any

from pydantic import BeforeValidator, TypeAdapter, ValidationError

from model.config import MODALITY_ORDER, THETA_SOFTMAX, Ada2IConfig


class SettingsError(ValueError):
    """One or more bad settings; the message has one line per setting."""


# ---- rules --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """low <= value <= high (or < where open); numbers must be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: float) -> str | None:
        bad = not math.isfinite(value)
        if self.low is not None:
            bad |= value <= self.low if self.low_open else value < self.low
        if self.high is not None:
            bad |= value >= self.high if self.high_open else value > self.high
        return f"a finite number {self.describe()}" if bad else None

    def describe(self) -> str:
        lo = None if self.low is None else f"{'>' if self.low_open else '>='} {_num(self.low)}"
        hi = None if self.high is None else f"{'<' if self.high_open else '<='} {_num(self.high)}"
        if lo and hi:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        return lo or hi or "(any)"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def problem(self, value: str) -> str | None:
        return None if value in self.options else f"one of {', '.join(self.options)}"


@dataclass(frozen=True)
class Pattern:
    regex: str
    expected: str

    def problem(self, value: str) -> str | None:
        return None if re.fullmatch(self.regex, value) else self.expected


@dataclass(frozen=True)
class Modalities:
    def problem(self, value: str) -> str | None:
        ok = value and set(value) <= set(MODALITY_ORDER) and len(set(value)) == len(value)
        return None if ok else "a non-empty subset of the letters t, a, v without repeats"


@dataclass(frozen=True)
class Derived:
    """Taken from the feature set by training; an override would be silently replaced."""

    def problem(self, value: Any) -> str | None:
        return "cannot be set: training takes it from the feature set"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_1 = Range(1)
FRACTION_OPEN = Range(0, 1, low_open=True, high_open=True)

# Allowed values of every non-bool field of Ada2IConfig and TrainConfig.
RULES: dict[str, Any] = {
    # Ada2IConfig (model/config.py)
    "input_dims": Derived(),
    "n_classes": Derived(),
    "modalities": Modalities(),
    "hidden": AT_LEAST_1,
    "rank": AT_LEAST_1,
    "beta": Range(0, 1),  # eq. 7 residual weight
    "alpha": NON_NEGATIVE,  # k = 1 - tanh(alpha * rho); 0 = no modulation
    "encoder_style": Choice(("projected", "authors")),
    "encoder_layers": AT_LEAST_1,
    "encoder_heads": NON_NEGATIVE,  # 0 = automatic
    "encoder_ff": NON_NEGATIVE,  # 0 = automatic
    "dropout": Range(0, 1, high_open=True),
    "afw_layers": AT_LEAST_1,
    "afw_dropout": Range(0, 1, high_open=True),
    "mlp_hidden": NON_NEGATIVE,  # 0 = hidden
    "cosine_scale": POSITIVE,
    "theta_softmax": Choice(THETA_SOFTMAX),  # axis of eq. 4's softmax
    "qk_init_std": NON_NEGATIVE,  # 0 = torch's default init
    "afw_gate_init": NON_NEGATIVE,  # 0 = torch's default init
    # TrainConfig (pipeline/training/train_config.py)
    "lr": POSITIVE,
    "batch_size": AT_LEAST_1,
    "micro_batch_utterances": NON_NEGATIVE,  # 0 = whole batch
    "epochs": AT_LEAST_1,
    "weight_decay": NON_NEGATIVE,
    "grad_clip": POSITIVE,
    "lr_schedule": Choice(("plateau", "cosine", "none")),
    "plateau_factor": FRACTION_OPEN,
    "plateau_patience": NON_NEGATIVE,
    "patience": AT_LEAST_1,
    "modulation_start": AT_LEAST_1,
    "modulation_end": NON_NEGATIVE,  # 0 = until the end
    "context_augment_p": Range(0, 1),  # 0 = off
    "context_subset_share": Range(0, 1),
    "context_subset_max": AT_LEAST_1,
    "seed": Range(0, 2**32 - 1),  # numpy's seed range
    "threads": NON_NEGATIVE,  # 0 = torch's default
    "device": Pattern(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda, cuda:N or mps"),
    "eval_batch_size": AT_LEAST_1,
    "dev_fraction": FRACTION_OPEN,
}

# ---- coercion -----------------------------------------------------------------------------------

_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


def _parse_bool(value: Any) -> Any:
    """true/false in any case, 1/0; not pydantic's yes/no/on/off (a typo should not pass)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("not a boolean")


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would take True as 1
        raise ValueError("a boolean is not a number")
    return value


_EXPECTED = {
    bool: "true or false (also True/False/1/0)",
    int: "an integer",
    float: "a number",
    str: "a string",
}


@cache
def field_types() -> dict[str, Any]:
    """Setting name -> annotated type, from both config dataclasses (resolved annotations)."""
    from pipeline.training.train_config import (
        TrainConfig,  # here: pipeline.training.train_config imports this module
    )

    out: dict[str, Any] = {}
    for cls in (Ada2IConfig, TrainConfig):
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name in out:
                raise TypeError(f"setting {f.name!r} is a field of two config classes")
            out[f.name] = hints[f.name]
    return out


@cache
def _adapter(tp: Any) -> TypeAdapter:
    if tp is bool:
        return TypeAdapter(Annotated[bool, BeforeValidator(_parse_bool)])
    if tp in (int, float):
        return TypeAdapter(Annotated[tp, BeforeValidator(_no_bool)])
    return TypeAdapter(tp)


def coerce_setting(key: str, value: Any) -> Any:
    """One setting -> its typed, checked value; SettingsError naming key, value and expectation."""
    problem, typed = _check(key, value)
    if problem:
        raise SettingsError(problem)
    return typed


def coerce_settings(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Every setting coerced and checked; all problems reported in one SettingsError."""
    out, problems = {}, []
    for key, value in (overrides or {}).items():
        problem, typed = _check(str(key), value)
        if problem:
            problems.append(problem)
        else:
            out[key] = typed
    if problems:
        head = "bad setting" if len(problems) == 1 else f"{len(problems)} bad settings"
        raise SettingsError(f"{head}: " + "; ".join(problems))
    return out


def _check(key: str, value: Any) -> tuple[str | None, Any]:
    types = field_types()
    if key not in types:
        near = difflib.get_close_matches(key, types, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(near)}?" if near else f"known: {', '.join(types)}"
        return f"unknown setting {key!r} ({hint})", None
    tp, rule = types[key], RULES.get(key)
    try:
        typed = _adapter(tp).validate_python(value)
    except ValidationError as exc:
        expected = _EXPECTED.get(tp, f"a value of type {_type_name(tp)}")
        if rule is not None and not isinstance(rule, Derived):
            expected += f" {_rule_text(rule)}"
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        return f"{key}={value!r}: expected {expected} ({reason})", None
    problem = rule.problem(typed) if rule is not None else None
    if problem:
        if isinstance(rule, Range) and tp is int:
            problem = problem.replace("a finite number", "an integer")
        if not isinstance(rule, Derived):
            problem = f"expected {problem}"
        return f"{key}={value!r}: {problem}", None
    return None, typed


def _rule_text(rule: Any) -> str:
    if isinstance(rule, Range):
        return rule.describe()
    if isinstance(rule, Choice | Pattern):
        return f"({rule.problem('')})"
    return ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)
