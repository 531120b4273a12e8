"""Speed of the ``paper`` preset's extractors on real clips, with random weights; ONE JSON line.

    python -m bench.paper_speed                    # 12 of the 52 IEMOCAP clips, 2 threads, CPU
    python -m bench.paper_speed --clips 52         # all of them (wav2vec2-large: minutes)
    python -m bench.paper_speed --device cuda      # batched, float16 autocast (see below)

Speed does not depend on the weights, and the paper's models cannot be downloaded here, so each
architecture is built from its configuration in code with random weights and run through the
project's own extractor classes:
- text: sBERT paraphrase-distilroberta-base-v1 = RoBERTa, 6 layers, hidden 768, 12 heads, FFN
  3072, max 128 tokens, mean pooling. The tokenizer is the packaged MiniLM's (WordPiece; token
  counts within a few % of RoBERTa's BPE on English), so vocab_size is set to its 30,522.
- audio: wav2vec2-large-lv60 = 24 layers, hidden 1024, 16 heads, FFN 4096, layer-norm conv
  stack (stable layer norm), last layer pooled; plus openSMILE eGeMAPSv02 (the preset's pair).
- visual: MTCNN + DenseNet121 at 224 px crops, 20 px minimum face (the preset's settings).
Media are decoded first (not timed; bench/extract_speed.py times decoding). Each extractor then
runs once over all clips; realtime factor = seconds of media / seconds of that extractor.

CUDA (``--device cuda``): larger batches and ``torch.autocast(float16)`` around each call.
UNTESTED: no GPU was available when this was written; the CPU path is what was measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

FPS = 2.0


def build_text(folder: Path, device: str, batch_size: int):
    """A random-init sBERT distilroberta-base saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    from extractors.text import SentenceTextExtractor, packaged_minilm_path

    tok = AutoTokenizer.from_pretrained(str(packaged_minilm_path()))
    config = RobertaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=768,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(folder / "hf")
    tok.save_pretrained(folder / "hf")
    word = models.Transformer(str(folder / "hf"), max_seq_length=128)
    st = SentenceTransformer(modules=[word, models.Pooling(768, "mean")], device="cpu")
    st.save(str(folder / "st"))
    return SentenceTextExtractor(str(folder / "st"), batch_size=batch_size, device=device)


def build_wav2vec2(device: str, batch_size: int):
    """facebook/wav2vec2-large-lv60's architecture, random-init (extractors/wav2vec.py)."""
    from extractors.wav2vec import Wav2Vec2AudioExtractor

    return Wav2Vec2AudioExtractor.large_random_init(24, batch_size, device)


def decode(df) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    from pipeline.dataset.media import iter_segments

    audio, frames = [], []
    for path, end in zip(df["video_path"], df["end_s"], strict=True):
        (seg,) = iter_segments(path, [(0.0, float(end))], fps=FPS)
        audio.append(seg.audio)
        frames.append(seg.frames)
    return audio, frames


def timed(ex, inputs, device: str, per_call: int) -> float:
    """Seconds for ``ex`` over ``inputs`` in calls of ``per_call`` items (as the pipeline does)."""
    import torch

    amp = (
        torch.autocast("cuda", dtype=torch.float16)
        if device.startswith("cuda")
        else contextlib.nullcontext()
    )
    ex(inputs[:1])  # warm-up: lazy init, allocator, kernels
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with amp:
        for i in range(0, len(inputs), per_call):
            ex(inputs[i : i + per_call])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.paper_speed", description=__doc__)
    p.add_argument("--clips", type=int, default=12, help="first N of the 52 clips")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    import torch

    from extractors.opensmile_audio import OpenSmileExtractor
    from extractors.visual import FaceVisualExtractor
    from pipeline.dataset.adapters.shared import load_shared_clips

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    df = load_shared_clips().iloc[: args.clips]
    audio, frames = decode(df)
    media_s = float((df["end_s"] - df["start_s"]).sum())
    result = {
        "clips": len(df),
        "seconds_of_media": round(media_s, 2),
        "frames": sum(len(f) for f in frames),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "extractors": {},
    }
    with tempfile.TemporaryDirectory(prefix="paper_speed.") as tmp:
        builders = {
            "sbert-distilroberta-base": (
                lambda: build_text(Path(tmp), args.device, 64 if cuda else 16),
                list(df["text"]),
            ),
            "wav2vec2-large-lv60": (lambda: build_wav2vec2(args.device, 16 if cuda else 4), audio),
            "opensmile-egemaps": (lambda: OpenSmileExtractor("eGeMAPSv02"), audio),
            "mtcnn+densenet121-224": (
                lambda: FaceVisualExtractor(
                    pretrained=False, device=args.device, embed_batch_size=64 if cuda else 16
                ),
                frames,
            ),
        }
        for name, (build, inputs) in builders.items():
            t0 = time.perf_counter()
            ex = build()
            load_s = time.perf_counter() - t0
            seconds = timed(ex, inputs, args.device, per_call=len(inputs) if cuda else 8)
            result["extractors"][name] = {
                "seconds": round(seconds, 2),
                "realtime_factor": round(media_s / seconds, 2),
                "build_seconds": round(load_s, 1),
                "dim": ex.spec.dim,
            }
            del ex
    total = sum(e["seconds"] for e in result["extractors"].values())
    result["all_extractors_seconds"] = round(total, 2)
    result["all_extractors_realtime_factor"] = round(media_s / total, 2)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
