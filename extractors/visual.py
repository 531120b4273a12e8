"""Visual: MTCNN faces on an utterance's sampled frames -> aligned crops -> DenseNet121 -> mean.

The ``paper`` preset's visual extractor (the ``offline`` one is fer_visual.py: a trained
facial-expression CNN). Detection, face choice and pooling live in faces.py and are shared.

Dimension letters: N frames (all utterances of a call), K faces in a frame, M crops kept (at most
one per frame), H/W frame height/width, D = 1024 DenseNet121 features.

Which weights: the IEMOCAP/MELD visual features of the field (MMGCN, COGMEN, CORECT and Ada2I
use them as released) come from a DenseNet trained on facial-expression data (FER+), not from
ImageNet weights. No such checkpoint is published as a file, so ``pretrained=True`` loads
torchvision's ImageNet DenseNet121 by name (the closest named weights), and ``weights_path``
takes your own fine-tuned DenseNet121: a ``.safetensors`` file or a torch state_dict
(``.pt``/``.pth``/``.bin``, loaded with ``weights_only=True``, never as a pickle of code), of the
whole torchvision ``densenet121`` (its ``classifier.*`` is ignored) or of its ``features`` only.
Provenance then records ``weights="file"``, the file's name and the sha256 of what was loaded.

Choices, each for a reason:
- Detection runs on a copy of the frame downscaled so its long side is <= ``max_side``; boxes
  and landmarks are scaled back to full-resolution pixels, and the crop is cut from the
  full-resolution frame (alignment quality does not depend on the detection size).
  ``min_face_size`` is in full-resolution pixels: MTCNN gets ``min_face_size x scale`` (never
  below 12, P-Net's window, so the detection copy is never upsampled; the effective minimum is
  then ``12 / scale`` full-res pixels). Note what this buys: MTCNN's image pyramid starts at
  ``12 / min_face_size`` of the full frame whatever the detection size, so with the same full-res
  minimum the P-Net cost barely changes; what a smaller copy saves is the per-frame tensor work,
  and the cost is set by the full-res minimum face size.
  Measured on the 52 IEMOCAP clips at 2 fps (471 frames of 640x480, one thread, shared 2-core
  machine; docs/bench_extract.md), as (max_side, min_face_size): ms per frame, frames with a face:
  (640, 20) 69 ms, 93.2%; (640, 40) 39 ms, 92.4%; (480, 40) 32 ms, 91.1%; (320, 40) 27 ms, 89.8%;
  (320, 24) 41 ms, 89.8%. So on these frames the minimum face size is what pays, and detecting
  below 640 costs found faces (30 px faces give weaker R-/O-Net scores) for a few ms: the
  ``offline`` preset keeps ``max_side=640`` and sets ``min_face_size=40`` (IEMOCAP faces are
  >= 45 px wide at 640x480); the defaults (640 / 20) are the previous settings and what the
  ``paper`` preset keeps. ``max_side`` still bounds the per-frame cost of larger videos. Up to
  VERSION 1 ``min_face_size`` was in detection-copy pixels, so on frames larger than ``max_side``
  (not IEMOCAP's 640x480) smaller faces are now looked for (tests/extractors/test_extractors.py shows which).
- One face per frame (faces.py): ``face_choice="most_confident"`` (default) or ``"largest"``.
- Crops are aligned: a similarity transform maps MTCNN's five landmarks onto the ArcFace
  112x112 reference points, loosened by ``TEMPLATE_ZOOM`` so brows and chin stay in view,
  scaled to ``crop_size``: 224 by default (DenseNet's ImageNet input size; the ``paper`` preset).
  160 is ~2.3x cheaper per crop (7x7 -> 5x5 final feature map, still 1024-d; what the
  ``offline`` preset used before it moved to fer_visual.py); ``crop_size`` is in the spec
  config, so it changes the cache key.
- DenseNet runs in ``channels_last`` memory format under ``torch.inference_mode`` (measured ~1.3x
  faster per crop on this CPU, same values to float rounding), crops batched ``embed_batch_size``
  at a time across all the utterances of a call.
- Features: DenseNet121 ``features`` -> ReLU -> global average pool (torchvision's own head
  without the classifier), D = 1024, averaged over the utterance's frames that have a face.
  No face in any frame (or no frames) -> ``None``: the pipeline masks the visual modality.
- ``pretrained=True`` loads torchvision's ImageNet weights by name (needs network or the torch
  hub cache); ``pretrained=False`` is a random init from a fixed seed, recorded as
  ``weights="random-init"``: a deterministic stand-in when no weights can be downloaded.
  MTCNN uses the weights facenet-pytorch ships (faces.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from extractors.base import ExtractorSpec
from extractors.faces import (  # noqa: F401  (re-exported: the names visual.py always had)
    FACE_CHOICES,
    FaceChoice,
    FaceDetections,
    FaceDetector,
    FaceStats,
    check_face_choice,
    choose_face,
    pool_faces,
)
from extractors.weights import load_or_explain, sha256_state_dict

VERSION = "2"  # 2: min_face_size in full-resolution pixels (was detection pixels)
# ArcFace (InsightFace) reference landmarks for a 112x112 crop: eyes, nose tip, mouth corners.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
TEMPLATE_ZOOM = 0.8  # < 1 shrinks the landmark layout about the centre = a looser crop
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


class FaceVisualExtractor:
    """list[list[uint8 [H, W, 3] RGB]] (frames per utterance) -> list[float32 [1024] | None]."""

    def __init__(
        self,
        pretrained: bool = False,
        face_choice: FaceChoice = "most_confident",
        min_face_size: int = 20,  # facenet-pytorch's default, in full-resolution pixels
        device: str = "cpu",
        seed: int = 0,
        crop_size: int = 224,
        max_side: int = 640,
        detect_batch_size: int = 4,  # measured on CPU: batches above 4 frames bring nothing
        embed_batch_size: int = 16,
        weights_path: str | Path | None = None,
    ):
        check_face_choice(face_choice)
        if weights_path is not None and pretrained:
            raise ValueError("give either pretrained=True or weights_path, not both")
        self.face_choice = face_choice
        self.device = device
        self.crop_size = crop_size
        self.embed_batch_size = embed_batch_size
        self.detector = FaceDetector(min_face_size, max_side, device, detect_batch_size)
        if weights_path is not None:
            features = _densenet121_from_file(Path(weights_path))
            model, weights = f"torchvision/densenet121(file={Path(weights_path).name})", "file"
        else:
            features = _densenet121_features(pretrained, seed)
            model = "torchvision/densenet121" + (
                "(IMAGENET1K_V1)" if pretrained else f"(seed={seed})"
            )
            weights = "pretrained" if pretrained else "random-init"
        self.densenet = features.to(device).to(memory_format=torch.channels_last).eval()
        self.template = _template(crop_size)
        self.last_stats = FaceStats()
        self.spec = ExtractorSpec(
            name="densenet-face",
            version=VERSION,
            kind="visual",
            dim=1024,
            model=f"facenet-pytorch/mtcnn+{model}",
            weights=weights,
            weights_hash=sha256_state_dict(self.mtcnn, self.densenet),
            config={
                "face_choice": face_choice,
                "min_face_size": min_face_size,  # full-resolution pixels
                "crop_size": crop_size,
                "max_side": max_side,
                "align": "arcface-5pt",
                "template_zoom": TEMPLATE_ZOOM,
                "pooling": "mean",
            },
        )

    # ---- detection is faces.FaceDetector's; these keep the extractor's own API ---------------
    @property
    def mtcnn(self) -> torch.nn.Module:
        return self.detector.mtcnn

    @property
    def min_face_size(self) -> int:
        return self.detector.min_face_size

    @property
    def max_side(self) -> int:
        return self.detector.max_side

    def detect_faces(self, frames: list[np.ndarray]) -> list[FaceDetections]:
        return self.detector.detect_faces(frames)

    def detect_min_size(self, scale: float) -> float:
        return self.detector.detect_min_size(scale)

    # ---- the steps ----------------------------------------------------------------------------
    def __call__(self, inputs: list[list[np.ndarray]]) -> list[np.ndarray | None]:
        out, self.last_stats = pool_faces(
            inputs,
            self.detector,
            self.face_choice,
            lambda frame, det, k: self.align(frame, det.landmarks[k]),  # [C, C, 3]
            self.embed_faces,
            dim=1024,
        )
        return out

    def align(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Warp ``frame`` so the five ``landmarks`` [5, 2] land on the template: [C, C, 3] uint8."""
        import cv2

        matrix = _similarity(landmarks, self.template)  # [2, 3]
        return cv2.warpAffine(
            frame, matrix, (self.crop_size, self.crop_size), flags=cv2.INTER_LINEAR, borderValue=0
        )

    @torch.inference_mode()
    def embed_faces(self, crops: np.ndarray) -> np.ndarray:
        """DenseNet121 features of uint8 crops [M, C, C, 3] -> float32 [M, 1024]."""
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        out = []
        for start in range(0, len(crops), self.embed_batch_size):
            x = torch.from_numpy(crops[start : start + self.embed_batch_size]).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div(255.0)  # [b, 3, C, C] in [0, 1]
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            maps = F.relu(self.densenet(x))  # [b, 1024, C/32, C/32]
            out.append(F.adaptive_avg_pool2d(maps, 1).flatten(1).float().cpu())  # [b, 1024]
        return torch.cat(out).numpy()


def _densenet121_features(pretrained: bool, seed: int) -> torch.nn.Module:
    from torchvision.models import DenseNet121_Weights, densenet121

    if pretrained:
        net = load_or_explain(
            "torchvision weights",
            "densenet121 IMAGENET1K_V1",
            lambda: densenet121(weights=DenseNet121_Weights.IMAGENET1K_V1),
        )
    else:
        with torch.random.fork_rng(devices=[]):  # fixed weights without touching global RNG
            torch.manual_seed(seed)
            net = densenet121(weights=None)
    return net.features  # the classifier is never used


# torchvision's own fix for old DenseNet checkpoints: "norm.1" -> "norm1" (densenet.py)
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _densenet121_from_file(path: Path) -> torch.nn.Module:
    """DenseNet121 ``features`` with the weights in ``path`` (safetensors or a state_dict)."""
    from torchvision.models import densenet121

    if not path.is_file():
        raise FileNotFoundError(f"{path}: DenseNet121 weights file not found")
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise ValueError(
            f"{path}: weights must be one of {STATE_DICT_SUFFIXES}, got {path.suffix!r}"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # an unsafe pickle or not a torch file at all
            raise ValueError(
                f"{path}: not a torch state_dict loadable with weights_only=True ({err})"
            ) from err
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors")
    fixed = {}
    for key, tensor in state.items():
        key = key.removeprefix("module.")  # saved from DataParallel
        if key.startswith("classifier."):
            continue  # the head is never used
        key = key.removeprefix("features.")
        key = _OLD_KEY.sub(r"\1\2", key)
        fixed[key] = tensor
    features = densenet121(weights=None).features
    try:
        features.load_state_dict(fixed, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: not DenseNet121 weights: {err}") from err
    return features


def _template(crop_size: int) -> np.ndarray:
    centre = np.array([56.0, 56.0])
    pts = (ARCFACE_112 - centre) * TEMPLATE_ZOOM + centre  # [5, 2] in the 112 frame
    return pts * (crop_size / 112.0)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift) src -> dst, [2, 3].

    Umeyama (1991) in closed form: deterministic, unlike OpenCV's RANSAC estimators.
    """
    src = np.asarray(src, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d  # [5, 2] each
    cov = d.T @ s / len(src)  # [2, 2]
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * np.diag(sign)).sum() / var if var > 0 else 1.0
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])
