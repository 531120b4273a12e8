"""Training settings: TrainConfig (frozen), the per-dataset presets, and configs_for.

configs_for(model_preset, modalities, overrides) -> (Ada2IConfig, TrainConfig)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

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
)
from pipeline.training.settings import SettingsError, coerce_setting, coerce_settings

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
    each coerced to its field's type and checked (pipeline.training.settings; SettingsError otherwise)."""
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
