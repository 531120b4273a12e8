"""What the visual modality carries on real IEMOCAP clips; prints ONE JSON line.

    python -m bench.visual_probe          # the 52 clips of ../shared/data/iemocap/clips

Frames at 2 fps (the extraction default) -> MTCNN (40 px minimum face, the offline setting) ->
pooled per clip by each backbone:
- ``densenet_random``: DenseNet121 random-init (seed 0, 160 px crops): the offline visual
  feature before the FER network, 1024-d;
- ``fer``: the FER2013 network (extractors/fer_visual.py), 128 features + 7 probabilities;
- ``fer_probs``: its 7 probabilities alone.

1. Visual-only classifier, leave-one-dialogue-out over the labelled clips (erc_label, 6 classes):
   standardise + logistic regression (scikit-learn, C=1, class-balanced), fit on the other
   dialogues; clips with no face in any frame get the training majority class. Accuracy and
   weighted F1, with the LODO majority-class baseline. 36 labelled clips in 13 dialogues: one
   clip moves accuracy by ~3 points; a difference of a few clips is noise.
2. The FER network's own answer, no training: the argmax of its probabilities over the four
   emotions both label sets share (angry->ang, happy->hap, sad->sad, neutral->neu), on the clips
   labelled ang/hap/exc/sad/neu, with exc counted as hap (the usual 4-class IEMOCAP merge);
   frustration has no FER counterpart and is left out.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

FPS = 2.0
FER_TO_IEMOCAP = {"angry": "ang", "happy": "hap", "sad": "sad", "neutral": "neu"}
FOUR_CLASS = {"ang": "ang", "hap": "hap", "exc": "hap", "sad": "sad", "neu": "neu"}


def clip_frames(df) -> list[list[np.ndarray]]:
    from pipeline.dataset.media import iter_segments

    out = []
    for path, end in zip(df["video_path"], df["end_s"], strict=True):
        (seg,) = iter_segments(path, [(0.0, float(end))], fps=FPS, want_audio=False)
        out.append(seg.frames)
    return out


def features(frames: list[list[np.ndarray]]) -> tuple[dict[str, list], dict[str, float]]:
    """Per backbone, one vector (or None) per clip; and the seconds each took."""
    from extractors.fer_visual import FerVisualExtractor
    from extractors.visual import FaceVisualExtractor

    backbones = {
        "densenet_random": FaceVisualExtractor(crop_size=160, min_face_size=40),
        "fer": FerVisualExtractor(min_face_size=40),
    }
    out, seconds = {}, {}
    for name, ex in backbones.items():
        t0 = time.perf_counter()
        out[name] = [ex([f])[0] for f in frames]
        seconds[name] = round(time.perf_counter() - t0, 1)
    out["fer_probs"] = [None if v is None else v[-7:] for v in out["fer"]]
    return out, seconds


def lodo(vectors: list, labels: np.ndarray, groups: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    has = np.array([v is not None for v in vectors])
    dim = next(len(v) for v in vectors if v is not None)
    x = np.stack([v if v is not None else np.zeros(dim, np.float32) for v in vectors])
    pred, base = np.empty(len(labels), object), np.empty(len(labels), object)
    for g in np.unique(groups):
        test, train = groups == g, groups != g
        values, counts = np.unique(labels[train], return_counts=True)
        majority = values[np.argmax(counts)]
        base[test] = majority
        pred[test] = majority
        fit = train & has
        if len(np.unique(labels[fit])) > 1:
            clf = make_pipeline(
                StandardScaler(),
                LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000),
            )
            clf.fit(x[fit], labels[fit])
            if (test & has).any():
                pred[test & has] = clf.predict(x[test & has])

    def scores(p):
        return {
            "accuracy": round(float(accuracy_score(labels, p)), 3),
            "weighted_f1": round(float(f1_score(labels, p, average="weighted")), 3),
        }

    return {**scores(pred), "majority_baseline": scores(base), "clips_with_face": int(has.sum())}


def fer_zero_shot(fer_vectors: list, labels: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    from extractors.fer_net import EMOTIONS

    cols = [EMOTIONS.index(e) for e in FER_TO_IEMOCAP]
    names = list(FER_TO_IEMOCAP.values())
    keep = [i for i, lab in enumerate(labels) if lab in FOUR_CLASS and fer_vectors[i] is not None]
    truth = np.array([FOUR_CLASS[labels[i]] for i in keep])
    pred = np.array([names[int(np.argmax(fer_vectors[i][-7:][cols]))] for i in keep])
    values, counts = np.unique(truth, return_counts=True)
    majority = np.full(len(truth), values[np.argmax(counts)])
    return {
        "clips": len(keep),
        "accuracy": round(float(accuracy_score(truth, pred)), 3),
        "weighted_f1": round(float(f1_score(truth, pred, average="weighted")), 3),
        "majority_accuracy": round(float(accuracy_score(truth, majority)), 3),
        "labels": names,
        "confusion_rows_true_cols_pred": confusion_matrix(truth, pred, labels=names).tolist(),
        "mean_probs": {
            e: round(float(np.mean([fer_vectors[i][-7:][k] for i in keep])), 3)
            for k, e in enumerate(EMOTIONS)
        },
    }


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    import torch

    from pipeline.dataset.adapters.shared import load_shared_clips

    torch.set_num_threads(1)
    df = load_shared_clips()
    frames = clip_frames(df)
    vecs, seconds = features(frames)
    labelled = (df["label"] != "").to_numpy()
    labels = df["label"].to_numpy()[labelled]
    groups = df["dialogue_id"].to_numpy()[labelled]
    result = {
        "clips": len(df),
        "labelled": int(labelled.sum()),
        "dialogues": int(len(np.unique(groups))),
        "frames": sum(len(f) for f in frames),
        "extract_seconds_1_thread": seconds,
        "lodo": {
            name: lodo([v for v, k in zip(vs, labelled, strict=True) if k], labels, groups)
            for name, vs in vecs.items()
        },
        "fer_zero_shot_4class": fer_zero_shot(
            [v for v, k in zip(vecs["fer"], labelled, strict=True) if k], labels
        ),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
