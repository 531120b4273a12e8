"""Audio: wav2vec2 hidden states (one selectable layer), mean-pooled over an utterance's frames.

Dimension letters: B batch, S samples (16 kHz), F frames (20 ms for the standard conv stack),
H hidden size, C conv channels.

Exactness of batching: a batch is zero-padded to its longest signal and pooled with the frame
mask derived from the sample mask, so a vector does not depend on what it was batched with, as
long as the model's conv stack normalises per frame (``feat_extract_norm="layer"``: large-lv60,
XLSR, ...). Models with ``feat_extract_norm="group"`` (wav2vec2-base, large-960h) normalise each
channel over the whole time axis, padding included, so for them only signals of equal length
share a batch (in practice one at a time). See transformers' Wav2Vec2 docs on attention_mask.

Signals shorter than the conv receptive field (400 samples = 25 ms for the standard stack) are
zero-padded to it after normalisation, so a blip of sound still yields one frame; an empty signal
gives ``None`` (masked), and so does a signal with non-finite samples (a decode fault; openSMILE
masks it too, so the audio extractors of one preset agree).
"""

from __future__ import annotations

import numpy as np
import torch

from extractors.base import SAMPLE_RATE, ExtractorSpec
from extractors.weights import load_or_explain, sha256_state_dict

VERSION = "1"
PAPER_MODEL = "facebook/wav2vec2-large-lv60"  # self-supervised only, like the paper's wav2vec-large
FEATURES_LAYER = "features"  # the conv feature encoder output (C = 512), before the transformer


class Wav2Vec2AudioExtractor:
    """list[float32 [S] at 16 kHz] -> list[float32 [dim] | None].

    ``layer``: an index into the hidden states (0 = transformer input, i.e. projected conv
    features + positional conv; -1 = last layer; ``num_hidden_layers + 1`` entries in all), or
    ``"features"`` for the (layer-normed) conv features, C-dimensional. dim = H, or C for
    ``"features"``. Build with ``from_pretrained`` (real runs) or ``tiny`` (tests).
    """

    def __init__(
        self,
        model,  # transformers.Wav2Vec2Model
        feature_extractor,  # transformers.Wav2Vec2FeatureExtractor
        *,
        model_id: str,
        weights: str,
        layer: int | str = -1,
        batch_size: int = 8,
        device: str = "cpu",
    ):
        config = model.config
        n_states = config.num_hidden_layers + 1
        if layer != FEATURES_LAYER and not (
            isinstance(layer, int) and -n_states <= layer < n_states
        ):
            raise ValueError(
                f"layer must be {FEATURES_LAYER!r} or an int in [{-n_states}, {n_states - 1}], got {layer!r}"
            )
        self.model = model.to(device).eval()
        self.feature_extractor = feature_extractor
        self.layer = layer
        self.batch_size = batch_size
        self.device = device
        # A group-normalised conv stack sees the padding: batch equal lengths only (module doc).
        self.pad_exact = config.feat_extract_norm == "layer"
        self.kernels, self.strides = tuple(config.conv_kernel), tuple(config.conv_stride)
        self.min_samples = receptive_field(self.kernels, self.strides)
        self._last_layer = layer != FEATURES_LAYER and layer % n_states == n_states - 1
        self.do_normalize = bool(getattr(feature_extractor, "do_normalize", True))
        dim = config.conv_dim[-1] if layer == FEATURES_LAYER else config.hidden_size
        self.spec = ExtractorSpec(
            name="wav2vec2",
            version=VERSION,
            kind="audio",
            dim=int(dim),
            model=model_id,
            weights=weights,
            weights_hash=sha256_state_dict(self.model),
            config={
                "layer": layer if layer == FEATURES_LAYER else _absolute_layer(layer, n_states),
                "pooling": "mean",
                "do_normalize": self.do_normalize,
                "min_samples": self.min_samples,
            },
        )

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = PAPER_MODEL,
        layer: int | str = -1,
        batch_size: int = 8,
        device: str = "cpu",
    ) -> Wav2Vec2AudioExtractor:
        """Load a pretrained wav2vec2 by Hugging Face id or local folder (needs network or cache)."""
        from transformers import AutoFeatureExtractor, Wav2Vec2Model

        model = load_or_explain(
            "wav2vec2 model", name_or_path, lambda: Wav2Vec2Model.from_pretrained(name_or_path)
        )
        fe = load_or_explain(
            "wav2vec2 feature extractor",
            name_or_path,
            lambda: AutoFeatureExtractor.from_pretrained(name_or_path),
        )
        return cls(
            model,
            fe,
            model_id=str(name_or_path),
            weights="pretrained",
            layer=layer,
            batch_size=batch_size,
            device=device,
        )

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        layer: int | str = -1,
        feat_extract_norm: str = "layer",
        batch_size: int = 8,
        device: str = "cpu",
    ) -> Wav2Vec2AudioExtractor:
        """A random-init wav2vec2 built in code (H = 32, 2 layers, 32 conv channels) with the
        standard conv geometry (7 layers, 400-sample receptive field, 320-sample stride), so
        frame counts and the short-audio rule match the real models. For tests only."""
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

        config = Wav2Vec2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32,) * 7,
            conv_stride=(5, 2, 2, 2, 2, 2, 2),
            conv_kernel=(10, 3, 3, 3, 3, 2, 2),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            feat_extract_norm=feat_extract_norm,
            do_stable_layer_norm=feat_extract_norm == "layer",
        )
        with torch.random.fork_rng(devices=[]):  # fixed weights without touching global RNG
            torch.manual_seed(seed)
            model = Wav2Vec2Model(config)
        fe = Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=SAMPLE_RATE,
            padding_value=0.0,
            do_normalize=True,
            return_attention_mask=feat_extract_norm == "layer",
        )
        return cls(
            model,
            fe,
            model_id=f"tiny-wav2vec2(seed={seed},norm={feat_extract_norm})",
            weights="random-init",
            layer=layer,
            batch_size=batch_size,
            device=device,
        )

    @classmethod
    def large_random_init(
        cls, layers: int = 24, batch_size: int = 8, device: str = "cpu", seed: int = 0
    ) -> Wav2Vec2AudioExtractor:
        """facebook/wav2vec2-large-lv60's architecture (its config.json) with random weights: the
        paper preset's audio cost, measured without a download (bench/paper_speed.py,
        bench/gpu_check.py). ``layers`` < 24 only to make a quick check quicker."""
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

        config = Wav2Vec2Config(
            hidden_size=1024,
            num_hidden_layers=layers,
            num_attention_heads=16,
            intermediate_size=4096,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_bias=True,
            feat_extract_activation="gelu",
        )
        with torch.random.fork_rng(devices=[]):  # fixed weights without touching global RNG
            torch.manual_seed(seed)
            model = Wav2Vec2Model(config)
        fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
        return cls(
            model,
            fe,
            model_id=f"wav2vec2-large-lv60(architecture, {layers} layers, random-init)",
            weights="random-init",
            batch_size=batch_size,
            device=device,
        )

    # ---- extraction ---------------------------------------------------------------------------
    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray | None]:
        signals = [self._prepare(i, x) for i, x in enumerate(inputs)]  # each [S_i] or None
        out: list[np.ndarray | None] = [None] * len(inputs)
        for batch in self._batches(signals):
            for i, vec in zip(batch, self._embed([signals[i] for i in batch]), strict=True):
                out[i] = vec
        return out

    def _prepare(self, index: int, signal: np.ndarray) -> np.ndarray | None:
        x = np.asarray(signal, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"audio input {index} has shape {x.shape}, expected (n_samples,)")
        if x.size == 0 or not np.isfinite(x).all():
            return None
        if self.do_normalize:
            # the feature extractor's per-signal zero-mean / unit-variance, on the signal alone
            x = self.feature_extractor(x, sampling_rate=SAMPLE_RATE)["input_values"][0]
            x = np.asarray(x, dtype=np.float32)
        if x.size < self.min_samples:
            x = np.pad(x, (0, self.min_samples - x.size))  # [min_samples]; 0 = the mean
        return x

    def _batches(self, signals: list[np.ndarray | None]) -> list[list[int]]:
        """Indices grouped into batches; sorted by length so padding stays small."""
        order = sorted(
            (i for i, x in enumerate(signals) if x is not None), key=lambda i: signals[i].size
        )
        batches: list[list[int]] = []
        for i in order:
            last = batches[-1] if batches else None
            fits = (
                last is not None
                and len(last) < self.batch_size
                and (self.pad_exact or signals[last[0]].size == signals[i].size)
            )
            if fits:
                last.append(i)
            else:
                batches.append([i])
        return batches

    @torch.inference_mode()
    def _embed(self, signals: list[np.ndarray]) -> list[np.ndarray]:
        lengths = torch.tensor([x.size for x in signals])  # [B]
        values = torch.zeros(len(signals), int(lengths.max()))  # [B, S]
        for row, x in enumerate(signals):
            values[row, : x.size] = torch.from_numpy(x)
        sample_mask = (torch.arange(values.shape[1])[None, :] < lengths[:, None]).long()  # [B, S]
        values, sample_mask = values.to(self.device), sample_mask.to(self.device)
        want_states = self.layer != FEATURES_LAYER
        out = self.model(
            values,
            attention_mask=sample_mask if self.pad_exact else None,
            output_hidden_states=want_states and not self._last_layer,
        )
        if want_states and self._last_layer:
            # last_hidden_state, not hidden_states[-1]: in transformers 5 the stable-layer-norm
            # variant's hidden_states[-1] is taken before the final LayerNorm (in 4.x it was after)
            frames = out.last_hidden_state  # [B, F, H]
        elif want_states:
            frames = out.hidden_states[self.layer]  # [B, F, H]
        else:
            frames = out.extract_features  # [B, F, C]
        n_frames = torch.tensor([frame_count(int(n), self.kernels, self.strides) for n in lengths])
        frame_mask = torch.arange(frames.shape[1])[None, :] < n_frames[:, None]  # [B, F]
        frame_mask = frame_mask.to(self.device)
        weights = frame_mask.to(frames.dtype).unsqueeze(-1)  # [B, F, 1]
        pooled = (frames * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, dim]
        pooled = pooled.float().cpu().numpy()
        return [row.copy() for row in pooled]


def receptive_field(kernels, strides) -> int:
    """Samples one output frame of a conv stack sees: 400 for wav2vec2's (10,3,3,3,3,2,2)/(5,2,...)."""
    field, jump = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        field += (k - 1) * jump
        jump *= s
    return field


def frame_count(n_samples: int, kernels, strides) -> int:
    """Frames a conv stack (no padding) makes from ``n_samples``: the valid frames to pool."""
    for k, s in zip(kernels, strides, strict=True):
        n_samples = (n_samples - k) // s + 1
    return max(n_samples, 0)


def _absolute_layer(layer: int, n_states: int) -> int:
    # -1 and 12 can name the same state; store one spelling so cache keys agree
    return layer % n_states
