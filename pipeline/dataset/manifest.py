"""The manifest: one row per utterance, the hand-off between dataset adapters and extraction.

Columns (docs/architecture.md, "Manifest"):

    dialogue_id   str    conversation the utterance belongs to
    utterance_id  str    unique over the whole manifest
    speaker       str    speaker name or code ("" = unknown)
    start_s       float  segment start in seconds, in the media file
    end_s         float  segment end in seconds; NaN = until the end of the media (whole clip)
    text          str    transcript ("" = none)
    label         str    class name ("" = unlabelled)
    split         str    "train" | "dev" | "test" | "" (aliases such as "valid" map to "dev")
    video_path    str    absolute once read ("" = none); relative to the manifest file on disk
    audio_path    str    absolute once read ("" = the audio track of video_path, if any)

Extra columns (e.g. orig_start_s from an adapter) are kept. Rows of a dialogue are contiguous and in
utterance order. A row with a bad segment (inverted, zero-length, negative or non-finite start/end)
does not make the manifest unreadable: `validate_rows` lists per-utterance problems so that
extraction can record them and carry on.

Errors: a manifest that cannot be used at all (unknown format, unparseable, missing columns, no
rows, empty or duplicate ids, a label outside its declared label set) raises ManifestError (a
ValueError) naming the file, and the row where there is one; a missing file FileNotFoundError.

Label sets (the last section of this module): the classes of each dataset, in one canonical order.
A FeatureSet's `label_names` (and so a checkpoint's output classes) follow one order per dataset,
whether its features were extracted from a manifest or imported, so that checkpoints and feature
sets of one dataset agree. The order is the authors' (../shared/paper/official-code-notes.md):

    iemocap          hap sad neu ang exc fru              (IEMOCAP-6, label_id 0..5)
    meld             neu sur fea sad joy dis ang          (MELD-7)
    meld-sentiment   neutral positive negative            (MELD's 3 sentiments, the CSV's values)
    mosei-*          the adapter's order (pipeline/dataset/adapters/mosei.py)

A manifest declares its set in an optional `label_set` column (the adapters fill it in); then every
non-empty label must be in that set, else ManifestError names the file, row, label and the allowed
set. A manifest without one (a generic manifest, IEMOCAP with include_all) has no closed set: its
label names are its distinct non-empty labels in alphabetical order (`label_order`).

Generated data: an optional `generated` column names the program that generated the rows (the demo
writes "demo"); extraction carries it into the FeatureSet's source, and from there into every
checkpoint trained on it and every prediction made with one.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.files import atomic_write

if TYPE_CHECKING:  # imported where used: training imports emotion_name and must not load pandas
    import pandas as pd

log = logging.getLogger(__name__)

REQUIRED = ("dialogue_id", "utterance_id", "speaker", "start_s", "end_s", "text")
OPTIONAL = ("label", "split", "video_path", "audio_path")
COLUMNS = REQUIRED + OPTIONAL
STRING_COLUMNS = ("dialogue_id", "utterance_id", "speaker", "text") + OPTIONAL
MEDIA_COLUMNS = ("video_path", "audio_path")
GENERATED_COLUMN = "generated"  # optional: what generated the rows (module docstring)
LABEL_SET_COLUMN = "label_set"  # optional: the declared label set (module docstring, label sets)
# The featureset calls the validation split "dev" (pipeline/features/featureset.py); datasets disagree.
SPLIT_ALIASES = {"valid": "dev", "val": "dev", "validation": "dev", "development": "dev"}
SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
# pandas reads these as NaN by default; "NA" or "null" can be real text or speaker names.
_NA_VALUES = [""]


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file (and row) and the problem."""


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ManifestError(f"{path}: unknown manifest format {suffix!r} (use one of {SUFFIXES})")
    return {".ndjson": ".jsonl"}.get(suffix, suffix)


def _clean_str(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def normalize_split(value) -> str:
    s = _clean_str(value).strip().lower()
    return SPLIT_ALIASES.get(s, s)


def normalize(df: pd.DataFrame, source: str = "<frame>") -> pd.DataFrame:
    """Check and coerce a frame to the manifest schema; returns a new frame.

    Missing optional columns are added empty; string columns hold str ("" for missing); start_s/end_s
    are float64 (NaN end = whole clip). Rows are grouped by dialogue (first appearance order), keeping
    their order inside each dialogue. Raises ManifestError naming `source`, the row and the problem.
    """
    import pandas as pd

    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"{source}: missing required column(s) {missing}")
    out = df.copy()
    for col in OPTIONAL:
        if col not in out.columns:
            out[col] = ""
    for col in STRING_COLUMNS:
        out[col] = [_clean_str(v) for v in out[col]]
    out["split"] = [normalize_split(v) for v in out["split"]]
    for col in ("start_s", "end_s"):
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() & ~pd.Series([_clean_str(v) == "" for v in out[col]], index=out.index)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ManifestError(
                f"{source}: row {i} (utterance {out['utterance_id'].iloc[i]!r}): "
                f"{col} is not a number: {df[col].iloc[i]!r}"
            )
        out[col] = values.astype("float64")
    for col in ("dialogue_id", "utterance_id"):
        empty = np.flatnonzero((out[col] == "").to_numpy())
        if len(empty):
            raise ManifestError(f"{source}: row {int(empty[0])}: empty {col}")
    dup = out["utterance_id"].duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise ManifestError(
            f"{source}: row {i}: duplicate utterance_id {out['utterance_id'].iloc[i]!r}"
        )
    if LABEL_SET_COLUMN in out.columns:
        out[LABEL_SET_COLUMN] = [_clean_str(v) for v in out[LABEL_SET_COLUMN]]
    check_labels(out, source)  # before regrouping: row numbers are the file's
    # Stable grouping: a dialogue's rows become contiguous without reordering within it.
    first_seen = {d: k for k, d in enumerate(dict.fromkeys(out["dialogue_id"]))}
    order = np.argsort([first_seen[d] for d in out["dialogue_id"]], kind="stable")
    out = out.iloc[order].reset_index(drop=True)
    extras = [c for c in out.columns if c not in COLUMNS]
    return out[list(COLUMNS) + extras]


def _resolve(path_str: str, base: Path) -> str:
    if not path_str:
        return ""
    p = Path(path_str).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _relativize(path_str: str, base: Path) -> str:
    if not path_str:
        return ""
    p = Path(path_str)
    if not p.is_absolute():
        return path_str
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:  # outside the manifest folder: keep absolute
        return str(p)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest (CSV, JSONL or Parquet by suffix) -> normalized DataFrame.

    Media paths come back absolute (relative ones resolved against the manifest's folder). Text that
    is not valid UTF-8 is read with U+FFFD replacements, which `validate_rows` then reports.
    Raises ManifestError for anything unusable (including a file with no rows), naming the file.
    """
    import pandas as pd

    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    try:
        if fmt == ".csv":
            df = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_values=_NA_VALUES,
                encoding="utf-8",
                encoding_errors="replace",
            )
        elif fmt == ".jsonl":
            with open(path, encoding="utf-8", errors="replace") as fh:
                df = pd.read_json(fh, lines=True, dtype=False)
        else:
            df = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise ManifestError(f"{path}: empty manifest (no header, no rows)") from None
    except Exception as exc:  # pandas/pyarrow/json raise many types for malformed input
        raise ManifestError(f"{path}: cannot parse manifest ({type(exc).__name__}: {exc})") from exc
    if not isinstance(df, pd.DataFrame):  # read_json of a scalar line gives a Series
        raise ManifestError(f"{path}: cannot parse manifest (not a table of records)")
    if len(df) == 0:
        raise ManifestError(f"{path}: empty manifest: a header but no utterance rows")
    df.columns = [str(c) for c in df.columns]
    return from_frame(df, str(path), base=path.resolve().parent)


def from_frame(df: pd.DataFrame, source: str = "<frame>", base: Path | None = None) -> pd.DataFrame:
    """A manifest frame (read from a file, or in memory like prediction's segments) -> normalized
    rows with absolute media paths (relative ones resolved against ``base``, default the working
    directory)."""
    out = normalize(df, source=source)
    base = base or Path.cwd()
    for col in MEDIA_COLUMNS:
        out[col] = [_resolve(p, base) for p in out[col]]
    return out


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write `df` atomically (temp file + os.replace); media paths under the folder become relative."""
    path = Path(path)
    fmt = _format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = normalize(df, source=str(path))
    base = path.resolve().parent
    for col in MEDIA_COLUMNS:
        out[col] = [_relativize(p, base) for p in out[col]]

    def write(tmp: str) -> None:
        if fmt == ".csv":
            out.to_csv(tmp, index=False, encoding="utf-8")
        elif fmt == ".jsonl":
            out.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            out.to_parquet(tmp, index=False)

    atomic_write(path, write)  # umask mode (0644 usually): a manifest is meant to be shared
    return path


def validate_rows(
    df: pd.DataFrame, require_media: bool = True, check_files: bool = True
) -> list[tuple[str, str]]:
    """Per-utterance problems -> [(utterance_id, reason)], in row order; empty when all is well.

    Checks: the segment (segment_problem), text with undecodable bytes (U+FFFD), missing speaker,
    and (require_media) no media path / (check_files) media file absent or not a regular file.
    An utterance may appear once per problem.
    """
    problems: list[tuple[str, str]] = []
    for row in df.itertuples(index=False):
        uid = row.utterance_id
        seg = segment_problem(row.start_s, row.end_s)
        if seg:
            problems.append((uid, seg))
        if "\ufffd" in row.text:
            problems.append((uid, "undecodable text encoding"))
        if not row.speaker:
            problems.append((uid, "unknown speaker"))
        media = [p for p in (row.video_path, row.audio_path) if p]
        if require_media and not media:
            problems.append((uid, "no media path"))
        if check_files:
            for p in media:
                why = media_file_problem(p)
                if why:
                    problems.append((uid, f"{why}: {p}"))
    return problems


def segment_problem(start, end, duration: float | None = None, tol: float = 0.25) -> str | None:
    """Why (start_s, end_s) cannot be cut from a media file, or None. end NaN = to the end.

    Reasons start with: "missing start", "non-finite timestamp", "negative start", "zero-length",
    "inverted", "past the end" (only with a known `duration`; `tol` seconds of overshoot allowed).
    """
    start = float("nan") if start is None else float(start)
    end = float("nan") if end is None else float(end)
    if math.isnan(start):
        return "missing start_s"
    if math.isinf(start) or math.isinf(end):
        return f"non-finite timestamp (start_s={start}, end_s={end})"
    if start < 0:
        return f"negative start ({start:.3f} s)"
    if not math.isnan(end):
        if end == start:
            return f"zero-length segment ({start:.3f}-{end:.3f} s)"
        if end < start:
            return f"inverted segment ({start:.3f}-{end:.3f} s)"
    if duration is not None and (
        start >= duration or (not math.isnan(end) and end > duration + tol)
    ):
        shown = f"{end:.3f}" if not math.isnan(end) else "end"
        return f"past the end of the media ({start:.3f}-{shown} s > {duration:.3f} s)"
    return None


def media_file_problem(path: str | os.PathLike) -> str | None:
    """Why a media path cannot be read as a file, or None: "media file not found" or "not a
    regular file" (a device such as /dev/zero, a FIFO or a folder would hang or fail a decode)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "media file not found"
    except OSError as exc:
        return f"cannot read media file ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def dialogues(df: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    """(dialogue_id, rows) in manifest order."""
    for did, rows in df.groupby("dialogue_id", sort=False):
        yield str(did), rows


# ---- label sets: the classes of each dataset, in one canonical order (module docstring) -------

IEMOCAP = ("hap", "sad", "neu", "ang", "exc", "fru")
MELD = ("neu", "sur", "fea", "sad", "joy", "dis", "ang")
# MELD's CSV spells emotions out; the adapters and importers use the 3-letter codes above.
MELD_CODES = {
    "neutral": "neu",
    "surprise": "sur",
    "fear": "fea",
    "sadness": "sad",
    "joy": "joy",
    "disgust": "dis",
    "anger": "ang",
}
MELD_SENTIMENT = ("neutral", "positive", "negative")
MOSEI_SENTIMENT7 = (
    "strongly_negative",
    "negative",
    "weakly_negative",
    "neutral",
    "weakly_positive",
    "positive",
    "strongly_positive",
)
MOSEI_SENTIMENT2 = ("negative", "non_negative")
MOSEI_EMOTION6 = ("happy", "sad", "anger", "surprise", "disgust", "fear")

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "iemocap": IEMOCAP,
    "meld": MELD,
    "meld-sentiment": MELD_SENTIMENT,
    "mosei-sentiment7": MOSEI_SENTIMENT7,
    "mosei-sentiment2": MOSEI_SENTIMENT2,
    "mosei-emotion6": MOSEI_EMOTION6,
}


# Label codes of the IEMOCAP / MELD label sets  -> the emotion they name.
EMOTION_NAMES = {
    "hap": "happy",
    "sad": "sad",
    "neu": "neutral",
    "ang": "angry",
    "exc": "excited",
    "fru": "frustrated",
    "sur": "surprise",
    "fea": "fear",
    "dis": "disgust",
}


def emotion_name(label: str) -> str:
    """The emotion a label code names ("hap" -> "happy"); other labels unchanged."""
    return EMOTION_NAMES.get(label, label)


def declared_set(df: pd.DataFrame, source: str = "<frame>") -> str | None:
    """The label set a manifest frame declares (None = none); ValueError if unknown or mixed."""
    if LABEL_SET_COLUMN not in df.columns:
        return None
    names = [str(v) for v in dict.fromkeys(df[LABEL_SET_COLUMN]) if isinstance(v, str) and v]
    if not names:
        return None
    if len(names) > 1:
        raise ManifestError(f"{source}: several label sets declared in one manifest: {names}")
    if names[0] not in LABEL_SETS:
        raise ManifestError(
            f"{source}: unknown label_set {names[0]!r}; known: {', '.join(LABEL_SETS)}"
        )
    return names[0]


def check_labels(df: pd.DataFrame, source: str = "<frame>") -> None:
    """ManifestError at the first row whose label is outside the declared label set (if any)."""
    name = declared_set(df, source)
    if name is None:
        warn_stray_labels(df, source)
        return
    allowed = LABEL_SETS[name]
    for i, (uid, label) in enumerate(zip(df["utterance_id"], df["label"], strict=True)):
        if label and label not in allowed:
            raise ManifestError(
                f"{source}: row {i} (utterance {uid!r}): label {label!r} is not in the "
                f"{name} label set {list(allowed)}"
            )


def warn_stray_labels(df: pd.DataFrame, source: str = "<frame>") -> list[str]:
    """A manifest without a declared set takes every distinct label as a class, so a typo becomes
    a class of its own. When most labels belong to one known set, warn for each label outside it,
    naming its rows. Returns the stray labels."""
    labels = [str(v) for v in df["label"] if isinstance(v, str) and v]
    distinct = set(labels)
    if len(distinct) < 2:
        return []
    name, members = max(LABEL_SETS.items(), key=lambda kv: len(distinct & set(kv[1])))
    if 2 * len(distinct & set(members)) < len(distinct):
        return []  # not a known dataset's labels: its own closed set, nothing to compare with
    stray = sorted(distinct - set(members))
    for label in stray:
        rows = [i for i, v in enumerate(df["label"]) if v == label]
        shown = ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")
        log.warning(
            "%s: label %r (row %s) is not in the %s label set the other labels come from; it "
            "becomes a class of its own. Declare the set (a label_set column) to refuse such rows",
            source,
            label,
            shown,
            name,
        )
    return stray


def label_order(labels: Iterable[str], label_set: str | None = None) -> list[str]:
    """The label names of a feature set: the declared set's canonical order, else the distinct
    non-empty labels sorted alphabetically (the documented rule for generic datasets)."""
    if label_set is not None:
        return list(LABEL_SETS[label_set])
    return sorted({lab for lab in labels if lab})
