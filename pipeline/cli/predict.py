"""`erc predict`: per-utterance emotions for new conversation videos with a trained checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.inference.asr import BEAM_SIZE, DEFAULT_ASR_MODEL, NO_ASR


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict an emotion for every utterance of new videos",
        description="Segments each video (manifest rows, else <stem>.srt/.vtt next to it, else "
        "voice-activity detection + speech recognition), extracts exactly the checkpoint's features (cached "
        "in the store), and writes <video>.predictions.csv/.jsonl, <video>.report.html and "
        "summary.csv/.md, index.html and run_info.json (the checkpoint and its training data) "
        "into --out; a manifest with labels also gets metrics.json and confusion.png (scores "
        "against the labels the checkpoint knows). An utterance whose segment cannot be cut "
        "(inverted, past the end, non-finite times) is not predicted: listed in "
        "<video>.failures.csv and counted in the summary. Exit status 1 when some video or "
        "utterance failed.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="VIDEO_OR_FOLDER",
        help="video (or audio) files, or folders of them (.mp4, .mkv, .avi, .mov, .webm, .wav, ...)",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint folder (…/best), or a Hugging Face Hub repo id ORG/NAME[@REVISION]",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--manifest", type=Path, help="utterance timestamps/transcripts for the videos")
    p.add_argument(
        "--store",
        type=Path,
        help="feature store (default: ~/.cache/ada2i-erc/store, shared with erc import, so "
        "features already extracted are reused)",
    )
    p.add_argument(
        "--asr-model",
        default=DEFAULT_ASR_MODEL,
        help="speech recognition (faster-whisper) for videos with neither manifest rows nor "
        "subtitles: a model name (small, medium, large-v3, distil-large-v3: downloaded where a "
        "network exists), a CTranslate2 folder or a transformers Whisper folder (converted once); "
        f"default: {DEFAULT_ASR_MODEL}, packaged, offline",
    )
    p.add_argument(
        "--asr-beam",
        type=_beam_size,
        default=BEAM_SIZE,
        metavar="N",
        help=f"speech recognition's beam size (default {BEAM_SIZE}); 1 = greedy decoding: about "
        "1.7x faster, ~7 more word errors per 100 words on the IEMOCAP clips",
    )
    p.add_argument(
        "--no-asr",
        action="store_true",
        help="no speech recognition: voice-activity segments with no words (their text modality "
        "is absent)",
    )
    p.add_argument(
        "--vad",
        choices=("auto", "silero", "energy"),
        default="auto",
        help="voice-activity detection for videos with neither manifest rows nor subtitles: "
        "silero-vad (trained), the energy threshold, or auto = silero unless it keeps far less "
        "speech than the energy VAD (e.g. synthetic voices) (default: auto)",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--strict", action="store_true", help="stop at the first failing video")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--per-clip",
        action="store_true",
        help="predict each clip alone even when the manifest groups clips into dialogues",
    )
    p.set_defaults(func=_predict)


def _beam_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"a beam size is a whole number >= 1, got {text!r}")
    return n


def _predict(args: argparse.Namespace) -> int:
    from pipeline.inference.predict import predict_videos

    summary = predict_videos(
        args.inputs,
        args.checkpoint,
        args.out,
        manifest=args.manifest,
        store_root=args.store,
        device=args.device,
        asr_model=NO_ASR if args.no_asr else args.asr_model,
        strict=args.strict,
        progress=not args.no_progress,
        dialogue_context=not args.per_clip,
        vad=args.vad,
        asr_beam=args.asr_beam,
    )
    for v in summary.videos:
        detail = (
            f"{v.n_utterances} utterances ({v.segment_source})" if v.status == "ok" else v.reason
        )
        if v.failed_utterances:
            detail += (
                f"; {len(v.failed_utterances)} utterance(s) not predicted: "
                f"{v.outputs.get('failed_utterances', '')}"
            )
        print(f"{v.status:<7}{Path(v.video).name}: {detail}")
    print(summary.line())
    print(f"index: {summary.index_html}")
    return 1 if summary.failed or summary.n_failed_utterances else 0
