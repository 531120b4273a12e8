"""Content-addressed feature store: one safetensors file per (utterance input, extractor).

Layout under ``root``:
    objects/<2 hex>/<key>.safetensors   tensor "x" float32 [dim]; or "x" [0] with metadata
                                        status="missing" = the extractor returned None (no face,
                                        empty audio): cached as masked, never recomputed
    index.sqlite                        SQLite (WAL): provenance per entry, file-hash cache, and
                                        the last key computed per (utterance, extractor) for `status`

Key = sha256(input content hash, segment bounds in ms, frame rate, extractor ``config_hash()``), so
unchanged input computes nothing and a changed extractor spec recomputes only that extractor.
Object files are written to a temp file in the same directory, fsynced and renamed, and the index row
is written after the object: a SIGKILL at any point leaves either a complete entry or none (at worst
an orphan object the next run rewrites, identically). Concurrent writers are safe: renames are
atomic, identical keys carry identical content, and SQLite serialises index writes (busy timeout).

Readable with nothing but the standard library: ``python -m pipeline.store --root S list``.
Only safetensors, JSON and SQLite on disk: never pickle.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

INDEX_FILE = "index.sqlite"
OBJECTS_DIR = "objects"
TMP_PREFIX = ".tmp-"  # temp files never end in .safetensors, so a partial file is never read
HASH_CHUNK = 4 << 20  # 4 MiB reads: fast on big videos, bounded memory
BUSY_TIMEOUT_MS = 60_000  # a concurrent writer holds the lock for one short batch transaction
STALE_TMP_SECONDS = 3600  # gc removes temp files older than this (left by killed writers)


def _pipeline_version() -> str:
    try:
        return importlib.metadata.version("ada2i-erc")
    except importlib.metadata.PackageNotFoundError:  # running from a plain checkout
        return "unknown"


PIPELINE_VERSION = _pipeline_version()

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL
);
"""


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


@dataclass
class StatusCounts:
    cached: int = 0
    missing: int = 0  # not cached and never computed for this utterance
    stale: int = 0  # not cached, but an entry exists from another spec/input of this utterance
    invalid: int = 0  # no key can be made (missing file, bad row)

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class GcReport:
    objects_deleted: int = 0
    rows_deleted: int = 0
    bytes_freed: int = 0
    dry_run: bool = False
    kept: int = 0


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


class FeatureStore:
    """A directory of content-addressed feature vectors with a SQLite provenance index."""

    def __init__(self, root: str | Path, create: bool = True):
        self.root = Path(root)
        if not create and not (self.root / INDEX_FILE).is_file():
            raise FileNotFoundError(f"{self.root}: not a feature store (no {INDEX_FILE})")
        (self.root / OBJECTS_DIR).mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.root / INDEX_FILE, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
        )  # autocommit: transactions are explicit (BEGIN IMMEDIATE in _tx)
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._retry(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
        # NORMAL is durable across process crashes in WAL mode; only an OS crash can lose the
        # last transactions, and then the object files are simply recomputed.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._retry(lambda: self._db.executescript(_SCHEMA))
        self._host = socket.gethostname()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- input hashing -----------------------------------------------------------------------

    def file_hash(self, path: str | Path) -> str:
        """sha256 of a file's bytes, cached by (path, size, mtime) so big videos are read once."""
        path = Path(path).resolve()
        st = path.stat()  # FileNotFoundError names the path
        row = self._db.execute(
            "SELECT size, mtime_ns, sha256 FROM file_hashes WHERE path = ?", (str(path),)
        ).fetchone()
        if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
            return row[2]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
        sha = digest.hexdigest()
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)",
                (str(path), st.st_size, st.st_mtime_ns, sha),
            )
        return sha

    # ---- read --------------------------------------------------------------------------------

    def object_path(self, key: str) -> Path:
        return self.root / OBJECTS_DIR / key[:2] / f"{key}.safetensors"

    def present(self, keys: Iterable[str]) -> set[str]:
        """The keys that have an index row and an object file (either alone = not cached)."""
        keys = list(dict.fromkeys(keys))
        found: set[str] = set()
        for i in range(0, len(keys), 500):  # SQLite caps bound parameters per statement
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key FROM entries WHERE key IN ({marks})", chunk)
            found.update(k for (k,) in rows if self.object_path(k).is_file())
        return found

    def get(self, key: str) -> np.ndarray | None:
        """The stored vector float32 [dim], or None for a cached "extractor returned None"."""
        from safetensors import safe_open

        path = self.object_path(key)
        if not path.is_file():
            raise KeyError(f"{key}: not in feature store {self.root}")
        with safe_open(str(path), framework="numpy") as f:
            if (f.metadata() or {}).get("status") == "missing":
                return None
            return f.get_tensor("x").astype(np.float32, copy=False)

    # ---- write -------------------------------------------------------------------------------

    def put_many(self, entries: Sequence[Entry]) -> None:
        """Write the objects atomically, then their index rows in one transaction."""
        rows, refs = [], []
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for e in entries:
            nbytes = self._write_object(e)
            spec = e.spec
            seg = e.segment or (None, None)
            rows.append(
                (
                    e.key,
                    "missing" if e.vector is None else "ok",
                    spec.name,
                    spec.version,
                    spec.config_hash(),
                    spec.kind,
                    spec.model,
                    spec.weights,
                    spec.weights_hash,
                    json.dumps(spec.to_dict(), sort_keys=True),
                    spec.dim,
                    e.utterance_id,
                    e.input_path,
                    e.input_hash,
                    seg[0],
                    seg[1],
                    e.fps,
                    nbytes,
                    now,
                    self._host,
                    PIPELINE_VERSION,
                )
            )
            refs.extend((u, spec.name, e.key) for u in (e.refs or (e.utterance_id,)))
        with self._tx():
            self._db.executemany(
                f"INSERT OR REPLACE INTO entries VALUES ({','.join('?' * 21)})", rows
            )
            self._db.executemany("INSERT OR REPLACE INTO refs VALUES (?, ?, ?)", refs)

    def _write_object(self, e: Entry) -> int:
        from safetensors.numpy import save

        if e.vector is None:
            tensors, status = {"x": np.zeros(0, np.float32)}, "missing"
        else:
            x = np.asarray(e.vector, dtype=np.float32).reshape(-1)  # [dim]
            if x.shape[0] != e.spec.dim or not np.isfinite(x).all():
                raise ValueError(
                    f"extractor {e.spec.name} returned shape {x.shape} (finite={np.isfinite(x).all()})"
                    f" for utterance {e.utterance_id!r}; expected finite [{e.spec.dim}]"
                )
            tensors, status = {"x": x}, "ok"
        meta = {"status": status, "key": e.key, "extractor": e.spec.name, "input": e.input_hash}
        blob = save(tensors, metadata=meta)
        path = self.object_path(e.key)
        path.parent.mkdir(exist_ok=True)
        tmp = path.parent / f"{TMP_PREFIX}{e.key}.{os.getpid()}.{time.monotonic_ns()}.part"
        try:
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic: readers see the old file, the new one, or none
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return len(blob)

    # ---- status and gc -----------------------------------------------------------------------

    def status(self, wanted: Iterable[tuple[str, str, str | None]]) -> dict[str, StatusCounts]:
        """Counts per extractor for (utterance_id, extractor name, key | None = no key possible)."""
        wanted = list(wanted)
        have = self.present(k for _, _, k in wanted if k)
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
            elif last.get((utt, name), key) != key:
                c.stale += 1
            else:
                c.missing += 1
        return counts

    def gc(self, keep: set[str] | None = None, dry_run: bool = False) -> GcReport:
        """Delete every object and index row whose key is not in ``keep``; report bytes freed.

        ``keep`` None keeps every indexed entry and removes only debris: objects without an index
        row, index rows without an object, temp files left by killed writers.
        """
        report = GcReport(dry_run=dry_run)
        rows = [k for (k,) in self._db.execute("SELECT key FROM entries").fetchall()]
        if keep is None:
            keep = set(rows)
        drop_rows = [k for k in rows if k not in keep or not self.object_path(k).is_file()]
        stale_cutoff = time.time() - STALE_TMP_SECONDS
        for path in self._iter_objects():
            name = path.name
            if name.startswith(TMP_PREFIX):
                # A live writer's temp file is seconds old; only killed writers leave old ones.
                if path.stat().st_mtime >= stale_cutoff:
                    continue
            elif name.removesuffix(".safetensors") in keep:
                report.kept += 1
                continue
            report.objects_deleted += 1
            report.bytes_freed += path.stat().st_size
            if not dry_run:
                path.unlink(missing_ok=True)
        report.rows_deleted = len(drop_rows)
        if not dry_run and drop_rows:
            with self._tx():
                self._db.executemany("DELETE FROM entries WHERE key = ?", ((k,) for k in drop_rows))
                self._db.execute("DELETE FROM refs WHERE key NOT IN (SELECT key FROM entries)")
        return report

    def _iter_objects(self) -> Iterator[Path]:
        for sub in sorted((self.root / OBJECTS_DIR).iterdir()):
            if sub.is_dir():
                yield from sorted(sub.iterdir())

    # ---- listing -----------------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT * FROM entries ORDER BY created_at, key")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

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

    # ---- sqlite helpers ----------------------------------------------------------------------

    def _tx(self):
        return _Transaction(self._db)

    @staticmethod
    def _retry(fn, attempts: int = 50):
        # Switching to WAL / creating the schema needs a brief exclusive lock that busy_timeout
        # does not always cover when two processes open a brand-new store at the same instant.
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or i == attempts - 1:
                    raise
                time.sleep(0.05 * (i + 1))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front so writers queue, never deadlock."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        FeatureStore._retry(lambda: self.db.execute("BEGIN IMMEDIATE"))
        return self.db

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def _format_table(rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
    lines = ["\t".join(cols)]
    lines += ["\t".join("" if r.get(c) is None else str(r.get(c)) for c in cols) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.store --root S {list,summary}``: read the index, no torch, no Prefect."""
    p = argparse.ArgumentParser(prog="python -m pipeline.store", description=main.__doc__)
    p.add_argument("--root", required=True, help="feature store directory")
    p.add_argument("command", choices=["list", "summary"], nargs="?", default="summary")
    args = p.parse_args(argv)
    try:
        store = FeatureStore(args.root, create=False)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with store:
        if args.command == "list":
            cols = ["key", "status", "extractor", "version", "config_hash", "weights", "dim"]
            cols += ["utterance_id", "input_path", "start_s", "end_s", "fps", "created_at", "host"]
            print(_format_table(store.entries(), cols))
        else:
            summary = store.summary()
            total = sum(v["ok"] + v["missing"] for v in summary.values())
            print(json.dumps({"root": str(store.root), "entries": total, "by_spec": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
