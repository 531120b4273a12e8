"""Import the real data in ../shared/data (see its README.md) into FeatureSets.

IEMOCAP-6 (iemocap/iemocap_erc.csv: 7,433 utterances, 151 dialogues, split train/valid/test ->
train/dev/test, labels hap sad neu ang exc fru = label_id 0..5):
    t  sentence embeddings of the transcripts by the text extractor (``text_model``: by default
       the offline preset's packaged all-mpnet-base-v2, 768-d; ``minilm`` = all-MiniLM-L6-v2,
       384-d; or any sentence-transformers folder or id). Unit norm: both end in a Normalize layer.
    a  "handcrafted": the 8 descriptors of audio_handcrafted.csv (joined on wav_file == utt_id).
       The six strictly positive, heavy-tailed columns (signal/RMS mean and std, autocorrelation max
       and std; train skew 4-16) are log-transformed (skew -0.5..0), silence and harmonic stay
       linear; then z-scored with TRAIN-split statistics and clipped to +-5 (harmonic has z up to
       46; after the clip its train std is 0.36, robust scaling did not probe better). A linear
       probe fit on train measured dev+test WF1 0.280 with raw z-scores vs 0.286 with the logs.
       4 test utterances (Ses05M_script01_1b) have no row -> present=0, zeros.
       "pyaudioanalysis": the 68-d audio_pyaudioanalysis.npz statistics, z-scored with train
       statistics, clipped to +-5; it covers 5,531 of the 7,433 ERC utterances, the rest present=0.
       The copy in ../shared has no "fru" utterance at all (and lacks 8% of "hap"), so its presence
       mask gives the label away and the import refuses it (presence_leaks in
       pipeline/features/featureset.py): a model trained on it scored 75 test W-F1 on IEMOCAP-6 TA
       by learning "no audio -> fru".
MELD-7 (meld/{train,dev,test}_sent_emo.csv; labels neu sur fea sad joy dis ang): t only (as above).
    Dialogues "<split>_dia<Dialogue_ID>", utterances "<split>_dia<D>_utt<U>" in Utterance_ID order.
    Utterances with cp1252-as-UTF-8 mojibake ("â€™") are repaired (adapters.meld.repair_text);
    the copy in ../shared is already clean UTF-8, so this is a guard for other copies.

Text comes from importers/text_features.py: the text extractor's own vectors and full spec, through
the feature store (``store_root``), so a model trained on imported text predicts new videos. The
audio descriptors are imported as they are and cannot be recomputed from media. Nothing is written
next to the data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.dataset.adapters.meld import repair_text
from pipeline.dataset.manifest import IEMOCAP, MELD, MELD_CODES
from pipeline.features.featureset import FeatureSet, check_presence, from_arrays
from pipeline.features.importers.text_features import extract_texts
from pipeline.files import sha256_file

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data"
# The canonical orders of pipeline/dataset/manifest.py (= label_id 0..5 in iemocap_erc.csv; the authors'
# MELD-7 order), so imported and extracted feature sets of one dataset agree.
IEMOCAP_LABELS = list(IEMOCAP)
MELD_LABELS = list(MELD)
MELD_EMOTIONS = dict(MELD_CODES)
SPLITS = {"train": "train", "valid": "dev", "dev": "dev", "test": "test"}
HANDCRAFTED = ["sig_mean", "sig_std", "rmse_mean", "rmse_std", "silence", "harmonic"]
HANDCRAFTED += ["auto_corr_max", "auto_corr_std"]
LOG_COLUMNS = ["sig_mean", "sig_std", "rmse_mean", "rmse_std", "auto_corr_max", "auto_corr_std"]
Z_CLIP = 5.0  # |z| cap after train-statistics normalisation (see module doc)


# ---- tables ---------------------------------------------------------------------------------


def read_iemocap_table(data_dir: str | Path | None = None) -> pd.DataFrame:
    """iemocap_erc.csv with split mapped to train/dev/test; rows in dialogue order."""
    path = Path(data_dir or DEFAULT_DATA_DIR) / "iemocap" / "iemocap_erc.csv"
    df = _read_csv(path)
    missing = {"dialogue", "utt_id", "speaker", "label_id", "split", "text"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    df["split"] = _map_splits(df["split"], path)
    df["text"] = df["text"].fillna("").astype(str)
    bad = ~df["label_id"].between(0, len(IEMOCAP_LABELS) - 1)
    if bad.any():
        raise ValueError(f"{path}: label_id outside 0..5 at utt_id {df.utt_id[bad].iloc[0]!r}")
    return df


def read_meld_table(data_dir: str | Path | None = None) -> pd.DataFrame:
    """The three MELD CSVs as one table: split, dialogue, utt_id, speaker, label_id, text."""
    frames = []
    for name, split in (("train", "train"), ("dev", "dev"), ("test", "test")):
        path = Path(data_dir or DEFAULT_DATA_DIR) / "meld" / f"{name}_sent_emo.csv"
        df = _read_csv(path)
        unknown = sorted(set(df["Emotion"]) - set(MELD_EMOTIONS))
        if unknown:
            raise ValueError(f"{path}: unknown emotions {unknown}")
        df = df.sort_values(["Dialogue_ID", "Utterance_ID"], kind="stable")
        d, u = df["Dialogue_ID"].astype(int).astype(str), df["Utterance_ID"].astype(int).astype(str)
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "dialogue": f"{split}_dia" + d,
                    "utt_id": f"{split}_dia" + d + "_utt" + u,
                    "speaker": df["Speaker"].astype(str).map(repair_text),
                    "label_id": df["Emotion"].map(MELD_EMOTIONS).map(MELD_LABELS.index),
                    "text": df["Utterance"].fillna("").astype(str).map(repair_text),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# ---- importers ------------------------------------------------------------------------------


def load_iemocap_shared(
    data_dir: str | Path | None = None,
    modalities: str = "ta",
    audio_source: str = "handcrafted",
    text_model: str | Path | None = None,
    store_root: str | Path | None = None,
    limit_dialogues: int | None = None,
    progress: bool = False,
) -> FeatureSet:
    """IEMOCAP-6 from ../shared/data/iemocap. limit_dialogues keeps the first k dialogues of each
    split (for quick tests); audio normalisation statistics then come from the kept train rows.
    text_model / store_root: the text extractor's model and the feature store
    (importers/text_features.py; None = the offline preset's model, the default store)."""
    data_dir = Path(data_dir or DEFAULT_DATA_DIR)
    if not modalities or set(modalities) - set("ta"):
        raise ValueError(f"IEMOCAP shared data has modalities t and a, not {modalities!r}")
    df = _limit(read_iemocap_table(data_dir), limit_dialogues)  # [N rows]
    csv = data_dir / "iemocap" / "iemocap_erc.csv"
    features, present, spec = {}, {}, {}
    if "t" in modalities:
        features["t"], spec["t"] = extract_texts(df, text_model, store_root, str(csv), progress)
        spec["t"].update(source="iemocap_erc.csv:text", source_sha256=sha256_file(csv))
    if "a" in modalities:
        train = (df["split"] == "train").to_numpy()
        if audio_source == "handcrafted":
            x, ok, spec["a"] = _handcrafted_audio(data_dir, df["utt_id"], train)
        elif audio_source == "pyaudioanalysis":
            x, ok, spec["a"] = _pyaudioanalysis_audio(data_dir, df["utt_id"], train)
        else:
            raise ValueError(
                f"audio_source must be handcrafted or pyaudioanalysis: {audio_source!r}"
            )
        features["a"], present["a"] = x, ok
    dialogues = _dialogues(df, extra_columns=("start_s", "end_s"))
    source = f"shared-data iemocap_erc.csv ({len(df)} utterances, audio={audio_source})"
    fs = from_arrays(
        dialogues, features, df["label_id"].to_numpy().copy(), IEMOCAP_LABELS, present, spec, source
    )
    fs.validate()
    if "a" in modalities:  # a source that covers some classes only would give the label away
        check_presence(fs, str(data_dir / spec["a"]["source"]), "a")
    return fs


def load_meld_shared(
    data_dir: str | Path | None = None,
    text_model: str | Path | None = None,
    store_root: str | Path | None = None,
    limit_dialogues: int | None = None,
    progress: bool = False,
) -> FeatureSet:
    """MELD-7, text only, from ../shared/data/meld (official train/dev/test); text_model and
    store_root as for load_iemocap_shared."""
    data_dir = Path(data_dir or DEFAULT_DATA_DIR)
    df = _limit(read_meld_table(data_dir), limit_dialogues)  # [N rows]
    x, spec = extract_texts(df, text_model, store_root, str(data_dir / "meld"), progress)  # [N, D]
    spec["source"] = "meld/{train,dev,test}_sent_emo.csv:Utterance"
    spec["source_sha256"] = {
        s: sha256_file(data_dir / "meld" / f"{s}_sent_emo.csv") for s in ("train", "dev", "test")
    }
    fs = from_arrays(
        _dialogues(df, ()), {"t": x}, df["label_id"].to_numpy().copy(), MELD_LABELS,
        feature_spec={"t": spec}, source=f"shared-data meld ({len(df)} utterances)",
    )  # fmt: skip
    fs.validate()
    return fs


def import_dataset(name: str, out_dir: str | Path, **kw: Any) -> Path:
    """Build the named FeatureSet and save it to out_dir: "iemocap-shared", "meld-shared",
    "authors-pickle" (path=..., trust=True, dataset=...), "synthetic" (make_synthetic kwargs)."""
    loaders: dict[str, Callable[..., FeatureSet]] = {
        "iemocap-shared": load_iemocap_shared,
        "meld-shared": load_meld_shared,
    }
    if name == "authors-pickle":
        from pipeline.features.importers.authors_pickle import load_authors_pickle

        if kw.get("path") is None:
            raise ValueError("authors-pickle needs path=<pickle file> (CLI: --path)")
        fs = load_authors_pickle(kw.pop("path"), **kw)
    elif name == "synthetic":
        from pipeline.features.importers.synthetic import make_synthetic

        fs = make_synthetic(**kw)
    elif name in loaders:
        check_limit(kw.get("limit_dialogues"))  # before reading (and embedding) any data
        fs = loaders[name](**kw)
    else:
        raise ValueError(
            f"unknown dataset {name!r}; choose iemocap-shared, meld-shared, authors-pickle, synthetic"
        )
    return fs.save(out_dir)


# ---- audio ----------------------------------------------------------------------------------


def _handcrafted_audio(data_dir: Path, utt_ids: pd.Series, train: np.ndarray):
    path = data_dir / "iemocap" / "audio_handcrafted.csv"
    table = _read_csv(path)
    missing = {"wav_file", *HANDCRAFTED} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    table = table.drop_duplicates("wav_file").set_index("wav_file")[HANDCRAFTED]
    rows = table.reindex(utt_ids.to_numpy())  # [N, 8], NaN where no row
    ok = rows.notna().all(axis=1).to_numpy().copy()  # pandas hands out a read-only view
    x = rows.to_numpy(dtype=np.float64)
    logs = [HANDCRAFTED.index(c) for c in LOG_COLUMNS]
    if (x[ok][:, logs] <= 0).any():
        raise ValueError(f"{path}: non-positive values in log-transformed columns {LOG_COLUMNS}")
    x[:, logs] = np.log(x[:, logs])
    x, mean, std = _zscore(x, ok, train, path)
    spec = {
        "extractor": "iemocap-handcrafted-8",
        "columns": HANDCRAFTED,
        "transform": f"log({', '.join(LOG_COLUMNS)}); z-score with train statistics; clip +-{Z_CLIP:g}",
        "train_mean": mean,
        "train_std": std,
        "source": "iemocap/audio_handcrafted.csv",
        "source_sha256": sha256_file(path),
    }
    return x, ok, spec


def _pyaudioanalysis_audio(data_dir: Path, utt_ids: pd.Series, train: np.ndarray):
    path = data_dir / "iemocap" / "audio_pyaudioanalysis.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    with np.load(path, allow_pickle=False) as z:  # plain arrays only; never unpickle
        feats, ids, names = z["X"].astype(np.float64), z["utt_id"].astype(str), z["feature_names"]
    index = {u: i for i, u in enumerate(ids)}
    pos = np.array([index.get(u, -1) for u in utt_ids])
    ok = pos >= 0
    x = np.zeros((len(pos), feats.shape[1]))  # [N, 68]
    x[ok] = feats[pos[ok]]
    ok &= np.isfinite(x).all(axis=1)
    x, mean, std = _zscore(x, ok, train, path)
    spec = {
        "extractor": "iemocap-pyaudioanalysis-68",
        "columns": [str(n) for n in names],
        "transform": f"z-score with train statistics; clip +-{Z_CLIP:g}",
        "train_mean": mean,
        "train_std": std,
        "source": "iemocap/audio_pyaudioanalysis.npz",
        "source_sha256": sha256_file(path),
    }
    return x, ok, spec


def _zscore(x: np.ndarray, ok: np.ndarray, train: np.ndarray, path: Path):
    """Normalise with statistics of the present TRAIN rows only; absent rows become zeros."""
    fit = ok & train
    if not fit.any():
        raise ValueError(f"{path}: no training utterance has audio features")
    mean, std = x[fit].mean(axis=0), x[fit].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = np.clip((x - mean) / std, -Z_CLIP, Z_CLIP)
    z[~ok] = 0.0
    return z.astype(np.float32), mean.tolist(), std.tolist()


# ---- helpers --------------------------------------------------------------------------------


def _dialogues(df: pd.DataFrame, extra_columns: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for dialogue_id, g in df.groupby("dialogue", sort=False):
        d = {
            "id": str(dialogue_id),
            "split": str(g["split"].iloc[0]),
            "utterance_ids": g["utt_id"].astype(str).tolist(),
            "speakers": g["speaker"].astype(str).tolist(),
            "texts": g["text"].tolist(),
        }
        for c in extra_columns:
            if c in g:
                d[c] = [float(v) for v in g[c]]
        out.append(d)
    return out


def check_limit(limit_dialogues) -> int | None:
    """limit_dialogues as given (None = all); ValueError unless it is an integer >= 1."""
    if limit_dialogues is None:
        return None
    if isinstance(limit_dialogues, bool) or not isinstance(limit_dialogues, (int, np.integer)):
        raise ValueError(f"limit_dialogues must be an integer >= 1, got {limit_dialogues!r}")
    if limit_dialogues < 1:
        raise ValueError(
            f"limit_dialogues must be >= 1 (the first K dialogues of each split), "
            f"got {limit_dialogues}"
        )
    return int(limit_dialogues)


def _limit(df: pd.DataFrame, limit_dialogues: int | None) -> pd.DataFrame:
    limit_dialogues = check_limit(limit_dialogues)
    contiguous = (df["dialogue"] != df["dialogue"].shift()).sum() == df["dialogue"].nunique()
    if not contiguous:
        raise ValueError("rows of a dialogue are not contiguous in the table")
    if limit_dialogues is None:
        return df.reset_index(drop=True)
    keep = df.groupby("split", sort=False)["dialogue"].unique().map(lambda v: v[:limit_dialogues])
    kept = {d for ds in keep for d in ds}
    return df[df["dialogue"].isin(kept)].reset_index(drop=True)


def _map_splits(split: pd.Series, path: Path) -> pd.Series:
    unknown = sorted(set(split.astype(str)) - set(SPLITS))
    if unknown:
        raise ValueError(f"{path}: unknown split names {unknown}")
    return split.astype(str).map(SPLITS)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is ../shared/data present?)")
    return pd.read_csv(path, encoding="utf-8")
