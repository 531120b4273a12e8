"""What the feature store keeps on disk: self-describing entry files, and the SQLite index
derived from them (schema, opening read-write or read-only, transactions, what its errors mean for
a user, key claims, and rebuilding it from the entry files).

Entry files. Each holds tensor "x" float32 [dim] (or [0] for status "missing") and, in the
safetensors metadata (str -> str):
    format      ENTRY_FORMAT
    key         the entry's content address (also its file name)
    status      "ok" | "missing"
    extractor   the extractor's name
    input       sha256 of the input (file bytes or text)
    sha256      sha256 of the tensor's bytes: damage to the payload is detected on read
    provenance  JSON: every column of the index row (spec, utterance, segment, fps, host, time,
                pipeline version) and refs, so index.sqlite can be rebuilt from the files alone
An entry of any other format (one written before entries described themselves) is damaged: it
cannot be verified, so it is recomputed like any other damaged entry.

The index is derived data: every entry file carries its key and provenance, so a damaged or lost
index.sqlite is rebuilt by ``rebuild_index`` and only the file-hash memo (media are hashed again
once) is lost. The store's operations over both are pipeline/features/store.py.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# ---- entry files: one self-describing safetensors blob per key, and how to check one ------------

ENTRY_FORMAT = "ada2i-erc.store-entry/2"
MAX_HEADER = 1 << 24  # 16 MiB: far above any real header; a larger length is a damaged file

# Index columns, in table order. nbytes is the file's size (it is not in the provenance: the file
# cannot contain its own length before it is written).
COLUMNS = (
    "key",
    "status",
    "extractor",
    "version",
    "config_hash",
    "kind",
    "model",
    "weights",
    "weights_hash",
    "spec_json",
    "dim",
    "utterance_id",
    "input_path",
    "input_hash",
    "start_s",
    "end_s",
    "fps",
    "nbytes",
    "created_at",
    "host",
    "pipeline_version",
)


class DamagedEntryError(ValueError, KeyError):
    """An entry file that cannot be trusted; a KeyError too, so readers treat it as not cached."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"store entry {path} is damaged: {problem}")
        self.path, self.problem = path, problem

    __str__ = BaseException.__str__  # not KeyError's quoted repr


@dataclass(frozen=True)
class CheckedEntry:
    """A verified entry file: its metadata, provenance (may be {} for old entries) and vector."""

    meta: dict[str, str]
    provenance: dict[str, Any]
    vector: np.ndarray | None  # float32 [dim] | None = status "missing"
    nbytes: int


def encode(key: str, vector: np.ndarray | None, row: dict[str, Any], refs: list[str]) -> bytes:
    """The file bytes of one entry. ``row``: the index columns except key and nbytes."""
    from safetensors.numpy import save

    x = np.zeros(0, np.float32) if vector is None else np.ascontiguousarray(vector, np.float32)
    provenance = {k: v for k, v in row.items() if k not in ("key", "status", "nbytes")}
    meta = {
        "format": ENTRY_FORMAT,
        "key": key,
        "status": row["status"],
        "extractor": row["extractor"],
        "input": row["input_hash"],
        "sha256": hashlib.sha256(x.tobytes()).hexdigest(),
        "provenance": json.dumps({**provenance, "refs": refs}, sort_keys=True),
    }
    return save({"x": x}, metadata=meta)


def check(path: Path, key: str | None = None) -> CheckedEntry:
    """Read and verify one entry file; DamagedEntryError says what is wrong with it."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DamagedEntryError(path, f"unreadable ({exc.strerror or exc})") from exc
    return check_bytes(path, blob, key)


def check_bytes(path: Path, blob: bytes, key: str | None = None) -> CheckedEntry:
    meta = _metadata(path, blob)
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(blob)
    except (SafetensorError, ValueError) as exc:
        raise DamagedEntryError(path, f"not a valid safetensors file ({exc})") from exc
    expected = key or path.name.removesuffix(".safetensors")
    if meta.get("key") != expected:
        raise DamagedEntryError(path, f"it holds key {meta.get('key')!r}, not {expected!r}")
    if meta.get("format") != ENTRY_FORMAT:
        raise DamagedEntryError(
            path, f"format {meta.get('format')!r}, not {ENTRY_FORMAT}: it cannot be verified"
        )
    x = tensors.get("x")
    if x is None or x.dtype != np.float32 or x.ndim != 1:
        raise DamagedEntryError(path, "no float32 vector 'x' in it")
    if hashlib.sha256(x.tobytes()).hexdigest() != meta.get("sha256"):
        raise DamagedEntryError(path, "its payload does not match its recorded sha256")
    try:
        provenance = json.loads(meta["provenance"]) if "provenance" in meta else {}
    except json.JSONDecodeError as exc:
        raise DamagedEntryError(path, f"its provenance is not JSON ({exc})") from exc
    missing = meta.get("status") == "missing"
    if missing != (x.shape[0] == 0):
        raise DamagedEntryError(path, f"status {meta.get('status')!r} with shape {x.shape}")
    dim = provenance.get("dim")
    if not missing and dim is not None and x.shape[0] != dim:
        raise DamagedEntryError(path, f"shape {x.shape}, its provenance says [{dim}]")
    if not np.isfinite(x).all():
        raise DamagedEntryError(path, f"{int((~np.isfinite(x)).sum())} non-finite values")
    return CheckedEntry(meta, provenance, None if missing else x, len(blob))


def index_row(checked: CheckedEntry) -> tuple[dict[str, Any], list[str]]:
    """The index row (all COLUMNS) and refs an entry file describes; old entries fill in blanks."""
    p, m = checked.provenance, checked.meta
    x = checked.vector
    row: dict[str, Any] = {c: p.get(c) for c in COLUMNS}
    row.update(
        key=m["key"],
        status=m.get("status", "ok"),
        extractor=m.get("extractor", ""),
        input_hash=m.get("input", ""),
        nbytes=checked.nbytes,
    )
    for c in ("version", "config_hash", "kind", "model", "weights", "weights_hash"):
        row[c] = row[c] or ""
    for c in ("utterance_id", "input_path", "created_at", "host", "pipeline_version"):
        row[c] = row[c] or ""
    row["spec_json"] = row["spec_json"] or "{}"
    if row["dim"] is None:
        row["dim"] = 0 if x is None else int(x.shape[0])
    refs = [r for r in p.get("refs", []) if isinstance(r, str)] or (
        [row["utterance_id"]] if row["utterance_id"] else []
    )
    return row, refs


def _metadata(path: Path, blob: bytes) -> dict[str, str]:
    """The safetensors __metadata__ (header: u64 little-endian length, then that much JSON)."""
    if len(blob) < 8:
        raise DamagedEntryError(path, f"truncated ({len(blob)} bytes)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER or 8 + n > len(blob):
        raise DamagedEntryError(path, f"truncated or bad header (length {n}, file {len(blob)} B)")
    try:
        header = json.loads(blob[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedEntryError(path, f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise DamagedEntryError(path, "header is not a JSON object")
    ends = [
        t["data_offsets"][-1]
        for k, t in header.items()
        if k != "__metadata__"
        and isinstance(t, dict)
        and isinstance(t.get("data_offsets"), list)
        and t["data_offsets"]
        and isinstance(t["data_offsets"][-1], int)
    ]
    expected = 8 + n + max(ends, default=0)
    if expected > len(blob):
        raise DamagedEntryError(path, f"truncated ({len(blob)} of {expected} bytes)")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict):
        raise DamagedEntryError(path, "no metadata in its header")
    return {str(k): str(v) for k, v in meta.items()}


# ---- the index: index.sqlite, derived from the entry files --------------------------------------

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
            checked = check(path)
        except FileNotFoundError:
            scan.absent.append(path)
            continue
        except DamagedEntryError as exc:
            scan.damaged.append(f"{path}: {exc.problem}")
            continue
        scan.found.append(index_row(checked))
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
