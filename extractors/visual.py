"""Visual: MTCNN faces on an utterance's sampled frames -> aligned crops -> DenseNet121 -> mean.

Dimension letters: N frames (all utterances of a call), K faces in a frame, M crops kept (at most
one per frame), H/W frame height/width, D = 1024 DenseNet121 features.

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
  (not IEMOCAP's 640x480) smaller faces are now looked for (tests/test_extractors.py shows which).
- One face per frame. ``face_choice="most_confident"`` (default) keeps the face with the highest
  MTCNN probability; ``"largest"`` keeps the largest box (closest to the camera; usually the
  speaker in single-camera dialogue video such as IEMOCAP, though not always).
- Crops are aligned: a similarity transform maps MTCNN's five landmarks onto the ArcFace
  112x112 reference points, loosened by ``TEMPLATE_ZOOM`` so brows and chin stay in view,
  scaled to ``crop_size``: 224 by default (DenseNet's ImageNet input size; the ``paper`` preset).
  The ``offline`` preset (random-init DenseNet anyway) uses 160: ~2.3x cheaper per crop (7x7 ->
  5x5 final feature map, still 1024-d); ``crop_size`` is in the spec config, so it changes the
  cache key.
- DenseNet runs in ``channels_last`` memory format under ``torch.inference_mode`` (measured ~1.3x
  faster per crop on this CPU, same values to float rounding), crops batched ``embed_batch_size``
  at a time across all the utterances of a call.
- Features: DenseNet121 ``features`` -> ReLU -> global average pool (torchvision's own head
  without the classifier), D = 1024, averaged over the utterance's frames that have a face.
  No face in any frame (or no frames) -> ``None``: the pipeline masks the visual modality.
- ``pretrained=True`` loads torchvision's ImageNet weights by name (needs network or the torch
  hub cache); ``pretrained=False`` is a random init from a fixed seed, recorded as
  ``weights="random-init"``: a deterministic stand-in when no weights can be downloaded.
  MTCNN uses the weights facenet-pytorch ships; thresholds stay at its defaults. MTCNN runs on
  batches of equal-size detection copies (``detect_batch_size``) through facenet-pytorch's
  ``detect_face`` with a per-call minimum size, so one instance is safe to share between threads.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from extractors.base import ExtractorSpec
from extractors.weights import load_or_explain, sha256_state_dict

VERSION = "2"  # 2: min_face_size in full-resolution pixels (was detection pixels)
FaceChoice = Literal["most_confident", "largest"]
FACE_CHOICES = ("most_confident", "largest")
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


@dataclass(frozen=True)
class FaceDetections:
    """MTCNN output for one frame, in that frame's full-resolution pixels."""

    boxes: np.ndarray  # [K, 4] x1, y1, x2, y2
    probs: np.ndarray  # [K]
    landmarks: np.ndarray  # [K, 5, 2] (x, y): left eye, right eye, nose, mouth left, mouth right

    def __len__(self) -> int:
        return len(self.probs)


@dataclass(frozen=True)
class FaceStats:
    """Counts from the last call, for the pipeline's face-found report."""

    utterances: int = 0
    utterances_with_face: int = 0
    frames: int = 0
    frames_with_face: int = 0
    frames_with_several_faces: int = 0

    @property
    def face_found_rate(self) -> float:
        return self.frames_with_face / self.frames if self.frames else 0.0


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
    ):
        from facenet_pytorch import MTCNN

        if face_choice not in FACE_CHOICES:
            raise ValueError(f"face_choice must be one of {FACE_CHOICES}, got {face_choice!r}")
        self.face_choice = face_choice
        self.min_face_size = min_face_size
        self.device = device
        self.crop_size = crop_size
        self.max_side = max_side
        self.detect_batch_size = detect_batch_size
        self.embed_batch_size = embed_batch_size
        self.mtcnn = MTCNN(
            keep_all=True, min_face_size=min_face_size, device=torch.device(device)
        ).eval()
        self.densenet = (
            _densenet121_features(pretrained, seed)
            .to(device)
            .to(memory_format=torch.channels_last)
            .eval()
        )
        self.template = _template(crop_size)
        self.last_stats = FaceStats()
        model = "torchvision/densenet121" + ("(IMAGENET1K_V1)" if pretrained else f"(seed={seed})")
        self.spec = ExtractorSpec(
            name="densenet-face",
            version=VERSION,
            kind="visual",
            dim=1024,
            model=f"facenet-pytorch/mtcnn+{model}",
            weights="pretrained" if pretrained else "random-init",
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

    # ---- the three steps ----------------------------------------------------------------------
    def __call__(self, inputs: list[list[np.ndarray]]) -> list[np.ndarray | None]:
        frames = [_as_rgb(f, u, j) for u, fs in enumerate(inputs) for j, f in enumerate(fs)]  # N
        owner = [u for u, fs in enumerate(inputs) for _ in fs]  # [N] utterance of each frame
        detections = self.detect_faces(frames)  # N x FaceDetections
        crops, crop_owner = [], []
        for frame, det, u in zip(frames, detections, owner, strict=True):
            if len(det):
                landmarks = det.landmarks[choose_face(det, self.face_choice)]  # [5, 2]
                crops.append(self.align(frame, landmarks))  # [C, C, 3]
                crop_owner.append(u)
        features = self.embed_faces(np.stack(crops)) if crops else np.zeros((0, 1024), np.float32)
        out: list[np.ndarray | None] = [None] * len(inputs)
        for u in set(crop_owner):
            rows = [i for i, o in enumerate(crop_owner) if o == u]
            out[u] = features[rows].mean(axis=0).astype(np.float32)  # [D]
        self.last_stats = FaceStats(
            utterances=len(inputs),
            utterances_with_face=len(set(crop_owner)),
            frames=len(frames),
            frames_with_face=len(crops),
            frames_with_several_faces=sum(len(d) > 1 for d in detections),
        )
        return out

    def detect_faces(self, frames: list[np.ndarray]) -> list[FaceDetections]:
        """MTCNN on each frame (downscaled copies, batched by size); results in full-res pixels."""
        frames = [_as_rgb(f, 0, j) for j, f in enumerate(frames)]
        small, scales = (
            zip(*(self._downscale(f) for f in frames), strict=True) if frames else ((), ())
        )
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, img in enumerate(small):
            by_shape[img.shape].append(i)
        empty = FaceDetections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        result: list[FaceDetections] = [empty] * len(frames)
        for shape, idx in by_shape.items():
            sx, sy = scales[idx[0]]  # an equal copy size means (almost) the same scale
            minsize = self.detect_min_size(min(sx, sy))
            if min(shape[:2]) < minsize:  # MTCNN's image pyramid would be empty
                continue
            for start in range(0, len(idx), self.detect_batch_size):
                chunk = idx[start : start + self.detect_batch_size]
                dets = self._mtcnn(np.stack([small[i] for i in chunk]), minsize)
                for i, det in zip(chunk, dets, strict=True):
                    if len(det):
                        sx, sy = scales[i]
                        result[i] = FaceDetections(
                            det.boxes / [sx, sy, sx, sy], det.probs, det.landmarks / [sx, sy]
                        )
        return result

    def detect_min_size(self, scale: float) -> float:
        """MTCNN's minimum face size on a detection copy downscaled by ``scale`` (<= 1)."""
        return max(12.0, self.min_face_size * scale)

    @torch.inference_mode()
    def _mtcnn(self, batch: np.ndarray, minsize: float) -> list[FaceDetections]:
        """MTCNN on equal-size frames [B, H, W, 3] -> per frame, boxes sorted largest first.

        facenet-pytorch's ``detect_face`` with the instance's networks, thresholds and pyramid
        factor; the minimum size is an argument (not the instance attribute ``MTCNN.detect``
        reads), so concurrent calls with different sizes cannot interfere.
        """
        from facenet_pytorch.models.utils.detect_face import detect_face

        m = self.mtcnn
        boxes, points = detect_face(
            batch, minsize, m.pnet, m.rnet, m.onet, m.thresholds, m.factor, m.device
        )
        out = []
        for b, p in zip(boxes, points, strict=True):
            b = np.asarray(b, np.float64).reshape(-1, 5)  # [K, 5]: x1, y1, x2, y2, prob
            p = np.asarray(p, np.float64).reshape(-1, 5, 2)  # [K, 5, 2]
            order = np.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[::-1]  # as MTCNN.detect
            out.append(FaceDetections(b[order, :4], b[order, 4], p[order]))
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

    # ---- helpers ------------------------------------------------------------------------------
    def _downscale(self, frame: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """Frame with long side <= max_side, and the (x, y) scales applied."""
        import cv2

        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale == 1.0:
            return frame, (1.0, 1.0)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # (W', H') for cv2
        # per-axis scales from the rounded size, so boxes map back exactly
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), (size[0] / w, size[1] / h)


def choose_face(det: FaceDetections, how: FaceChoice) -> int:
    """Index of the face to keep in a frame with at least one face."""
    if how == "largest":
        areas = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])  # [K]
        return int(np.argmax(areas))
    return int(np.argmax(det.probs))


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


def _as_rgb(frame: np.ndarray, utt: int, idx: int) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise ValueError(f"frame {idx} of utterance {utt}: dtype {a.dtype}, expected uint8")
    if a.ndim == 2:  # grayscale -> RGB
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:  # RGBA -> RGB
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"frame {idx} of utterance {utt}: shape {a.shape}, expected (H, W, 3)")
    return np.ascontiguousarray(a)
