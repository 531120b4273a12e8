"""The feature store's SQLite index: schema, opening (read-write or read-only), transactions,
what its errors mean for a user, key claims, and rebuilding it from the entry files.

The index is derived data: every entry file carries its key and provenance
(pipeline/features/store_entry.py), so a damaged or lost index.sqlite is rebuilt by ``rebuild_index``
and only the file-hash memo (media are hashed again once) is lost.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.features import store_entry
from pipeline.features.store_entry import COLUMNS, DamagedEntryError

INDEX_FILE = "index.sqlite"
OBJECTS_DIR = "objects"
TMP_PREFIX = ".tmp-"  # temp files never end in .safetensors, so a partial file is never read
BUSY_TIMEOUT_MS = 60_000  # a concurrent writer holds the lock for one short batch transaction
# A claim from another host cannot be checked for a live process; after this long it is taken
# over (a batch takes seconds; a claim is released as soon as its entries are stored).
STALE_CLAIM_SECONDS = 1800
FULL_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit exceeded",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,            -- 'ok' | 'missing' (extractor returned None)
    extractor TEXT NOT NULL,
    version TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    weights TEXT NOT NULL,
    weights_hash TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    dim INTEGER NOT NULL,
    utterance_id TEXT NOT NULL,      -- the utterance that first produced it (keys are shared)
    input_path TEXT NOT NULL,        -- '' for text
    input_hash TEXT NOT NULL,
    start_s REAL, end_s REAL, fps REAL,
    nbytes INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    host TEXT NOT NULL,
    pipeline_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (    -- last key computed per (utterance, extractor): for 'stale'
    utterance_id TEXT NOT NULL,
    extractor TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (utterance_id, extractor)
);
-- file sha256 by path and stat key (JSON [size, mtime_ns, ctime_ns, inode]: pipeline.files.stat_key)
CREATE TABLE IF NOT EXISTS file_digests (
    path TEXT PRIMARY KEY, stat TEXT NOT NULL, sha256 TEXT NOT NULL
);
DROP TABLE IF EXISTS file_hashes;    -- its key was size and mtime only: file_digests replaces it
CREATE TABLE IF NOT EXISTS claims (  -- keys a writer is computing now (FeatureStore.claim)
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,             -- one id per FeatureStore instance
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    claimed_at REAL NOT NULL         -- time.time()
);
"""
INSERT_ENTRY = f"INSERT OR REPLACE INTO entries VALUES ({','.join('?' * len(COLUMNS))})"


class StoreError(ValueError):
    """A store problem the user can act on (a ValueError so the CLI prints it as one line)."""


class StoreIndexError(StoreError):
    """index.sqlite cannot be read; the entry files can rebuild it."""


class StoreReadOnlyError(StoreError):
    """A write was asked of a store that can only be read."""


class StoreWriteError(StoreError):
    """Writing failed for lack of space (disk full, quota, file size limit)."""


@dataclass
class RebuildReport:
    entries: int = 0  # index rows written
    damaged: list[str] = field(default_factory=list)  # "path: problem", left for gc to delete
    moved_aside: list[str] = field(default_factory=list)  # the old index files, kept for a look


def connect(index: Path) -> sqlite3.Connection:
    """Open (creating) the index for writing: WAL, busy timeout, schema."""
    db = sqlite3.connect(index, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    # autocommit: transactions are explicit (BEGIN IMMEDIATE in Transaction)
    try:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        retry(lambda: db.execute("PRAGMA journal_mode=WAL"))
        # NORMAL is durable across process crashes in WAL mode; only an OS crash can lose the
        # last transactions, and then the object files are simply recomputed.
        db.execute("PRAGMA synchronous=NORMAL")
        retry(lambda: db.executescript(SCHEMA))
    except BaseException:
        db.close()
        raise
    return db


def connect_read_only(index: Path) -> sqlite3.Connection:
    """mode=ro reads a WAL store whose -shm can be used; where it cannot (a read-only mount
    without one) immutable=1 reads the main file alone (a clean close has checkpointed it)."""
    uri = index.resolve().as_uri()
    for flags in ("mode=ro", "mode=ro&immutable=1"):
        db = sqlite3.connect(f"{uri}?{flags}", uri=True, isolation_level=None)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if "unable to open" not in str(exc) or "immutable" in flags:
                raise
    raise AssertionError("unreachable")


def not_writable(root: Path) -> bool:
    """The store exists and this process cannot write it (permissions, a read-only mount).

    os.access honours read-only mounts even for root; plain permission bits do not bind root.
    """
    index = root / INDEX_FILE
    if not root.exists():
        return False
    if not os.access(root, os.W_OK):
        return True
    return index.exists() and not os.access(index, os.W_OK)


def _nearly_full(root: Path, room: int = 1 << 20) -> bool:
    """Less than ``room`` bytes free on the store's filesystem (1 MiB: a WAL frame and its
    shared-memory index need some)."""
    try:
        return shutil.disk_usage(root).free < room
    except OSError:
        return False


def user_error(exc: sqlite3.DatabaseError, root: Path) -> Exception:
    """What an SQLite error means for the user: read-only, disk full, or a damaged index."""
    text, index = str(exc), root / INDEX_FILE
    if "readonly" in text or "read-only" in text:
        return StoreReadOnlyError(f"the store {root} is read-only ({text})")
    if "disk is full" in text or ("disk I/O error" in text and _nearly_full(root)):
        # a disk with no room left at all fails SQLite's journal or shared-memory writes as an I/O
        # error, not "disk is full": that is no damaged index
        return StoreWriteError(f"{FULL_ERRNOS[errno.ENOSPC]} writing {index}")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return exc
    return StoreIndexError(
        f"{index}: the store index is damaged ({text}); the entry files describe "
        f"themselves, so rebuild it with `erc store rebuild-index --store {root}`"
    )


def claim_live(host: str, pid: int, at: float, my_host: str, now: float) -> bool:
    if now - at > STALE_CLAIM_SECONDS:
        return False
    if host != my_host:
        return True  # cannot check another machine's processes: trust it until stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def chunks(keys: list[str], n: int = 500) -> Iterator[tuple[list[str], str]]:
    """(chunk, "?,?,...") pairs: SQLite caps bound parameters per statement."""
    for i in range(0, len(keys), n):
        chunk = keys[i : i + n]
        yield chunk, ",".join("?" * len(chunk))


def iter_objects(root: Path) -> Iterator[Path]:
    objects = root / OBJECTS_DIR
    if not objects.is_dir():
        return
    for sub in sorted(objects.iterdir()):
        if sub.is_dir():
            yield from sorted(sub.iterdir())


def rebuild_index(root: str | Path) -> RebuildReport:
    """Rebuild index.sqlite from the entry files (each carries its key and provenance).

    The old index files are renamed aside (``index.sqlite.old-<time>``), not deleted. Run it
    while no extraction writes to the store. The file-hash memo starts empty (media are hashed
    again once); damaged entry files get no row, so the next ``gc`` deletes them.
    """
    root = Path(root)
    if not (root / OBJECTS_DIR).is_dir():
        raise FileNotFoundError(f"{root}: not a feature store (no {OBJECTS_DIR}/)")
    if not_writable(root):
        raise StoreReadOnlyError(f"the store {root} is read-only: cannot rebuild its index")
    report = RebuildReport()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        old = root / f"{INDEX_FILE}{suffix}"
        if old.exists():
            aside = root / f"{INDEX_FILE}.old-{stamp}{suffix}"
            os.replace(old, aside)
            report.moved_aside.append(str(aside))
    scan = scan_entries(p for p in iter_objects(root) if not p.name.startswith(TMP_PREFIX))
    report.damaged = scan.damaged
    db = connect(root / INDEX_FILE)
    try:
        add_rows(db, scan.found)
    finally:
        db.close()
    report.entries = len(scan.found)
    return report


@dataclass
class EntryScan:
    # Index row (every COLUMN) and refs of each sound file, oldest first: added in this order,
    # the newest entry's refs win.
    found: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # "path: problem": no row given
    absent: list[Path] = field(default_factory=list)  # no such file (never written, deleted)


def scan_entries(paths: Iterable[Path]) -> EntryScan:
    """Read and check entry files for indexing (rebuild_index, FeatureStore.ingest): a damaged
    one gets no row, so the index never points at damage."""
    scan = EntryScan()
    for path in paths:
        try:
            checked = store_entry.check(path)
        except FileNotFoundError:
            scan.absent.append(path)
            continue
        except DamagedEntryError as exc:
            scan.damaged.append(f"{path}: {exc.problem}")
            continue
        scan.found.append(store_entry.index_row(checked))
    scan.found.sort(key=lambda r: (r[0]["created_at"], r[0]["key"]))
    return scan


def add_rows(db: sqlite3.Connection, found: Sequence[tuple[dict[str, Any], list[str]]]) -> None:
    """Index rows and refs of stored entries, in one transaction. Their claims go in the same
    transaction (stored: no longer anyone's work in progress)."""
    rows = [tuple(row[c] for c in COLUMNS) for row, _ in found]
    refs = [(u, row["extractor"], row["key"]) for row, rs in found for u in rs]
    with Transaction(db):
        db.executemany(INSERT_ENTRY, rows)
        db.executemany("INSERT OR REPLACE INTO refs VALUES (?, ?, ?)", refs)
        db.executemany("DELETE FROM claims WHERE key = ?", ((r[0],) for r in rows))


def retry(fn, attempts: int = 50):
    # Switching to WAL / creating the schema needs a brief exclusive lock that busy_timeout
    # does not always cover when two processes open a brand-new store at the same instant.
    for i in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or i == attempts - 1:
                raise
            time.sleep(0.05 * (i + 1))


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front so writers queue, never deadlock."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        retry(lambda: self.db.execute("BEGIN IMMEDIATE"))
        return self.db

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def guard_index(method):
    """Turn SQLite errors into StoreErrors that say what to do: rebuild, read-only, disk full."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise self._index_error(exc) from exc

    return wrapper
