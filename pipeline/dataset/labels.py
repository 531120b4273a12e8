"""Label sets: the classes of each dataset, in one canonical order.

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
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: training imports emotion_name and must not load pandas
    import pandas as pd

log = logging.getLogger(__name__)

LABEL_SET_COLUMN = "label_set"

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
    from pipeline.dataset.manifest import ManifestError

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
    from pipeline.dataset.manifest import ManifestError

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
