"""pipeline/files.py: the one atomic write and file sha256 every stage uses."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from pipeline.files import (
    atomic_symlink,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    jsonable,
    sha256_file,
)


def test_atomic_write_replaces_the_file_with_the_umask_mode(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    old_umask = os.umask(0o022)
    try:
        atomic_write_text(path, "new\r\nline")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new\r\nline"  # newlines as given
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def fail(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_temp_names_take_the_callers_prefix_and_suffix(tmp_path):
    seen = []
    atomic_write(tmp_path / "k.safetensors", seen.append, prefix=".tmp-", suffix=".part")
    name = os.path.basename(seen[0])
    assert name.startswith(".tmp-k.safetensors.") and name.endswith(".part")
    atomic_write_bytes(tmp_path / "b", b"\x00\x01", prefix=".tmp-")
    assert (tmp_path / "b").read_bytes() == b"\x00\x01"


def test_atomic_symlink_replaces_an_old_link(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    link = tmp_path / "best"
    atomic_symlink(link, "one")
    atomic_symlink(link, "two")
    assert os.readlink(link) == "two" and link.resolve() == (tmp_path / "two").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "one", "two"]


def test_sha256_file_is_the_sha256_of_the_bytes(tmp_path):
    data = os.urandom(3 << 20)  # spans several read chunks
    path = tmp_path / "x"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_jsonable_turns_numpy_and_paths_into_plain_json():
    value = {
        "n": np.int64(3),
        "acc": np.float32(0.5),
        "confusion": np.array([[1, 0], [2, 3]]),
        "path": Path("/runs/a"),
        "nested": [np.bool_(True), {"x": np.float64(1.25)}],
    }
    out = jsonable(value)
    assert out == {
        "n": 3,
        "acc": 0.5,
        "confusion": [[1, 0], [2, 3]],
        "path": "/runs/a",
        "nested": [True, {"x": 1.25}],
    }
    assert type(out["n"]) is int and type(out["acc"]) is float
