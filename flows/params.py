"""Flow parameters: the accepted values, their validation, and where a run writes its outputs.

Everything here runs at the very start of a flow, before any task, so a bad parameter fails the
flow run at once with one clear message instead of half-way through an extraction.

Output folder layout (one folder per experiment; ``runs/`` is git-ignored):

    <out>/demo-data/                 generated demo conversations (dataset "demo" only)
    <out>/manifest.csv               the manifest built by a dataset adapter
    <out>/store/                     feature store (unless ``store_root`` is given)
    <out>/shards/                    manifest shards, one extraction task each
    <out>/featureset/<name>-<key>/   what training reads
    <out>/train/<name>-<key>/        one training run (checkpoint, history)
    <out>/eval/<name>-<key>/         one evaluation (metrics, reports, plots)
    <out>/summary.json               what the last run produced and which stages were cached
    <out>/predictions/               the predict flow's outputs (unless ``predictions_dir``)
    <out>/.prefect-cache/            Prefect task results and cache keys

``<key>`` is a short content hash of the stage's inputs, so a folder never holds the output of a
different configuration and a cached result always points at the right files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pipeline.dataset import SPLITS, Split
from pipeline.features.extract import ExtractorPreset
from pipeline.training.train_config import Modalities, ModelPreset

# The vocabulary is declared once, below flows (model.config: Modalities, ModelPreset;
# extractors.presets: ExtractorPreset; pipeline.dataset: Split). As flow parameter type hints,
# Prefect validates them with pydantic before a run starts.
__all__ = ["ExtractorPreset", "Modalities", "ModelPreset", "SPLITS", "Split"]

Dataset = Literal["demo", "iemocap", "meld", "mosei", "shared"]
Preset = ExtractorPreset  # the name the flows use for the extractor preset
TaskRunnerChoice = Literal["default", "dask"]
# Who writes the store index: every shard ("shared", one host) or this flow only ("keeper": shard
# tasks write entry files, the flow ingests them; for workers on other hosts). auto = keeper with
# a dask_address (a remote cluster may span hosts), shared otherwise.
StoreIndexChoice = Literal["auto", "shared", "keeper"]

DATASETS: tuple[str, ...] = get_args(Dataset)
DEFAULT_OUT = "runs/demo"  # relative to the working directory: the project root for deployments
DEFAULT_MODEL_PRESET = "tiny"  # the demo data is small; "tiny" trains in seconds on a CPU


def check_choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(sorted(choices))}")
    return value


def check_seeds(seeds: list[int] | tuple[int, ...]) -> list[int]:
    from pipeline.training.train_config import coerce_setting

    seeds = [coerce_setting("seed", s) for s in seeds]  # an integer in numpy's seed range
    if not seeds:
        raise ValueError("seeds: give at least one seed, e.g. [0]")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds}: repeated seed")
    return seeds


def check_training(
    model_preset: ModelPreset, modalities: Modalities, overrides: dict | None
) -> dict:
    """Model preset and overrides as pipeline.training.train understands them: returns the overrides
    coerced to their fields' types ({"use_afw": "False"} -> {"use_afw": False}); ValueError
    naming key, value and what is expected otherwise (pipeline.training.train_config)."""
    from pipeline.training.train import configs_for
    from pipeline.training.train_config import coerce_settings

    overrides = coerce_settings(overrides)
    configs_for(model_preset, modalities, overrides)  # raises on an unknown preset or setting
    return overrides


def check_manifest_source(manifest: str | None, dataset: str, root: str | None) -> None:
    """A manifest must exist; a real dataset needs its root folder."""
    if manifest:
        path = Path(manifest).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"manifest not found: {path.resolve()}")
        return
    check_choice("dataset", dataset, DATASETS)
    if dataset == "demo":
        return
    if not root and dataset != "shared":  # shared: root defaults to ../shared
        raise ValueError(f"dataset {dataset!r} needs root= (the folder of the raw dataset)")
    if root and not Path(root).expanduser().is_dir():
        raise FileNotFoundError(f"dataset root not found: {Path(root).expanduser().resolve()}")


def check_dir(name: str, path: str | None) -> None:
    if path and not Path(path).expanduser().is_dir():
        raise FileNotFoundError(f"{name} not found: {Path(path).expanduser().resolve()}")


@dataclass(frozen=True)
class Layout:
    """Where one output folder keeps each stage's files (see the module docstring)."""

    out: Path

    @classmethod
    def at(cls, out_dir: str) -> Layout:
        return cls(Path(out_dir).expanduser().resolve())

    @property
    def demo_data(self) -> Path:
        return self.out / "demo-data"

    @property
    def unseen_demo_data(self) -> Path:
        """Demo conversations generated with another seed: what predict shows by default (the
        training ones would only show the model recalling what it was trained on)."""
        return self.out / "demo-unseen"

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.csv"

    @property
    def store(self) -> Path:
        return self.out / "store"

    @property
    def shards(self) -> Path:
        return self.out / "shards"

    @property
    def featuresets(self) -> Path:
        return self.out / "featureset"

    @property
    def train(self) -> Path:
        return self.out / "train"

    @property
    def eval(self) -> Path:
        return self.out / "eval"

    @property
    def summary(self) -> Path:
        return self.out / "summary.json"

    @property
    def predictions(self) -> Path:
        return self.out / "predictions"

    @property
    def cache(self) -> Path:
        return self.out / ".prefect-cache"


def run_name(checkpoint_dir: str) -> str:
    """<out>/train/tiny-tav-seed0-<key>/best -> tiny-tav-seed0-<key> (the training run's name)."""
    path = Path(checkpoint_dir)
    return path.parent.name if path.name in ("best", "last", "checkpoint") else path.name
