"""Training settings: TrainConfig (frozen), the per-dataset presets, configs_for, and the settings
from the edges (`--set KEY=VALUE`, a flow's `overrides`), coerced and checked.

configs_for(model_preset, modalities, overrides) -> (Ada2IConfig, TrainConfig)
coerce_settings(overrides) / coerce_setting(key, value) -> typed values, or SettingsError

Every key of Ada2IConfig (model/config.py) or TrainConfig (here) can be overridden. Each field
declares its type and allowed values once, on the config class (``Annotated[int, Range(1)]``, a
``Literal`` of choices, ``Modalities``); a value is coerced to that type with pydantic (so "10" ->
10, "False" -> False, "1e-3" -> 0.001) and checked against the same declaration. An error names
the key, the value and what is expected, for every bad setting at once.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import asdict, dataclass
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, TypeAdapter, ValidationError

from model.config import (
    FRACTION_OPEN,
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    Ada2IConfig,
    Count,
    Modalities,
    ModelPreset,
    Pattern,
    Range,
    Size,
    check_fields,
    preset,
    rules_of,
)
from model.config import field_types as config_field_types

Device = Annotated[str, Pattern(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda, cuda:N or mps")]


@dataclass(frozen=True)
class TrainConfig:
    lr: Annotated[float, POSITIVE] = 1.7e-4  # paper Table 2 (IEMOCAP)
    batch_size: Count = 10  # dialogues per batch, paper Table 2
    # Padded utterances per forward/backward pass (ours): a larger batch runs as micro-batches of
    # similar-length dialogues whose gradients add up to the batch's (pipeline.training.data.micro_batches),
    # so peak memory is bounded whatever the dialogue lengths. 480 on IEMOCAP-sized data: 70-90
    # MiB less peak RSS than whole batches at the same speed within run-to-run noise (less padding
    # pays for more passes; BENCHMARKS.md, Training). 0 = the whole batch in one pass.
    micro_batch_utterances: Size = 480
    epochs: Count = 50  # paper Table 2
    weight_decay: Annotated[float, NON_NEGATIVE] = 1e-8  # authors' code
    grad_clip: Annotated[float, POSITIVE] = 2.0  # max global grad norm, authors' code
    lr_schedule: Literal["plateau", "cosine", "none"] = (
        "plateau"  # "plateau" on dev loss (authors' code), "cosine" or "none"
    )
    plateau_factor: Annotated[float, FRACTION_OPEN] = 0.5
    plateau_patience: Size = 5
    patience: Count = 20  # early stop after this many epochs without dev WF1 gain (authors' code)
    modulation: bool = True  # eqs. 16-19
    modulation_start: Count = 4  # first modulated epoch, 1-based (authors' code)
    modulation_end: Size = 0  # last modulated epoch; 0 = until the end
    noise: bool = True  # the Gaussian term of eq. 19
    # Context augmentation (ours; the paper trains on whole dialogues only): each epoch, each
    # training dialogue is, with probability context_augment_p, replaced by a random contiguous
    # window of it (length uniform in 1..L) or, for a share context_subset_share of those, by a
    # random ordered subset of at most context_subset_max utterances (pipeline.training.data.
    # crop_context), so the model also meets the short or sparse dialogues it may be asked to
    # predict: one clip alone, a few clips of a long dialogue. Dev and test stay whole.
    # 0 = off (the paper), the default: docs/ada2i.md gives what it cost and bought, measured.
    context_augment_p: Annotated[float, UNIT] = 0.0
    context_subset_share: Annotated[float, UNIT] = 0.5
    context_subset_max: Count = 10  # the 52 IEMOCAP clips are 2-9 of their dialogue's ~47
    seed: Annotated[int, Range(0, 2**32 - 1)] = 0  # numpy's seed range
    threads: Size = 0  # torch intra-op threads; 0 = leave torch's default
    device: Device = "auto"  # "auto" = CUDA when present, else CPU
    amp: bool = True  # mixed precision on CUDA only
    eval_batch_size: Count = 32
    dev_fraction: Annotated[float, FRACTION_OPEN] = (
        0.1  # carve a dev split from train when the feature set has none
    )
    progress: bool = True
    # Train even when a modality's presence mask predicts the label (presence_leaks in
    # pipeline.features.featureset): only to study such a leak, never for results to report.
    allow_presence_leak: bool = False

    def __post_init__(self) -> None:
        check_fields(self)  # each field's declared type and range

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TRAIN_PRESETS: dict[str, dict[str, Any]] = {  # paper Table 2
    "iemocap": dict(lr=1.7e-4, batch_size=10, epochs=50),
    "meld": dict(lr=1.2e-4, batch_size=10, epochs=50),
    "mosei": dict(lr=1.9e-4, batch_size=32, epochs=30),
    # Small data (the demo: 4 training dialogues): small batches so 20 epochs are 40 steps.
    "tiny": dict(lr=2e-3, batch_size=2, epochs=20, patience=20, modulation_start=2),
}


def configs_for(
    model_preset: ModelPreset,
    modalities: Modalities,
    overrides: dict[str, Any] | None = None,
) -> tuple[Ada2IConfig, TrainConfig]:
    """Model and train configs from a preset name plus flat overrides (keys of either config),
    each coerced to its field's type and checked (coerce_settings, below; SettingsError
    otherwise)."""
    overrides = coerce_settings(overrides)
    if "modalities" in overrides:
        raise SettingsError(
            f"modalities={overrides['modalities']!r}: give the modalities once, as the "
            "modalities argument (erc train --modalities), not as a setting"
        )
    modalities = coerce_setting("modalities", modalities)
    model_keys = set(Ada2IConfig.__dataclass_fields__)
    train_keys = set(TrainConfig.__dataclass_fields__)
    model_cfg = preset(
        model_preset,
        modalities=modalities,
        **{k: v for k, v in overrides.items() if k in model_keys},
    )
    train_cfg = TrainConfig(
        **{
            **TRAIN_PRESETS.get(model_preset, {}),
            **{k: v for k, v in overrides.items() if k in train_keys},
        }
    )
    return model_cfg, train_cfg


# ---- settings from the edges: --set KEY=VALUE and flow overrides, coerced and checked -----------


class SettingsError(ValueError):
    """One or more bad settings; the message has one line per setting."""


# Taken from the feature set by training: an override would be silently replaced.
DERIVED = ("input_dims", "n_classes")

# Coercion: one pydantic TypeAdapter per declared type, with the stricter checks below.

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
