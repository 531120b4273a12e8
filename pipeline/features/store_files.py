"""The feature store's entry files, without its index: read, check, write atomically.

``EntryFiles`` is what every store handle shares: the content-addressed path of a key, reading an
entry (checked: a damaged file is never read as good), writing one (temp file in the same folder,
fsync, rename), and the row of provenance each entry file carries (pipeline/features/store_entry.py).

``UnindexedWriter`` is a store handle that never opens index.sqlite: for extraction on hosts that
cannot share the index (SQLite over a network filesystem is unsafe: its locks are not reliable
there). It looks entries up by their files, hashes inputs without the index's hash cache, writes
entry files only, and does no claiming; the one process that keeps the index then adds the new
entries with ``FeatureStore.ingest`` (docs/architecture.md, "The feature store across machines").
Two writers computing one key write identical payloads, and the rename makes one of them the file.
"""

from __future__ import annotations

import errno
import importlib.metadata
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.features import store_entry
from pipeline.features import store_index as ix
from pipeline.features.store_entry import DamagedEntryError
from pipeline.features.store_index import (
    OBJECTS_DIR,
    TMP_PREFIX,
    StoreReadOnlyError,
    StoreWriteError,
)
from pipeline.files import MemoryDigests, atomic_write_bytes, file_sha256

log = logging.getLogger(__name__)


def _pipeline_version() -> str:
    try:
        return importlib.metadata.version("ada2i-erc")
    except importlib.metadata.PackageNotFoundError:  # running from a plain checkout
        return "unknown"


PIPELINE_VERSION = _pipeline_version()


@dataclass(frozen=True)
class Entry:
    """One vector to store and where it came from. ``vector`` None = extractor returned None."""

    key: str
    vector: np.ndarray | None  # float32 [dim] | None
    spec: Any  # extractors.base.ExtractorSpec (duck-typed: name, version, kind, dim, ...)
    utterance_id: str
    input_hash: str
    input_path: str = ""
    segment: tuple[float, float | None] | None = None
    fps: float | None = None
    refs: tuple[str, ...] = ()  # every utterance id that resolved to this key (for 'stale')


class EntryFiles:
    """The entry files under ``root``/objects: what a store handle does without its index."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.damaged: list[tuple[Path, str]] = []  # found by present/get in this session
        self.read_only = False
        self._host = socket.gethostname()
        self._owner = f"{self._host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def object_path(self, key: str) -> Path:
        return self.root / OBJECTS_DIR / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> np.ndarray | None:
        """The stored vector float32 [dim], or None for a cached "extractor returned None".

        KeyError when absent; DamagedEntryError (a KeyError) naming the file when it fails its
        checks, so a reader that treats "absent" as "not cached" never reads damage as good.
        """
        path = self.object_path(key)
        try:
            return store_entry.check(path, key).vector
        except FileNotFoundError:
            raise KeyError(f"{key}: not in feature store {self.root}") from None
        except DamagedEntryError as exc:
            self._note_damaged(exc)
            raise

    def verify(self) -> tuple[int, list[str]]:
        """Check every entry file: (number sound, ["path: problem" for each damaged one])."""
        sound, damaged = 0, []
        for path in self._iter_objects():
            if path.name.startswith(TMP_PREFIX):
                continue
            try:
                store_entry.check(path)
                sound += 1
            except DamagedEntryError as exc:
                damaged.append(f"{path}: {exc.problem}")
            except FileNotFoundError:  # deleted meanwhile (gc, a rewrite)
                continue
        return sound, damaged

    def _file_sound(self, key: str) -> bool:
        """The key's entry file exists and passes its checks (a damaged one is noted)."""
        try:
            store_entry.check(self.object_path(key), key)
        except FileNotFoundError:
            return False
        except DamagedEntryError as exc:
            self._note_damaged(exc)
            return False
        return True

    def _note_damaged(self, exc: DamagedEntryError) -> None:
        if (exc.path, exc.problem) in self.damaged:  # said once per session
            return
        self.damaged.append((exc.path, exc.problem))
        log.warning("%s; treated as not cached: extraction recomputes it, gc deletes it", exc)

    def _iter_objects(self) -> Iterator[Path]:
        return ix.iter_objects(self.root)

    # ---- write -------------------------------------------------------------------------------

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise StoreReadOnlyError(f"the store {self.root} is read-only: cannot write {what}")

    def _row(self, e: Entry, now: str) -> dict[str, Any]:
        spec = e.spec
        seg = e.segment or (None, None)
        return {
            "key": e.key,
            "status": "missing" if e.vector is None else "ok",
            "extractor": spec.name,
            "version": spec.version,
            "config_hash": spec.config_hash(),
            "kind": spec.kind,
            "model": spec.model,
            "weights": spec.weights,
            "weights_hash": spec.weights_hash,
            "spec_json": json.dumps(spec.to_dict(), sort_keys=True),
            "dim": spec.dim,
            "utterance_id": e.utterance_id,
            "input_path": e.input_path,
            "input_hash": e.input_hash,
            "start_s": seg[0],
            "end_s": seg[1],
            "fps": e.fps,
            "nbytes": 0,
            "created_at": now,
            "host": self._host,
            "pipeline_version": PIPELINE_VERSION,
        }

    def _write_entries(
        self, entries: Sequence[Entry], written: list | None = None
    ) -> list[tuple[dict[str, Any], list[str]]]:
        """Write each entry file atomically -> its (index row, refs), appended to ``written`` as
        each file lands (so a caller interrupted mid-batch still knows what reached the disk)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        written = [] if written is None else written
        for e in entries:
            row = self._row(e, now)
            refs = list(dict.fromkeys(e.refs or (e.utterance_id,)))
            row["nbytes"] = self._write_object(e, row, refs)
            written.append((row, refs))
        return written

    def _write_object(self, e: Entry, row: dict[str, Any], refs: list[str]) -> int:
        x = None
        if e.vector is not None:
            x = np.asarray(e.vector, dtype=np.float32).reshape(-1)  # [dim]
            if x.shape[0] != e.spec.dim or not np.isfinite(x).all():
                raise ValueError(
                    f"extractor {e.spec.name} returned shape {x.shape} (finite={np.isfinite(x).all()})"
                    f" for utterance {e.utterance_id!r}; expected finite [{e.spec.dim}]"
                )
        blob = store_entry.encode(e.key, x, row, refs)
        path = self.object_path(e.key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # readers see the old file, the new one, or none; TMP_PREFIX: scans skip the temp file
            atomic_write_bytes(path, blob, prefix=TMP_PREFIX, suffix=".part")
        except OSError as exc:
            if exc.errno in ix.FULL_ERRNOS:
                raise StoreWriteError(f"{ix.FULL_ERRNOS[exc.errno]} writing {path}") from exc
            if exc.errno in (errno.EROFS, errno.EACCES):
                raise StoreReadOnlyError(f"the store {self.root} is read-only ({exc})") from exc
            raise
        return len(blob)


class UnindexedWriter(EntryFiles):
    """A store handle for a writer that must not touch index.sqlite (another host).

    Same interface as FeatureStore for extraction (file_hash, present, get, claim, release,
    claims_alive, put_many); ``stored`` lists the keys written, for the index keeper's ingest.
    """

    def __init__(self, root: str | Path):
        super().__init__(root)
        (self.root / OBJECTS_DIR).mkdir(parents=True, exist_ok=True)
        self.stored: list[str] = []
        self._digests = MemoryDigests()  # this process's file-hash memo

    def close(self) -> None:
        pass

    def __enter__(self) -> UnindexedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def file_hash(self, path: str | Path) -> str:
        return file_sha256(path, self._digests)

    def present(self, keys: Iterable[str], verify: bool = True) -> set[str]:
        """The keys whose entry file is sound (always read: there is no index size to compare)."""
        return {k for k in dict.fromkeys(keys) if self._file_sound(k)}

    def put_many(self, entries: Sequence[Entry]) -> None:
        self._writable(f"{len(entries)} entries")
        self._write_entries(entries)
        self.stored.extend(e.key for e in entries)

    # No shared index, no claims: the plan gives each writer its own keys, and a key computed
    # twice is written twice with the same payload.
    def claim(self, keys: Sequence[str]) -> dict[str, str]:
        return {}

    def release(self, keys: Iterable[str]) -> None:
        pass

    def claims_alive(self, keys: Iterable[str]) -> set[str]:
        return set()
