"""Dataset adapters: raw dataset layouts -> manifest DataFrames (pipeline/manifest.py schema).

One module per layout, each with `load_<name>(root, ...) -> pandas.DataFrame`.
"""

from pipeline.adapters.generic import load_generic
from pipeline.adapters.iemocap import load_iemocap
from pipeline.adapters.meld import load_meld
from pipeline.adapters.mosei import load_mosei
from pipeline.adapters.shared import (
    find_shared_root,
    load_shared_clips,
    load_shared_iemocap,
    load_shared_meld,
    load_shared_mosei,
)

__all__ = [
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
