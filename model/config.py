"""Ada2I configuration: one frozen dataclass, presets from the paper's Table 2.

Dimension letters used in shape comments across model/:
    B dialogues in a batch, T utterances (padded), D_m input feature dim of modality m,
    H hidden dim, R tensor-ring rank, C classes, M modalities in use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

MODALITY_ORDER = "tav"  # canonical order: contractions, concatenation and outputs follow it
THETA_SOFTMAX = ("last", "first", "joint", "none")  # axis of eq. 4's softmax over Theta [R, R]
SUBSETS = ("tav", "ta", "tv", "av", "t", "a", "v")  # the paper's Table 3 settings + unimodal


@dataclass(frozen=True)
class Ada2IConfig:
    input_dims: dict[str, int] = field(default_factory=lambda: {"t": 768, "a": 512, "v": 1024})
    n_classes: int = 6
    modalities: str = "tav"

    # Paper Table 2 (IEMOCAP column) unless noted.
    hidden: int = 300
    rank: int = 11
    beta: float = 0.01  # residual weight in eq. 7 (authors' code: 0.012)
    alpha: float = 0.037  # modulation strength, k = 1 - tanh(alpha * rho)

    # Encoders (paper sec. 3.1 only says "Transformer").
    # "projected": Linear(D_m -> H) then a Transformer at width H (ours: ~7x fewer FLOPs).
    # "authors": Transformer at width D_m (ff 2048) then Linear(D_m -> H), as the authors' code.
    encoder_style: str = "projected"
    encoder_layers: int = 2  # authors' code
    encoder_heads: int = 0  # 0 = the largest count <= 8 that divides the width
    encoder_ff: int = 0  # 0 = 2 * width ("projected"), 2048 ("authors")
    positional: bool = True  # ours: utterance order matters in dialogue; authors' code has none
    dropout: float = 0.3  # ours, tuned on synthetic dev data; authors' code 0.5

    # Adaptive feature weighting (sec. 3.2).
    use_afw: bool = True
    afw_layers: int = 2  # authors' code stacks two
    # Dropout on each AFW layer's output: the authors' code uses the encoders' rate there; ours 0
    # (docs/ada2i.md #10: with 0.3 the 5-epoch dev W-F1 on real IEMOCAP TA was ~2 points lower).
    afw_dropout: float = 0.0
    # Eq. 4's softmax, over which axis of Theta [R, R] (the paper does not say): "last" (rows sum
    # to 1), "first" (columns), "joint" (all R*R entries), "none" (the authors' code). See
    # docs/ada2i.md #6 for why the default was chosen. Checkpoints saved before this choice stored
    # a bool: True meant "last", False "none".
    theta_softmax: str = "joint"
    # Std of each tensor-ring projection (Z W_Q1, ...) at initialisation, for LayerNorm'd Z; 0 =
    # torch's default Linear init (std ~0.58). Theta's scores are products of four projections
    # over sqrt(R), so at ~0.58 they are ~0.03 and eq. 4's softmax starts almost uniform; at 1.0
    # the contracted tensor varies across utterances ~100x more (bench/afw_signal.py).
    qk_init_std: float = 1.0
    # Eq. 7's gate Att at initialisation: 0 = torch's default Linear init (Att ~ +-0.1, so each
    # AFW layer starts by shrinking Z ~10x with random signs); g > 0 = Att's bias starts at g - beta
    # and its weights ~0.1x, so Z^{f-adapt} starts near g * Z and AFW learns its way from there.
    afw_gate_init: float = 0.0
    # L_feature trains Phi_m and Att_m but does not reach the encoders through Phi_m's input
    # (docs/ada2i.md #12, measured on real IEMOCAP TA).
    mapping_detach: bool = True
    contract_self: bool = False  # eq. 6 lists all three A; the code (and the issue) use the others

    # Adaptive modality weighting (sec. 3.3). False = plain concatenation + linear classifier.
    use_amw: bool = True
    mlp_hidden: int = 0  # MLP of eq. 9 on the fused class scores; 0 = hidden
    # y_hat = Z^{m-adapt} + MLP(Z^{m-adapt}) with the MLP's last layer zero at init, instead of
    # eq. 9's plain MLP: predictions start as the fused scores L_modal trains, rather than waiting
    # for a random MLP to learn the identity (docs/ada2i.md #15).
    mlp_residual: bool = True
    # Cosine scores live in [-1, 1]; unscaled, their softmax stays near uniform and training
    # crawls (NormFace, which the paper cites, shows the same). 1.0 = the paper's eq. 8 as written.
    cosine_scale: float = 10.0

    def __post_init__(self) -> None:
        if self.theta_softmax not in THETA_SOFTMAX:
            raise ValueError(
                f"theta_softmax must be one of {THETA_SOFTMAX}, got {self.theta_softmax!r}"
            )
        mods = self.modalities
        if not mods or any(m not in MODALITY_ORDER for m in mods) or len(set(mods)) != len(mods):
            raise ValueError(f"modalities must be a non-empty subset of 'tav', got {mods!r}")
        if "".join(m for m in MODALITY_ORDER if m in mods) != mods:
            object.__setattr__(self, "modalities", "".join(m for m in MODALITY_ORDER if m in mods))
        missing = [m for m in self.modalities if m not in self.input_dims]
        if missing:
            raise ValueError(f"no input dim for modalities {missing}; input_dims={self.input_dims}")
        if self.encoder_style not in ("projected", "authors"):
            raise ValueError(
                f"encoder_style must be 'projected' or 'authors', got {self.encoder_style!r}"
            )
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1] (paper eq. 7), got {self.beta}")

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


def preset(name: str, **overrides: Any) -> Ada2IConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
    return Ada2IConfig(**{**PRESETS[name], **overrides})
