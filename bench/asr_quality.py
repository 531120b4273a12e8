"""Speech recognition on the 52 real IEMOCAP clips: word error rate and speed; prints ONE JSON line.

    uv run python -m bench.asr_quality                      # the packaged tiny.en, VAD + ASR
    uv run python -m bench.asr_quality --mode clip --beam 5 --model small
    uv run python -m bench.asr_quality --checkpoint runs/x/best   # + emotions on ASR vs reference

Reference: clips.csv's transcript of each clip (../shared/data/iemocap/clips). Hypothesis, by
``--mode``:
- ``vad`` (default): what `erc predict` hears: the clip's VAD regions (``--vad``) -> words ->
  utterances (pipeline.inference.segment), their texts joined;
- ``clip``: the whole clip as one region (no VAD): the recogniser alone;
- ``conversation``: the clips' sound joined into one 3.9-minute recording (a WAV), segmented
  as ``vad`` does; one row, the joined transcripts as reference. Where a user's recordings are
  heading: Whisper's 30-s windows run over many turns, not one clip each.
``--repeat N`` recognises everything N times and counts the distinct transcripts (1: the
recogniser is deterministic) and gives each run's WER; speed and the other figures are the
first run's.
Both sides are normalised (lower case, bracketed non-speech tags and punctuation dropped except
in-word apostrophes, whitespace split); WER = word-level edit distance (substitutions + deletions +
insertions) / reference words, summed over the clips (corpus WER), and per clip in the CSV. Speed:
wall seconds of recognition (VAD included in vad mode; decoding the clip and loading the model not)
per minute of audio, at ``--threads`` CTranslate2 threads. Per-clip transcripts go to ``--out``
(CSV: utt_id, file, duration_s, reference, hypothesis, ref_words, errors, wer, asr_avg_logprob,
asr_no_speech_prob, seconds).

``--checkpoint``: a trained checkpoint's emotion accuracy and weighted F1 on the clips that have
an ERC label, predicted twice with the clips' own boundaries (the manifest): once with the
reference text, once with the text replaced by the ASR transcript (an empty one: text absent).
Audio/visual features are shared between the two runs (one feature store).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.dataset import media
from pipeline.dataset.adapters.shared import load_shared_clips
from pipeline.dataset.manifest import write_manifest
from pipeline.files import atomic_write
from pipeline.inference.asr import BEAM_SIZE, DEFAULT_ASR_MODEL, load_asr
from pipeline.inference.segment import ASR_COLUMNS, SegmentError, segment_video

THREADS = 2  # the benchmark machine's cores


def normalise(text: str) -> list[str]:
    """Lower case, IEMOCAP's non-speech tags ("[LAUGHTER]", "[BREATHING]") and punctuation
    dropped (apostrophes inside words kept: "don't"), split. Numbers are not spelled out."""
    text = re.sub(r"\[[^\]]*\]", " ", text.lower())
    text = re.sub(r"[^\w\s']", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between word lists (substitution, deletion, insertion: cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def conversation(clips: pd.DataFrame, work: Path) -> pd.DataFrame:
    """The clips' sound back to back as one WAV: a one-row clip table of it (whole text)."""
    import soundfile

    audio = [
        next(media.iter_segments(Path(v), [(0.0, None)], want_frames=False)).audio  # [S]
        for v in clips["video_path"]
    ]
    path = work / "conversation.wav"
    soundfile.write(path, np.concatenate(audio), media.SAMPLE_RATE)
    return pd.DataFrame(
        {
            "utterance_id": ["conversation"],
            "video_path": [str(path)],
            "end_s": [sum(len(a) for a in audio) / media.SAMPLE_RATE],
            "text": [" ".join(clips["text"])],
        }
    )


def transcribe_clips(clips: pd.DataFrame, asr, mode: str, vad: str) -> pd.DataFrame:
    rows = []
    for clip in clips.itertuples(index=False):
        path = Path(clip.video_path)
        t0 = time.perf_counter()
        if mode in ("vad", "conversation"):
            try:
                seg = segment_video(path, asr=asr, vad=vad)
            except SegmentError:  # no speech region at all: nothing heard
                seg = pd.DataFrame({"text": [], ASR_COLUMNS[0]: [], ASR_COLUMNS[1]: []})
            t = time.perf_counter() - t0  # decoding included: small next to recognition
            said = seg[seg["text"].str.strip() != ""]
            hyp = " ".join(said["text"])
            logprob = said[ASR_COLUMNS[0]].mean() if len(said) else np.nan
            nospeech = said[ASR_COLUMNS[1]].mean() if len(said) else np.nan
        else:
            seg = next(media.iter_segments(path, [(0.0, None)], want_frames=False))
            audio = seg.audio  # [S]
            t0 = time.perf_counter()
            words = asr.words(audio, [(0.0, len(audio) / media.SAMPLE_RATE)])
            t = time.perf_counter() - t0
            hyp = "".join(w.text for w in words).strip()
            logprob = np.mean([w.avg_logprob for w in words]) if words else np.nan
            nospeech = np.mean([w.no_speech_prob for w in words]) if words else np.nan
        ref_w, hyp_w = normalise(clip.text), normalise(hyp)
        errors = edit_distance(ref_w, hyp_w)
        rows.append(
            {
                "utt_id": clip.utterance_id,
                "file": path.name,
                "duration_s": round(float(clip.end_s), 3),
                "reference": clip.text,
                "hypothesis": hyp,
                "ref_words": len(ref_w),
                "errors": errors,
                "wer": round(errors / max(1, len(ref_w)), 4),
                "asr_avg_logprob": round(float(logprob), 4),
                "asr_no_speech_prob": round(float(nospeech), 4),
                "seconds": round(t, 3),
            }
        )
    return pd.DataFrame(rows)


def emotion_scores(
    clips: pd.DataFrame, asr_text: list[str], checkpoint: Path, work: Path
) -> dict[str, dict[str, float]]:
    """Accuracy and weighted F1 of ``checkpoint`` on the labelled clips, reference vs ASR text."""
    from sklearn.metrics import accuracy_score, f1_score

    from pipeline.inference.predict import predict_videos

    out = {}
    for name, text in (("reference_text", clips["text"].tolist()), ("asr_text", asr_text)):
        manifest = write_manifest(clips.assign(text=text), work / f"{name}.csv")
        summary = predict_videos(
            clips["video_path"].tolist(), checkpoint, work / name, manifest=manifest,
            store_root=work / "store", progress=False,
        )  # fmt: skip
        preds = pd.concat(
            [pd.read_csv(v.outputs["csv"], keep_default_na=False) for v in summary.ok]
        )
        truth = dict(zip(clips["utterance_id"], clips["label"], strict=True))
        preds = preds[[bool(truth.get(u)) for u in preds["utterance_id"]]]
        y = [truth[u] for u in preds["utterance_id"]]
        out[name] = {
            "n": len(y),
            "accuracy": round(100 * accuracy_score(y, preds["predicted"]), 2),
            "weighted_f1": round(100 * f1_score(y, preds["predicted"], average="weighted"), 2),
            "failed_videos": len(summary.failed),
            # labels the checkpoint cannot predict (trained on another label set): counted wrong
            "labels_unknown_to_checkpoint": sorted(set(y) - set(summary.label_names)),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_ASR_MODEL, help="speech model (name or folder)")
    p.add_argument("--mode", choices=("vad", "clip", "conversation"), default="vad")
    p.add_argument("--vad", choices=("auto", "silero", "energy"), default="auto")
    p.add_argument("--beam", type=int, default=BEAM_SIZE, help="beam size (1 = greedy)")
    p.add_argument("--threads", type=int, default=THREADS, help="CTranslate2 threads")
    p.add_argument("--limit", type=int, help="first N clips only")
    p.add_argument("--repeat", type=int, default=1, help="runs; counts distinct transcripts")
    p.add_argument("--shared", type=Path, help="shared root (default: $ERC_SHARED_DIR, ../shared)")
    p.add_argument("--out", type=Path, help="per-clip CSV (default: none written)")
    p.add_argument("--checkpoint", type=Path, help="also score emotions on ASR vs reference text")
    args = p.parse_args(argv)

    clips = load_shared_clips(args.shared)
    clips = clips.head(args.limit) if args.limit else clips
    t0 = time.perf_counter()
    asr = load_asr(args.model, threads=args.threads, beam_size=args.beam)
    load_s = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="asr_quality_"))
    heard = conversation(clips, work) if args.mode == "conversation" else clips
    runs = [transcribe_clips(heard, asr, args.mode, args.vad) for _ in range(max(1, args.repeat))]
    table = runs[0]
    if args.out:  # not into the working directory unasked
        atomic_write(args.out, lambda tmp: table.to_csv(tmp, index=False))
    minutes = table["duration_s"].sum() / 60
    result = {
        "bench": "asr_quality",
        "model": asr.name,
        "mode": args.mode,
        "vad": args.vad if args.mode != "clip" else None,
        "beam": args.beam,
        "threads": args.threads,
        "clips": len(table),
        "audio_min": round(minutes, 2),
        "ref_words": int(table["ref_words"].sum()),
        "wer": round(table["errors"].sum() / table["ref_words"].sum(), 4),
        "median_clip_wer": round(float(table["wer"].median()), 4),
        "empty_hypotheses": int((table["hypothesis"].str.strip() == "").sum()),
        "wall_s_per_audio_min": round(table["seconds"].sum() / minutes, 2),
        "load_s": round(load_s, 2),
        "runs": len(runs),
        "distinct_transcripts": len({tuple(r["hypothesis"]) for r in runs}),
        "wer_of_each_run": [round(r["errors"].sum() / r["ref_words"].sum(), 4) for r in runs],
        "csv": str(args.out.resolve()) if args.out else None,
    }
    if args.checkpoint and args.mode != "conversation":
        result["emotions"] = emotion_scores(
            clips, table["hypothesis"].tolist(), args.checkpoint, work
        )
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
