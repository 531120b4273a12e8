"""Batch inference end to end on generated demo videos with a checkpoint trained here (tiny presets).

The checkpoint, the copied demo videos and the clip-per-utterance cut come from conftest.py: demo
videos (mp4 + SRT + manifest) -> tiny-preset text + audio features -> a few epochs of the tiny
Ada2I -> the checkpoint copied to a folder with nothing else around it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.cli import main
from pipeline.dataset.manifest import read_manifest, write_manifest
from pipeline.features.extract import build_featureset, extract_features
from pipeline.features.featureset import FeatureSet
from pipeline.inference.predict import PredictError, predict_videos
from pipeline.inference.segment import parse_subtitles
from pipeline.training.checkpoint import META_FILE, load_checkpoint, meta_digest
from pipeline.training.evaluate import predict
from pipeline.training.train import train_from_featureset

MODALITIES = "ta"  # text + audio: the visual extractor is the slow one and has its own tests


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
    assert not (checkpoint.parent / "fs").exists() and {p.name for p in checkpoint.iterdir()} == {
        "checkpoint.json",
        "model.safetensors",
        "README.md",
    }


def test_subtitled_videos_in_a_folder(demo_videos, checkpoint, tmp_path):
    """Extractors rebuilt from the checkpoint's spec alone; a corrupt file among good ones."""
    folder = tmp_path / "in"
    videos = demo_videos(folder, 2)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    summary = predict_videos(folder, checkpoint, tmp_path / "out", progress=False)
    labels = summary.label_names
    assert json.loads(summary.run_info.read_text())["speech_recognition"] is None  # subtitles
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


def test_manifest_route_keeps_ids_and_reuses_the_store(
    demo, demo_videos, checkpoint, extractors, tmp_path
):
    videos = demo_videos(tmp_path / "in", 1, subtitles=False)
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


def test_no_subtitles_no_manifest_uses_vad_and_speech_recognition(
    demo, demo_videos, checkpoint, extractors, tmp_path
):
    """The default route for a bare video: VAD + the packaged tiny.en, offline, no flag."""
    videos = demo_videos(tmp_path / "in", 1, subtitles=False)
    summary = predict_videos(
        videos, checkpoint, tmp_path / "out", extractors=extractors, progress=False
    )
    res = summary.videos[0]
    assert res.status == "ok", res.reason
    csv = pd.read_csv(res.outputs["csv"])  # numbers: NaN where empty
    words = pd.read_csv(res.outputs["csv"], keep_default_na=False, usecols=["text", "missing"])
    assert set(csv["segment_source"]) <= {"asr", "vad"} and set(csv["speaker"]) == {"unknown"}
    assert {"asr_avg_logprob", "asr_no_speech_prob"} <= set(csv.columns)
    jsonl = pd.read_json(res.outputs["jsonl"], lines=True)
    assert {"asr_avg_logprob", "asr_no_speech_prob"} <= set(jsonl.columns)
    # the generated voice is a tone: where nothing was recognised the text is absent, not ""
    nowords = words["text"].str.strip() == ""
    assert nowords.any()
    assert (csv.loc[nowords, "segment_source"] == "vad").all()
    assert csv.loc[nowords, "support_t"].isna().all()
    assert words.loc[nowords, "missing"].eq("t").all()
    assert csv.loc[~nowords, "support_t"].notna().all()
    assert csv["support_a"].notna().all()
    truth = read_manifest(demo)
    truth = truth[truth["dialogue_id"] == "demo_d00"]
    for a, b in zip(csv["start_s"], csv["end_s"], strict=True):  # on generated speech
        assert ((truth["start_s"] < b) & (truth["end_s"] > a)).any()


def test_an_utterance_without_words_has_no_text(
    demo, demo_videos, checkpoint, extractors, tmp_path
):
    """Empty or whitespace text is no words: the text modality is absent (masked) for that
    utterance only, the others keep theirs; a strict run does not count it as a failure."""
    videos = demo_videos(tmp_path / "in", 1, subtitles=False)
    df = read_manifest(demo)
    df = df[df["dialogue_id"] == "demo_d00"].assign(video_path=str(videos[0]))
    df = df.reset_index(drop=True)
    df.loc[1, "text"], df.loc[3, "text"] = "", "   "
    manifest = write_manifest(df, tmp_path / "in" / "m.csv")
    summary = predict_videos(
        videos, checkpoint, tmp_path / "out", manifest=manifest, extractors=extractors,
        progress=False, strict=True,
    )  # fmt: skip
    res = summary.videos[0]
    assert res.status == "ok", res.reason
    csv = pd.read_csv(res.outputs["csv"], keep_default_na=False, na_values=[""])
    absent = np.isin(np.arange(len(csv)), [1, 3])
    assert csv["support_t"].isna().to_numpy().tolist() == absent.tolist()
    assert csv["missing"].fillna("").tolist() == ["t" if x else "" for x in absent]
    assert csv["support_a"].notna().all()
    probs = csv[[f"p_{c}" for c in summary.label_names]].to_numpy(float)  # [N, C]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_mismatched_checkpoint_is_refused(demo_videos, checkpoint, extractors, tmp_path):
    videos = demo_videos(tmp_path / "in", 1)
    # Extractors that are not the checkpoint's (openSMILE alone: 88-d audio instead of 120-d).
    wrong = {"t": extractors["t"], "a": [ex for ex in extractors["a"] if ex.spec.dim == 88]}
    with pytest.raises(ValueError, match="modality 'a' has dim 88, checkpoint expects 120"):
        predict_videos(videos, checkpoint, tmp_path / "o1", extractors=wrong, progress=False)
    # A checkpoint whose spec names an extractor configuration no preset reproduces.
    bad = tmp_path / "bad_ck"
    shutil.copytree(checkpoint, bad)
    meta = json.loads((bad / META_FILE).read_text())
    meta["feature_spec"]["t"]["extractors"][0]["config_hash"] = "0123456789abcdef"
    meta["content_sha256"] = meta_digest(meta)  # a consistent checkpoint, only foreign
    (bad / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(
        PredictError, match="no extractor preset reproduces the checkpoint's modality 't'"
    ):
        predict_videos(videos, bad, tmp_path / "o2", progress=False)


def test_cli_predict(demo_videos, checkpoint, tmp_path, capsys):
    videos = demo_videos(tmp_path / "in", 1)
    missing = tmp_path / "in" / "missing.mp4"
    code = main(["predict", str(videos[0]), str(missing), "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    captured = capsys.readouterr()
    out = captured.out
    # off a terminal the progress is plain lines, the last one "video 2 of 2"
    ours = [line for line in captured.err.split("\n") if line.startswith(("predict", "extract"))]
    assert any(line.startswith("predict: 100%") and "2/2" in line for line in ours)
    assert not any("\r" in line for line in ours)  # (the model loaders' own bars aside)
    assert code == 1  # one video failed, the other completed
    assert "ok     demo_d00.mp4: 5 utterances (srt)" in out and "missing.mp4: file not found" in out
    assert (tmp_path / "out" / "demo_d00.predictions.csv").is_file()


def test_cli_predict_with_a_checkpoint_published_on_the_hub(
    demo_videos, checkpoint, hub_cache, tmp_path
):
    """`--checkpoint ORG/NAME`: the repo's snapshot from the Hub cache, verified, named in the
    outputs by its snapshot folder (the commit is in its path) and weights hash; the same
    predictions as the folder it was published from."""
    revision = hub_cache(checkpoint, "someone/ada2i-demo")
    videos = demo_videos(tmp_path / "in", 1)
    for name, ck in (("hub", "someone/ada2i-demo"), ("folder", str(checkpoint))):
        code = main(["predict", str(videos[0]), "--checkpoint", ck, "--out", str(tmp_path / name)])
        assert code == 0
    model = json.loads((tmp_path / "hub" / "run_info.json").read_text())["model"]
    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    assert model["checkpoint"].endswith(f"models--someone--ada2i-demo/snapshots/{revision}")
    assert model["weights_sha256"] == meta["weights_sha256"]
    hub, local = (
        pd.read_csv(tmp_path / d / "demo_d00.predictions.csv") for d in ("hub", "folder")
    )  # fmt: skip
    assert hub.equals(local) and len(hub) == 5


# --- clip-per-utterance layout (MELD dia{D}_utt{U}.mp4, the IEMOCAP clips): one file per utterance


def _featureset_probs(manifest: Path, checkpoint: Path, extractors, store: Path, out: Path):
    """The reference: a FeatureSet of the manifest, the model over its whole dialogues at once."""
    model, meta = load_checkpoint(checkpoint)
    extract_features(manifest, store, "tiny", MODALITIES, extractors=extractors, progress=False)
    fs = FeatureSet.load(
        build_featureset(
            manifest, store, "tiny", MODALITIES, out, extractors, label_names=meta["label_names"]
        )  # fmt: skip
    )
    pred = predict(model, fs, fs.dialogues)
    return dict(zip(pred.utterance_ids, pred.probs, strict=True))  # id -> probs [C]


def _probs(csv: Path, labels: list[str]) -> dict[str, np.ndarray]:
    df = pd.read_json(csv.with_suffix(".jsonl"), lines=True, dtype={"utterance_id": str})
    return dict(
        zip(df["utterance_id"], df[[f"p_{c}" for c in labels]].to_numpy(float), strict=True)
    )


def test_clip_per_utterance_manifest_predicts_whole_dialogues(
    clips, checkpoint, extractors, tmp_path
):
    manifest = write_manifest(clips, tmp_path / "clips.csv")
    videos = [Path(v) for v in clips["video_path"]][::-1]  # manifest order wins, not this one
    store = tmp_path / "store"
    kw = dict(manifest=manifest, store_root=store, extractors=extractors, progress=False)
    summary = predict_videos(videos, checkpoint, tmp_path / "out", **kw)
    labels = summary.label_names
    assert len(summary.ok) == len(clips) and {v.dialogue for v in summary.videos} == {"demo_d00"}
    ref = _featureset_probs(manifest, checkpoint, extractors, store, tmp_path / "fs")
    for res, (_, u) in zip(summary.videos[::-1], clips.iterrows(), strict=True):
        assert Path(res.video) == Path(u["video_path"]) and res.n_utterances == 1
        csv = pd.read_csv(res.outputs["csv"], keep_default_na=False)
        assert csv["utterance_id"].tolist() == [u["utterance_id"]]  # the clip's own row, ids
        assert csv["end_s"].iat[0] == pytest.approx(u["end_s"], abs=1e-3)  # and times
        assert csv["label"].tolist() == [u["label"]]
        np.testing.assert_allclose(
            _probs(Path(res.outputs["csv"]), labels)[u["utterance_id"]], ref[u["utterance_id"]],
            atol=1e-5,
        )  # fmt: skip
    dialogue = pd.read_csv(summary.videos[0].outputs["dialogue_csv"], keep_default_na=False)
    assert dialogue["utterance_id"].tolist() == clips["utterance_id"].tolist()
    assert dialogue["video"].tolist() == clips["video_path"].tolist()
    table = pd.read_csv(summary.summary_csv, keep_default_na=False)
    assert set(table["dialogue"]) == {"demo_d00"}
    # The context effect: a clip alone is a one-utterance dialogue and gets other probabilities,
    # whether requested alone or with dialogue_context=False.
    uid = clips["utterance_id"].iat[2]
    alone = predict_videos(videos[2:3], checkpoint, tmp_path / "alone", **kw)
    nocontext = predict_videos(
        videos, checkpoint, tmp_path / "nocontext", dialogue_context=False, **kw
    )
    assert alone.videos[0].dialogue == "" and not any(v.dialogue for v in nocontext.videos)
    p_alone = _probs(Path(alone.videos[0].outputs["csv"]), labels)[uid]
    p_nocontext = _probs(Path(nocontext.videos[2].outputs["csv"]), labels)[uid]
    np.testing.assert_allclose(p_alone, p_nocontext, atol=1e-5)
    assert np.abs(p_alone - ref[uid]).max() > 1e-4


def test_corrupt_clip_inside_a_dialogue(clips, checkpoint, extractors, tmp_path):
    clips = clips.copy()
    broken = tmp_path / "dia0_utt1.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    clips.loc[1, "video_path"] = str(broken)
    manifest = write_manifest(clips, tmp_path / "clips.csv")
    store = tmp_path / "store"
    summary = predict_videos(
        [Path(v) for v in clips["video_path"]], checkpoint, tmp_path / "out", manifest=manifest,
        store_root=store, extractors=extractors, progress=False,
    )  # fmt: skip
    assert [Path(v.video) for v in summary.failed] == [broken]
    assert "cannot open media" in summary.failed[0].reason
    assert summary.failed[0].dialogue == "demo_d00" and len(summary.ok) == len(clips) - 1
    dialogue = pd.read_csv(summary.ok[0].outputs["dialogue_csv"], keep_default_na=False)
    rest = clips.drop(index=1)
    assert dialogue["utterance_id"].tolist() == rest["utterance_id"].tolist()
    ref = _featureset_probs(
        write_manifest(rest, tmp_path / "rest.csv"), checkpoint, extractors, store, tmp_path / "fs"
    )
    got = _probs(Path(summary.ok[0].outputs["dialogue_csv"]), summary.label_names)
    for uid in rest["utterance_id"]:
        np.testing.assert_allclose(got[uid], ref[uid], atol=1e-5)
    assert "dia0_utt1.mp4" in summary.summary_md.read_text()
    with pytest.raises(PredictError, match="dia0_utt1.mp4"):
        predict_videos(
            [Path(v) for v in clips["video_path"]], checkpoint, tmp_path / "strict",
            manifest=manifest, store_root=store, extractors=extractors, strict=True,
            progress=False,
        )  # fmt: skip


def test_cli_vad_flag_chooses_the_segmenter(demo, demo_videos, checkpoint, tmp_path, capsys):
    """--vad energy finds the generated demo voice's utterances; silero-vad, a network trained on
    real speech, finds none in it, and that video then fails with the reason (pipeline.inference.segment)."""
    videos = demo_videos(tmp_path / "in", 1, subtitles=False)
    args = ["predict", str(videos[0]), "--checkpoint", str(checkpoint), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "energy"), "--vad", "energy"]) == 0
    assert "ok     demo_d00.mp4: 5 utterances (vad)" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "silero"), "--vad", "silero"]) == 1
    assert "no utterance segments found (voice-activity detection)" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "auto")]) == 0  # auto falls back to energy here
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "x"), "--vad", "webrtc"])
    # what recognised the speech is recorded with the predictions, the beam size included
    assert (
        main([*args, "--out", str(tmp_path / "greedy"), "--vad", "energy", "--asr-beam", "1"]) == 0
    )
    info = json.loads((tmp_path / "greedy" / "run_info.json").read_text())["speech_recognition"]
    assert info == {
        "model": "packaged:tiny.en",
        "beam_size": 1,
        "temperature": 0.0,
        "vad": "energy",
    }
    md = (tmp_path / "greedy" / "summary.md").read_text()
    assert "Speech recognised by model packaged:tiny.en, beam_size 1" in md
    info = json.loads((tmp_path / "energy" / "run_info.json").read_text())["speech_recognition"]
    assert info["beam_size"] == 5
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "x"), "--asr-beam", "0"])
    assert "a beam size is a whole number >= 1, got '0'" in capsys.readouterr().err


def test_prediction_reads_each_input_once(
    demo, demo_videos, checkpoint, extractors, tmp_path, monkeypatch
):
    """One pass: the user's manifest read once, each video's rows planned (media hashed) once,
    no manifest or FeatureSet written and read back."""
    import pipeline.features.extract as extract_mod
    import pipeline.inference.predict as predict_mod
    from pipeline.features.store import FeatureStore

    calls: dict[str, list] = {"read_manifest": [], "plan_tasks": [], "file_hash": [], "load": []}

    def spy(name, fn):
        def wrapper(*args, **kwargs):
            calls[name].append(args)
            return fn(*args, **kwargs)

        return wrapper

    for mod in (extract_mod, predict_mod):
        monkeypatch.setattr(mod, "read_manifest", spy("read_manifest", mod.read_manifest))
    monkeypatch.setattr(extract_mod, "plan_tasks", spy("plan_tasks", extract_mod.plan_tasks))
    monkeypatch.setattr(FeatureStore, "file_hash", spy("file_hash", FeatureStore.file_hash))
    monkeypatch.setattr(FeatureSet, "load", spy("load", FeatureSet.load))

    videos = demo_videos(tmp_path / "in", 2, subtitles=False)
    df = read_manifest(demo)
    df = pd.concat(
        [
            df[df["dialogue_id"] == f"demo_d0{i}"].assign(video_path=str(v))
            for i, v in enumerate(videos)
        ]
    )
    manifest = write_manifest(df, tmp_path / "in" / "m.csv")
    summary = predict_videos(
        videos, checkpoint, tmp_path / "out", manifest=manifest, store_root=tmp_path / "store",
        extractors=extractors, progress=False,
    )  # fmt: skip
    assert [v.status for v in summary.videos] == ["ok", "ok"]
    assert [Path(a[0]) for a in calls["read_manifest"]] == [manifest]  # the user's, once
    assert len(calls["plan_tasks"]) == 2  # once per video
    hashed = [str(a[1]) for a in calls["file_hash"]]
    assert sorted(hashed) == sorted(str(v.resolve()) for v in videos)  # each video hashed once
    assert calls["load"] == []  # the FeatureSet stays in memory
    for v in summary.videos:  # the segments are still written, as an output
        assert Path(v.outputs["manifest"]).is_file()


def test_a_checkpoint_on_imported_text_predicts_new_videos(
    fake_shared_data, demo, demo_videos, tmp_path
):
    """Transcripts imported from a dataset (the text extractor's own vectors and spec) train a
    model whose text extractor prediction rebuilds from the checkpoint alone: new videos get
    predictions instead of a refusal."""
    from pipeline.dataset.manifest import IEMOCAP
    from pipeline.features.importers.shared_data import import_dataset

    fs_dir = import_dataset(
        "iemocap-shared", tmp_path / "fs", data_dir=fake_shared_data, modalities="t",
        text_model="minilm", store_root=tmp_path / "import-store",
    )  # fmt: skip
    run = train_from_featureset(
        fs_dir, tmp_path / "run", "tiny", "t", overrides={"epochs": 2, "progress": False}
    )
    videos = demo_videos(tmp_path / "in", 1, subtitles=False)
    df = read_manifest(demo)
    df = df[df["dialogue_id"] == "demo_d00"].assign(video_path=str(videos[0]))
    manifest = write_manifest(df, tmp_path / "in" / "m.csv")
    summary = predict_videos(
        videos, run.checkpoint_dir, tmp_path / "out", manifest=manifest, progress=False
    )
    res = summary.videos[0]
    assert res.status == "ok", res.reason
    assert summary.label_names == list(IEMOCAP)
    csv = pd.read_csv(res.outputs["csv"], keep_default_na=False)
    assert csv["utterance_id"].tolist() == df["utterance_id"].tolist()
    assert csv["text"].tolist() == df["text"].tolist()
    probs = csv[[f"p_{c}" for c in IEMOCAP]].to_numpy(float)  # [N, 6]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert set(csv["predicted"]) <= set(IEMOCAP)


def test_imported_audio_is_refused_saying_what_to_run_instead():
    from pipeline.inference.predict import resolve_extractors

    spec = {
        "t": {"extractor": "sbert", "dim": 384, "extractors": [{"name": "sbert"}]},
        "a": {"extractor": "iemocap-handcrafted-8", "dim": 8,
              "source": "iemocap/audio_handcrafted.csv"},
    }  # fmt: skip
    with pytest.raises(PredictError) as err:
        resolve_extractors(spec, "ta", None)
    msg = str(err.value)
    assert "'a' (audio: iemocap-handcrafted-8 from iemocap/audio_handcrafted.csv)" in msg
    assert "cannot be recomputed from video" in msg
    assert "To predict from video, train with --modalities t, or" in msg
    assert "erc extract --modalities a" in msg


def test_a_local_text_model_folder_is_rebuilt_from_the_checkpoint_spec(tmp_path):
    """Text imported with --text-model FOLDER names that folder: prediction rebuilds it (no
    preset has it) when the folder is there, and refuses clearly when it is not."""
    from extractors.text import SentenceTextExtractor, packaged_minilm_path
    from pipeline.features.extract import feature_spec
    from pipeline.inference.predict import resolve_extractors

    folder = tmp_path / "my-encoder"
    shutil.copytree(packaged_minilm_path(), folder)  # another folder: not the packaged model
    ex = SentenceTextExtractor(str(folder))
    assert (ex.spec.weights, ex.spec.model) == ("pretrained", str(folder))
    spec = feature_spec({"t": [ex]}, 2.0)
    (got,) = resolve_extractors(spec, "t", None)["t"]
    assert got.spec == ex.spec
    shutil.rmtree(folder)
    with pytest.raises(PredictError, match=rf"text model {folder}: unavailable"):
        resolve_extractors(spec, "t", "tiny")


def test_an_unlabelled_clip_predicted_alone_has_an_empty_label(
    clips, checkpoint, extractors, tmp_path
):
    clips = clips.copy()
    clips.loc[clips.index[0], "label"] = ""  # a clip outside the label set, as in IEMOCAP's
    manifest = write_manifest(clips, tmp_path / "clips.csv")
    video = Path(clips["video_path"].iat[0])
    summary = predict_videos(
        [video], checkpoint, tmp_path / "out", manifest=manifest, dialogue_context=False,
        store_root=tmp_path / "store", extractors=extractors, progress=False,
    )  # fmt: skip
    (res,) = summary.videos
    assert res.status == "ok", res.reason
    csv = pd.read_csv(res.outputs["csv"], keep_default_na=False)
    assert csv.get("label", pd.Series([""])).tolist() == [
        ""
    ]  # was "NaN": a scorer then counted it as labelled
