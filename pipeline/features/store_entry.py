"""One feature-store entry file: a self-describing safetensors blob, and how to check one.

An entry file holds tensor "x" float32 [dim] (or [0] for status "missing") and, in the
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
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
