"""Any CSV / JSONL / Parquet table -> manifest, through a column mapping.

    load_generic("talks.csv", columns={"dialogue_id": "talk", "text": "sentence",
                                       "video_path": "file"}, defaults={"speaker": "?"})

Unmapped manifest columns are taken from a column of the same name, then from `defaults`; start_s
defaults to 0 and end_s to NaN (whole file), utterance_id to "{dialogue_id}_{k}" (k = position in the
dialogue). Relative media paths are resolved against media_root (default: the table's folder).
Other columns are kept as extras.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pipeline.dataset.manifest import COLUMNS, MEDIA_COLUMNS, normalize

_FALLBACK = {"start_s": 0.0, "end_s": float("nan"), "speaker": "", "text": ""}


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True, dtype=False)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise ValueError(f"{path}: unsupported table format {suffix!r} (csv, jsonl, parquet)")


def load_generic(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    defaults: Mapping[str, object] | None = None,
    media_root: str | Path | None = None,
) -> pd.DataFrame:
    """Table -> manifest. columns maps manifest column -> source column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table not found")
    raw = _read_table(path)
    columns, defaults = dict(columns or {}), dict(defaults or {})
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"{path}: mapping names non-manifest column(s) {sorted(unknown)}")
    absent = {src for src in columns.values() if src not in raw.columns}
    if absent:
        raise ValueError(f"{path}: mapped source column(s) not in the table: {sorted(absent)}")
    df = raw.rename(columns={src: dst for dst, src in columns.items()})
    df = df.loc[:, ~df.columns.duplicated()]
    for col in COLUMNS:
        if col not in df.columns:
            if col in defaults:
                df[col] = defaults[col]
            elif col in _FALLBACK:
                df[col] = _FALLBACK[col]
    if "dialogue_id" not in df.columns:
        raise ValueError(f"{path}: no dialogue_id column (map one or give a default)")
    if "utterance_id" not in df.columns:
        df["utterance_id"] = [
            f"{d}_{k}"
            for d, k in zip(df["dialogue_id"], df.groupby("dialogue_id").cumcount(), strict=True)
        ]
    base = Path(media_root) if media_root is not None else path.resolve().parent
    for col in MEDIA_COLUMNS:
        if col in df.columns:
            df[col] = [
                str((base / p).resolve())
                if isinstance(p, str) and p and not Path(p).is_absolute()
                else p
                for p in df[col]
            ]
    return normalize(df, source=str(path))
