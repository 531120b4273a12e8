"""sha256 of files, remembered by each file's stat so that an unchanged file is read once.

    sha256_file(path) -> hex                  sha256 of the file's bytes, streamed
    update_from_file(digest, path)            feed a file's bytes into a running hash
    stat_key(path) -> [size, mtime_ns, ctime_ns, inode]
    file_sha256(path, memo) -> hex            sha256_file, remembered in ``memo`` under stat_key
    MemoryDigests()                           a memo for one process (a dict)

The one place that decides when a remembered digest still holds: the stat key. Size and mtime
alone are not enough: a rewrite that restores both (``touch -r``, a copy that keeps times) still
changes ctime, which cannot be set back, and a file replaced by a rename has a new inode. So a
changed or damaged file is never served the digest of its old bytes.

A memo is anything with ``recall(path, key) -> hex | None`` and ``remember(path, key, hex)``: the
feature store keeps one in its SQLite index, speech recognition one in a JSON file.

Here rather than in pipeline/ because extractors/ hash their weights too and cannot import
pipeline; pipeline/files.py re-exports these names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol

CHUNK = 1 << 20  # bytes read at a time (bounded memory on big videos and weights)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, streamed."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def update_from_file(digest: Any, path: str | Path) -> None:
    """Feed the file's bytes into ``digest`` (a hashlib object: a hash over several files),
    streamed."""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)


def stat_key(path: str | Path) -> list[int]:
    """[size, mtime_ns, ctime_ns, inode]: equal only while the file has not been changed
    (a list: it round-trips through JSON unchanged). FileNotFoundError names the path."""
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class DigestMemo(Protocol):
    def recall(self, path: str, key: list[int]) -> str | None: ...

    def remember(self, path: str, key: list[int], sha256: str) -> None: ...


class MemoryDigests:
    """A DigestMemo that lives as long as the process."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, tuple[int, ...]], str] = {}

    def recall(self, path: str, key: list[int]) -> str | None:
        return self._known.get((path, tuple(key)))

    def remember(self, path: str, key: list[int], sha256: str) -> None:
        self._known[(path, tuple(key))] = sha256


def file_sha256(path: str | Path, memo: DigestMemo) -> str:
    """sha256 of the file at ``path`` (resolved), from ``memo`` while its stat_key is unchanged,
    else read and remembered."""
    path = Path(path).resolve()
    key = stat_key(path)
    known = memo.recall(str(path), key)
    if known is not None:
        return known
    sha = sha256_file(path)
    memo.remember(str(path), key, sha)
    return sha
