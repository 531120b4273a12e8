"""Content-addressed feature store: one safetensors file per (utterance input, extractor).

Layout under ``root``:
    objects/<2 hex>/<key>.safetensors   tensor "x" float32 [dim]; or "x" [0] with metadata
                                        status="missing" = the extractor returned None (no face,
                                        empty audio): cached as masked, never recomputed. Each file
                                        describes itself (below): its key, a
                                        sha256 of its payload and its full provenance
    index.sqlite                        SQLite (WAL): provenance per entry, file-hash memo, the
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

Two handles on a store and their shared base, all in this module: ``EntryFiles`` is what both
share (the path of a key, reading an entry, checked, and writing one atomically);
``FeatureStore`` adds the index (lookups, claims, ``ingest``, status counts, gc and listing);
``UnindexedWriter`` never opens index.sqlite, for extraction on hosts that cannot share it (SQLite
over a network filesystem is unsafe: its locks are not reliable there). It looks entries up by
their files, hashes inputs without the index's memo, writes entry files only and claims nothing;
the one process that keeps the index then adds the new entries with ``FeatureStore.ingest``
(docs/architecture.md, "The feature store across machines"). Two writers computing one key write
identical payloads, and the rename makes one of them the file.

Readable without torch or Prefect: ``erc store list --store S``.
Only safetensors, JSON and SQLite on disk: never pickle.

What the store keeps on disk (the module's first sections): self-describing entry files, and the
SQLite index derived from them (schema, opening read-write or read-only, transactions, what its
errors mean for a user, key claims, and rebuilding it from the entry files).

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
once) is lost.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import socket
import sqlite3
import struct
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import MemoryDigests, atomic_write_bytes, file_sha256

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


# ---- the store's operations: two handles on entry files and index ------------------------------

log = logging.getLogger(__name__)

STALE_TMP_SECONDS = 3600  # gc removes temp files older than this (left by killed writers)


def default_store() -> Path:
    """The store commands use when given none (erc import, erc predict): one per user, so
    features extracted once are reused by every later run. ${XDG_CACHE_HOME:-~/.cache}/ada2i-erc/
    store."""
    from extractors.weights import cache_home

    return cache_home() / "store"


@dataclass
class IngestReport:
    added: int = 0  # entry files given an index row
    already: int = 0  # already indexed
    absent: list[str] = field(default_factory=list)  # keys asked for that have no file
    damaged: list[str] = field(default_factory=list)  # "path: problem": no row given


@dataclass
class StatusCounts:
    cached: int = 0
    missing: int = 0  # not cached and never computed for this utterance
    stale: int = 0  # not cached, but an entry exists from another spec/input of this utterance
    invalid: int = 0  # no key can be made (missing file, bad row)
    damaged: int = 0  # indexed, but its file fails verification (treated as not cached)

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class GcReport:
    objects_deleted: int = 0
    rows_deleted: int = 0
    bytes_freed: int = 0
    dry_run: bool = False
    kept: int = 0
    damaged: list[str] = field(default_factory=list)  # "path: problem" of each damaged entry


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
            return check(path, key).vector
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
                check(path)
                sound += 1
            except DamagedEntryError as exc:
                damaged.append(f"{path}: {exc.problem}")
            except FileNotFoundError:  # deleted meanwhile (gc, a rewrite)
                continue
        return sound, damaged

    def _file_sound(self, key: str) -> bool:
        """The key's entry file exists and passes its checks (a damaged one is noted)."""
        try:
            check(self.object_path(key), key)
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
        return iter_objects(self.root)

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
        blob = encode(e.key, x, row, refs)
        path = self.object_path(e.key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # readers see the old file, the new one, or none; TMP_PREFIX: scans skip the temp file
            atomic_write_bytes(path, blob, prefix=TMP_PREFIX, suffix=".part")
        except OSError as exc:
            if exc.errno in FULL_ERRNOS:
                raise StoreWriteError(f"{FULL_ERRNOS[exc.errno]} writing {path}") from exc
            if exc.errno in (errno.EROFS, errno.EACCES):
                raise StoreReadOnlyError(f"the store {self.root} is read-only ({exc})") from exc
            raise
        return len(blob)


# The owner ids of this process's open index handles. A claim whose pid is this process's is live
# only while its handle is open: a handle closed without releasing its claims (the release failed
# on a full disk, or an exception skipped it) left them behind, and the pid check alone would keep
# them alive for as long as the process lives (a Prefect worker, a notebook: the next extraction
# in it waited on them forever).
_OPEN_OWNERS: set[str] = set()


class FeatureStore(EntryFiles):
    """A directory of content-addressed feature vectors with a SQLite provenance index.

    ``create``: make the store if absent; it also says the caller means to write, so a read-only
    store raises StoreReadOnlyError at once. ``read_only``: None = detected (the directory or the
    index is not writable: permissions, a read-only mount); a read-only store serves every read.
    """

    def __init__(self, root: str | Path, create: bool = True, read_only: bool | None = None):
        super().__init__(root)
        self.index_path = self.root / INDEX_FILE
        lost_index = not self.index_path.is_file() and next(iter_objects(self.root), None)
        if not create and not self.index_path.is_file():
            if lost_index:
                raise FileNotFoundError(
                    f"{self.root}: its {INDEX_FILE} is missing but {OBJECTS_DIR}/ holds entries; "
                    f"rebuild the index from them with `erc store rebuild-index --store {self.root}`"
                )
            raise FileNotFoundError(f"{self.root}: not a feature store (no {INDEX_FILE})")
        self.read_only = not_writable(self.root) if read_only is None else read_only
        if self.read_only and create:
            raise StoreReadOnlyError(f"the store {self.root} is read-only: cannot write to it")
        if lost_index and not self.read_only:
            # Each entry carries its key and provenance: rebuilding beats recomputing them all.
            report = rebuild_index(self.root)
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
        _OPEN_OWNERS.add(self._owner)

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return connect_read_only(self.index_path)
        return connect(self.index_path)

    def _index_error(self, exc: sqlite3.DatabaseError) -> Exception:
        return user_error(exc, self.root)

    def close(self) -> None:
        _OPEN_OWNERS.discard(self._owner)
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
        for chunk, marks in chunks(keys):
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
        add_rows(self._db, written)

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
        report = IngestReport(already=sum(k in indexed for k in candidates))
        scan = scan_entries(self.object_path(k) for k in candidates if k not in indexed)
        report.absent = [p.name.removesuffix(".safetensors") for p in scan.absent]
        report.damaged = scan.damaged
        if scan.found:
            self._index_rows(scan.found)
        report.added = len(scan.found)
        return report

    # ---- claims: one computation per key across concurrent writers ---------------------------

    @guard_index
    def claim(self, keys: Sequence[str]) -> dict[str, str]:
        """Claim keys about to be computed. Returns the ones to leave alone: {key: owner} for
        keys another live writer holds (it is computing them) and {key: "stored"} for keys
        stored since the caller looked (except entries this instance found damaged). Claims of
        dead processes on this host, of closed handles in this process, and claims older than
        STALE_CLAIM_SECONDS are taken over.
        Storing an entry releases its claim in the same transaction, so no key is ever seen as
        neither claimed nor stored while a writer works on it."""
        if not keys or self.read_only:
            return {}
        damaged = {p.name.removesuffix(".safetensors") for p, _ in self.damaged}
        skip: dict[str, str] = {}
        with self._tx():
            for chunk, marks in chunks(list(dict.fromkeys(keys))):
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
        return {k for c, m in chunks(list(keys)) for k, _ in self._live_claims(c, m)}

    def _live_claims(self, chunk: list[str], marks: str) -> list[tuple[str, str]]:
        now = time.time()
        rows = self._db.execute(
            f"SELECT key, owner, host, pid, claimed_at FROM claims WHERE key IN ({marks})", chunk
        ).fetchall()
        return [
            (key, owner)
            for key, owner, host, pid, at in rows
            if owner != self._owner
            and not (host == self._host and pid == os.getpid() and owner not in _OPEN_OWNERS)
            and claim_live(host, pid, at, self._host, now)
        ]

    def _tx(self) -> Transaction:
        return Transaction(self._db)

    # ---- status and gc -----------------------------------------------------------------------

    @guard_index
    def status(
        self, wanted: Iterable[tuple[str, str, str | None]], verify: bool = False
    ) -> dict[str, StatusCounts]:
        """Counts per extractor for (utterance_id, extractor name, key | None = no key possible).

        ``verify``: read every entry file (else a same-size overwrite is counted as cached).
        """
        wanted = list(wanted)
        have = self.present((k for _, _, k in wanted if k), verify=verify)
        damaged_keys = {p.name.removesuffix(".safetensors") for p, _ in self.damaged}
        last = dict(
            ((u, x), k)
            for u, x, k in self._db.execute("SELECT utterance_id, extractor, key FROM refs")
        )
        counts: dict[str, StatusCounts] = {}
        for utt, name, key in wanted:
            c = counts.setdefault(name, StatusCounts())
            if key is None:
                c.invalid += 1
            elif key in have:
                c.cached += 1
            elif key in damaged_keys:
                c.damaged += 1
            elif last.get((utt, name), key) != key:
                c.stale += 1
            else:
                c.missing += 1
        return counts

    @guard_index
    def gc(self, keep: set[str] | None = None, dry_run: bool = False) -> GcReport:
        """Delete every object and index row whose key is not in ``keep``, and every damaged
        entry (each file is read and checked); report bytes freed.

        ``keep`` None keeps every sound indexed entry and removes only debris and damage: objects
        without an index row, index rows without an object, temp files left by killed writers.
        """
        if not dry_run:
            self._writable("(gc deletes entries)")
        report = GcReport(dry_run=dry_run)
        rows = [k for (k,) in self._db.execute("SELECT key FROM entries").fetchall()]
        if keep is None:
            keep = set(rows)
        stale_cutoff = time.time() - STALE_TMP_SECONDS
        sound: set[str] = set()
        for path in self._iter_objects():
            name = path.name
            if name.startswith(TMP_PREFIX):
                # A live writer's temp file is seconds old; only killed writers leave old ones.
                if path.stat().st_mtime >= stale_cutoff:
                    continue
            elif (key := name.removesuffix(".safetensors")) in keep:
                try:
                    check(path, key)
                    report.kept += 1
                    sound.add(key)
                    continue
                except DamagedEntryError as exc:
                    report.damaged.append(f"{path}: {exc.problem}")
                except FileNotFoundError:
                    continue
            report.objects_deleted += 1
            report.bytes_freed += path.stat().st_size
            if not dry_run:
                path.unlink(missing_ok=True)
        drop_rows = [k for k in rows if k not in sound]
        report.rows_deleted = len(drop_rows)
        if not dry_run and drop_rows:
            with self._tx():
                self._db.executemany("DELETE FROM entries WHERE key = ?", ((k,) for k in drop_rows))
                self._db.execute("DELETE FROM refs WHERE key NOT IN (SELECT key FROM entries)")
        return report

    # ---- listing -----------------------------------------------------------------------------

    @guard_index
    def entries(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT * FROM entries ORDER BY created_at, key")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    @guard_index
    def summary(self) -> dict[str, Any]:
        """Entries and bytes per extractor/version/config: what `erc status` prints per store."""
        rows = self._db.execute(
            "SELECT extractor, version, config_hash, weights, status, COUNT(*), SUM(nbytes) "
            "FROM entries GROUP BY extractor, version, config_hash, weights, status"
        ).fetchall()
        out: dict[str, Any] = {}
        for name, version, chash, weights, status, n, nbytes in rows:
            d = out.setdefault(
                f"{name}@{version}#{chash}",
                {"weights": weights, "ok": 0, "missing": 0, "bytes": 0},
            )
            d[status] += n
            d["bytes"] += int(nbytes or 0)
        return out


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
