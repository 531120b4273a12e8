"""Cache keys from file contents, and running a task so that finished work is skipped.

A stage's fingerprint hashes what its output depends on: the bytes of its input files (manifest,
featureset, checkpoint), a stat fingerprint of the media files (path, size, mtime: hashing hours of
video on every run would cost more than the cache saves; the feature store hashes media bytes
itself), the code that computes it (the import closure of the stage's module: a changed extractor,
optimiser or model reruns the stage), and its parameters. The flow
passes the fingerprint to the task, and the task's cache policy (INPUTS + TASK_SOURCE) keys on it.

Prefect keeps the results and keys under ``<out>/.prefect-cache``: deleting the output folder resets
the cache with it. A cached result that points at files that are gone is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from pipeline.code_identity import stage_identity
from pipeline.files import sha256_file

# Cache policy of every cached task: the fingerprint and parameters, and the task's own code.
CACHE_POLICY = INPUTS + TASK_SOURCE

file_digest = sha256_file  # the name flows/ uses for a file's sha256 (pipeline/files.py)


def tree_digest(directory: str | Path) -> str:
    """Hash of every file under ``directory`` (relative names + contents; hidden files skipped)."""
    root = Path(directory)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h.update(rel.as_posix().encode() + b"\0" + file_digest(path).encode() + b"\n")
    return h.hexdigest()


def media_fingerprint(paths: Iterable[str]) -> str:
    """Hash of (path, size, mtime_ns) per media file; a missing file counts as such."""
    h = hashlib.sha256()
    for p in sorted(set(p for p in paths if p)):
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def manifest_fingerprint(manifest: str | Path) -> str:
    """Manifest bytes + its media files' stat fingerprint."""
    from pipeline.dataset.manifest import MEDIA_COLUMNS, read_manifest

    df = read_manifest(manifest)
    media = [p for col in MEDIA_COLUMNS for p in df[col]]
    return combine(file_digest(manifest), media_fingerprint(media))


def code_digest(stage: str) -> str:
    """Hash of the code a stage runs (pipeline/code_identity.py), the one a run folder records."""
    return stage_identity(stage)


def combine(*parts: Any) -> str:
    """One hex digest of any JSON-able parts."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def short(digest: str) -> str:
    return digest[:10]


def cached_task(task: Task, cache_dir: Path, refresh: bool = False) -> Task:
    """``task`` with results and cache keys under ``cache_dir`` (the run's output folder)."""
    return task.with_options(
        cache_policy=CACHE_POLICY,
        persist_result=True,
        result_storage=cache_dir,
        result_serializer="json",
        refresh_cache=refresh or None,
    )


def run_cached(
    task: Task,
    cache_dir: Path,
    still_valid: Callable[[Any], bool],
    refresh: bool = False,
    **parameters: Any,
) -> tuple[Any, bool]:
    """Run ``task`` (or take its cached result) -> (result, whether it came from the cache).

    A cached result for which ``still_valid(result)`` is False (its files were deleted) is
    recomputed. A failure raises, which fails the flow.
    """
    state = cached_task(task, cache_dir, refresh)(**parameters, return_state=True)
    result = state.result()
    cached = state.name == "Cached"
    if cached and not still_valid(result):
        state = cached_task(task, cache_dir, refresh=True)(**parameters, return_state=True)
        result, cached = state.result(), False
    return result, cached


def exists(*keys: str) -> Callable[[Any], bool]:
    """still_valid check: the paths at ``result[key]`` (or the result itself) all exist."""

    def check(result: Any) -> bool:
        if not keys:
            return bool(result) and Path(result).exists()
        return all(result.get(k) and Path(result[k]).exists() for k in keys)

    return check
