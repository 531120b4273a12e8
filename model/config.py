"""Ada2I configuration: one frozen dataclass, presets from the paper's Table 2.

Dimension letters used in shape comments across model/:
    B dialogues in a batch, T utterances (padded), D_m input feature dim of modality m,
    H hidden dim, R tensor-ring rank, C classes, M modalities in use.

Each field declares its type and allowed values once, here: ``Annotated[int, Range(1)]``, a
``Literal`` of choices, or ``Modalities``. ``check_fields`` enforces them when a config is built;
pipeline.training.train_config reads the same declarations to coerce and check `--set KEY=VALUE`.
"""

from __future__ import annotations

import functools
import math
import re
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Annotated, Any, Literal

# ---- modalities ---------------------------------------------------------------------------------

MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}
MODALITY_ORDER = "".join(MODALITY_NAMES)  # canonical order: contractions, concatenation, outputs
SUBSETS = ("tav", "ta", "tv", "av", "t", "a", "v")  # the paper's Table 3 settings + unimodal


def modalities_problem(modalities: Any) -> str | None:
    """What is wrong with a modalities value (None if nothing): the expectation, for messages."""
    letters = modalities.strip().lower() if isinstance(modalities, str) else ""
    unknown = sorted(set(letters) - set(MODALITY_ORDER))
    if letters and not unknown and len(set(letters)) == len(letters):
        return None
    names = ", ".join(f"{m!r} ({name})" for m, name in MODALITY_NAMES.items())
    return f"a non-empty subset of the letters {names} without repeats, e.g. 'tav' or 'ta'" + (
        f"; unknown letter(s) {', '.join(unknown)}" if unknown else ""
    )


def parse_modalities(modalities: str) -> str:
    """'VAT', ' at' -> 'tav', 'ta': distinct letters of t, a, v (any case) in canonical order;
    ValueError naming the value and what is expected otherwise. The one parser of modalities."""
    problem = modalities_problem(modalities)
    if problem:
        raise ValueError(f"modalities {modalities!r}: expected {problem}")
    letters = modalities.strip().lower()
    return "".join(m for m in MODALITY_ORDER if m in letters)


# ---- allowed values of a field ------------------------------------------------------------------


class Rule:
    """The allowed values of a config field, declared on it: ``Annotated[int, Range(1)]``.

    Called with a value of the field's type: returns it (canonical) or raises ValueError whose
    message is what is expected ("an integer >= 1"). pydantic runs it after its own type check
    (pipeline.training.train_config, flow parameters); pydantic is imported only then, so model/
    stays cheap to import on the prediction path.
    """

    def __call__(self, value: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self, handler(source))


@dataclass(frozen=True)
class Range(Rule):
    """low <= value <= high (or < where open); numbers must be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __call__(self, value: float) -> float:
        bad = not math.isfinite(value)
        if self.low is not None:
            bad |= value <= self.low if self.low_open else value < self.low
        if self.high is not None:
            bad |= value >= self.high if self.high_open else value > self.high
        if bad:
            kind = "an integer" if isinstance(value, int) else "a finite number"
            raise ValueError(f"{kind} {self.describe()}")
        return value

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
class Pattern(Rule):
    regex: str
    expected: str

    def __call__(self, value: str) -> str:
        if not re.fullmatch(self.regex, value):
            raise ValueError(self.expected)
        return value

    def describe(self) -> str:
        return f"({self.expected})"


class ModalityLetters(Rule):
    def __call__(self, value: str) -> str:
        problem = modalities_problem(value)
        if problem:
            raise ValueError(problem)  # the expectation alone: callers name the field
        return parse_modalities(value)

    def describe(self) -> str:
        return "(modality letters, e.g. tav)"


# Modality letters as a type: a config field, an argparse type (via parse_modalities), a flow
# parameter (pydantic runs the rule and hands the flow the canonical string).
Modalities = Annotated[str, ModalityLetters()]

POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_1 = Range(1)
FRACTION_OPEN = Range(0, 1, low_open=True, high_open=True)
UNIT = Range(0, 1)

Count = Annotated[int, AT_LEAST_1]
Size = Annotated[int, NON_NEGATIVE]  # where 0 means "automatic" or "off" (see the field)
Rate = Annotated[float, Range(0, 1, high_open=True)]  # a dropout probability


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> its declared type (``Annotated[...]`` with its rules), resolved."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in fields(cls)}


def rules_of(tp: Any) -> tuple[Any, list[Rule]]:
    """``Annotated[int, Range(1)]`` -> (int, [Range(1)]); a plain type -> (type, [])."""
    if typing.get_origin(tp) is Annotated:
        base, *extra = typing.get_args(tp)
        return base, [r for r in extra if isinstance(r, Rule)]
    return tp, []


def field_problem(tp: Any, value: Any) -> tuple[str | None, Any]:
    """(what is expected, None) for a value of the right type that breaks the field's declared
    choices or rules, else (None, the value as kept: modalities in canonical order)."""
    base, rules = rules_of(tp)
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if value not in choices:
            return f"one of {', '.join(map(str, choices))}", None
    for rule in rules:
        try:
            value = rule(value)
        except ValueError as exc:
            return str(exc), None
    return None, value


def check_fields(cfg: Any) -> None:
    """Every field of a frozen config dataclass against its declared choices and rules:
    ValueError "key=value: expected ..." for the first bad one; canonicalises in place."""
    for name, tp in field_types(type(cfg)).items():
        value = getattr(cfg, name)
        problem, kept = field_problem(tp, value)
        if problem:
            raise ValueError(f"{name}={value!r}: expected {problem}")
        if kept is not value:
            object.__setattr__(cfg, name, kept)


# Axis of eq. 4's softmax over Theta [R, R] (Ada2IConfig.theta_softmax).
ThetaSoftmax = Literal["last", "first", "joint", "none"]
THETA_SOFTMAX: tuple[str, ...] = typing.get_args(ThetaSoftmax)


@dataclass(frozen=True)
class Ada2IConfig:
    input_dims: dict[str, int] = field(default_factory=lambda: {"t": 768, "a": 512, "v": 1024})
    n_classes: Annotated[int, Range(2)] = 6
    modalities: Modalities = "tav"

    # Paper Table 2 (IEMOCAP column) unless noted.
    hidden: Count = 300
    rank: Count = 11
    beta: Annotated[float, UNIT] = 0.01  # residual weight in eq. 7 (authors' code: 0.012)
    alpha: Annotated[float, NON_NEGATIVE] = (
        0.037  # modulation strength, k = 1 - tanh(alpha * rho); 0 = none
    )

    # Encoders (paper sec. 3.1 only says "Transformer").
    # "projected": Linear(D_m -> H) then a Transformer at width H (ours: ~7x fewer FLOPs).
    # "authors": Transformer at width D_m (ff 2048) then Linear(D_m -> H), as the authors' code.
    encoder_style: Literal["projected", "authors"] = "projected"
    encoder_layers: Count = 2  # authors' code
    encoder_heads: Size = 0  # 0 = the largest count <= 8 that divides the width
    encoder_ff: Size = 0  # 0 = 2 * width ("projected"), 2048 ("authors")
    positional: bool = True  # ours: utterance order matters in dialogue; authors' code has none
    dropout: Rate = 0.3  # ours, tuned on synthetic dev data; authors' code 0.5

    # Adaptive feature weighting (sec. 3.2).
    use_afw: bool = True
    afw_layers: Count = 2  # authors' code stacks two
    # Dropout on each AFW layer's output: the authors' code uses the encoders' rate there; ours 0
    # (docs/ada2i.md #10: with 0.3 the 5-epoch dev W-F1 on real IEMOCAP TA was ~2 points lower).
    afw_dropout: Rate = 0.0
    # Eq. 4's softmax, over which axis of Theta [R, R] (the paper does not say): "last" (rows sum
    # to 1), "first" (columns), "joint" (all R*R entries), "none" (the authors' code). See
    # docs/ada2i.md #6 for why the default was chosen. Checkpoints saved before this choice stored
    # a bool: True meant "last", False "none".
    theta_softmax: ThetaSoftmax = "joint"
    # Std of each tensor-ring projection (Z W_Q1, ...) at initialisation, for LayerNorm'd Z; 0 =
    # torch's default Linear init (std ~0.58). Theta's scores are products of four projections
    # over sqrt(R), so at ~0.58 they are ~0.03 and eq. 4's softmax starts almost uniform; at 1.0
    # the contracted tensor varies across utterances ~100x more (bench/afw_signal.py).
    qk_init_std: Annotated[float, NON_NEGATIVE] = 1.0
    # Eq. 7's gate Att at initialisation: 0 = torch's default Linear init (Att ~ +-0.1, so each
    # AFW layer starts by shrinking Z ~10x with random signs); g > 0 = Att's bias starts at g - beta
    # and its weights ~0.1x, so Z^{f-adapt} starts near g * Z and AFW learns its way from there.
    afw_gate_init: Annotated[float, NON_NEGATIVE] = 0.0
    # L_feature trains Phi_m and Att_m but does not reach the encoders through Phi_m's input
    # (docs/ada2i.md #12, measured on real IEMOCAP TA).
    mapping_detach: bool = True
    contract_self: bool = False  # eq. 6 lists all three A; the code (and the issue) use the others

    # Adaptive modality weighting (sec. 3.3). False = plain concatenation + linear classifier.
    use_amw: bool = True
    mlp_hidden: Size = 0  # MLP of eq. 9 on the fused class scores; 0 = hidden
    # y_hat = Z^{m-adapt} + MLP(Z^{m-adapt}) with the MLP's last layer zero at init, instead of
    # eq. 9's plain MLP: predictions start as the fused scores L_modal trains, rather than waiting
    # for a random MLP to learn the identity (docs/ada2i.md #15).
    mlp_residual: bool = True
    # Cosine scores live in [-1, 1]; unscaled, their softmax stays near uniform and training
    # crawls (NormFace, which the paper cites, shows the same). 1.0 = the paper's eq. 8 as written.
    cosine_scale: Annotated[float, POSITIVE] = 10.0

    def __post_init__(self) -> None:
        check_fields(self)  # every field's declared type and range; modalities made canonical
        missing = [m for m in self.modalities if m not in self.input_dims]
        if missing:
            raise ValueError(f"no input dim for modalities {missing}; input_dims={self.input_dims}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_dims"] = {m: int(v) for m, v in self.input_dims.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ada2IConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Ada2I config fields {sorted(unknown)}")
        return cls(**d)

    def with_(self, **changes: Any) -> Ada2IConfig:
        return replace(self, **changes)


def heads_for(width: int, requested: int = 0, max_heads: int = 8) -> int:
    if requested:
        if width % requested:
            raise ValueError(f"encoder_heads={requested} does not divide width {width}")
        return requested
    return next(h for h in range(max_heads, 0, -1) if width % h == 0)


# Paper Table 2. Feature dims are the paper's; real runs take dims from the feature set.
PRESETS: dict[str, dict[str, Any]] = {
    "iemocap": dict(
        input_dims={"t": 768, "a": 512, "v": 1024},
        n_classes=6,
        hidden=300,
        rank=11,
        alpha=0.037,
        beta=0.01,
    ),
    "meld": dict(
        input_dims={"t": 768, "a": 300, "v": 342},
        n_classes=7,
        hidden=200,
        rank=6,
        alpha=0.4,
        beta=0.55,
    ),
    "mosei": dict(
        input_dims={"t": 768, "a": 512, "v": 1024},
        n_classes=7,
        hidden=500,
        rank=10,
        alpha=0.4,
        beta=0.2,
    ),
    # Small and fast, for tests and the demo (not from the paper).
    "tiny": dict(
        n_classes=4, hidden=32, rank=4, alpha=0.1, beta=0.2, encoder_layers=1, afw_layers=1
    ),
}

# The authors' encoder sizes (official-code-notes.md), for like-for-like comparisons.
AUTHORS_ENCODERS: dict[str, Any] = dict(
    encoder_style="authors", dropout=0.5, afw_dropout=0.5, positional=False
)

# The plain baseline of the benchmarks: same encoders, concatenation, no AFW/AMW/modulation.
CONCAT_BASELINE: dict[str, Any] = dict(use_afw=False, use_amw=False)


# The preset names as a type: argparse choices, flow parameter hints.
ModelPreset = Literal[tuple(PRESETS)]
MODEL_PRESETS: tuple[str, ...] = tuple(PRESETS)


def preset(name: str, **overrides: Any) -> Ada2IConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
    return Ada2IConfig(**{**PRESETS[name], **overrides})
