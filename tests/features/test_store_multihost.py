"""The feature store across machines: writers that never open the index, one process that keeps it.

Writers on other hosts cannot share index.sqlite (SQLite's locks are not reliable on network
filesystems), so they write entry files only (UnindexedWriter) and the index keeper adds them with
FeatureStore.ingest (docs/architecture.md). Here two writer processes, each in its own UTS
namespace with its own host name where `unshare` allows it, extract halves of a dataset into one
store while its index file is left untouched; the keeper ingests, and the FeatureSet equals the one
a single indexed process makes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.dataset.demo import make_demo_dataset
from pipeline.dataset.manifest import read_manifest, write_manifest
from pipeline.features.extract import build_featureset, extract_features
from pipeline.features.store import (
    INDEX_FILE,
    Entry,
    FeatureStore,
    UnindexedWriter,
    check,
    make_key,
)

ROOT = Path(__file__).resolve().parents[2]
# MiniLM + eGeMAPS (the tiny preset's text, the offline preset's audio): batch-invariant
# (extractors/text.py), and MiniLM keeps three processes' model loads cheap. WRITER builds the same.
MODALITIES = "ta"


def _extractors() -> dict:
    from extractors.opensmile_audio import OpenSmileExtractor
    from extractors.text import SentenceTextExtractor

    return {"t": [SentenceTextExtractor("minilm")], "a": [OpenSmileExtractor("eGeMAPSv02")]}


class _Spec:  # the duck-typed ExtractorSpec an Entry needs
    name, version, kind, dim = "toy", "1", "audio", 3
    model, weights, weights_hash = "toy-model", "random-init", "0" * 64

    def config_hash(self) -> str:
        return "c0ffee"

    def to_dict(self) -> dict:
        return {"name": self.name, "dim": self.dim}


def _entry(i: int, vector=True) -> Entry:
    key = make_key(f"input-{i}", (0.0, 1.0), 2.0, "c0ffee")
    vec = np.arange(3, dtype=np.float32) + i if vector else None
    return Entry(key, vec, _Spec(), f"utt{i}", f"input-{i}", "clip.wav", (0.0, 1.0), 2.0)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unindexed_writer_never_touches_the_index_and_ingest_adds_its_entries(tmp_path):
    root = tmp_path / "store"
    FeatureStore(root).close()  # the keeper made the store
    index = root / INDEX_FILE
    before = (_digest(index), index.stat().st_mtime_ns)
    entries = [_entry(0), _entry(1), _entry(2, vector=False)]

    with UnindexedWriter(root) as w:
        w.put_many(entries)
        assert w.stored == [e.key for e in entries]
        assert w.present([e.key for e in entries] + ["f" * 64]) == {e.key for e in entries}
        assert w.claim([e.key for e in entries]) == {}  # no index: no claims to honour
        np.testing.assert_array_equal(w.get(entries[1].key), [1, 2, 3])
        assert w.get(entries[2].key) is None  # a cached "extractor returned None"
    assert (_digest(index), index.stat().st_mtime_ns) == before
    assert (
        not (root / f"{INDEX_FILE}-wal").exists()
        or (root / f"{INDEX_FILE}-wal").stat().st_size == 0
    )

    with FeatureStore(root) as keeper:
        assert keeper.present(e.key for e in entries) == set()  # not indexed yet
        report = keeper.ingest()
        assert (report.added, report.already, report.damaged) == (3, 0, [])
        assert keeper.present(e.key for e in entries) == {e.key for e in entries}
        rows = {r["key"]: r for r in keeper.entries()}
        assert rows[entries[0].key]["utterance_id"] == "utt0"
        assert rows[entries[2].key]["status"] == "missing"
        assert rows[entries[0].key]["nbytes"] == keeper.object_path(entries[0].key).stat().st_size
        again = keeper.ingest([e.key for e in entries] + ["e" * 64])
        assert (again.added, again.already, again.absent) == (0, 3, ["e" * 64])


def test_ingest_never_indexes_a_damaged_entry_file(tmp_path):
    root = tmp_path / "store"
    good, bad = _entry(0), _entry(1)
    with UnindexedWriter(root) as w:
        w.put_many([good, bad])
    path = UnindexedWriter(root).object_path(bad.key)
    blob = bytearray(path.read_bytes())
    blob[-2] ^= 0xFF  # flip bits in the payload: the recorded sha256 no longer matches
    path.write_bytes(bytes(blob))

    with FeatureStore(root) as keeper:  # no index yet: opening indexes the sound entries
        report = keeper.ingest()
        assert report.added + report.already == 1
        assert len(report.damaged) == 1 and str(path) in report.damaged[0]
        assert "sha256" in report.damaged[0]
        assert keeper.present([good.key, bad.key]) == {good.key}
    with UnindexedWriter(root) as w:  # a writer also sees the damage, so it recomputes the key
        assert w.present([good.key, bad.key]) == {good.key}
        assert w.damaged and w.damaged[0][0] == path


def test_cli_store_ingest_and_extract_no_index(tmp_path, capsys):
    from pipeline.cli import main as cli_main

    root = tmp_path / "store"
    FeatureStore(root).close()
    with UnindexedWriter(root) as w:
        w.put_many([_entry(0), _entry(1)])
    assert cli_main(["store", "ingest", "--store", str(root)]) == 0
    assert "indexed 2 new entries (0 already indexed, 0 damaged)" in capsys.readouterr().out
    assert cli_main(["store", "ingest", "--store", str(root)]) == 0
    assert "indexed 0 new entries (2 already indexed" in capsys.readouterr().out
    path = UnindexedWriter(root).object_path(_entry(2).key)
    UnindexedWriter(root).put_many([_entry(2)])
    path.write_bytes(path.read_bytes()[:-4])  # truncated
    assert cli_main(["store", "ingest", "--store", str(root)]) == 1
    assert f"damaged (no row; gc deletes it): {path}: truncated" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--featureset needs the store's index"):
        cli_main(["extract", "--manifest", "m.csv", "--store", str(root), "--no-index",
                  "--featureset", str(tmp_path / "fs")])  # fmt: skip


WRITER = textwrap.dedent(
    """
    import json, socket, sys
    from extractors.opensmile_audio import OpenSmileExtractor
    from extractors.text import SentenceTextExtractor
    from pipeline.features.extract import extract_features
    manifest, store, modalities = sys.argv[1:4]
    exs = {"t": [SentenceTextExtractor("minilm")], "a": [OpenSmileExtractor("eGeMAPSv02")]}
    s = extract_features(manifest, store, modalities=modalities, progress=False, index=False,
                         extractors=exs, report_dir=manifest + "-reports")
    print(json.dumps({"host": socket.gethostname(), "done": s.done, "failed": s.failed}))
    """
)


def _can_set_hostname() -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "--uts", "sh", "-c", "hostname probe-host && hostname"],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0 and probe.stdout.strip() == "probe-host"


def _writer(manifest: Path, store: Path, host: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", WRITER, str(manifest), str(store), MODALITIES]
    if host:  # its own UTS namespace: another host name, as on another machine
        cmd = ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$0" "$@"', *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.integration
def test_two_writers_without_the_index_then_ingest_equals_one_indexed_run(tmp_path):
    manifest = make_demo_dataset(tmp_path / "demo", n_dialogues=4, utterances_per_dialogue=3)
    df = read_manifest(manifest)
    dialogues = sorted(df["dialogue_id"].unique())
    halves = []
    for i, part in enumerate((dialogues[:2], dialogues[2:])):
        halves.append(write_manifest(df[df["dialogue_id"].isin(part)], tmp_path / f"half{i}.csv"))

    # One process with the index: the reference.
    ref_store = tmp_path / "ref-store"
    exs = _extractors()
    s = extract_features(manifest, ref_store, modalities=MODALITIES, extractors=exs, progress=False)
    assert s.failed == 0
    ref = build_featureset(
        manifest, ref_store, modalities=MODALITIES, out_dir=tmp_path / "ref-fs", extractors=exs
    )

    # Two writers that do not share (or even open) the index; the keeper made the store.
    store = tmp_path / "store"
    FeatureStore(store).close()
    index_before = _digest(store / INDEX_FILE)
    hosts = ["writer-a", "writer-b"] if _can_set_hostname() else [None, None]
    procs = [_writer(m, store, h) for m, h in zip(halves, hosts, strict=True)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert [r["failed"] for r in results] == [0, 0]
    assert _digest(store / INDEX_FILE) == index_before  # neither writer touched it
    if hosts[0]:
        assert [r["host"] for r in results] == hosts

    with FeatureStore(store) as keeper:
        report = keeper.ingest()
        assert report.damaged == [] and report.added == sum(r["done"] for r in results) > 0
        assert keeper.verify() == (report.added, [])
        if hosts[0]:  # each entry says which host computed it
            assert {
                check(keeper.object_path(r["key"])).provenance["host"] for r in keeper.entries()
            } == set(hosts)
    fs = build_featureset(
        manifest, store, modalities=MODALITIES, out_dir=tmp_path / "fs", extractors=exs
    )
    ref_files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    assert ref_files == sorted(p.relative_to(fs) for p in fs.rglob("*") if p.is_file())
    tensors = [f for f in ref_files if f.suffix == ".safetensors"]
    assert tensors, ref_files
    for f in tensors:  # the features themselves: byte for byte
        assert _digest(ref / f) == _digest(fs / f), f
