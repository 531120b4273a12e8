"""Batch inference end to end on generated demo videos with a checkpoint trained here (tiny presets).

One module-scoped run: demo videos (mp4 + SRT + manifest) -> tiny-preset text + audio features ->
a few epochs of the tiny Ada2I -> the checkpoint copied to a folder with nothing else around it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model.checkpoint import META_FILE, load_checkpoint
from pipeline.cli import main
from pipeline.demo import make_demo_dataset
from pipeline.extract import build_featureset, extract_features
from pipeline.extract_plan import load_extractors
from pipeline.manifest import read_manifest, write_manifest
from pipeline.predict import PredictError, predict_videos
from pipeline.speech import build_tiny_whisper
from pipeline.subtitles import parse_subtitles
from pipeline.train import train_from_featureset

MODALITIES = "ta"  # text + audio: the visual extractor is the slow one and has its own tests


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_dataset(
        tmp_path_factory.mktemp("demo"), n_dialogues=3, utterances_per_dialogue=5
    )


@pytest.fixture(scope="module")
def extractors():
    return load_extractors("tiny", MODALITIES)


@pytest.fixture(scope="module")
def checkpoint(demo, extractors, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("train")
    extract_features(
        demo, work / "store", "tiny", MODALITIES, extractors=extractors, progress=False
    )
    fs = build_featureset(demo, work / "store", "tiny", MODALITIES, work / "fs", extractors)
    run = train_from_featureset(
        fs, work / "run", "tiny", MODALITIES, overrides={"epochs": 3, "progress": False}
    )
    # Portable: the checkpoint folder alone, away from its run, features and store.
    portable = tmp_path_factory.mktemp("portable") / "ck"
    shutil.copytree(run.checkpoint_dir, portable)
    shutil.rmtree(work)
    return portable


def _videos(demo: Path, dest: Path, n: int, subtitles: bool = True) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        shutil.copy(demo.parent / f"demo_d{k:02d}.mp4", dest)
        if subtitles:
            shutil.copy(demo.parent / f"demo_d{k:02d}.srt", dest)
        out.append(dest / f"demo_d{k:02d}.mp4")
    return out


def _check_outputs(summary, video: Path, labels: list[str], expected: pd.DataFrame, source: str):
    res = next(v for v in summary.videos if Path(v.video) == video)
    assert res.status == "ok", res.reason
    csv = pd.read_csv(res.outputs["csv"], keep_default_na=False)
    jsonl = pd.read_json(res.outputs["jsonl"], lines=True)
    assert len(csv) == len(jsonl) == len(expected) == res.n_utterances
    np.testing.assert_allclose(csv["start_s"], expected["start_s"], atol=1e-3)
    np.testing.assert_allclose(csv["end_s"], expected["end_s"], atol=1e-3)
    assert csv["speaker"].tolist() == expected["speaker"].tolist()
    assert csv["text"].tolist() == expected["text"].tolist()
    assert jsonl["utterance_id"].tolist() == csv["utterance_id"].tolist()
    probs = csv[[f"p_{c}" for c in labels]].to_numpy(float)  # [N, C]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert set(csv["predicted"]) <= set(labels)
    assert (np.asarray(labels)[probs.argmax(axis=1)] == csv["predicted"]).all()
    assert set(csv["segment_source"]) == {source}
    for m in MODALITIES:
        s = csv[f"support_{m}"].to_numpy(float)
        assert ((s > 0) & (s <= 1)).all()
    html = Path(res.outputs["html"]).read_text()
    assert "data:image/png;base64," in html and "<script" not in html


def test_checkpoint_loads_on_cpu_from_a_copied_folder(checkpoint):
    model, meta = load_checkpoint(checkpoint, device="cpu")
    assert model.modalities == MODALITIES and meta["label_names"] == ["ang", "hap", "neu", "sad"]
    assert all(p.device == torch.device("cpu") for p in model.parameters())
    assert not (checkpoint.parent / "fs").exists() and len(list(checkpoint.iterdir())) == 2


def test_subtitled_videos_in_a_folder(demo, checkpoint, tmp_path):
    """Extractors rebuilt from the checkpoint's spec alone; a corrupt file among good ones."""
    folder = tmp_path / "in"
    videos = _videos(demo, folder, 2)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    summary = predict_videos(folder, checkpoint, tmp_path / "out", progress=False)
    labels = summary.label_names
    for v in videos:
        cues = parse_subtitles(v.with_suffix(".srt"))
        expected = pd.DataFrame(
            {
                "start_s": [c.start_s for c in cues],
                "end_s": [c.end_s for c in cues],
                "speaker": [c.speaker for c in cues],
                "text": [c.text for c in cues],
            }
        )
        _check_outputs(summary, v, labels, expected, "srt")
    assert [Path(v.video).name for v in summary.failed] == ["broken.mp4"]
    assert "cannot open media" in summary.failed[0].reason
    table = pd.read_csv(summary.summary_csv, keep_default_na=False)
    assert len(table) == 3 and sorted(table["status"]) == ["failed", "ok", "ok"]
    ok = table[table["status"] == "ok"]
    assert (ok[[f"n_{c}" for c in labels]].sum(axis=1) == ok["n_utterances"]).all()
    assert "broken.mp4" in summary.summary_md.read_text()
    assert "demo_d00.report.html" in summary.index_html.read_text()
    with pytest.raises(PredictError, match="broken.mp4"):
        predict_videos(folder, checkpoint, tmp_path / "strict", strict=True, progress=False)


def test_manifest_route_keeps_ids_and_reuses_the_store(demo, checkpoint, extractors, tmp_path):
    videos = _videos(demo, tmp_path / "in", 1, subtitles=False)
    df = read_manifest(demo)
    df = df[df["dialogue_id"] == "demo_d00"].assign(video_path=str(videos[0]))
    manifest = write_manifest(df, tmp_path / "in" / "m.csv")
    kwargs = dict(manifest=manifest, store_root=tmp_path / "store", progress=False)
    summary = predict_videos(videos, checkpoint, tmp_path / "out", extractors=extractors, **kwargs)
    _check_outputs(summary, videos[0], summary.label_names, df, "manifest")
    csv = pd.read_csv(summary.videos[0].outputs["csv"], keep_default_na=False)
    assert csv["utterance_id"].tolist() == df["utterance_id"].tolist()
    assert csv["label"].tolist() == df["label"].tolist()  # true labels carried along
    again = predict_videos(videos, checkpoint, tmp_path / "out2", extractors=extractors, **kwargs)
    assert (
        again.videos[0].seconds.get("extract.wav2vec2", 0.0) == 0.0
    )  # everything came from the store


def test_no_subtitles_no_manifest_uses_vad_and_whisper(demo, checkpoint, extractors, tmp_path):
    videos = _videos(demo, tmp_path / "in", 1, subtitles=False)
    whisper = build_tiny_whisper(tmp_path / "whisper")
    summary = predict_videos(
        videos, checkpoint, tmp_path / "out", asr_model=str(whisper), extractors=extractors,
        progress=False,
    )  # fmt: skip
    res = summary.videos[0]
    assert res.status == "ok", res.reason
    csv = pd.read_csv(res.outputs["csv"], keep_default_na=False)
    assert set(csv["segment_source"]) <= {"asr", "vad"} and set(csv["speaker"]) == {"unknown"}
    truth = read_manifest(demo)
    truth = truth[truth["dialogue_id"] == "demo_d00"]
    for a, b in zip(csv["start_s"], csv["end_s"], strict=True):  # on generated speech
        assert ((truth["start_s"] < b) & (truth["end_s"] > a)).any()


def test_mismatched_checkpoint_is_refused(demo, checkpoint, extractors, tmp_path):
    videos = _videos(demo, tmp_path / "in", 1)
    # Extractors that are not the checkpoint's (openSMILE alone: 88-d audio instead of 120-d).
    wrong = {"t": extractors["t"], "a": [ex for ex in extractors["a"] if ex.spec.dim == 88]}
    with pytest.raises(ValueError, match="modality 'a' has dim 88, checkpoint expects 120"):
        predict_videos(videos, checkpoint, tmp_path / "o1", extractors=wrong, progress=False)
    # A checkpoint whose spec names an extractor configuration no preset reproduces.
    bad = tmp_path / "bad_ck"
    shutil.copytree(checkpoint, bad)
    meta = json.loads((bad / META_FILE).read_text())
    meta["feature_spec"]["t"]["extractors"][0]["config_hash"] = "0123456789abcdef"
    (bad / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(
        PredictError, match="no extractor preset reproduces the checkpoint's modality 't'"
    ):
        predict_videos(videos, bad, tmp_path / "o2", progress=False)


def test_cli_predict(demo, checkpoint, tmp_path, capsys):
    videos = _videos(demo, tmp_path / "in", 1)
    missing = tmp_path / "in" / "missing.mp4"
    code = main(["predict", str(videos[0]), str(missing), "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1  # one video failed, the other completed
    assert "ok     demo_d00.mp4: 5 utterances (srt)" in out and "missing.mp4: file not found" in out
    assert (tmp_path / "out" / "demo_d00.predictions.csv").is_file()
