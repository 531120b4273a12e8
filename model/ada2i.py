"""Ada2I (ACM MM 2024): modality encoders -> AFW -> AMW -> MLP, for any modality subset.

Shape letters: see model/config.py. Every modality subset (TAV, TA, TV, AV, T, A, V) is the same
network built from one config; a modality missing for one utterance (no face found) is masked,
not zero-filled into the fused scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.afw import AdaptiveFeatureWeighting
from model.amw import AdaptiveModalityWeighting, ConcatHead
from model.config import Ada2IConfig
from model.encoder import ModalityEncoder


@dataclass
class Ada2IOutput:
    logits: torch.Tensor  # [B, T, C]  y_hat (eq. 9), what predictions come from
    fused: torch.Tensor | None  # [B, T, C]  Z^{m-adapt} (eq. 8); None for the concat baseline
    unimodal: dict[str, torch.Tensor]  # m -> [B, T, C]  per-modality scores (eq. 16)
    feature_losses: dict[str, torch.Tensor]  # m -> scalar  L_feature (eq. 12) of m; {} without AFW
    valid: dict[str, torch.Tensor]  # m -> bool [B, T]  real utterance with modality m present

    @property
    def feature_loss(self) -> torch.Tensor:
        """L_feature summed over modalities (scalar; 0 without AFW)."""
        total = self.logits.new_zeros(())
        for loss in self.feature_losses.values():
            total = total + loss
        return total


class Ada2I(nn.Module):
    def __init__(self, cfg: Ada2IConfig):
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(cfg.input_dims[m], cfg) for m in cfg.modalities}
        )
        self.afw = AdaptiveFeatureWeighting(cfg) if cfg.use_afw and cfg.afw_layers > 0 else None
        self.head = AdaptiveModalityWeighting(cfg) if cfg.use_amw else ConcatHead(cfg)

    @property
    def modalities(self) -> str:
        return self.cfg.modalities

    def forward(
        self,
        features: dict[str, torch.Tensor],
        utterance_mask: torch.Tensor,
        modality_mask: dict[str, torch.Tensor] | None = None,
    ) -> Ada2IOutput:
        """features: m -> [B, T, D_m]; utterance_mask: bool [B, T] (False = padding);
        modality_mask: m -> bool [B, T] (False = this utterance lacks modality m)."""
        self._check_inputs(features, utterance_mask)
        valid, z = {}, {}
        for m in self.modalities:
            present = utterance_mask if modality_mask is None else utterance_mask & modality_mask[m]
            valid[m] = present  # [B, T]
            # A dialogue with no utterance of this modality still needs someone to attend to.
            key_mask = torch.where(present.any(dim=1, keepdim=True), present, utterance_mask)
            z[m] = self.encoders[m](features[m], key_mask)  # [B, T, H]

        feature_losses: dict[str, torch.Tensor] = {}
        if self.afw is not None:
            z, feature_losses = self.afw(z, valid)  # m -> [B, T, H], m -> scalar
        logits, fused, unimodal = self.head(z, valid)  # [B, T, C], [B, T, C] | None, m -> [B, T, C]
        return Ada2IOutput(logits, fused, unimodal, feature_losses, valid)

    def _check_inputs(
        self, features: dict[str, torch.Tensor], utterance_mask: torch.Tensor
    ) -> None:
        missing = [m for m in self.modalities if m not in features]
        if missing:
            raise ValueError(f"model expects modalities {self.modalities!r}; missing {missing}")
        for m in self.modalities:
            x, want = features[m], self.cfg.input_dims[m]
            if x.ndim != 3 or x.shape[:2] != utterance_mask.shape or x.shape[-1] != want:
                raise ValueError(
                    f"modality {m}: features of shape {tuple(x.shape)}, expected "
                    f"[{utterance_mask.shape[0]}, {utterance_mask.shape[1]}, {want}]"
                )

    def encoder_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameters gradient modulation scales, per modality (paper eq. 18)."""
        return {m: list(self.encoders[m].parameters()) for m in self.modalities}

    def parameter_groups(self) -> list[dict]:
        """Optimiser groups: one per modality encoder (named "encoder.<m>", whose step eq. 18
        scales), then everything else ("shared"). Flattened, they are model.parameters() in its
        order, so optimiser states saved with a single group still line up."""
        encoders = [
            {"name": f"encoder.{m}", "params": list(self.encoders[m].parameters())}
            for m in self.modalities
        ]
        inside = {id(p) for g in encoders for p in g["params"]}
        shared = [p for p in self.parameters() if id(p) not in inside]
        groups = encoders + ([{"name": "shared", "params": shared}] if shared else [])
        flat = [p for g in groups for p in g["params"]]
        assert [id(p) for p in flat] == [id(p) for p in self.parameters()]
        return groups

    def class_weight_norms(self) -> dict[str, list[float]]:
        return self.head.class_weight_norms()
