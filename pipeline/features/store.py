"""Content-addressed feature store: one safetensors file per (utterance input, extractor).

Layout under ``root``:
    objects/<2 hex>/<key>.safetensors   tensor "x" float32 [dim]; or "x" [0] with metadata
                                        status="missing" = the extractor returned None (no face,
                                        empty audio): cached as masked, never recomputed. Each file
                                        describes itself (pipeline/features/store_entry.py): its key, a
                                        sha256 of its payload and its full provenance
    index.sqlite                        SQLite (WAL): provenance per entry, file-hash cache, the
                                        last key computed per (utterance, extractor) for `status`,
                                        and claims of keys being computed. Derived data: `erc store
                                        rebuild-index` rebuilds it from the entry files

Key = sha256(input content hash, segment bounds in ms, frame rate, extractor ``config_hash()``), so
unchanged input computes nothing and a changed extractor spec recomputes only that extractor.
Object files are written to a temp file in the same directory, fsynced and renamed, and the index row
is written after the object: a SIGKILL at any point leaves either a complete entry or none (at worst
an orphan object the next run rewrites). Concurrent writers are safe: renames are atomic, identical
keys carry identical payloads, and SQLite serialises index writes (busy timeout). A writer claims the
keys it is about to compute (``claim``), so a second extraction skips them instead of computing
them twice; claims of dead processes are taken over.

Damage is never read as good: ``get`` and ``present`` verify entry files (a damaged one is reported
by path and treated as not cached, so extraction recomputes it), ``gc`` deletes damaged entries, a
damaged index says how to rebuild it, a read-only store can be read, and a full disk is reported as
such with nothing half-written left.

Status counts, gc and listing are in pipeline/features/store_admin.py (FeatureStore inherits them).

Readable without torch or Prefect: ``erc store list --store S``.
Only safetensors, JSON and SQLite on disk: never pickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.features import store_entry
from pipeline.features import store_index as ix
from pipeline.features.store_admin import (  # re-exported: the store's public names live here
    STALE_TMP_SECONDS,  # noqa: F401
    GcReport,  # noqa: F401
    StatusCounts,  # noqa: F401
    StoreAdmin,
)
from pipeline.features.store_entry import COLUMNS, DamagedEntryError
from pipeline.features.store_files import (  # re-exported: the store's public names live here
    PIPELINE_VERSION,  # noqa: F401
    Entry,
    EntryFiles,
    UnindexedWriter,  # noqa: F401
)
from pipeline.features.store_index import (  # re-exported: the store's public names live here
    INDEX_FILE,
    OBJECTS_DIR,
    TMP_PREFIX,
    StoreError,  # noqa: F401
    StoreReadOnlyError,
    StoreWriteError,  # noqa: F401
    guard_index,
    rebuild_index,  # noqa: F401
)
from pipeline.files import file_sha256

log = logging.getLogger(__name__)


def default_store() -> Path:
    """The store commands use when given none (erc import, erc predict): one per user, so
    features extracted once are reused by every later run. ${XDG_CACHE_HOME:-~/.cache}/ada2i-erc/
    store."""
    from extractors.packaged import cache_home

    return cache_home() / "store"


@dataclass
class IngestReport:
    added: int = 0  # entry files given an index row
    already: int = 0  # already indexed
    absent: list[str] = field(default_factory=list)  # keys asked for that have no file
    damaged: list[str] = field(default_factory=list)  # "path: problem": no row given


def text_hash(text: str) -> str:
    """sha256 of the UTF-8 text; raises UnicodeEncodeError for undecodable (surrogate) text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_key(
    input_hash: str,
    segment: tuple[float, float | None] | None,
    fps: float | None,
    config_hash: str,
) -> str:
    """The content address of one entry. Bounds are rounded to ms so float noise is not a miss.

    ``segment`` None = the input is not cut (text); an end of None = until the end of the media.
    """
    seg = None
    if segment is not None:
        seg = [round(segment[0] * 1000), None if segment[1] is None else round(segment[1] * 1000)]
    payload = json.dumps(
        # float(fps): 2 and 2.0 must give one key
        {
            "input": input_hash,
            "segment_ms": seg,
            "fps": None if fps is None else float(fps),
            "extractor": config_hash,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class FeatureStore(StoreAdmin, EntryFiles):
    """A directory of content-addressed feature vectors with a SQLite provenance index.

    ``create``: make the store if absent; it also says the caller means to write, so a read-only
    store raises StoreReadOnlyError at once. ``read_only``: None = detected (the directory or the
    index is not writable: permissions, a read-only mount); a read-only store serves every read.
    """

    def __init__(self, root: str | Path, create: bool = True, read_only: bool | None = None):
        super().__init__(root)
        self.index_path = self.root / INDEX_FILE
        lost_index = not self.index_path.is_file() and next(ix.iter_objects(self.root), None)
        if not create and not self.index_path.is_file():
            if lost_index:
                raise FileNotFoundError(
                    f"{self.root}: its {INDEX_FILE} is missing but {OBJECTS_DIR}/ holds entries; "
                    f"rebuild the index from them with `erc store rebuild-index --store {self.root}`"
                )
            raise FileNotFoundError(f"{self.root}: not a feature store (no {INDEX_FILE})")
        self.read_only = ix.not_writable(self.root) if read_only is None else read_only
        if self.read_only and create:
            raise StoreReadOnlyError(f"the store {self.root} is read-only: cannot write to it")
        if lost_index and not self.read_only:
            # Each entry carries its key and provenance: rebuilding beats recomputing them all.
            report = ix.rebuild_index(self.root)
            log.warning(
                "%s: no %s (deleted, or entries written by other hosts): rebuilt it from %d "
                "entries (%d damaged, left for gc)",
                self.root,
                INDEX_FILE,
                report.entries,
                len(report.damaged),
            )
        if not self.read_only:
            (self.root / OBJECTS_DIR).mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            raise self._index_error(exc) from exc

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return ix.connect_read_only(self.index_path)
        return ix.connect(self.index_path)

    def _index_error(self, exc: sqlite3.DatabaseError) -> Exception:
        return ix.user_error(exc, self.root)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- input hashing -----------------------------------------------------------------------

    @guard_index
    def file_hash(self, path: str | Path) -> str:
        """sha256 of a file's bytes, remembered in the index by path and stat key
        (pipeline.files.file_sha256) so big videos are read once. FileNotFoundError names the
        path."""
        return file_sha256(path, _IndexedDigests(self))

    # ---- read --------------------------------------------------------------------------------

    @guard_index
    def present(self, keys: Iterable[str], verify: bool = True) -> set[str]:
        """The keys that have an index row and a sound object file (else: not cached).

        ``verify``: read and check every file (payload hash, finite values); otherwise only its
        size is compared with the index (a truncated file is still caught; a same-size
        overwrite is not). A damaged entry is logged by path and left out, so it is recomputed.
        """
        keys = list(dict.fromkeys(keys))
        found: set[str] = set()
        for chunk, marks in ix.chunks(keys):
            rows = self._db.execute(
                f"SELECT key, nbytes FROM entries WHERE key IN ({marks})", chunk
            ).fetchall()
            for key, nbytes in rows:
                if self._sound(key, nbytes, verify):
                    found.add(key)
        return found

    def _sound(self, key: str, nbytes: int | None, verify: bool) -> bool:
        try:
            size = self.object_path(key).stat().st_size
        except FileNotFoundError:
            return False
        # A concurrent writer of the same key may leave a row of another size (provenance
        # differs), so a size mismatch means "read it", not "damaged".
        if not verify and size == nbytes:
            return True
        return self._file_sound(key)

    # ---- write -------------------------------------------------------------------------------

    @guard_index
    def put_many(self, entries: Sequence[Entry]) -> None:
        """Write the objects atomically, then their index rows in one transaction."""
        self._writable(f"{len(entries)} entries")
        written: list = []
        try:
            self._write_entries(entries, written)
        except BaseException:
            # Interrupted (SIGTERM, Ctrl-C, disk full) mid-batch: index the entries that landed,
            # or a rerun would not see them and compute them again.
            if written:
                self._index_rows(written)
            raise
        self._index_rows(written)

    def _index_rows(self, written: Sequence[tuple[dict[str, Any], list[str]]]) -> None:
        rows = [tuple(row[c] for c in COLUMNS) for row, _ in written]
        refs = [(u, row["extractor"], row["key"]) for row, rs in written for u in rs]
        with self._tx():
            self._db.executemany(ix.INSERT_ENTRY, rows)
            self._db.executemany("INSERT OR REPLACE INTO refs VALUES (?, ?, ?)", refs)
            # stored: no longer anyone's work in progress
            self._db.executemany("DELETE FROM claims WHERE key = ?", ((r[0],) for r in rows))

    @guard_index
    def ingest(self, keys: Iterable[str] | None = None) -> IngestReport:
        """Index entry files written without the index (UnindexedWriter, on other hosts).

        ``keys`` None: every entry file that has no index row. Each file is read and checked
        first: a damaged one gets no row (it is reported, and the next gc deletes it), so the
        index never points at damage. Safe to repeat: indexed keys are skipped.
        """
        self._writable("(ingest adds index rows)")
        indexed = {k for (k,) in self._db.execute("SELECT key FROM entries")}
        if keys is None:
            candidates = [
                p.name.removesuffix(".safetensors")
                for p in self._iter_objects()
                if not p.name.startswith(TMP_PREFIX)
            ]
        else:
            candidates = list(dict.fromkeys(keys))
        report = IngestReport()
        found = []
        for key in candidates:
            if key in indexed:
                report.already += 1
                continue
            path = self.object_path(key)
            try:
                checked = store_entry.check(path, key)
            except FileNotFoundError:
                report.absent.append(key)
                continue
            except DamagedEntryError as exc:
                report.damaged.append(f"{path}: {exc.problem}")
                continue
            found.append(store_entry.index_row(checked))
        found.sort(key=lambda r: (r[0]["created_at"], r[0]["key"]))  # the newest ref wins
        if found:
            self._index_rows(found)
        report.added = len(found)
        return report

    # ---- claims: one computation per key across concurrent writers ---------------------------

    @guard_index
    def claim(self, keys: Sequence[str]) -> dict[str, str]:
        """Claim keys about to be computed. Returns the ones to leave alone: {key: owner} for
        keys another live writer holds (it is computing them) and {key: "stored"} for keys
        stored since the caller looked (except entries this instance found damaged). Claims of
        dead processes on this host, and claims older than STALE_CLAIM_SECONDS, are taken over.
        Storing an entry releases its claim in the same transaction, so no key is ever seen as
        neither claimed nor stored while a writer works on it."""
        if not keys or self.read_only:
            return {}
        damaged = {p.name.removesuffix(".safetensors") for p, _ in self.damaged}
        skip: dict[str, str] = {}
        with self._tx():
            for chunk, marks in ix.chunks(list(dict.fromkeys(keys))):
                rows = self._db.execute(f"SELECT key FROM entries WHERE key IN ({marks})", chunk)
                skip.update((k, "stored") for (k,) in rows.fetchall() if k not in damaged)
                for key, owner in self._live_claims(chunk, marks):
                    skip.setdefault(key, owner)
                mine = (self._owner, self._host, os.getpid(), time.time())
                self._db.executemany(
                    "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                    ((k, *mine) for k in chunk if k not in skip),
                )
        return skip

    @guard_index
    def release(self, keys: Iterable[str]) -> None:
        """Drop this writer's claims on keys it will not store (failed, or run interrupted)."""
        keys = list(keys)
        if keys and not self.read_only:
            with self._tx():
                self._db.executemany(
                    "DELETE FROM claims WHERE key = ? AND owner = ?",
                    ((k, self._owner) for k in keys),
                )

    @guard_index
    def claims_alive(self, keys: Iterable[str]) -> set[str]:
        """Of these keys, those still claimed by another live writer."""
        return {k for c, m in ix.chunks(list(keys)) for k, _ in self._live_claims(c, m)}

    def _live_claims(self, chunk: list[str], marks: str) -> list[tuple[str, str]]:
        now = time.time()
        rows = self._db.execute(
            f"SELECT key, owner, host, pid, claimed_at FROM claims WHERE key IN ({marks})", chunk
        ).fetchall()
        return [
            (key, owner)
            for key, owner, host, pid, at in rows
            if owner != self._owner and ix.claim_live(host, pid, at, self._host, now)
        ]

    def _tx(self) -> ix.Transaction:
        return ix.Transaction(self._db)


class _IndexedDigests:
    """The index's file_digests table as the memo of pipeline.files.file_sha256. A read-only
    store only reads it (it hashes again next time; nothing is wrong), and one whose index
    predates the table remembers nothing."""

    def __init__(self, store: FeatureStore):
        self.store = store

    def recall(self, path: str, key: list[int]) -> str | None:
        try:
            row = self.store._db.execute(
                "SELECT stat, sha256 FROM file_digests WHERE path = ?", (path,)
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc) and self.store.read_only:
                return None
            raise
        return row[1] if row and json.loads(row[0]) == key else None

    def remember(self, path: str, key: list[int], sha256: str) -> None:
        if self.store.read_only:
            return
        with self.store._tx():
            self.store._db.execute(
                "INSERT OR REPLACE INTO file_digests VALUES (?, ?, ?)",
                (path, json.dumps(key), sha256),
            )
