"""The `predict` flow: new conversation videos + a checkpoint -> an emotion per utterance.

One `predict-videos` task over pipeline.inference.predict.predict_videos (segment -> extract exactly the
checkpoint's extractors -> Ada2I -> CSV/JSONL/HTML per video + a summary), cached on the videos'
stat fingerprint (subtitles beside them included), the checkpoint's content and the manifest. With
its defaults it predicts the demo videos with the checkpoint of the last train run in runs/demo:
run extract-and-train/local first.

Where things go: predictions are written to ``predictions_dir`` itself (default
``<out_dir>/predictions``), not to a hashed folder; Prefect's cached result is used only while the
folder is as that prediction left it (flows/caching.py: a prediction of other videos into the same
folder, or an edit, makes the next one run again). The default feature store is the one
extraction filled for ``out_dir`` (the ``feature store`` of its summary.json, else
``<out_dir>/store``), so features already extracted are reused rather than computed again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows import artifacts
from flows.caching import (
    StageCache,
    file_digest,
    media_fingerprint,
    run_cached,
    stamped,
    tree_digest,
)
from flows.evaluate import last_trained
from flows.params import DEFAULT_OUT, Layout, check_dir
from pipeline.dataset.manifest import emotion_name
from pipeline.inference.asr import BEAM_SIZE, DEFAULT_ASR_MODEL


def videos_fingerprint(videos: list[str]) -> str:
    """Stat fingerprint of the videos and of the files beside them with the same stem: subtitles
    (.srt/.vtt) there decide the segments."""
    siblings = [str(p) for v in videos for p in Path(v).parent.glob(Path(v).stem + ".*")]
    return media_fingerprint([*videos, *siblings])


@task(
    name="predict-videos",
    cache_policy=StageCache(
        stage="predict",
        content={
            "inputs": videos_fingerprint,
            "checkpoint_dir": tree_digest,
            "manifest": file_digest,
        },
    ),
)
def predict_videos(
    inputs: list[str],
    checkpoint_dir: str,
    out_dir: str,
    manifest: str | None,
    store_root: str | None,
    asr_model: str | None,
    strict: bool,
    vad: str = "auto",
    asr_beam: int = BEAM_SIZE,
) -> dict[str, Any]:
    """Every utterance of every video -> predictions files; one failing video is skipped. The
    result is stamped with the state of ``out_dir``."""
    from pipeline.inference.predict import predict_videos as predict_all

    s = predict_all(
        inputs,
        checkpoint_dir,
        out_dir,
        manifest=manifest,
        store_root=store_root,
        asr_model=asr_model,
        strict=strict,
        progress=False,
        vad=vad,
        asr_beam=asr_beam,
    )
    result = {
        "out_dir": str(s.out_dir),
        "summary_csv": str(s.summary_csv),
        "summary_md": str(s.summary_md),
        "index_html": str(s.index_html),
        "run_info": str(s.run_info or ""),
        "metrics_json": str(s.metrics_json or ""),
        "confusion_png": str(s.confusion_png or ""),
        "model": s.provenance.to_dict() if s.provenance else None,
        "videos": [
            {
                "video": v.video,
                "status": v.status,
                "reason": v.reason,
                "utterances": v.n_utterances,
                "segments_from": v.segment_source,
                # "happy 3, sad 2": a JSON string was cut off in the artifact's table cell
                "labels": ", ".join(f"{emotion_name(k)} {n}" for k, n in v.label_counts.items()),
                "outputs": dict(v.outputs),
            }
            for v in s.videos
        ],
    }
    return stamped(result, s.out_dir)


def extraction_store(layout: Layout) -> str:
    """The store the last extract-and-train run into this out_dir used, else <out_dir>/store."""
    if layout.summary.is_file():
        try:
            store = json.loads(layout.summary.read_text()).get("paths", {}).get("feature store")
        except (json.JSONDecodeError, AttributeError):
            store = None
        if store and Path(store).is_dir():
            return store
    return str(layout.store)


def publish_predictions(result: dict[str, Any]) -> None:
    """The predict run's artifacts: the model and its caveat, a labelled run's scores (with the
    confusion matrix and the per-dialogue table), the videos, and links to every file."""
    rows = [{k: v for k, v in r.items() if k != "outputs"} for r in result["videos"]]
    artifacts.table("erc-predictions", rows, "Predicted videos (status, segmentation, labels)")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        artifacts.table("erc-predict-failures", failed, "Videos that could not be predicted")
    scores = artifacts.prediction_scores(result)
    if scores:
        artifacts.table(
            "erc-prediction-scores", scores["groups"],
            "Scores per dialogue (or video) against the manifest's labels",
        )  # fmt: skip
    paths = {k: result.get(k, "") for k in PREDICTION_FILES}
    for r in result["videos"]:
        for kind, path in r["outputs"].items():
            paths[f"{Path(r['video']).name} {kind}"] = path
    create_markdown_artifact(
        markdown=artifacts.predictions_markdown(result, paths),
        key="erc-prediction-files",
        description="Predictions: the model, scores of a labelled run, every video's files",
    )


UNSEEN_DEMO_SEED = 7  # not the training demo's seed (0)

PREDICTION_FILES = (
    "summary_md", "summary_csv", "index_html", "run_info", "metrics_json", "confusion_png",
)  # fmt: skip


@flow(name="predict", log_prints=True)
def predict(
    inputs: list[str] | None = None,
    checkpoint_dir: str | None = None,
    manifest: str | None = None,
    out_dir: str = DEFAULT_OUT,
    predictions_dir: str | None = None,
    store_root: str | None = None,
    asr_model: str | None = DEFAULT_ASR_MODEL,
    asr_beam: int = BEAM_SIZE,
    vad: str = "auto",
    strict: bool = False,
    refresh: bool = False,
) -> dict[str, Any]:
    """Predict per-utterance emotions for videos (files or folders) with a trained checkpoint.

    Args:
        inputs: video files or folders of videos; default: two new demo conversations (another
            seed than the training ones), generated into <out_dir>/demo-unseen.
        checkpoint_dir: a checkpoint folder or a Hugging Face Hub repo id (ORG/NAME[@REVISION]);
            default: the first of the last train run in out_dir.
        manifest: utterance timestamps (and transcripts); default: subtitles (.srt/.vtt) next to
            each video, else voice-activity segments + speech recognition (asr_model).
        out_dir: the experiment folder the defaults come from (demo videos, last checkpoint,
            feature store, Prefect cache), as for the other flows.
        predictions_dir: where the predictions are written (per-video CSV/JSONL/HTML, summary,
            index.html); default <out_dir>/predictions.
        store_root: feature store; default: the one extraction used for out_dir (its
            summary.json), else <out_dir>/store, so already extracted features are reused.
        asr_model: speech recognition for videos without manifest rows or subtitles: a
            faster-whisper name (small, large-v3, ...: needs a network), a CTranslate2 or
            transformers Whisper folder, the packaged offline default "tiny.en", or "none" (voice
            activity only: segments with no words, text absent).
        asr_beam: the recogniser's beam size; 1 = greedy decoding (~1.7x faster, more word
            errors).
        vad: voice-activity detection for those videos: "auto", "silero" or "energy".
        strict: a failing video fails the run (default: reported and skipped).
        refresh: ignore Prefect's cache.
    Returns:
        out_dir, summary files and one entry per video (status, reason, outputs).
    """
    layout = Layout.at(out_dir)
    if inputs is None:  # new demo conversations, not the ones the demo checkpoint trained on
        from pipeline.dataset.demo import make_demo_dataset

        make_demo_dataset(layout.unseen_demo_data, n_dialogues=2, seed=UNSEEN_DEMO_SEED)
        inputs = [str(layout.unseen_demo_data)]
    missing = [p for p in inputs if not Path(p).expanduser().exists()]
    if not inputs or missing:
        raise FileNotFoundError(f"inputs not found: {missing or 'none given'}")
    if checkpoint_dir:  # a Hub repo id becomes its snapshot in the Hub cache, hashed as a folder
        from pipeline.training.checkpoint import checkpoint_folder

        checkpoint_dir = str(checkpoint_folder(checkpoint_dir))
    check_dir("checkpoint_dir", checkpoint_dir)
    if vad not in ("auto", "silero", "energy"):
        raise ValueError(f"vad must be auto, silero or energy, got {vad!r}")
    if asr_beam < 1:
        raise ValueError(f"asr_beam must be at least 1 (1 = greedy decoding), got {asr_beam}")
    if manifest and not Path(manifest).expanduser().is_file():
        raise FileNotFoundError(f"manifest not found: {Path(manifest).expanduser().resolve()}")
    logger = get_run_logger()
    checkpoint = str(
        Path(checkpoint_dir).expanduser().resolve()
        if checkpoint_dir
        else last_trained(layout)[0]["checkpoint_dir"]
    )
    from pipeline.inference.predict import list_videos

    videos = [str(p) for p in list_videos([str(Path(p).expanduser().resolve()) for p in inputs])]
    if not videos:
        raise FileNotFoundError(f"no videos in {inputs}")
    manifest_path = str(Path(manifest).expanduser().resolve()) if manifest else None
    target = str(
        Path(predictions_dir).expanduser().resolve() if predictions_dir else layout.predictions
    )
    store = extraction_store(layout)
    logger.info("predictions into %s, feature store %s", target, store_root or store)
    result, cached = run_cached(
        predict_videos,
        layout.cache,
        refresh,
        inputs=videos,
        checkpoint_dir=checkpoint,
        out_dir=target,
        manifest=manifest_path,
        store_root=str(Path(store_root).expanduser().resolve()) if store_root else store,
        asr_model=asr_model,
        strict=strict,
        vad=vad,
        asr_beam=asr_beam,
    )
    result = {**result, "status": "cached" if cached else "ran"}
    publish_predictions(result)
    ok = sum(v["status"] == "ok" for v in result["videos"])
    logger.info("predict (%s): %d of %d videos", result["status"], ok, len(result["videos"]))
    print(f"predictions: {result['index_html']} ({ok} of {len(result['videos'])} videos)")
    return result
