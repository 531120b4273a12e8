from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# One thread: tiny test models gain nothing from two, and OpenMP spin-waits collapse when
# pytest shares the cores with servers, workers or subprocesses the tests start.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session", autouse=True)
def _own_cache_home(tmp_path_factory):
    """The user's cache home holds the default feature store (erc import, erc predict): tests get
    their own, so no test reads what another run left there. Unpacked models stay shared (their
    folders are verified on every use)."""
    from extractors.weights import cache_home, model_cache_dir

    models = model_cache_dir()
    home = tmp_path_factory.mktemp("cache-home")
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "ERC_MODEL_CACHE")}
    os.environ["ERC_MODEL_CACHE"] = str(models)
    os.environ["XDG_CACHE_HOME"] = str(home)
    assert cache_home() == home / "ada2i-erc"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """manifest.csv of a small demo set: 3 dialogues of 5 utterances (seed 0), their mp4s and SRTs
    beside it. Generated once per session and shared: read-only (a test that changes a file works
    on a copy)."""
    from pipeline.dataset.demo import make_demo_dataset

    return make_demo_dataset(
        tmp_path_factory.mktemp("demo"), n_dialogues=3, utterances_per_dialogue=5
    )


@pytest.fixture(scope="session")
def extractors():
    """The tiny preset's text and audio extractors ({"t": [...], "a": [...]}): packaged MiniLM,
    a random-init tiny wav2vec2 and openSMILE, no download. Built once per session and shared
    (extractors are stateless). The visual extractor is the slow one and has its own tests."""
    from pipeline.features.extract import load_extractors

    return load_extractors("tiny", "ta")


@pytest.fixture(scope="session")
def voice():
    """voice(seconds) -> float32 [S] at the pipeline's sample rate: a buzz whose pitch glides around
    140 Hz under a syllable-rate envelope, so openSMILE finds voicing in it."""
    from pipeline.dataset.media import SAMPLE_RATE as SR

    def make(seconds: float) -> np.ndarray:
        t = np.arange(int(seconds * SR)) / SR
        f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)  # a gliding pitch: openSMILE finds voicing
        x = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / SR) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
        return x.astype(np.float32)  # [S]

    return make


@pytest.fixture(scope="session")
def write_wav():
    """write_wav(path, x): x (float in [-1, 1], shape [S]) as a mono 16-bit WAV file at the
    pipeline's sample rate (what the audio extractors read without resampling)."""
    from pipeline.dataset.media import SAMPLE_RATE

    def write(path: Path, x: np.ndarray) -> None:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes((x * 32767).astype("<i2").tobytes())

    return write


@pytest.fixture
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED} is absent (real third-party data is read from ../shared only)")
    return SHARED


# Words that make a transcript's emotion plain to a sentence encoder, one list per IEMOCAP-6
# label (hap sad neu ang exc fru = label_id 0..5).
_IEMOCAP_LINES = [
    ["I am so happy for you!", "What a lovely day, I'm delighted.", "This makes me glad."],
    ["I miss her so much.", "Everything feels hopeless and sad.", "I just want to cry."],
    ["The meeting is at three.", "I parked on the second floor.", "Here is the form."],
    ["Get out of my way!", "I am furious with you!", "Don't you dare lie to me!"],
    ["Wow, we won the trip!", "I can't wait, this is amazing!", "Yes! We did it!"],
    ["Why does nothing ever work?", "I've waited in this line for hours.", "This is so annoying."],
]


@pytest.fixture(scope="session")
def fake_shared_data(tmp_path_factory) -> Path:
    """A data folder in the ../shared/data layout (iemocap/iemocap_erc.csv and
    audio_handcrafted.csv), small and made here: 3 train, 1 valid, 1 test dialogues of 6
    utterances, every label in every split, written transcripts that carry their emotion."""
    from pipeline.features.importers.shared_data import HANDCRAFTED

    root = tmp_path_factory.mktemp("shared-data")
    rows, audio = [], []
    rng = np.random.default_rng(0)
    dialogues = [("Ses01F_impro01", "train"), ("Ses01M_impro02", "train"), ("Ses02F_impro01", "train"),
                 ("Ses04F_impro01", "valid"), ("Ses05F_impro01", "test")]  # fmt: skip
    for d, (dialogue, split) in enumerate(dialogues):
        for turn, label_id in enumerate(rng.permutation(6)):
            utt = f"{dialogue}_{'FM'[turn % 2]}{turn:03d}"
            rows.append({"dialogue": dialogue, "turn": turn, "utt_id": utt,
                         "speaker": "FM"[turn % 2], "start_s": 2.0 * turn,
                         "end_s": 2.0 * turn + 1.5, "label_id": int(label_id),
                         "label": ["hap", "sad", "neu", "ang", "exc", "fru"][label_id],
                         "split": split, "text": _IEMOCAP_LINES[label_id][d % 3]})  # fmt: skip
            audio.append({"wav_file": utt, **{c: float(v) for c, v in zip(HANDCRAFTED, rng.uniform(0.1, 2.0, 8), strict=True)}})  # fmt: skip
    (root / "iemocap").mkdir()
    pd.DataFrame(rows).to_csv(root / "iemocap" / "iemocap_erc.csv", index=False)
    pd.DataFrame(audio).to_csv(root / "iemocap" / "audio_handcrafted.csv", index=False)
    return root


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """publish(folder, repo) -> revision: ``folder`` as the main revision of Hub model repository
    ``repo`` in a Hub cache of the test's own, laid out as huggingface_hub downloads it
    (models--ORG--NAME/refs/main; blobs/<hash>; snapshots/<commit>/<file> -> ../../blobs/<hash>),
    with the Hub offline: the real snapshot_download then serves it, as it does on a machine that
    fetched the repo earlier."""
    import hashlib

    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def publish(
        folder: Path, repo: str, revision: str = "0123456789abcdef" * 2 + "01234567"
    ) -> str:
        root = cache / f"models--{repo.replace('/', '--')}"
        snapshot = root / "snapshots" / revision
        for sub in ("refs", "blobs", snapshot):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(revision)
        for f in sorted(Path(folder).iterdir()):
            blob = hashlib.sha256(f.read_bytes()).hexdigest()
            (root / "blobs" / blob).write_bytes(f.read_bytes())
            (snapshot / f.name).symlink_to(Path("..", "..", "blobs", blob))
        return revision

    return publish
