"""Feature store: hit, miss, invalidation, atomic writes under SIGKILL, concurrent writers, status, gc.

The vectors come from a deterministic function of the key, so a resumed or concurrent run can be
compared bit for bit with a clean one.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from extractors.base import ExtractorSpec
from pipeline.features.store import INDEX_FILE, Entry, FeatureStore, make_key, text_hash

ROOT = Path(__file__).resolve().parents[2]
DIM = 16

# Writes n entries (skipping cached ones), one transaction each, slowly enough to be killed midway.
WORKER = """
import sys, time
import numpy as np
from extractors.base import ExtractorSpec
from pipeline.features.store import Entry, FeatureStore, make_key, text_hash

root, n, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
spec = ExtractorSpec("toy", "1", "text", 16, "", "none", "", {})
with FeatureStore(root) as store:
    keys = [make_key(text_hash(f"utt {i}"), None, None, spec.config_hash()) for i in range(n)]
    have = store.present(keys)
    for i, key in enumerate(keys):
        if key in have:
            continue
        x = np.random.default_rng(int(key[:8], 16)).standard_normal(16).astype(np.float32)
        store.put_many([Entry(key, x, spec, f"u{i}", text_hash(f"utt {i}"))])
        print(i, flush=True)
        time.sleep(delay)
"""


def _spec(version: str = "1", name: str = "toy", dim: int = DIM) -> ExtractorSpec:
    return ExtractorSpec(name, version, "text", dim, "", "none", "", {"pool": "mean"})


def _vector(key: str) -> np.ndarray:
    return np.random.default_rng(int(key[:8], 16)).standard_normal(DIM).astype(np.float32)


def _run_worker(root: Path, n: int, delay: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(root), str(n), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    with FeatureStore(root) as store:
        return {e["key"]: store.get(e["key"]).tobytes() for e in store.entries()}


def test_key_is_content_addressed():
    spec = _spec()
    k = make_key(text_hash("hello"), (1.0, 2.0), 2.0, spec.config_hash())
    assert k == make_key(text_hash("hello"), (1.0000001, 2.0000004), 2.0, spec.config_hash())
    assert k == make_key(text_hash("hello"), (1.0, 2.0), 2, spec.config_hash())
    assert k != make_key(text_hash("hello"), (1.0, 2.001), 2.0, spec.config_hash())
    assert k != make_key(text_hash("hello"), (1.0, 2.0), 1.0, spec.config_hash())
    assert k != make_key(text_hash("hello"), (1.0, 2.0), 2.0, _spec("2").config_hash())
    with pytest.raises(UnicodeEncodeError):
        text_hash("bad \udcff byte")


def test_hit_miss_missing_marker_and_invalidation(tmp_path):
    v1, v2, other = _spec("1"), _spec("2"), _spec("1", name="other")
    with FeatureStore(tmp_path) as store:
        k1 = make_key(text_hash("a"), None, None, v1.config_hash())
        k_none = make_key(text_hash("b"), None, None, v1.config_hash())
        k_other = make_key(text_hash("a"), None, None, other.config_hash())
        assert store.present([k1, k_none, k_other]) == set()  # miss
        store.put_many(
            [
                Entry(k1, _vector(k1), v1, "u1", text_hash("a")),
                Entry(k_none, None, v1, "u2", text_hash("b")),  # extractor returned None
                Entry(k_other, _vector(k_other), other, "u1", text_hash("a")),
            ]
        )
        assert store.present([k1, k_none, k_other]) == {k1, k_none, k_other}  # hit
        np.testing.assert_array_equal(store.get(k1), _vector(k1))
        assert store.get(k1).shape == (DIM,) and store.get(k1).dtype == np.float32
        assert store.get(k_none) is None  # cached as masked, not recomputed
        # Bumping one extractor's version changes only its keys.
        k1_v2 = make_key(text_hash("a"), None, None, v2.config_hash())
        assert store.present([k1_v2, k_other]) == {k_other}
        with pytest.raises(KeyError):
            store.get(k1_v2)
        with pytest.raises(ValueError, match="expected finite"):
            store.put_many([Entry(k1_v2, np.full(DIM, np.nan), v2, "u1", text_hash("a"))])
        assert not store.object_path(k1_v2).exists()


def test_file_hash_cached_by_stat(tmp_path):
    media = tmp_path / "clip.bin"
    media.write_bytes(os.urandom(10_000))
    with FeatureStore(tmp_path / "store") as store:
        h = store.file_hash(media)
        assert h == store.file_hash(media)
        media.write_bytes(os.urandom(10_000))  # same size, new content and mtime
        os.utime(media, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        h2 = store.file_hash(media)
        assert h2 != h
        st = media.stat()
        media.write_bytes(os.urandom(10_000))  # same size and, restored, same mtime: ctime differs
        os.utime(media, ns=(st.st_atime_ns, st.st_mtime_ns))
        h3 = store.file_hash(media)
        assert h3 not in (h, h2)
        with pytest.raises(FileNotFoundError):
            store.file_hash(tmp_path / "nope.mp4")
    with FeatureStore(tmp_path / "store", create=False, read_only=True) as again:
        assert again.file_hash(media) == h3  # remembered in the index
    with sqlite3.connect(tmp_path / "store" / "index.sqlite") as db:  # an index from before it
        db.execute("DROP TABLE file_digests")
    with FeatureStore(tmp_path / "store", create=False, read_only=True) as old:
        assert old.file_hash(media) == h3  # hashed, nothing remembered: read-only


def test_status_and_gc(tmp_path):
    v1, v2 = _spec("1"), _spec("2")
    texts = {f"u{i}": f"text {i}" for i in range(4)}
    with FeatureStore(tmp_path) as store:
        keys1 = {u: make_key(text_hash(t), None, None, v1.config_hash()) for u, t in texts.items()}
        store.put_many(
            [Entry(k, _vector(k), v1, u, text_hash(texts[u])) for u, k in list(keys1.items())[:3]]
        )
        counts = store.status([(u, "toy", k) for u, k in keys1.items()] + [("u9", "toy", None)])
        assert counts["toy"].to_dict() == {
            "cached": 3,
            "missing": 1,
            "stale": 0,
            "invalid": 1,
            "damaged": 0,
        }
        keys2 = {u: make_key(text_hash(t), None, None, v2.config_hash()) for u, t in texts.items()}
        counts = store.status([(u, "toy", k) for u, k in keys2.items()])
        assert counts["toy"].to_dict() == {
            "cached": 0,
            "missing": 1,
            "stale": 3,
            "invalid": 0,
            "damaged": 0,
        }

        size = sum(store.object_path(k).stat().st_size for k in list(keys1.values())[:3])
        dry = store.gc(keep={keys1["u0"]}, dry_run=True)
        assert (dry.objects_deleted, dry.rows_deleted) == (2, 2)
        assert store.present(keys1.values()) == set(list(keys1.values())[:3])  # dry run kept all
        report = store.gc(keep={keys1["u0"]})
        assert (report.objects_deleted, report.rows_deleted, report.kept) == (2, 2, 1)
        assert report.bytes_freed == size - store.object_path(keys1["u0"]).stat().st_size
        assert store.present(keys1.values()) == {keys1["u0"]}
        assert len(store.entries()) == 1


def test_index_readable_with_plain_sqlite_and_cli(tmp_path):
    spec = _spec()
    with FeatureStore(tmp_path) as store:
        k = make_key(text_hash("a"), None, None, spec.config_hash())
        store.put_many([Entry(k, _vector(k), spec, "u1", text_hash("a"), "", None, None)])
    db = sqlite3.connect(tmp_path / INDEX_FILE)
    row = db.execute(
        "SELECT extractor, version, config_hash, weights, dim, utterance_id, host FROM entries"
    ).fetchone()
    assert row[:6] == ("toy", "1", spec.config_hash(), "none", DIM, "u1") and row[6]
    assert json.loads(db.execute("SELECT spec_json FROM entries").fetchone()[0])["config"] == {
        "pool": "mean"
    }
    db.close()
    # `erc store list` reads the index and needs neither torch nor prefect.
    probe = "import sys; from pipeline.cli import main; main(['store', 'list', '--store', sys.argv[1]]); "
    probe += "assert 'torch' not in sys.modules and 'prefect' not in sys.modules"
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], cwd=ROOT, check=True, capture_output=True,
        text=True,
    ).stdout  # fmt: skip
    assert k in out and "toy" in out


def test_sigkill_mid_run_then_resume_is_identical(tmp_path):
    n = 40
    reference = tmp_path / "reference"
    assert _run_worker(reference, n).wait(timeout=60) == 0
    store_dir = tmp_path / "killed"
    proc = _run_worker(store_dir, n, delay=0.02)
    for _ in range(5):  # let it write a few entries, then kill it without warning
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    written = len(_snapshot(store_dir))
    assert 5 <= written < n
    # Every object file that exists is complete and loadable (temp files are never .safetensors).
    for path in (store_dir / "objects").rglob("*.safetensors"):
        with FeatureStore(store_dir) as store:
            store.get(path.stem)
    resumed = _run_worker(store_dir, n)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert len(out.split()) == n - written  # only the rest was computed
    assert _snapshot(store_dir) == _snapshot(reference)


def test_two_concurrent_writer_processes(tmp_path):
    n = 60
    store_dir = tmp_path / "shared"
    procs = [_run_worker(store_dir, n), _run_worker(store_dir, n)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    reference = tmp_path / "reference"
    assert _run_worker(reference, n).wait(timeout=60) == 0
    assert _snapshot(store_dir) == _snapshot(reference)
    db = sqlite3.connect(store_dir / INDEX_FILE)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == n
    db.close()
