"""Faces in sampled frames: MTCNN detection, one face per frame, crops pooled per utterance.

Shared by the visual extractors (visual.py: aligned RGB crops -> DenseNet121; fer_visual.py: grey
box crops -> the FER2013 CNN). Each supplies how a face becomes a crop and how crops become
vectors; ``pool_faces`` does the rest the same way for both.

Dimension letters: N frames (all utterances of a call), K faces in a frame, M crops kept (at most
one per frame), H/W frame height/width, D feature dim.

- Detection runs on a copy of the frame downscaled so its long side is <= ``max_side``; boxes
  and landmarks are scaled back to full-resolution pixels, and crops are cut from the
  full-resolution frame. ``min_face_size`` is in full-resolution pixels: MTCNN gets
  ``min_face_size x scale`` (never below 12, P-Net's window). Why these settings and what they
  cost: visual.py's docstring and docs/bench_extract.md.
- One face per frame: ``face_choice="most_confident"`` (default, highest MTCNN probability) or
  ``"largest"`` (largest box: usually the speaker in single-camera dialogue video).
- MTCNN uses the weights facenet-pytorch ships, thresholds at its defaults, on batches of
  equal-size detection copies through ``detect_face`` with a per-call minimum size, so one
  instance is safe to share between threads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

FaceChoice = Literal["most_confident", "largest"]
FACE_CHOICES = ("most_confident", "largest")


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


class FaceDetector:
    """MTCNN on frames of any size -> FaceDetections per frame, in full-resolution pixels."""

    def __init__(
        self,
        min_face_size: int = 20,  # facenet-pytorch's default, in full-resolution pixels
        max_side: int = 640,
        device: str = "cpu",
        detect_batch_size: int = 4,  # measured on CPU: batches above 4 frames bring nothing
    ):
        from facenet_pytorch import MTCNN

        self.min_face_size = min_face_size
        self.max_side = max_side
        self.detect_batch_size = detect_batch_size
        self.mtcnn = MTCNN(
            keep_all=True, min_face_size=min_face_size, device=torch.device(device)
        ).eval()

    def detect_faces(self, frames: list[np.ndarray]) -> list[FaceDetections]:
        """MTCNN on each frame (downscaled copies, batched by size); results in full-res pixels."""
        frames = [as_rgb(f, 0, j) for j, f in enumerate(frames)]
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


def pool_faces(
    inputs: list[list[np.ndarray]],
    detector: FaceDetector,
    face_choice: FaceChoice,
    crop: Callable[[np.ndarray, FaceDetections, int], np.ndarray],
    embed: Callable[[np.ndarray], np.ndarray],
    dim: int,
) -> tuple[list[np.ndarray | None], FaceStats]:
    """Frames per utterance -> mean of the crops' vectors per utterance (None: no face), stats.

    ``crop(frame, detections, k)`` cuts face ``k`` of a frame; ``embed(crops [M, ...])`` returns
    float32 [M, dim]. All crops of the call are embedded together (batched across utterances).
    """
    frames = [as_rgb(f, u, j) for u, fs in enumerate(inputs) for j, f in enumerate(fs)]  # N
    owner = [u for u, fs in enumerate(inputs) for _ in fs]  # [N] utterance of each frame
    detections = detector.detect_faces(frames)  # N x FaceDetections
    crops, crop_owner = [], []
    for frame, det, u in zip(frames, detections, owner, strict=True):
        if len(det):
            crops.append(crop(frame, det, choose_face(det, face_choice)))
            crop_owner.append(u)
    features = embed(np.stack(crops)) if crops else np.zeros((0, dim), np.float32)  # [M, D]
    out: list[np.ndarray | None] = [None] * len(inputs)
    for u in set(crop_owner):
        rows = [i for i, o in enumerate(crop_owner) if o == u]
        out[u] = features[rows].mean(axis=0).astype(np.float32)  # [D]
    stats = FaceStats(
        utterances=len(inputs),
        utterances_with_face=len(set(crop_owner)),
        frames=len(frames),
        frames_with_face=len(crops),
        frames_with_several_faces=sum(len(d) > 1 for d in detections),
    )
    return out, stats


def choose_face(det: FaceDetections, how: FaceChoice) -> int:
    """Index of the face to keep in a frame with at least one face."""
    if how == "largest":
        areas = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])  # [K]
        return int(np.argmax(areas))
    return int(np.argmax(det.probs))


def check_face_choice(face_choice: str) -> None:
    if face_choice not in FACE_CHOICES:
        raise ValueError(f"face_choice must be one of {FACE_CHOICES}, got {face_choice!r}")


def as_rgb(frame: np.ndarray, utt: int, idx: int) -> np.ndarray:
    """A uint8 frame as contiguous [H, W, 3] RGB (grey and RGBA converted); ValueError else."""
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
