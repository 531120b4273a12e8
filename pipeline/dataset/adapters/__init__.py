"""Dataset adapters: raw dataset layouts -> manifest DataFrames (pipeline/dataset/manifest.py schema).

One module per layout, each with `load_<name>(root, ...) -> pandas.DataFrame`;
`load_dataset(name, root)` picks one by name (what `erc manifest` and the flows use).
"""

from pathlib import Path

import pandas as pd

from pipeline.dataset.adapters.generic import load_generic
from pipeline.dataset.adapters.iemocap import load_iemocap
from pipeline.dataset.adapters.meld import load_meld
from pipeline.dataset.adapters.mosei import load_mosei
from pipeline.dataset.adapters.shared import (
    find_shared_root,
    load_shared_clips,
    load_shared_iemocap,
    load_shared_meld,
    load_shared_mosei,
)

# Where CMU-MOSEI media and transcripts may sit under its root (first found wins).
MOSEI_VIDEO_DIRS = ("Videos/Full/Combined", "videos", "Videos", "Raw/Videos/Full/Combined")
MOSEI_TEXT_DIRS = ("Transcript/Segmented/Combined", "transcripts", "Transcripts")
DATASETS = ("iemocap", "meld", "mosei", "shared")


def load_dataset(name: str, root: str | Path | None) -> pd.DataFrame:
    """A raw dataset layout -> manifest DataFrame. "shared" = the 52 real IEMOCAP clips in
    ../shared/data (root optional)."""
    if name == "shared":
        return load_shared_clips(root)
    if root is None:
        raise ValueError(f"dataset {name!r} needs its root folder")
    if name == "iemocap":
        return load_iemocap(root)
    if name == "meld":
        return load_meld(root)
    if name == "mosei":
        return load_mosei(*mosei_layout(Path(root)))
    raise ValueError(f"no adapter for dataset {name!r}; choose from {', '.join(DATASETS)}")


def mosei_layout(root: Path) -> tuple[Path, Path | None, Path | None]:
    """A CMU-MOSEI folder -> (labels CSV, video folder, transcript folder), the last two optional."""
    labels = root / "CMU_MOSEI_Labels.csv"
    if not labels.is_file():
        found = sorted(root.glob("*abels*.csv"))
        if not found:
            raise FileNotFoundError(f"{root}: no CMU_MOSEI_Labels.csv (or *Labels*.csv)")
        labels = found[0]
    videos = next((root / d for d in MOSEI_VIDEO_DIRS if (root / d).is_dir()), None)
    texts = next((root / d for d in MOSEI_TEXT_DIRS if (root / d).is_dir()), None)
    return labels, videos, texts


__all__ = [
    "DATASETS",
    "load_dataset",
    "mosei_layout",
    "find_shared_root",
    "load_generic",
    "load_iemocap",
    "load_meld",
    "load_mosei",
    "load_shared_clips",
    "load_shared_iemocap",
    "load_shared_meld",
    "load_shared_mosei",
]
