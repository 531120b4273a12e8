"""The steps predict_one and predict_dialogue share: cut checks, features, the model run.

split_bad_segments(segments, duration) -> (rows that can be cut, failed utterance records)
_checked_features(fs, ...)             -> FeatureSet refused unless it matches the checkpoint
run_model(model, fs)                   -> probs [N, C], support {m: [N]}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.dataset import media
from pipeline.dataset.manifest import segment_problem
from pipeline.features.featureset import FeatureSet
from pipeline.training.data import iter_batches
from pipeline.training.evaluate import check_feature_spec


class PredictError(ValueError):
    """A failure under strict=True, or a checkpoint/extractor mismatch (always fatal)."""


@torch.no_grad()
def run_model(model, fs: FeatureSet, device: str = "cpu", batch_size: int = 16):
    """-> probs float32 [N, C], support {m: float32 [N]} (NaN = modality absent), rows in fs order."""
    model.eval()
    probs, support = [], {m: [] for m in model.modalities}
    for batch in iter_batches(fs, fs.dialogues, batch_size):
        batch = batch.to(device)
        out = model(
            {m: batch.features[m] for m in model.modalities},
            batch.utterance_mask,
            batch.modality_mask,
        )
        p = out.logits.float().softmax(dim=-1).cpu()  # [B, T, C]
        if not torch.isfinite(p[batch.utterance_mask.cpu()]).all():  # never report NaN as a label
            names = [d.id for d in batch.dialogues]
            raise ValueError(f"the model gave non-finite probabilities in dialogues {names}")
        pred = p.argmax(dim=-1)  # [B, T]
        for m in model.modalities:
            pm = out.unimodal[m].float().softmax(dim=-1).cpu()  # [B, T, C]
            at = pm.gather(-1, pred[..., None])[..., 0]  # [B, T]
            at[~out.valid[m].cpu()] = float("nan")
            for i, d in enumerate(batch.dialogues):
                support[m].append(at[i, : d.length])
        for i, d in enumerate(batch.dialogues):
            probs.append(p[i, : d.length])
    return (
        torch.cat(probs).numpy().astype(np.float32),
        {m: torch.cat(v).numpy().astype(np.float32) for m, v in support.items()},
    )


def true_labels(seg: pd.DataFrame) -> list[str]:
    """The manifest's labels of the segments as text, "" for none: an unlabelled clip read back
    from a manifest is NaN, which the per-clip path wrote into its CSVs as the label "NaN"."""
    return ["" if pd.isna(v) else str(v) for v in seg["label"]]


def _source_label(df: pd.DataFrame) -> str:
    return "+".join(dict.fromkeys(df["segment_source"]))


def _check_streams(info: media.MediaInfo, modalities: str) -> None:
    for m, has, what in (("a", info.has_audio, "audio"), ("v", info.has_video, "video")):
        if m in modalities and not has:
            raise ValueError(f"no {what} stream, and the checkpoint uses {what} features")


def split_bad_segments(
    seg: pd.DataFrame, duration: float | None, strict: bool = False, where: str = ""
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """(rows that can be cut, [failed utterance records]) of one media file's segments.

    A bad segment (pipeline.dataset.manifest.segment_problem against the probed duration) is the row's
    failure; strict raises PredictError naming the file and the utterance instead."""
    keep, failed = [], []
    cues = seg["cue"] if "cue" in seg.columns else [""] * len(seg)
    for ok_row, (uid, start, end, cue) in enumerate(
        zip(seg["utterance_id"], seg["start_s"], seg["end_s"], cues, strict=True)
    ):
        why = segment_problem(start, end, duration, media.END_TOLERANCE_S)
        if why is None:
            keep.append(ok_row)
            continue
        if strict:
            raise PredictError(
                f"--strict: {where}: utterance {uid!r}: {why}" + (f" ({cue})" if cue else "")
            )
        failed.append(
            {"utterance_id": uid, "start_s": start, "end_s": end, "reason": why, "cue": cue or ""}
        )
    return seg.iloc[keep].reset_index(drop=True), failed


def _failure_reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, media.MediaError) else str(exc)


def _checked_features(fs: FeatureSet, ctx: dict, modalities: str, source: str):
    """A prediction unit's FeatureSet, refused unless it matches the checkpoint.
    Returns (feature set of the checkpoint's modalities, present: bool [N, M])."""
    check_feature_spec(ctx["spec"], fs.feature_spec, source)
    fs = fs.select_modalities(modalities)
    return fs, np.stack([fs.present[m].numpy() for m in modalities], axis=1)  # [N, M]
