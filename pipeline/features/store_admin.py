"""The feature store's upkeep: per-extractor status counts, garbage collection and listing.

``StoreAdmin`` holds FeatureStore's methods that read the whole index rather than serve
extraction (``status``, ``gc``, ``entries``, ``summary``); FeatureStore (pipeline/features/store.py)
inherits them, so callers still use ``store.status(...)``, ``store.gc(...)``. They work on the
host's index connection (``_db``, ``_tx``) and entry files (``present``, ``damaged``,
``_iter_objects``, ``_writable``): a mixin of FeatureStore only, not a store of its own.
Nothing here decides what extraction computes or stores.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.features import store_entry
from pipeline.features.store_entry import DamagedEntryError
from pipeline.features.store_index import TMP_PREFIX, guard_index

STALE_TMP_SECONDS = 3600  # gc removes temp files older than this (left by killed writers)


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


class StoreAdmin:
    """Status, gc and listing of a FeatureStore (see the module docstring)."""

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
                    store_entry.check(path, key)
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
