"""The one small interface every extractor implements.

An extractor turns a batch of per-utterance inputs of one kind into one fixed-size float32 vector
per utterance. It knows nothing of manifests, caches or Prefect: pipeline/ feeds it and stores
what it returns.

Inputs by ``kind``:
    text   -> list[str]                                  one transcript per utterance
    audio  -> list[np.ndarray]  shape = (n_samples,)     float32 mono at SAMPLE_RATE
    visual -> list[list[np.ndarray]]                     per utterance, its sampled frames,
                                                          each shape = (H, W, 3) uint8 RGB
Output: list[np.ndarray | None], one per input, each shape = (spec.dim,) float32 and finite.
``None`` means "nothing to extract" (no face in any frame, empty audio): the pipeline records a
modality mask for that utterance instead of failing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

SAMPLE_RATE = 16_000  # Hz; wav2vec2 and the openSMILE feature sets expect 16 kHz mono

Kind = Literal["text", "audio", "visual"]


@dataclass(frozen=True)
class ExtractorSpec:
    """What a tensor came from: enough to decide whether a cached tensor is still valid."""

    name: str  # e.g. "sbert", "wav2vec2", "opensmile-egemaps", "densenet-face"
    version: str  # bump when the code changes what it outputs
    kind: Kind
    dim: int
    model: str  # model id or local path, "" when there is none (openSMILE)
    weights: str  # "pretrained" | "packaged" | "random-init" | "none"
    weights_hash: str  # sha256 of the weights actually loaded ("" when there are none)
    config: dict[str, Any] = field(default_factory=dict)

    def config_hash(self) -> str:
        """Stable hash of everything that changes the output, for feature-store keys."""
        payload = json.dumps(
            {
                "name": self.name,
                "version": self.version,
                "dim": self.dim,
                "model": self.model,
                "weights_hash": self.weights_hash,
                "config": self.config,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "dim": self.dim,
            "model": self.model,
            "weights": self.weights,
            "weights_hash": self.weights_hash,
            "config": self.config,
        }


class Extractor(Protocol):
    spec: ExtractorSpec

    def __call__(self, inputs: list[Any]) -> list[np.ndarray | None]: ...
