"""Store damage, for real: truncated and overwritten entries, a damaged index, a read-only store,
a full disk, and two concurrent extractions.

Real extractors (the offline preset's text and audio: packaged all-mpnet-base-v2, openSMILE
eGeMAPS; the CLI's default preset, so `erc status` finds their entries) on a generated 6 s voice
wav, so recomputed entries can be compared bit for bit with the originals. The read-only store is a real
read-only bind mount and the full disk a real 128 KiB tmpfs (both need mount rights: root here;
they skip where mount fails).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main as cli_main
from pipeline.dataset.manifest import write_manifest
from pipeline.features.extract import build_featureset, extract_features, manifest_tasks
from pipeline.features.featureset import FeatureSet
from pipeline.features.store import (
    ENTRY_FORMAT,
    INDEX_FILE,
    FeatureStore,
    StoreReadOnlyError,
    StoreWriteError,
)

ROOT = Path(__file__).resolve().parents[2]
N_UTT = 6


@pytest.fixture(scope="module")
def extractors():
    from pipeline.features.extract import load_extractors

    return load_extractors("offline", "ta")


@pytest.fixture(scope="session")
def voice_manifest(voice, write_wav):
    """voice_manifest(root, n, seconds=6.0) -> root/manifest.csv: one dialogue of n equal
    utterances over root/voice.wav, the generated voice of that length (written once per root)."""

    def make(root: Path, n: int, seconds: float = 6.0) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "voice.wav").is_file():
            write_wav(root / "voice.wav", voice(seconds))
        span = seconds / n
        rows = [
            ("d1", f"u{i}", "AB"[i % 2], i * span, (i + 1) * span, f"Sentence number {i}.", "neu")
            for i in range(n)
        ]
        cols = ["dialogue_id", "utterance_id", "speaker", "start_s", "end_s", "text", "label"]
        df = pd.DataFrame(rows, columns=cols)
        df["audio_path"] = "voice.wav"
        return write_manifest(df, root / "manifest.csv")

    return make


@pytest.fixture(scope="module")
def clean(tmp_path_factory, extractors, voice_manifest):
    """A fully extracted store (kept pristine: tests copy it) and its manifest."""
    root = tmp_path_factory.mktemp("damage")
    manifest = voice_manifest(root / "data", N_UTT)
    s = extract_features(
        manifest, root / "store", modalities="ta", extractors=extractors, progress=False, workers=1
    )
    assert (s.done, s.failed) == (2 * N_UTT, 0)
    return manifest, root / "store"


@pytest.fixture
def store(clean, tmp_path):
    import shutil

    manifest, src = clean
    shutil.copytree(src, tmp_path / "store")
    return manifest, tmp_path / "store"


def _keys(manifest, root, extractors):
    with FeatureStore(root, create=False) as st:
        tasks, _ = manifest_tasks(manifest, st, "offline", "ta", 2.0, extractors)
    return {(t.utterance_id, t.modality): t.key for t in tasks}


def _vectors(root: Path) -> dict[str, bytes]:
    with FeatureStore(root, create=False) as st:
        return {e["key"]: st.get(e["key"]).tobytes() for e in st.entries()}


def _damage(root: Path, keys) -> tuple[Path, Path]:
    """Truncate u1's audio entry; write NaNs over the end of u2's text payload (same size)."""
    with FeatureStore(root, create=False) as st:
        truncated, nan = st.object_path(keys["u1", "a"]), st.object_path(keys["u2", "t"])
    truncated.write_bytes(truncated.read_bytes()[:-100])
    blob = bytearray(nan.read_bytes())
    blob[-16:] = np.full(4, np.nan, np.float32).tobytes()
    nan.write_bytes(bytes(blob))
    return truncated, nan


def test_entries_describe_themselves(clean, extractors):
    manifest, root = clean
    with FeatureStore(root, create=False) as st:
        rows = {e["key"]: e for e in st.entries()}
        from pipeline.features.store import check, index_row

        for key, row in rows.items():
            checked = check(st.object_path(key))
            assert checked.meta["format"] == ENTRY_FORMAT and len(checked.meta["sha256"]) == 64
            rebuilt, refs = index_row(checked)
            assert rebuilt == row  # every index column can be recovered from the file alone
            assert refs == [row["utterance_id"]]


def test_an_entry_of_an_earlier_format_is_damaged_not_trusted(tmp_path):
    from safetensors.numpy import save

    from extractors.base import ExtractorSpec
    from pipeline.features.store import Entry, rebuild_index

    spec = ExtractorSpec("toy", "1", "text", 4, "", "none", "", {})
    key, x = "ab" + "1" * 62, np.arange(4, dtype=np.float32)
    with FeatureStore(tmp_path / "s") as st:
        st.put_many([Entry(key, x, spec, "u0", "h0")])
        old = save(
            {"x": x}, metadata={"status": "ok", "key": key, "extractor": "toy", "input": "h0"}
        )
        st.object_path(key).write_bytes(old)  # no format, no payload hash: cannot be verified
        st._db.execute("UPDATE entries SET nbytes = ?", (len(old),))
        assert st.present([key]) == set()  # read as missing: recomputed, never served
    report = rebuild_index(tmp_path / "s")
    assert report.entries == 0 and "format None, not ada2i-erc.store-entry/2" in report.damaged[0]


def test_damaged_entries_status_extract_featureset_gc(store, extractors, capsys, caplog, tmp_path):
    manifest, root = store
    keys = _keys(manifest, root, extractors)
    before = _vectors(root)
    truncated, nan = _damage(root, keys)
    common = ["--manifest", str(manifest), "--store", str(root), "--modalities", "ta"]

    # status: the size check sees the truncation; --verify reads every file and sees both
    assert cli_main(["status", *common]) == 0
    out = capsys.readouterr().out
    assert re.search(r"opensmile\S*\s+5\s+0\s+0\s+0\s+1", out), out
    assert f"damaged: {truncated}: truncated" in out
    assert cli_main(["status", *common, "--verify"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"sbert\S*\s+5\s+0\s+0\s+0\s+1", out), out
    assert f"damaged: {nan}: its payload does not match its recorded sha256" in out
    assert cli_main(["store", "verify", "--store", str(root)]) == 1
    assert f"{nan}" in capsys.readouterr().out

    # a FeatureSet read from the damaged store: those two utterances lack the modality, named
    with caplog.at_level(logging.WARNING):
        fs = FeatureSet.load(
            build_featureset(manifest, root, "offline", "ta", tmp_path / "fs0", extractors)
        )
    assert fs.present["a"].tolist() == [True, False, True, True, True, True]
    assert fs.present["t"].tolist() == [True, True, False, True, True, True]
    assert str(truncated) in caplog.text and str(nan) in caplog.text

    # extract: the two damaged entries are recomputed, and said so; the rest is untouched
    caplog.clear()
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "objects").rglob("*.safetensors")}
    with caplog.at_level(logging.WARNING):
        s = extract_features(
            manifest, root, modalities="ta", extractors=extractors, progress=False, workers=1
        )
    assert (s.done, s.cached, s.failed) == (2, 2 * N_UTT - 2, 0)
    assert f"{truncated} is damaged: truncated" in caplog.text
    assert f"{nan} is damaged" in caplog.text and "extraction recomputes it" in caplog.text
    assert _vectors(root) == before  # recomputed bit for bit
    changed = {p for p, t in mtimes.items() if p.stat().st_mtime_ns != t}
    assert changed == {truncated, nan}

    # gc deletes damaged entries (and only those), naming them
    _damage(root, keys)
    assert cli_main(["gc", "--store", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"damaged: {truncated}" in out and f"damaged: {nan}" in out
    assert "deleted 2 objects and 2 index rows" in out and "(2 of them damaged)" in out
    with FeatureStore(root, create=False) as st:
        assert st.verify() == (2 * N_UTT - 2, [])
        assert len(st.entries()) == 2 * N_UTT - 2


def test_damaged_index_says_how_to_rebuild_and_rebuild_restores_it(store, extractors, capsys):
    manifest, root = store
    common = ["--manifest", str(manifest), "--store", str(root), "--modalities", "ta"]
    assert cli_main(["status", *common]) == 0
    good = capsys.readouterr().out
    index = root / INDEX_FILE
    rng = np.random.default_rng(0)
    index.write_bytes(rng.bytes(index.stat().st_size))  # random bytes over the whole index
    assert cli_main(["status", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line, no traceback
    assert f"{index}: the store index is damaged" in err
    assert f"erc store rebuild-index --store {root}" in err

    assert cli_main(["store", "rebuild-index", "--store", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{2 * N_UTT} entries, 0 damaged" in out
    assert "old index kept as" in out and list(root.glob(f"{INDEX_FILE}.old-*"))
    assert cli_main(["status", *common]) == 0
    assert capsys.readouterr().out == good  # same counts as before the damage
    s = extract_features(
        manifest, root, modalities="ta", extractors=extractors, progress=False, workers=1
    )
    assert (s.done, s.cached) == (0, 2 * N_UTT)  # nothing recomputed


def test_a_deleted_index_is_named_then_rebuilt_not_recomputed(store, extractors, capsys, caplog):
    manifest, root = store
    common = ["--manifest", str(manifest), "--store", str(root), "--modalities", "ta"]
    (root / INDEX_FILE).unlink()
    assert cli_main(["status", *common]) == 2
    err = capsys.readouterr().err
    assert f"its {INDEX_FILE} is missing but objects/ holds entries" in err
    assert f"erc store rebuild-index --store {root}" in err
    with caplog.at_level("WARNING"):
        s = extract_features(
            manifest, root, modalities="ta", extractors=extractors, progress=False, workers=1
        )
    assert f"rebuilt it from {2 * N_UTT} entries (0 damaged" in caplog.text  # named, not silent
    assert (s.done, s.cached) == (0, 2 * N_UTT)  # was: every entry recomputed in silence


def test_random_bytes_inside_the_index_pages(store, extractors):
    manifest, root = store
    index = root / INDEX_FILE
    blob = bytearray(index.read_bytes())
    assert len(blob) >= 3 * 4096
    blob[4096 : 3 * 4096] = np.random.default_rng(1).bytes(2 * 4096)  # pages 2-3, header intact
    index.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="rebuild-index") as err, FeatureStore(root) as st:
        st.entries()
    assert str(index) in str(err.value)


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def read_only_view(store, tmp_path):
    """The store seen through a read-only bind mount (EROFS for root too, unlike chmod)."""
    manifest, root = store
    view = tmp_path / "ro"
    view.mkdir()
    if not _mount("--bind", str(root), str(view)):
        pytest.skip("cannot bind-mount here")
    try:
        if not _mount("-o", "remount,ro,bind", str(view)):
            pytest.skip("cannot remount read-only here")
        yield manifest, root, view
    finally:
        subprocess.run(["umount", str(view)], check=False)


def test_read_only_store_reads_and_refuses_writes(read_only_view, extractors, capsys, tmp_path):
    manifest, root, view = read_only_view
    with pytest.raises(OSError):
        (view / "probe").write_text("x")  # it really is read-only
    common = ["--manifest", str(manifest), "--store", str(view), "--modalities", "ta"]
    assert cli_main(["status", *common, "--verify"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"sbert\S*\s+6\s+0\s+0\s+0\s+0", out) and "read-only store" in out
    fs = build_featureset(manifest, view, "offline", "ta", tmp_path / "fs", extractors)
    assert FeatureSet.load(fs).present["a"].all()
    assert cli_main(["store", "verify", "--store", str(view)]) == 0
    capsys.readouterr()
    with pytest.raises(StoreReadOnlyError, match=f"the store {view} is read-only"):
        extract_features(manifest, view, modalities="ta", extractors=extractors, progress=False)
    assert cli_main(["gc", "--store", str(view)]) == 2
    assert f"the store {view} is read-only" in capsys.readouterr().err
    with FeatureStore(view, create=False) as st:  # a read-only open of a writable path, too
        assert st.read_only


@pytest.fixture
def tiny_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)):
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_disk_full_names_the_path_and_leaves_nothing_half_written(
    tiny_disk, extractors, voice_manifest, tmp_path, caplog
):
    manifest = voice_manifest(tmp_path / "data", 120, 30.0)  # 120 audio entries: more than fit
    root = tiny_disk / "store"
    with caplog.at_level(logging.INFO), pytest.raises(ValueError) as err:
        extract_features(
            manifest, root, modalities="a", extractors=extractors, progress=False, workers=1
        )
    msg = str(err.value)
    assert re.fullmatch(
        rf"no space left on device writing {root}/(objects/../[0-9a-f]{{64}}\.safetensors|index\.sqlite)",
        msg,
    ), msg
    assert "unexpected decoding error" not in caplog.text
    assert not list(root.rglob("*.part"))  # no temp file left behind
    with FeatureStore(root, create=False) as st:  # (reading needs no space)
        stored = st.present(k for k in _keys(manifest, root, extractors).values())
        sound, damaged = st.verify()
    assert damaged == [] and 0 < len(stored) <= sound < 120
    # Space again: the rerun computes only what is missing.
    assert _mount("-o", "remount,size=4m", str(tiny_disk))
    s = extract_features(
        manifest, root, modalities="a", extractors=extractors, progress=False, workers=1
    )
    assert (s.done, s.cached, s.failed) == (120 - len(stored), len(stored), 0)


def _fill(disk_file: Path) -> None:
    with contextlib.suppress(OSError), open(disk_file, "wb") as f:
        while True:  # the rest of the disk
            f.write(b"\0" * 4096)
            f.flush()


def test_a_full_disk_cannot_open_the_index_and_says_so(
    tiny_disk, extractors, voice_manifest, tmp_path
):
    """With no room left at all SQLite fails its journal files as a "disk I/O error": that was
    reported as a damaged index, with advice to rebuild it."""
    root = tiny_disk / "store"
    extract_features(
        voice_manifest(tmp_path / "first", 2, 4.0), root, modalities="a",
        extractors=extractors, progress=False,
    )  # fmt: skip
    _fill(tiny_disk / "filler")
    with pytest.raises(
        StoreWriteError, match=f"no space left on device writing {root}/index.sqlite"
    ):
        extract_features(
            voice_manifest(tmp_path / "data", 4, 4.0), root, modalities="a",
            extractors=extractors, progress=False,
        )  # fmt: skip


class _FillsTheDiskAfterItsFirstBatch:
    """The real extractor, and after its first batch the disk is full (another program wrote)."""

    def __init__(self, real, filler: Path):
        self.real, self.filler, self.calls = real, filler, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __call__(self, items):
        out = self.real(items)
        self.calls += 1
        if self.calls == 1:
            _fill(self.filler)
        return out


@pytest.mark.timeout(120)  # the rerun below used to wait forever on the first run's claims
def test_a_disk_full_while_decoding_stops_the_run_and_the_rerun_resumes(
    tiny_disk, extractors, voice_manifest, tmp_path, caplog
):
    """The disk fills during the run (another program wrote): the run stops naming the index, and
    the claims it could not release (no room to write that either) stayed under this live
    process's pid, so a rerun in the same process (a Prefect worker, a notebook) waited on them
    forever; it now takes them over and resumes."""
    root = tiny_disk / "store"
    manifest = voice_manifest(tmp_path / "data", 24, 12.0)  # 3 batches of 8 from one file
    filler = tiny_disk / "filler"
    filling = {"a": [_FillsTheDiskAfterItsFirstBatch(extractors["a"][0], filler)]}
    with caplog.at_level(logging.INFO), pytest.raises(ValueError, match="no space left on device"):
        extract_features(
            manifest, root, modalities="a", extractors=filling, progress=False, workers=1
        )
    assert "decoding error" not in caplog.text
    filler.unlink()
    assert _mount("-o", "remount,size=4m", str(tiny_disk))
    s = extract_features(
        manifest, root, modalities="a", extractors=extractors, progress=False, workers=1
    )
    assert s.failed == 0 and s.done + s.cached == 24


WORKER = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from pipeline.features.extract import extract_features
s = extract_features(sys.argv[1], sys.argv[2], modalities="ta", progress=False, workers=1)
print("RESULT", s.done, s.cached, s.failed, flush=True)
"""


def test_claims_between_writers(tmp_path):
    """Claims as two writers see them: held, stored, released, and taken over from a dead pid."""
    from extractors.base import ExtractorSpec
    from pipeline.features.store import Entry

    spec = ExtractorSpec("toy", "1", "text", 4, "", "none", "", {})
    keys = [f"{i:02x}" + "0" * 62 for i in range(4)]
    a, b = FeatureStore(tmp_path / "s"), FeatureStore(tmp_path / "s")
    with a, b:
        assert a.claim(keys[:3]) == {}
        assert b.claim(keys) == {k: a._owner for k in keys[:3]}  # b now holds keys[3]
        a.put_many([Entry(keys[0], np.ones(4, np.float32), spec, "u0", "h")])
        a.release([keys[1]])  # a failed on it
        assert b.claim(keys[:3]) == {keys[0]: "stored", keys[2]: a._owner}
        assert b.claims_alive(keys) == {keys[2]}  # its own claims (1, 3) do not count
        assert a.claims_alive(keys) == {keys[1], keys[3]}
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        b._db.execute("UPDATE claims SET pid = ? WHERE key = ?", (int(dead.stdout), keys[3]))
        assert a.claim([keys[3]]) == {}  # a dead process's claim is taken over


def test_claims_left_by_a_closed_writer_of_this_process_are_taken_over(tmp_path):
    """A writer that could not release its claims (its index could not be written: a full disk)
    and was closed left them under this process's pid, which is alive: the next extraction in the
    same process (a Prefect worker, a notebook) waited on them forever. A closed writer's claims
    are dead; an open one's in this process are not."""
    keys = [f"{i:02x}" + "0" * 62 for i in range(3)]
    a = FeatureStore(tmp_path / "s")
    assert a.claim(keys) == {}
    a.close()  # without releasing: as after a failed release
    with FeatureStore(tmp_path / "s") as b, FeatureStore(tmp_path / "s") as c:
        assert b.claims_alive(keys) == set()
        assert b.claim(keys) == {}  # taken over at once
        assert c.claim(keys) == {k: b._owner for k in keys}  # b is open: its claims hold
        assert c.claims_alive(keys) == set(keys)


@pytest.mark.slow
def test_two_concurrent_extractions_share_the_work(voice_manifest, tmp_path):
    manifest = voice_manifest(tmp_path / "data", 24)
    root = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(manifest), str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append([int(v) for v in out.split("RESULT")[1].split()])
    done = [r[0] for r in results]
    assert sum(done) == 48, results  # every entry computed exactly once between the two
    assert all(r[2] == 0 for r in results)
    with FeatureStore(root, create=False) as st:
        assert st.verify() == (48, [])
        assert st._db.execute("SELECT count(*) FROM claims").fetchone()[0] == 0


@pytest.mark.slow
def test_sigterm_during_extract_says_so_and_leaves_no_partial_file(voice_manifest, tmp_path):
    """A `kill` mid-extraction: exit 143 with a message, no temp file left, and a rerun resumes."""
    manifest = voice_manifest(tmp_path / "data", n=100, seconds=100.0)
    store = tmp_path / "store"
    cmd = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]
    args = ["extract", "--manifest", str(manifest), "--store", str(store), "--preset", "tiny",
            "--modalities", "a", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen([*cmd, *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(store.glob("objects/*/*.safetensors")):  # wait for the first entries
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    assert "erc extract: interrupted (SIGTERM); finished work is kept" in err
    assert "Traceback" not in err
    left = [p for p in store.rglob("*") if p.name.startswith(".") and p.is_file()]
    assert left == [], left  # no .tmp-*.part entry, no hidden temp file
    done = len(list(store.glob("objects/*/*.safetensors")))
    assert 0 < done < 200  # two extractors per utterance
    rerun = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"cached {done}" in rerun.stdout + rerun.stderr
