"""Evaluation: predictions over dialogues, scikit-learn metrics, reports and a confusion matrix plot."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.ada2i import Ada2I
from model.objective import ada2i_loss
from pipeline.features.featureset import Dialogue, FeatureSet
from pipeline.training.checkpoint import checkpoint_folder, load_checkpoint
from pipeline.training.data import IGNORE, iter_batches


@dataclass
class Predictions:
    utterance_ids: list[str]
    dialogue_ids: list[str]
    y_true: np.ndarray  # int64 [n], -1 = unlabelled
    y_pred: np.ndarray  # int64 [n]
    probs: np.ndarray  # float32 [n, C]
    loss: float  # mean L_main over batches (labelled utterances only); nan if none
    # m -> int64 [n]: argmax of the modality's own class scores (out.unimodal[m], eq. 16), -1
    # where the utterance lacks m. How well each modality classifies alone: the imbalance that
    # AMW and modulation address, measured on the same utterances as the fused prediction.
    unimodal_pred: dict[str, np.ndarray] = field(default_factory=dict)

    def unimodal_metrics(self, n_classes: int) -> dict[str, dict[str, Any]]:
        """Per modality: selection_metrics (numpy, no scikit-learn: training calls this every
        epoch) over the labelled utterances that have the modality, plus per-class recall and
        support (lists in class order; recall 0 for a class without support, as scikit-learn's
        zero_division=0)."""
        out = {}
        for m, pred in self.unimodal_pred.items():
            y = np.where(pred >= 0, self.y_true, -1)
            row = selection_metrics(y, pred, n_classes)
            cm = _confusion(y, pred, n_classes)
            support = cm.sum(axis=1)
            recall = np.divide(np.diag(cm), support, out=np.zeros(n_classes), where=support > 0)
            out[m] = {**row, "recall": recall.tolist(), "support": support.tolist()}
        return out


@torch.no_grad()
def predict(
    model: Ada2I,
    fs: FeatureSet,
    dialogues: list[Dialogue],
    device: str = "cpu",
    batch_size: int = 32,
) -> Predictions:
    model.eval()
    ids, dids, y_true, y_pred, probs, losses = [], [], [], [], [], []
    unimodal: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    for batch in iter_batches(fs, dialogues, batch_size):
        batch = batch.to(device)
        out = model(
            {m: batch.features[m] for m in model.modalities},
            batch.utterance_mask,
            batch.modality_mask,
        )
        if batch.n_labelled:
            losses.append(float(ada2i_loss(out, batch.labels).total))
        p = out.logits.float().softmax(dim=-1).cpu()  # [B, T, C]
        if not torch.isfinite(p[batch.utterance_mask.cpu()]).all():  # never score NaN as a label
            names = [d.id for d in batch.dialogues]
            raise ValueError(f"the model gave non-finite probabilities in dialogues {names}")
        uni = {  # m -> [B, T]
            m: torch.where(out.valid[m], out.unimodal[m].argmax(dim=-1), -1).cpu()
            for m in model.modalities
        }
        for i, d in enumerate(batch.dialogues):
            n = d.length
            ids.extend(d.utterance_ids)
            dids.extend([d.id] * n)
            labels = batch.labels[i, :n].cpu()
            y_true.append(torch.where(labels == IGNORE, torch.full_like(labels, -1), labels))
            y_pred.append(p[i, :n].argmax(dim=-1))
            probs.append(p[i, :n])
            for m in uni:
                unimodal[m].append(uni[m][i, :n])
    return Predictions(
        utterance_ids=ids,
        dialogue_ids=dids,
        y_true=torch.cat(y_true).numpy(),
        y_pred=torch.cat(y_pred).numpy(),
        probs=torch.cat(probs).numpy().astype(np.float32),
        loss=float(np.mean(losses)) if losses else float("nan"),
        unimodal_pred={m: torch.cat(v).numpy().astype(np.int64) for m, v in unimodal.items()},
    )


# What every metrics function returns for a split without a labelled utterance.
NO_LABELLED_UTTERANCES = {
    "n": 0,
    "accuracy": float("nan"),
    "weighted_f1": float("nan"),
    "macro_f1": float("nan"),
}


def selection_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and weighted/macro F1 over labelled utterances (y_true >= 0): what training reads
    every epoch to pick the best checkpoint (compute_metrics without the per-class detail)."""
    full = _scores(_confusion(y_true, y_pred, n_classes))
    return {k: full[k] for k in ("n", "accuracy", "weighted_f1", "macro_f1")}


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 [C, C] counts (rows true, columns predicted) over labelled utterances (y_true >= 0)."""
    keep = y_true >= 0
    yt, yp = y_true[keep].astype(np.int64), y_pred[keep].astype(np.int64)
    return np.bincount(yt * n_classes + yp, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def _scores(cm: np.ndarray) -> dict[str, Any]:
    """The one computation of every score, from the confusion matrix cm [C, C] in numpy. Equal to
    scikit-learn's with zero_division=0 (tests/training/test_train.py checks it), without importing
    scikit-learn (and the pandas and SciPy it pulls in: ~160 MiB, ~3 s) into training."""
    n = int(cm.sum())
    if n == 0:
        return dict(NO_LABELLED_UTTERANCES)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    denom = support + predicted  # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (support + predicted)
    f1 = np.divide(2 * tp, denom, out=np.zeros(len(cm)), where=denom > 0)
    precision = np.divide(tp, predicted, out=np.zeros(len(cm)), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(len(cm)), where=support > 0)
    return {
        "n": n,
        "accuracy": float(tp.sum() / n),
        "weighted_f1": float((f1 * support).sum() / support.sum()),
        "macro_f1": float(f1.mean()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
    }


def compute_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]
) -> dict[str, Any]:
    """Accuracy, weighted/macro F1, per-class precision/recall/F1/support and the confusion matrix,
    over labelled utterances only (y_true >= 0)."""
    cm = _confusion(y_true, y_pred, len(label_names))
    scores = _scores(cm)
    if scores["n"] == 0:
        return scores
    return {
        **{k: scores[k] for k in ("n", "accuracy", "weighted_f1", "macro_f1")},
        "per_class": {
            name: {
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "support": int(scores["support"][i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion": cm.tolist(),
        "labels": list(label_names),
    }


def unimodal_report(preds: Predictions, label_names: list[str]) -> dict[str, dict[str, Any]]:
    """Per modality (compute_metrics): n, accuracy, weighted F1 and per-class
    recall of the modality's own prediction, over the labelled utterances that have it."""
    out = {}
    for m, pred in preds.unimodal_pred.items():
        full = compute_metrics(np.where(pred >= 0, preds.y_true, -1), pred, label_names)
        row = {k: full[k] for k in ("n", "accuracy", "weighted_f1")}
        if "per_class" in full:  # "per_class", as the fused one: tables leave it out
            row["per_class"] = {n: {"recall": c["recall"]} for n, c in full["per_class"].items()}
        out[m] = row
    return out


def write_report(
    metrics: dict[str, Any], preds: Predictions, label_names: list[str], out_dir: Path
) -> dict[str, str]:
    """metrics.json, per_class.csv, predictions.csv and confusion.png into out_dir; returns paths.
    When preds carry unimodal predictions and metrics has no "unimodal" entry, it is added (to
    `metrics` itself, so a caller returning metrics returns it too): every metrics.json says how
    well each modality classifies alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if preds.unimodal_pred and "unimodal" not in metrics:
        metrics["unimodal"] = unimodal_report(preds, label_names)
    paths = {
        "metrics": out_dir / "metrics.json",
        "per_class": out_dir / "per_class.csv",
        "predictions": out_dir / "predictions.csv",
        "confusion_png": out_dir / "confusion.png",
    }
    paths["metrics"].write_text(json.dumps(metrics, indent=1))
    with open(paths["per_class"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "precision", "recall", "f1", "support"])
        for name, row in metrics.get("per_class", {}).items():
            w.writerow(
                [
                    name,
                    f"{row['precision']:.4f}",
                    f"{row['recall']:.4f}",
                    f"{row['f1']:.4f}",
                    row["support"],
                ]
            )
    with open(paths["predictions"], "w", newline="") as f:
        w = csv.writer(f)
        uni = preds.unimodal_pred
        w.writerow(
            [
                "dialogue_id",
                "utterance_id",
                "label",
                "predicted",
                *[f"p_{n}" for n in label_names],
                *[f"predicted_{m}" for m in uni],  # the modality alone; empty = lacks it
            ]
        )
        for i, uid in enumerate(preds.utterance_ids):
            true = label_names[preds.y_true[i]] if preds.y_true[i] >= 0 else ""
            w.writerow(
                [
                    preds.dialogue_ids[i],
                    uid,
                    true,
                    label_names[preds.y_pred[i]],
                    *[f"{x:.5f}" for x in preds.probs[i]],
                    *[label_names[u[i]] if u[i] >= 0 else "" for u in uni.values()],
                ]
            )
    if "confusion" in metrics:
        where = Path(str(metrics.get("checkpoint", out_dir))).parent.name  # the run's folder
        title = confusion_title(f"{where}, {metrics.get('split', 'test')} split", metrics)
        plot_confusion(np.asarray(metrics["confusion"]), label_names, paths["confusion_png"], title)
    else:
        del paths["confusion_png"]
    return {k: str(v) for k, v in paths.items()}


def plot_confusion(
    cm: np.ndarray, label_names: list[str], path: Path, title: str | None = None
) -> None:
    """cm int [C, C] (rows true, columns predicted) -> PNG: counts in the cells, colour = the
    row-normalised share (a colour bar says so), emotions by name. ``title`` names the run, split
    and score; the default says only what the picture is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.dataset.manifest import emotion_name

    names = [emotion_name(c) for c in label_names]
    fig, ax = plt.subplots(figsize=(2.2 + 0.8 * len(names), 1.2 + 0.7 * len(names)))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)  # [C, C] share of each true class
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted emotion")
    ax.set_ylabel("true emotion")
    fig.colorbar(
        im, ax=ax, fraction=0.046, pad=0.04, label="share of the true emotion's utterances"
    )
    ax.set_title(title or "confusion matrix (counts; colour: share of the row)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_title(what: str, metrics: dict[str, Any]) -> str:
    """'<what>: accuracy 0.812, W-F1 0.800 (n=16)': the title of a confusion matrix plot."""
    return (
        f"{what}: accuracy {metrics['accuracy']:.3f}, W-F1 {metrics['weighted_f1']:.3f} "
        f"(n={metrics['n']})"
    )


def check_feature_spec(expected: dict[str, Any], actual: dict[str, Any], where: str) -> None:
    """Refuse features that are not what the checkpoint was trained on (dims, extractors)."""
    for m, spec in expected.items():
        if m not in actual:
            raise ValueError(f"{where}: checkpoint needs modality {m!r} but the features lack it")
        got = actual[m]
        if int(spec.get("dim", -1)) != int(got.get("dim", -2)):
            raise ValueError(
                f"{where}: modality {m!r} has dim {got.get('dim')}, checkpoint expects {spec.get('dim')}"
            )
        want_ex, got_ex = spec.get("extractors"), got.get("extractors")
        if want_ex is not None and got_ex is not None and _ex_ids(want_ex) != _ex_ids(got_ex):
            raise ValueError(
                f"{where}: modality {m!r} features come from {_ex_ids(got_ex)}, checkpoint expects {_ex_ids(want_ex)}"
            )


def _ex_ids(extractors: list[dict[str, Any]]) -> list[str]:
    return [f"{e.get('name')}@{e.get('version')}:{e.get('config_hash', '')}" for e in extractors]


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    featureset_dir: str | Path,
    split: str = "test",
    out_dir: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint (a folder or Hub repo id) and a FeatureSet, check they match, evaluate
    one split, write reports (default: eval_<split> beside a checkpoint folder; for a Hub repo id,
    in the working directory, never inside the Hub cache)."""
    folder = checkpoint_folder(checkpoint_dir)
    from_hub = folder != Path(checkpoint_dir).expanduser()
    model, meta = load_checkpoint(folder, device=device)
    fs = FeatureSet.load(featureset_dir)
    check_feature_spec(meta.get("feature_spec", {}), fs.feature_spec, str(featureset_dir))
    if list(meta.get("label_names", fs.label_names)) != fs.label_names:
        raise ValueError(
            f"{featureset_dir}: labels {fs.label_names} differ from the checkpoint's {meta.get('label_names')}"
        )
    fs = fs.select_modalities(model.modalities)
    dialogues = fs.split(split)
    if not dialogues:
        raise ValueError(f"{featureset_dir}: no dialogues in split {split!r}")
    preds = predict(model, fs, dialogues, device=device)
    metrics = compute_metrics(preds.y_true, preds.y_pred, fs.label_names)
    metrics.update(
        {"split": split, "checkpoint": str(checkpoint_dir), "modalities": model.modalities}
    )
    out = Path(out_dir or (f"eval_{split}" if from_hub else folder.parent / f"eval_{split}"))
    metrics["paths"] = write_report(metrics, preds, fs.label_names, out)
    return metrics
