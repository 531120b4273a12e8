"""Settings from the edges (`--set KEY=VALUE`, a flow's `overrides`), coerced and checked.

Every key of Ada2IConfig (model/config.py) or TrainConfig (pipeline/training/train_config.py) can
be overridden. Each field declares its type and allowed values once, on the config class
(``Annotated[int, Range(1)]``, a ``Literal`` of choices, ``Modalities``); a value is coerced to
that type with pydantic (so "10" -> 10, "False" -> False, "1e-3" -> 0.001) and checked against
the same declaration. An error names the key, the value and what is expected, for every bad
setting at once.
"""

from __future__ import annotations

import difflib
import typing
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, TypeAdapter, ValidationError

from model.config import Ada2IConfig, rules_of
from model.config import field_types as config_field_types


class SettingsError(ValueError):
    """One or more bad settings; the message has one line per setting."""


# Taken from the feature set by training: an override would be silently replaced.
DERIVED = ("input_dims", "n_classes")

# ---- coercion -----------------------------------------------------------------------------------

_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


class _WrongType(ValueError):
    """Raised by the checks below, which refine pydantic's type check, not a field's range."""


def _parse_bool(value: Any) -> Any:
    """true/false in any case, 1/0; not pydantic's yes/no/on/off (a typo should not pass)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _WrongType("not a boolean")


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would take True as 1
        raise _WrongType("a boolean is not a number")
    return value


_EXPECTED = {
    bool: "true or false (also True/False/1/0)",
    int: "an integer",
    float: "a number",
    str: "a string",
}


@cache
def field_types() -> dict[str, Any]:
    """Setting name -> declared type (with its rules), from both config dataclasses."""
    from pipeline.training.train_config import (
        TrainConfig,  # here: pipeline.training.train_config imports this module
    )

    out: dict[str, Any] = {}
    for cls in (Ada2IConfig, TrainConfig):
        for name, tp in config_field_types(cls).items():
            if name in out:
                raise TypeError(f"setting {name!r} is a field of two config classes")
            out[name] = tp
    return out


@cache
def _adapter(tp: Any) -> TypeAdapter:
    base, _ = rules_of(tp)
    if base is bool:
        return TypeAdapter(Annotated[bool, BeforeValidator(_parse_bool)])
    if base in (int, float):
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
    if key in DERIVED:
        return f"{key}={value!r}: cannot be set: training takes it from the feature set", None
    tp = types[key]
    try:
        return None, _adapter(tp).validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
    reason = error["msg"].removeprefix("Value error, ")
    wrong_type = isinstance(error.get("ctx", {}).get("error"), _WrongType)
    if error["type"] == "value_error" and not wrong_type:  # outside the field's declared values
        return f"{key}={value!r}: expected {reason}", None
    base, rules = rules_of(tp)
    if typing.get_origin(base) is Literal:
        return f"{key}={value!r}: expected one of {', '.join(typing.get_args(base))}", None
    expected = _EXPECTED.get(base, f"a value of type {_type_name(base)}")
    expected += "".join(f" {rule.describe()}" for rule in rules)
    return f"{key}={value!r}: expected {expected} ({reason})", None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)
