"""The one stat-keyed file hash: a changed file is never served its old digest."""

from __future__ import annotations

import hashlib
import os

import pytest

from extractors.file_digest import MemoryDigests, file_sha256, sha256_file, stat_key


class CountingMemo(MemoryDigests):
    def __init__(self) -> None:
        super().__init__()
        self.remembered = 0

    def remember(self, path: str, key: list[int], sha256: str) -> None:
        self.remembered += 1
        super().remember(path, key, sha256)


def test_file_sha256_reads_a_file_once_until_it_changes(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"abc" * 1000)
    memo = CountingMemo()
    want = hashlib.sha256(b"abc" * 1000).hexdigest()
    assert file_sha256(f, memo) == want == sha256_file(f)
    assert file_sha256(tmp_path / "." / "weights.bin", memo) == want  # one resolved path
    assert memo.remembered == 1
    st = f.stat()
    f.write_bytes(b"abd" * 1000)  # same size; size and mtime restored: only ctime tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_sha256(f, memo) == hashlib.sha256(b"abd" * 1000).hexdigest()
    assert memo.remembered == 2
    with pytest.raises(FileNotFoundError, match="nope"):
        file_sha256(tmp_path / "nope", memo)


def test_stat_key_survives_json(tmp_path):
    import json

    f = tmp_path / "x"
    f.write_bytes(b"1")
    key = stat_key(f)
    assert json.loads(json.dumps(key)) == key and key[0] == 1 and len(key) == 4
