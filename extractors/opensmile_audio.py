"""Audio: openSMILE functionals, one vector per utterance (no weights, no torch).

Feature sets: eGeMAPSv02 (88-d, the compact Geneva set) and ComParE_2016 (6,373-d, the
INTERSPEECH ComParE set). Signals are float32 mono at 16 kHz, as the pipeline decodes them.

Masking rule: an empty signal, one with non-finite samples, or one whose functionals come out
non-finite gives ``None`` (never ``nan_to_num``: a zero-filled vector would pass as real data).
Measured here (openSMILE 2.6.0): below about 60 ms (960 samples) every functional of both sets
is NaN (the pitch window does not fit), at and above it none is; so "any non-finite -> None"
masks exactly the too-short clips rather than inventing zeros for them.

Thread safety (``thread_safe = True``, so the pipeline runs it beside the visual extractor):
``opensmile.Smile`` only sets attributes in its constructor, and every ``process_signal`` call
builds, runs and frees its own native openSMILE instance (opensmile 2.6 ``Smile._extract``);
the ctypes calls release the GIL. The "Segment too short" warning is silenced by a filter
added to the process-wide list, not ``warnings.catch_warnings`` (which saves and restores that
list, so two threads inside it can drop each other's filters). tests/extractors/test_extractors.py checks two threads give the serial results.
"""

from __future__ import annotations

import warnings

import numpy as np

from extractors.base import SAMPLE_RATE, ExtractorSpec

VERSION = "1"
FEATURE_SETS = {"eGeMAPSv02": 88, "ComParE_2016": 6373}  # name -> dim (functionals)


class OpenSmileExtractor:
    """list[float32 [S] at 16 kHz] -> list[float32 [dim] | None], dim = 88 or 6,373."""

    thread_safe = True  # module docstring

    def __init__(self, feature_set: str = "eGeMAPSv02"):
        import opensmile

        if feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown feature_set {feature_set!r}; valid: {sorted(FEATURE_SETS)}")
        self.smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, feature_set),
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.feature_names: list[str] = list(self.smile.feature_names)
        dim = len(self.feature_names)
        assert dim == FEATURE_SETS[feature_set], (feature_set, dim)
        self.spec = ExtractorSpec(
            name=f"opensmile-{feature_set.lower()}",
            version=VERSION,
            kind="audio",
            dim=dim,
            model="",
            weights="none",
            weights_hash="",
            config={
                "feature_set": feature_set,
                "feature_level": "Functionals",
                "opensmile": opensmile.__version__,
                "sample_rate": SAMPLE_RATE,
            },
        )

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray | None]:
        # "Segment too short, filling with NaN": handled in _one by masking. Installed per call
        # (idempotent: filterwarnings replaces an identical filter) because test runners and
        # catch_warnings blocks elsewhere restore the filter list.
        warnings.filterwarnings("ignore", message="Segment too short", category=UserWarning)
        # openSMILE runs one signal per call; its C++ core is fast (~0.1 s per 5 s clip, eGeMAPS)
        return [self._one(i, x) for i, x in enumerate(inputs)]

    def _one(self, index: int, signal: np.ndarray) -> np.ndarray | None:
        x = np.asarray(signal, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"audio input {index} has shape {x.shape}, expected (n_samples,)")
        if x.size == 0 or not np.isfinite(x).all():
            return None
        frame = self.smile.process_signal(x, SAMPLE_RATE)  # DataFrame [1, dim]
        vec = frame.to_numpy(dtype=np.float32).reshape(-1)  # [dim]
        if vec.shape != (self.spec.dim,) or not np.isfinite(vec).all():
            return None
        return vec
