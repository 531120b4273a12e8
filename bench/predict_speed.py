"""Batch-inference benchmarks; prints ONE JSON line per part.

    python -m bench.predict_speed                 # every part
    python -m bench.predict_speed --part speed    # (a) wall seconds per minute of video, per stage
    python -m bench.predict_speed --part asr      # (a') the same on real speech, no transcripts
    python -m bench.predict_speed --part asr --asr-beam 1   # the same, greedy decoding
    python -m bench.predict_speed --part iemocap  # (b) accuracy / weighted F1 on the 52 real clips

(a) speed: a tiny Ada2I is trained on offline-preset (tav) features of one generated demo set, then
    predict_videos runs cold (empty store) on a second, different demo set (SRT next to each video)
    and prints seconds per minute of video for each stage: segment, extract (per extractor +
    decode), build, model, report. Extractor models are loaded before the clock (a worker loads
    them once); a VAD-only segmentation pass over the same videos is timed as segment_vad.
(a') asr: the same tiny checkpoint predicts the 52 real IEMOCAP clips of ../shared (real speech and
    faces) with no manifest and no subtitles, as `erc predict clips/` would: segmentation is
    voice-activity detection + the packaged faster-whisper tiny.en (the default), then all three
    extractors. Twice: the 52 clips as they are (1-18 s each: per-file costs dominate), and the
    same clips joined into one 3.9-minute conversation video (made before the clock, 15 fps).
    Speech and extractor models are loaded before the clock; each run has a cold store of its own.
(b) iemocap: the training FeatureSet comes from the pipeline's own extraction (offline text: the
    offline preset's packaged sentence encoder) on ../shared/data/iemocap/iemocap_erc.csv WITHOUT the clips' dialogues; text is
    the only modality the pipeline can compute for both sides offline (the training utterances have
    no media). Then predict_videos runs on the raw clips with a manifest holding their transcripts
    and dialogue ids, twice with the same checkpoint: "in_dialogue" (the default: the clips of a
    dialogue are predicted together, in manifest order, so the model sees the other clips of the
    dialogue as context) and "per_clip" (dialogue_context=False: each clip alone, a one-utterance
    dialogue, no context). Accuracy / weighted F1 against clips.csv's erc_label (labelled clips
    only) for both, plus the checkpoint's own test-split metrics. The clips are a sparse subset of
    their dialogues (2-9 of ~47 utterances), so as a reference "full_dialogue_context" scores the
    same clips predicted from a FeatureSet of their dialogues' every utterance (transcripts of
    iemocap_erc.csv, no media), i.e. with the context the model was trained with.
Nothing from ../shared is copied: manifests point into it; everything else is in a temp folder
(--work DIR: in DIR instead, kept; a feature store already there is reused, so extract_seconds
then only counts what was missing).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.dataset.manifest import write_manifest
from pipeline.dataset.media import SAMPLE_RATE
from pipeline.features.extract import build_featureset, extract_features, load_extractors
from pipeline.inference.asr import BEAM_SIZE
from pipeline.inference.predict import predict_videos
from pipeline.inference.predict_outputs import stage_seconds

THREADS = 2  # the target machine: 2 cores


def _tiny_checkpoint(work: Path, epochs: int) -> tuple[Path, dict, float]:
    """A tiny tav Ada2I trained on offline-preset features of a generated demo set (its accuracy
    does not matter here: the benchmark times prediction); -> checkpoint, extractors, load s."""
    from pipeline.dataset.demo import make_demo_dataset
    from pipeline.training.train import train_from_featureset

    train_m = make_demo_dataset(
        work / "train_demo", n_dialogues=4, utterances_per_dialogue=8, seed=1
    )
    t0 = time.perf_counter()
    exs = load_extractors("offline", "tav")
    load_s = time.perf_counter() - t0
    extract_features(
        train_m, work / "train_store", "offline", "tav", extractors=exs, progress=False
    )
    fs = build_featureset(train_m, work / "train_store", "offline", "tav", work / "fs", exs)
    run = train_from_featureset(
        fs, work / "run", "tiny", "tav", overrides={"epochs": epochs, "progress": False}
    )
    return run.checkpoint_dir, exs, load_s


def _speed_record(part: str, summary, wall: float, stages: dict, load_s: float) -> dict:
    minutes = sum(r.media_seconds for r in summary.videos) / 60
    return {
        "part": part,
        "preset": "offline",
        "modalities": "tav",
        "videos": len(summary.videos),
        "ok": len(summary.ok),
        "utterances": sum(r.n_utterances for r in summary.videos),
        "minutes_of_video": round(minutes, 3),
        "wall_seconds": round(wall, 2),
        "seconds_per_video_minute": round(wall / minutes, 2),
        "per_stage_seconds_per_video_minute": {k: round(v / minutes, 3) for k, v in stages.items()},
        "model_load_seconds": round(load_s, 2),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }


def _conversation_video(clips: list[str], path: Path, fps: float = 15.0) -> Path:
    """The clips back to back as one video (real speech and faces, one speaker change after
    another): a recording of the length a user predicts, where the clips are 1-18 s each."""
    from pipeline.dataset.media import iter_segments
    from pipeline.dataset.media_writer import write_video

    # Two passes over each clip: write_video takes the whole sound track up front, and holding
    # every clip's frames for one pass would take ~3 GB; this is made before the clock.
    audio = [next(iter_segments(c, [(0.0, None)], want_frames=False)).audio for c in clips]

    def frames():
        for clip, sound in zip(clips, audio, strict=True):
            got = next(iter_segments(clip, [(0.0, None)], fps=fps, want_audio=False)).frames
            n = round(len(sound) / SAMPLE_RATE * fps)  # as many frames as the clip's sound lasts
            yield from (got[min(i, len(got) - 1)] for i in range(n))

    return write_video(path, frames(), fps, np.concatenate(audio))


def part_asr(work: Path, epochs: int, beam: int) -> list[dict]:
    from pipeline.dataset.adapters.shared import load_shared_clips
    from pipeline.inference.asr import load_asr

    checkpoint, exs, load_s = _tiny_checkpoint(work, epochs)
    clips = load_shared_clips()["video_path"].tolist()
    t0 = time.perf_counter()
    asr = load_asr(beam_size=beam)
    load_s += time.perf_counter() - t0
    records = []
    for name, videos in (
        ("asr_clips", clips),
        ("asr_conversation", [_conversation_video(clips, work / "conversation.mp4")]),
    ):
        t0 = time.perf_counter()
        summary = predict_videos(  # no manifest, no subtitles: VAD + speech recognition
            videos, checkpoint, work / f"out_{name}", store_root=work / f"store_{name}",
            asr_model=asr, extractors=exs, progress=False,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        record = _speed_record(name, summary, wall, stage_seconds(summary.videos), load_s)
        record["asr"] = asr.settings()
        records.append(record)
    return records


def part_speed(work: Path, dialogues: int, utterances: int, epochs: int) -> dict:
    from pipeline.dataset.demo import make_demo_dataset
    from pipeline.dataset.media import probe
    from pipeline.inference.segment import automatic

    checkpoint, exs, load_s = _tiny_checkpoint(work, epochs)
    make_demo_dataset(work / "test_demo", dialogues, utterances, seed=2)
    videos = sorted((work / "test_demo").glob("*.mp4"))
    t0 = time.perf_counter()
    summary = predict_videos(  # a store of its own: cold, whatever the user's default store holds
        videos, checkpoint, work / "out", store_root=work / "predict_store",
        extractors=exs, progress=False,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    for v in videos:  # the automatic route without a speech model (none offline): VAD only
        automatic(v, v.stem, None, probe(v))
    vad_s = time.perf_counter() - t0
    stages = stage_seconds(summary.videos)
    stages["segment_vad"] = vad_s
    return _speed_record("speed", summary, wall, stages, load_s)


def part_iemocap(work: Path, epochs: int) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    from pipeline.dataset.adapters.shared import load_shared_clips, load_shared_iemocap
    from pipeline.training.train import train_from_featureset

    clips = load_shared_clips()
    held_out = set(clips["dialogue_id"])
    full = load_shared_iemocap()
    train_df = full[~full["dialogue_id"].isin(held_out)].reset_index(drop=True)
    train_m = write_manifest(train_df, work / "iemocap_train.csv")
    exs = load_extractors("offline", "t")
    t0 = time.perf_counter()
    extract_features(train_m, work / "store", "offline", "t", extractors=exs, progress=False)
    fs = build_featureset(train_m, work / "store", "offline", "t", work / "fs", exs)
    extract_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = train_from_featureset(
        fs, work / "run", "iemocap", "t", overrides={"epochs": epochs, "progress": False}
    )
    train_s = time.perf_counter() - t0
    clips_m = write_manifest(clips, work / "clips.csv")
    scores, predict_s = {}, {}
    for mode, context in (("in_dialogue", True), ("per_clip", False)):
        t0 = time.perf_counter()
        summary = predict_videos(
            clips["video_path"].tolist(), run.checkpoint_dir, work / f"out_{mode}",
            manifest=clips_m, store_root=work / "store", extractors=exs, progress=False,
            dialogue_context=context,
        )  # fmt: skip
        predict_s[mode] = round(time.perf_counter() - t0, 1)
        preds = pd.concat(
            [pd.read_csv(r.outputs["csv"], keep_default_na=False) for r in summary.ok],
            ignore_index=True,
        )
        labelled = preds[preds["label"].fillna("") != ""] if "label" in preds else preds[:0]
        y_true, y_pred = labelled["label"].tolist(), labelled["predicted"].tolist()
        scores[mode] = {
            "clips_predicted": len(preds),
            "clips_in_dialogues": sum(bool(r.dialogue) for r in summary.ok),
            "labelled_clips": len(labelled),
            "accuracy": round(accuracy_score(y_true, y_pred), 4),
            "weighted_f1": round(f1_score(y_true, y_pred, average="weighted", zero_division=0), 4),
        }
    full_ctx = _full_context_scores(run.checkpoint_dir, full, clips, work, exs)
    return {
        "part": "iemocap_clips",
        "modalities": "t",
        "extractor": f"offline sbert ({exs['t'][0].spec.model}, {exs['t'][0].spec.dim}-d)",
        "train_utterances": len(train_df),
        "held_out_dialogues": len(held_out),
        "clips": len(clips),
        "clip_dialogues": int(clips["dialogue_id"].nunique()),
        **scores["in_dialogue"],
        "per_clip_no_context": scores["per_clip"],
        "full_dialogue_context": full_ctx,
        "test_split_metrics": {
            k: round(v, 4) for k, v in run.metrics.items() if k in ("accuracy", "weighted_f1")
        },
        "epochs": epochs,
        "extract_seconds": round(extract_s, 1),
        "train_seconds": round(train_s, 1),
        "predict_seconds": predict_s,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }


def _full_context_scores(checkpoint, full: pd.DataFrame, clips: pd.DataFrame, work: Path, exs):
    """The labelled clips predicted inside their complete dialogues (all utterances, text)."""
    from sklearn.metrics import accuracy_score, f1_score

    from pipeline.features.featureset import FeatureSet
    from pipeline.training.checkpoint import load_checkpoint
    from pipeline.training.evaluate import predict

    df = full[full["dialogue_id"].isin(set(clips["dialogue_id"]))].reset_index(drop=True)
    m = write_manifest(df, work / "clip_dialogues_full.csv")
    extract_features(m, work / "store", "offline", "t", extractors=exs, progress=False)
    model, meta = load_checkpoint(checkpoint)
    names = list(meta["label_names"])
    fs = FeatureSet.load(
        build_featureset(
            m, work / "store", "offline", "t", work / "fs_clip_dialogues", exs, label_names=names
        )  # fmt: skip
    )
    pred = predict(model, fs, fs.dialogues)
    by_id = dict(zip(pred.utterance_ids, (names[i] for i in pred.y_pred), strict=True))
    labelled = clips[clips["label"] != ""]
    y_true = labelled["label"].tolist()
    y_pred = [by_id.get(u, "") for u in labelled["utterance_id"]]
    return {
        "dialogue_utterances": len(df),
        "labelled_clips": len(labelled),
        "accuracy": round(accuracy_score(y_true, y_pred), 4),
        "weighted_f1": round(f1_score(y_true, y_pred, average="weighted", zero_division=0), 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("speed", "asr", "iemocap", "all"), default="all")
    p.add_argument("--asr-beam", type=int, default=BEAM_SIZE, help="part asr: 1 = greedy")
    p.add_argument("--dialogues", type=int, default=6, help="generated test videos (part a)")
    p.add_argument("--utterances", type=int, default=10, help="utterances per video (part a)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (part b; a: 3)")
    p.add_argument("--threads", type=int, default=THREADS, help="torch threads")
    p.add_argument("--work", type=Path, help="work folder to use and keep (default: a temp one)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="predict_speed_") as tmp:
        tmp = args.work or tmp
        if args.part in ("speed", "all"):
            print(
                json.dumps(part_speed(Path(tmp) / "a", args.dialogues, args.utterances, 3)),
                flush=True,
            )
        if args.part in ("asr", "all"):
            for record in part_asr(Path(tmp) / "asr", 3, args.asr_beam):
                print(json.dumps(record), flush=True)
        if args.part in ("iemocap", "all"):
            print(json.dumps(part_iemocap(Path(tmp) / "b", args.epochs)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
