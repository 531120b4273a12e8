"""What prediction outputs say: the model that made them, and the scores of a labelled run.

Uses the prediction fixtures of conftest.py: a tiny checkpoint trained here on the generated demo
conversations (so every output must carry the demo caveat), the demo videos and their labelled
manifest, and demo_d00 cut into one clip per utterance. The scores are checked against
scikit-learn over the predictions CSVs the run wrote, not against the code that computed them.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from pipeline.dataset.manifest import read_manifest, write_manifest
from pipeline.files import sha256_file
from pipeline.inference.predict import predict_videos
from pipeline.inference.predict_outputs import (
    CLIP_GAP_S,
    dialogue_timeline,
    distribution_png,
    score_predictions,
    write_dialogue_report,
    write_index,
    write_video_report,
)
from pipeline.training.checkpoint import META_FILE, WEIGHTS_FILE, meta_digest

DEMO_CAVEAT = "trained on generated demo data: its predictions on real speech mean nothing"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


def _labelled_manifest(demo: Path, videos: list[Path], path: Path) -> pd.DataFrame:
    """demo_d00 and demo_d01 pointing at the copied videos; one label the checkpoint does not
    know ("fru") and one utterance without a label."""
    df = read_manifest(demo)
    df = pd.concat(
        [df[df["dialogue_id"] == f"demo_d0{k}"].assign(video_path=str(v)) for k, v in
         enumerate(videos)]
    ).reset_index(drop=True)  # fmt: skip
    df.loc[1, "label"] = "fru"
    df.loc[7, "label"] = ""
    write_manifest(df, path)
    return df


def test_labelled_run_is_scored_and_names_its_model(
    demo, demo_videos, checkpoint, extractors, tmp_path
):
    videos = demo_videos(tmp_path / "in", 2, subtitles=False)
    df = _labelled_manifest(demo, videos, tmp_path / "in" / "m.csv")
    summary = predict_videos(
        videos, checkpoint, tmp_path / "out", manifest=tmp_path / "in" / "m.csv",
        store_root=tmp_path / "store", extractors=extractors, progress=False,
    )  # fmt: skip
    labels = summary.label_names
    assert [v.status for v in summary.videos] == ["ok", "ok"]

    # The reference: scikit-learn over the predictions CSVs, known labels only.
    per_video = {
        Path(v.video).name: pd.read_csv(v.outputs["csv"], keep_default_na=False, dtype=str)
        for v in summary.videos
    }
    every = pd.concat(per_video.values())
    assert every["label"].tolist() == df["label"].tolist()  # the manifest's labels carried along
    known = every[every["label"].isin(labels)]
    assert len(known) == len(df) - 2
    acc = accuracy_score(known["label"], known["predicted"])
    wf1 = f1_score(known["label"], known["predicted"], labels=labels, average="weighted",
                   zero_division=0)  # fmt: skip
    mf1 = f1_score(known["label"], known["predicted"], labels=labels, average="macro",
                   zero_division=0)  # fmt: skip

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary.metrics_json == tmp_path / "out" / "metrics.json"
    assert metrics["n"] == len(known) and metrics["n_predicted"] == len(df)
    assert metrics["accuracy"] == pytest.approx(acc)
    assert metrics["weighted_f1"] == pytest.approx(wf1)
    assert metrics["macro_f1"] == pytest.approx(mf1)
    assert metrics["unknown_labels"] == {"fru": 1} and metrics["n_unlabelled"] == 1
    assert np.asarray(metrics["confusion"]).sum() == len(known)
    for g in metrics["groups"]:  # one per video (whole conversations)
        t = per_video[g["name"]]
        t = t[t["label"].isin(labels)]
        assert g["kind"] == "video" and g["n"] == len(t)
        assert g["accuracy"] == pytest.approx(accuracy_score(t["label"], t["predicted"]))
        assert g["weighted_f1"] == pytest.approx(
            f1_score(t["label"], t["predicted"], labels=labels, average="weighted",
                     zero_division=0)
        )  # fmt: skip
    assert sorted(g["name"] for g in metrics["groups"]) == sorted(per_video)

    md = summary.summary_md.read_text()
    assert f"accuracy **{acc:.3f}**, weighted F1 **{wf1:.3f}**, macro F1 **{mf1:.3f}**" in md
    assert "fru (1)" in md and "1 utterance(s) have no label" in md
    index = summary.index_html.read_text()
    scores = re.search(r"<table id='scores'>(.*?)</table>", index).group(1)
    assert f"<td>{acc:.3f}</td><td>{wf1:.3f}</td><td>{mf1:.3f}</td>" in scores
    assert "id='unknown-labels'" in index and "fru (1)" in index
    assert "<table id='groups'>" in index  # the per-video scores
    w, h = _png_size((tmp_path / "out" / "confusion.png").read_bytes())
    assert w > 300 and h > 300
    assert f"accuracy {acc:.3f}" in summary.line()

    # Provenance: the checkpoint and what it was trained on, in every output.
    info = json.loads(summary.run_info.read_text())["model"]
    assert info["checkpoint"] == str(checkpoint.resolve())
    assert info["weights_sha256"] == sha256_file(checkpoint / WEIGHTS_FILE)
    td = info["training_data"]
    assert re.fullmatch(r"[0-9a-f]{64}", td["featureset_sha256"])
    assert td["generated"] == "demo" and td["n_dialogues"] == 3 and td["n_utterances"] == 15
    assert sum(s["utterances"] for s in td["splits"].values()) == 15
    assert td["label_names"] == labels and td["featureset"].endswith("fs")
    assert info["caveat"] == DEMO_CAVEAT
    assert metrics["weights_sha256"] == info["weights_sha256"]
    reports = [Path(v.outputs["html"]).read_text() for v in summary.videos]
    for text in (md, index, *reports):
        assert DEMO_CAVEAT in text and info["weights_sha256"] in text
    assert all(v.outputs["html"] for v in summary.videos)
    assert td["featureset_sha256"] in md and td["featureset_sha256"] in index


def test_old_checkpoint_says_training_data_unknown(demo_videos, checkpoint, extractors, tmp_path):
    """A checkpoint.json without training_data (written before it was recorded) still predicts;
    every output says the training data is unknown. Unlabelled input is not scored."""
    old = tmp_path / "old_ck"
    shutil.copytree(checkpoint, old)
    meta = json.loads((old / META_FILE).read_text())
    del meta["training_data"]
    meta["content_sha256"] = meta_digest(meta)  # as written by code that did not record it
    (old / META_FILE).write_text(json.dumps(meta))
    videos = demo_videos(tmp_path / "in", 1)  # subtitles: no labels
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("{}")  # an earlier run's, not this one's
    summary = predict_videos(videos, old, tmp_path / "out", extractors=extractors, progress=False)
    assert summary.videos[0].status == "ok"
    assert summary.metrics is None and summary.metrics_json is None
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert not (tmp_path / "out" / "confusion.png").exists()
    for text in (summary.summary_md.read_text(), summary.index_html.read_text(),
                 Path(summary.videos[0].outputs["html"]).read_text()):  # fmt: skip
        assert "training data unknown" in text and "Warning" not in text
        assert "<table id='scores'>" not in text and "## Scores" not in text
    info = json.loads(summary.run_info.read_text())["model"]
    assert info["training_data"] is None and info["caveat"] == ""


def test_clip_dialogues_get_their_own_reports(clips, checkpoint, extractors, tmp_path):
    """Clip-per-utterance: each dialogue, a single-clip one included, gets a report (a timeline of
    its clips) under dialogues/, linked from the index and linking to its clips' reports."""
    solo = tmp_path / "solo.mp4"
    shutil.copy(clips["video_path"].iat[0], solo)
    extra = clips.iloc[:1].assign(
        dialogue_id="solo", utterance_id="solo_u0", video_path=str(solo), label="hap"
    )
    table = pd.concat([clips, extra]).reset_index(drop=True)
    write_manifest(table, tmp_path / "clips.csv")
    videos = [Path(v) for v in table["video_path"]]
    summary = predict_videos(
        videos, checkpoint, tmp_path / "out", manifest=tmp_path / "clips.csv",
        store_root=tmp_path / "store", extractors=extractors, progress=False,
    )  # fmt: skip
    assert len(summary.ok) == len(table)
    assert [v.dialogue for v in summary.videos] == ["demo_d00"] * len(clips) + ["solo"]
    out = tmp_path / "out"
    index = summary.index_html.read_text()
    for did, n in (("demo_d00", len(clips)), ("solo", 1)):
        report = out / "dialogues" / f"{did}.report.html"
        assert f"href='dialogues/{did}.report.html'" in index
        text = report.read_text()
        assert DEMO_CAVEAT in text and "href='../index.html'" in text
        rows = re.search(r"<table id='utterances'>(.*?)</table>", text).group(1).count("<tr>") - 1
        assert rows == n  # one per utterance
        links = re.findall(r"href='(\.\./[^']+\.report\.html)'", text)
        assert len(links) == n and all((report.parent / h).resolve().is_file() for h in links)
        assert (out / "dialogues" / f"{did}.predictions.csv").is_file()
    # The single clip is predicted as its own one-utterance dialogue.
    assert summary.videos[-1].outputs["dialogue_html"].endswith("dialogues/solo.report.html")
    # Scored per dialogue: the groups are the dialogues, not the 6 clips.
    groups = {g["name"]: g for g in summary.metrics["groups"]}
    assert set(groups) == {"demo_d00", "solo"} and groups["solo"]["n"] == 1
    assert groups["demo_d00"]["n_utterances"] == len(clips)


def test_index_chart_grows_with_the_number_of_videos(tmp_path):
    """52 videos (the IEMOCAP clips): one horizontal bar per video, the figure growing with them,
    so every name keeps its own line (at least ~20 px per bar at the report's resolution)."""
    labels = ["ang", "hap", "neu", "sad"]
    rng = np.random.default_rng(0)

    def height(n: int) -> int:
        counts = rng.integers(0, 4, size=(n, len(labels)))  # [R, C]
        png = distribution_png([f"Ses01F_impro0{k}_M0{k:02d}.mp4" for k in range(n)], counts,
                               labels)  # fmt: skip
        return _png_size(base64.b64decode(png))[1]

    h5, h52 = height(5), height(52)
    assert (h52 - h5) / (52 - 5) >= 20 and h52 > 3 * h5
    summary = pd.DataFrame(
        [{"video": f"/v/clip{k}.mp4", "status": "ok", "reason": "", "n_utterances": 1,
          "segment_source": "manifest", "report": f"clip{k}.report.html",
          **{f"n_{c}": int(c == labels[k % 4]) for c in labels}} for k in range(52)]
    )  # fmt: skip
    text = write_index(summary, labels, tmp_path / "index.html").read_text()
    img = re.search(r"alt='distribution' src='data:image/png;base64,([^']+)'", text).group(1)
    assert _png_size(base64.b64decode(img))[1] >= h52 - 5


def test_every_utterance_is_scored_or_counted_once():
    """Scored, unlabelled (an empty label, or a video without labels) and unknown labels add up to
    the predicted utterances; a run whose labels are all unknown scores nothing."""
    v1 = pd.DataFrame({"label": ["hap", "zzz", ""], "predicted": ["hap", "sad", "neu"]})
    v2 = pd.DataFrame({"predicted": ["hap", "hap"]})  # no labels in the manifest for it
    v3 = pd.DataFrame({"label": ["xx"], "predicted": ["ang"]})
    m = score_predictions([("v1", "video", "", v1), ("v2", "video", "", v2),
                           ("v3", "video", "", v3)], ["ang", "hap", "neu", "sad"])  # fmt: skip
    assert (m["n"], m["n_unlabelled"], m["n_unknown"], m["n_predicted"]) == (1, 3, 2, 6)
    assert m["unknown_labels"] == {"xx": 1, "zzz": 1} and m["accuracy"] == 1.0
    assert [(g["name"], g["n"], g["accuracy"]) for g in m["groups"]] == [
        ("v1", 1, 1.0), ("v2", 0, None), ("v3", 0, None)
    ]  # fmt: skip
    only_unknown = score_predictions([("v3", "video", "", v3)], ["ang", "hap"])
    assert only_unknown["n"] == 0 and "confusion" not in only_unknown
    assert score_predictions([("v2", "video", "", v2)], ["ang", "hap"]) is None


def test_dialogue_timeline_lays_clips_end_to_end():
    """Each clip's own times (from 0) move to after the previous clip, in row order."""
    t = pd.DataFrame({"video": ["a", "b", "b", "c"], "start_s": [0.0, 0.0, 1.5, 0.0],
                      "end_s": [2.0, 1.0, 3.0, 0.5]})  # fmt: skip
    out = dialogue_timeline(t)
    g = CLIP_GAP_S
    np.testing.assert_allclose(out["start_s"], [0.0, 2 + g, 3.5 + g, 5 + 2 * g])
    np.testing.assert_allclose(out["end_s"], [2.0, 3 + g, 5 + g, 5.5 + 2 * g])
    assert t["start_s"].tolist() == [0.0, 0.0, 1.5, 0.0]  # the input is left as it was


class _ParsedPage(HTMLParser):
    """A page as an HTML parser reads it: its start tags, link targets and text (entities
    decoded)."""

    def __init__(self, path: Path):
        super().__init__(convert_charrefs=True)
        self.tags, self.hrefs, self.chunks = [], [], []
        self.feed(path.read_text())
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.hrefs += [value for name, value in attrs if name == "href"]

    def handle_data(self, data):
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def test_names_and_texts_are_shown_as_text_in_every_page(tmp_path):
    """Utterance texts, speakers, dialogue and clip names, sources, reasons and labels come from
    user files: each page shows them as written and none becomes markup; a link keeps its target
    even with a quote in it. The model's provenance is HTML and stays HTML."""
    evil = "<script>alert('x & y')</script> & co"
    clip = "<b>Tom & Jerry's.mp4"  # a file name: no slash, so no closing tag
    labels = ["hap", "sad"]
    table = pd.DataFrame({
        "video": [f"/clips/{clip}", "/clips/plain.mp4"], "start_s": [0.0, 0.0],
        "end_s": [1.0, 1.5], "speaker": [evil, "B"], "text": [evil, "fine"], "label": [evil, "sad"],
        "predicted": ["hap", "sad"], "p_hap": [0.7, 0.2], "p_sad": [0.3, 0.8],
        "support_t": [0.6, 0.4], "support_a": [0.4, np.nan], "segment_source": [evil, evil],
    })  # fmt: skip
    provenance = "<div id='provenance'><code>/ck/best</code></div>"
    clip_href = "../clips/Tom's.report.html"
    pages = {
        "video": write_video_report(table, labels, "ta", tmp_path / "v.html", f"/clips/{clip}",
                                    index_href="../it's index.html", provenance=provenance),
        "dialogue": write_dialogue_report(table, labels, "ta", tmp_path / "d.html", evil,
                                          {f"/clips/{clip}": clip_href}, provenance=provenance),
    }  # fmt: skip
    summary = pd.DataFrame([
        {"video": f"/clips/{clip}", "status": "ok", "reason": "", "n_utterances": 2,
         "segment_source": evil, "report": f"{clip}.report.html", "n_hap": 1, "n_sad": 1},
        {"video": "/clips/broken.mp4", "status": "failed", "reason": evil, "n_utterances": 0,
         "segment_source": "", "report": "", "n_hap": 0, "n_sad": 0},
    ])  # fmt: skip
    scores = {"n": 1, "n_predicted": 2, "accuracy": 1.0, "weighted_f1": 1.0, "macro_f1": 1.0,
              "n_unlabelled": 0, "n_unknown": 1, "unknown_labels": {evil: 1}}  # fmt: skip
    groups = [{"name": evil, "kind": "dialogue", "report": "dialogues/it's.report.html",
               "n_videos": 2, "n_utterances": 2, "counts": {"hap": 1, "sad": 1}, "n": 1,
               "accuracy": 1.0, "weighted_f1": 1.0}]  # fmt: skip
    pages["index"] = write_index(summary, labels, tmp_path / "index.html", provenance=provenance,
                                 scores=scores, groups=groups)  # fmt: skip

    parsed = {name: _ParsedPage(path) for name, path in pages.items()}
    for name, page in parsed.items():
        assert "script" not in page.tags and "b" not in page.tags, name
        assert evil in page.text, name
        assert "code" in page.tags and "/ck/best" in page.text, name  # provenance as HTML
    assert clip in parsed["video"].text and clip in parsed["dialogue"].text
    assert f"{evil} (1)" in parsed["index"].text  # the unknown label, counted
    assert parsed["video"].hrefs == ["../it's index.html"]
    assert parsed["dialogue"].hrefs == ["../index.html", clip_href]
    assert parsed["index"].hrefs == ["dialogues/it's.report.html", f"{clip}.report.html"]
