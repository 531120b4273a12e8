"""Does AFW carry a per-utterance signal at initialisation? (docs/ada2i.md #6)

    python -m bench.afw_signal --features FEATURESET [--modalities ta] [--softmax last first ...]

For each formulation of eq. 4's softmax, on freshly initialised models (5 seeds) over real
dialogues: the spread across utterances of the contracted tensor Theta x A x ... (mean over its
R*R entries of std over utterances / |mean|), and the gradient norm that reaches the tensor-ring
projections (W_Q, W_K) relative to the eq. 6 linear's, after one backward pass of L_main.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from model.ada2i import Ada2I
from model.config import MODALITY_ORDER, THETA_SOFTMAX, preset
from model.objective import ada2i_loss
from pipeline.features.featureset import FeatureSet
from pipeline.training.data import collate


def contracted_spread(model: Ada2I, batch) -> dict[str, float]:
    """m -> spread of the first AFW layer's contracted tensor across the batch's utterances."""
    layer = model.afw.layers[0]
    feats = {m: batch.features[m] for m in model.modalities}
    z, valid = {}, {}
    for m in model.modalities:
        valid[m] = batch.utterance_mask & batch.modality_mask[m]
        z[m] = model.encoders[m](feats[m], batch.utterance_mask)  # [B, T, H]
    theta = {m: layer._theta(m, z[m]) for m in model.modalities}  # [B, T, R, R]
    pooled = {}
    for m in model.modalities:
        w = valid[m].to(theta[m].dtype)[..., None, None]
        pooled[m] = (theta[m] * w).sum(1) / w.sum(1).clamp_min(1.0)
    out = {}
    for m in model.modalities:
        c = theta[m]
        for o in MODALITY_ORDER:
            if o in model.modalities and o != m:
                c = c @ pooled[o][:, None]
        c = c[valid[m]].flatten(1).double()  # [n, R*R]
        out[m] = float((c.std(0) / c.mean(0).abs().clamp_min(1e-30)).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", required=True)
    ap.add_argument("--modalities", default="ta")
    ap.add_argument("--preset", default="iemocap")
    ap.add_argument("--softmax", nargs="*", default=list(THETA_SOFTMAX))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--qk-init-std", type=float, nargs="*", default=[0.0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    fs = FeatureSet.load(args.features).select_modalities(args.modalities)
    batch = collate(fs, fs.split("train")[:10])
    for axis, qk_std in [(a, q) for a in args.softmax for q in args.qk_init_std]:
        spreads, ratios = [], []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            cfg = preset(
                args.preset,
                modalities=args.modalities,
                input_dims=fs.dims,
                n_classes=len(fs.label_names),
                theta_softmax=axis,
                qk_init_std=qk_std,
                dropout=0.0,
            )
            model = Ada2I(cfg)
            with torch.no_grad():
                spreads.append(contracted_spread(model, batch))
            out = model(
                {m: batch.features[m] for m in model.modalities},
                batch.utterance_mask,
                batch.modality_mask,
            )
            ada2i_loss(out, batch.labels).total.backward()
            layer = model.afw.layers[0]
            qk = np.mean([float(layer.qk[m].weight.grad.norm()) for m in model.modalities])
            att = np.mean([float(layer.att[m].weight.grad.norm()) for m in model.modalities])
            ratios.append(qk / att)
        print(
            json.dumps(
                {
                    "theta_softmax": axis,
                    "qk_init_std": qk_std,
                    "spread": {
                        m: float(np.median([s[m] for s in spreads])) for m in model.modalities
                    },
                    "grad_qk_over_att": float(np.median(ratios)),
                }
            )
        )


if __name__ == "__main__":
    main()
