"""The HTML reports as pages: rendered in headless Chromium, driven over the DevTools protocol.

Asserts what a reader needs: the embedded images decode (natural size > 0), the table has one row
per utterance, every link resolves, a missing modality reads "missing", and the console stays free
of errors. Skips when Debian's `chromium` is not installed (.ci/run installs it).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

from pipeline.inference.predict_outputs import (
    write_dialogue_report,
    write_index,
    write_video_report,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed"),
]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--window-size=1400,1000",
]  # fmt: skip
LABELS = ["hap", "sad", "neu", "ang"]


class Page:
    """One Chromium tab over the DevTools protocol (websockets, already in the lock)."""

    def __init__(self, tmp: Path):
        from websockets.sync.client import connect

        profile = tmp / "profile"
        profile.mkdir()
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                pytest.fail("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            [tab] = [t for t in json.load(r) if t["type"] == "page"]
        self.ws = connect(tab["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.next_id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]
            self.events.append(msg)

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(json.loads(self.ws.recv(timeout=60)))

    def eval(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"]["value"]

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(str(p["exceptionDetails"]))
            elif e.get("method") == "Runtime.consoleAPICalled" and p["type"] == "error":
                out.append(str(p["args"]))
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"]["text"])
        return out

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot")["data"]))

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    p = Page(tmp_path_factory.mktemp("chromium"))
    yield p
    p.close()


def _table(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(LABELS)), size=n)
    start = np.cumsum(rng.uniform(1.0, 3.0, size=n))
    df = pd.DataFrame({
        "start_s": start, "end_s": start + 0.9, "speaker": ["A", "B"] * (n // 2),
        "text": [f"utterance {i}" for i in range(n)],
        "predicted": [LABELS[k] for k in probs.argmax(axis=1)],
        **{f"p_{c}": probs[:, k] for k, c in enumerate(LABELS)},
        "support_t": rng.uniform(0.1, 1, n), "support_a": rng.uniform(0.1, 1, n),
        "support_v": np.where(np.arange(n) % 3 == 0, np.nan, 0.5), "segment_source": "subtitles",
    })  # fmt: skip
    return df


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two videos' reports and their index, written as pipeline.inference.predict writes them."""
    out = tmp_path_factory.mktemp("predictions")
    rows = []
    for name, n in (("a", 8), ("b", 6)):
        t = _table(n)
        write_video_report(t, LABELS, "tav", out / f"{name}.report.html", f"/videos/{name}.mp4")
        counts = t["predicted"].value_counts()
        rows.append({
            "video": f"/videos/{name}.mp4", "status": "ok", "n_utterances": n,
            "segment_source": "subtitles", "report": f"{name}.report.html", "reason": "",
            **{f"n_{c}": int(counts.get(c, 0)) for c in LABELS},
        })  # fmt: skip
    rows.append({"video": "/videos/c.mp4", "status": "failed", "n_utterances": 0,
                 "segment_source": "", "report": "", "reason": "no audio stream",
                 **{f"n_{c}": 0 for c in LABELS}})  # fmt: skip
    write_index(pd.DataFrame(rows), LABELS, out / "index.html")
    return out


CHECKS = """JSON.stringify({
  images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
  rows: [...document.querySelectorAll('table tr')].slice(1).map(r => r.innerText),
  links: [...document.links].map(a => a.href),
  headers: [...document.querySelectorAll('th')].map(h => h.innerText),
})"""


def _resolves(href: str) -> bool:
    url = urlparse(href)
    return url.scheme == "file" and Path(unquote(url.path)).is_file()


def test_video_report_renders(page, reports, tmp_path):
    page.open((reports / "a.report.html").as_uri())
    got = json.loads(page.eval(CHECKS))
    [(complete, width, height)] = got["images"]
    assert complete and width > 500 and height > 300
    assert len(got["rows"]) == 8  # one per utterance
    assert got["links"] == [(reports / "index.html").as_uri()] and all(map(_resolves, got["links"]))
    assert "p(happy)" in got["headers"] and "visual support" in got["headers"]
    assert sum("missing" in r for r in got["rows"]) == 3  # utterances 0, 3, 6 have no visual
    assert not any("nan" in r.split("\t") for r in got["rows"])
    predicted = {r.split("\t")[4] for r in got["rows"]}  # names, not codes
    assert predicted <= {"happy", "sad", "neutral", "angry"} and predicted
    assert page.errors() == []
    page.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_index_renders_with_working_links(page, reports, tmp_path):
    page.open((reports / "index.html").as_uri())
    got = json.loads(page.eval(CHECKS))
    [(complete, width, height)] = got["images"]
    assert complete and width > 0 and height > 0
    assert len(got["rows"]) == 3  # one per video, the failed one with its reason
    assert "no audio stream" in got["rows"][2]
    assert len(got["links"]) == 2 and all(map(_resolves, got["links"]))
    assert "happy" in got["headers"]
    assert page.errors() == []
    page.screenshot(tmp_path / "index.png")
    # each report links back to this index
    page.open(got["links"][1])
    assert json.loads(page.eval(CHECKS))["links"] == [(reports / "index.html").as_uri()]


@pytest.fixture(scope="module")
def scored_reports(tmp_path_factory):
    """A labelled clip-per-utterance run: two clips of one dialogue, their dialogue report, and an
    index with the model's provenance (a demo-trained checkpoint), scores and confusion matrix."""
    from pipeline.inference.predict_outputs import Provenance, score_predictions
    from pipeline.training.evaluate import plot_confusion

    out = tmp_path_factory.mktemp("scored")
    prov = Provenance("/ck/best", "ab" * 32, 3, "tav", LABELS, {"generated": "demo"}).html()
    clips = []
    for name in ("u0", "u1"):
        t = _table(2).assign(video=f"/clips/{name}.mp4", label=["hap", "sad"])
        write_video_report(t, LABELS, "tav", out / f"{name}.report.html", f"/clips/{name}.mp4",
                           provenance=prov)  # fmt: skip
        clips.append(t)
    dialogue = pd.concat(clips, ignore_index=True)
    (out / "dialogues").mkdir()
    write_dialogue_report(
        dialogue, LABELS, "tav", out / "dialogues" / "d1.report.html", "d1",
        {f"/clips/{n}.mp4": f"../{n}.report.html" for n in ("u0", "u1")}, provenance=prov,
    )  # fmt: skip
    scores = score_predictions([("d1", "dialogue", "dialogues/d1.report.html", dialogue)], LABELS)
    plot_confusion(np.asarray(scores["confusion"]), LABELS, out / "confusion.png", "d1: test")
    rows = [{"video": f"/clips/{n}.mp4", "status": "ok", "n_utterances": 2, "reason": "",
             "segment_source": "manifest", "report": f"{n}.report.html",
             **{f"n_{c}": 0 for c in LABELS}} for n in ("u0", "u1")]  # fmt: skip
    groups = [{"name": "d1", "kind": "dialogue", "report": "dialogues/d1.report.html",
               "n_videos": 2, "n_utterances": 4, "counts": {"hap": 4}, "n": 4,
               "accuracy": scores["accuracy"], "weighted_f1": scores["weighted_f1"]}]  # fmt: skip
    write_index(pd.DataFrame(rows), LABELS, out / "index.html", provenance=prov, scores=scores,
                groups=groups, confusion_png=out / "confusion.png")  # fmt: skip
    return out


def test_scored_index_and_dialogue_report_render(page, scored_reports):
    page.open((scored_reports / "index.html").as_uri())
    got = json.loads(page.eval(CHECKS))
    assert len(got["images"]) == 2  # the confusion matrix and the chart, both decoded
    assert all(c and w > 200 and h > 100 for c, w, h in got["images"])
    caveat = page.eval("document.getElementById('caveat').innerText")
    assert "trained on generated demo data" in caveat
    dialogue = (scored_reports / "dialogues" / "d1.report.html").as_uri()
    assert dialogue in got["links"] and all(map(_resolves, got["links"]))
    assert page.errors() == []
    page.open(dialogue)
    got = json.loads(page.eval(CHECKS))
    [(complete, width, _)] = got["images"]
    assert complete and width > 500 and len(got["rows"]) == 4  # one per utterance
    # back to the index, and each utterance to its clip's report
    assert len(got["links"]) == 5 and len(set(got["links"])) == 3
    assert all(map(_resolves, got["links"]))
    assert "true label" in got["headers"] and page.errors() == []
