"""Writing files atomically, hashing them, and plain JSON of numpy values: one implementation each.

    atomic_write(path, write)        write(tmp) into a temp file beside ``path``, fsync, rename
    atomic_write_bytes(path, data)   the same for bytes in memory
    atomic_write_text(path, text)    the same for text (UTF-8, newlines as given)
    atomic_symlink(link, target)     point ``link`` at ``target``, replacing an old link at once
    jsonable(value)                  numpy scalars/arrays, Paths -> plain JSON values
    sha256_file, stat_key, file_sha256, MemoryDigests
                                     file hashing, remembered by stat (extractors/file_digest.py)

A reader sees the old file, the new one, or none, never a partial one; a crash or an error at any
point leaves no temp file behind (it is removed before the error propagates). The temp file lives
in the same folder so the rename stays on one filesystem (os.replace across filesystems is not
atomic). It gets the ordinary umask mode (0o666 & ~umask), as an open() would: mkstemp would make
it 0600 and the rename keeps that, while checkpoints, manifests and feature sets are meant to be
copied to other machines and users.

A shared helper (pipeline/ top level): it imports no stage. File hashing lives in extractors/
(which cannot import pipeline, and hashes weights) and is re-exported here for pipeline's stages.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from extractors.file_digest import (  # re-exported: pipeline's stages hash files through here
    MemoryDigests,  # noqa: F401
    file_sha256,  # noqa: F401
    sha256_file,  # noqa: F401
    stat_key,  # noqa: F401
)


def atomic_write(
    path: str | Path, write: Callable[[str], object], *, prefix: str = ".", suffix: str = ".tmp"
) -> None:
    """``write(tmp)`` writes the content to the temp path it is given (str, for writers such as
    safetensors' save_file or pandas' to_csv); then fsync and rename over ``path``. The temp name
    is ``<prefix><name>.<pid>.<random><suffix>``: a hidden name by default, the feature store
    passes its own prefix so its scans skip unfinished files."""
    path = Path(path)
    tmp = path.parent / f"{prefix}{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = tmp.stat().st_mode & 0o777  # 0o666 & ~umask
        write(str(tmp))
        os.chmod(tmp, mode)  # a writer that recreates the file (safetensors' save_file: 0600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, **names: str) -> None:
    """``data`` as the whole content of ``path``, atomically (names: atomic_write's prefix and
    suffix)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), **names)


def atomic_write_text(path: str | Path, text: str) -> None:
    """``text`` as UTF-8, atomically; newlines are written as given (no translation), so a CSV
    written with csv's "\\r\\n" keeps it."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_symlink(link: str | Path, target: str | Path) -> None:
    """Make ``link`` a symlink to ``target`` (stored as given: pass a relative path for a link
    that survives moving the folder); an existing link is replaced in one rename, so a reader
    never finds the name missing."""
    link = Path(link)
    tmp = link.parent / f".{link.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.symlink_to(target, target_is_directory=Path(link.parent, target).is_dir())
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON values: numpy scalars and arrays -> numbers and lists, Paths ->
    str, anything else without a JSON form -> its str; nested dicts and lists throughout."""
    return json.loads(json.dumps(value, default=_to_json))


def _to_json(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
