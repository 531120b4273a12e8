"""Prefect's cache for the flows' stages: keys from file contents, stale results recomputed.

A stage's task declares ``cache_policy=StageCache(stage, content={parameter: digest})``. Its key
hashes what the output depends on: the content of the input files its parameters name (manifest
bytes, featureset and checkpoint bytes), a stat fingerprint of the media files (path and stat key:
hashing hours of video on every run would cost more than the cache saves; the feature store hashes
media bytes itself), the code that computes it (the import closure of the stage's module,
pipeline/code_identity.py: a changed extractor, optimiser or model reruns the stage), the task's own
source, and every other parameter as given. The same digest, without the output folder, names that
folder (``content_name``), so other inputs never write into a finished run's folder.

A key is known before the task runs, so it cannot say whether the files a cached result points at
are still there. Each task therefore returns its value ``stamped`` with the state of the files it
wrote (path and stat key of each), and ``run_cached`` recomputes a cached result whose files
are gone or were written since (another prediction into the same folder).

Prefect keeps the results and keys under ``<out>/.prefect-cache``: deleting the output folder resets
the cache with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext

from pipeline.code_identity import STAGE_MODULES, stage_identity
from pipeline.files import MemoryDigests, file_sha256, stat_key

# A task's key and its output folder's name each hash the same inputs (a feature set can be
# hundreds of MB): remembered by stat (size, mtime, ctime, inode) for the life of the process, so
# each file is read once per change.
_DIGESTS = MemoryDigests()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, read again only when its stat changes."""
    return file_sha256(path, _DIGESTS)


def tree_digest(directory: str | Path) -> str:
    """Hash of every file under ``directory`` (relative names + contents; hidden files skipped)."""
    h = hashlib.sha256()
    for rel, path in _visible_files(directory):
        h.update(rel.encode() + b"\0" + file_digest(path).encode() + b"\n")
    return h.hexdigest()


def _file_state(path: str | Path) -> str:
    """A file's stat key (pipeline.files.stat_key: size, mtime, ctime, inode), or "missing"."""
    try:
        return ",".join(map(str, stat_key(path)))
    except OSError:
        return "missing"


def media_fingerprint(paths: Iterable[str]) -> str:
    """Hash of (path, stat key) per media file; a missing file counts as such. A video rewritten
    with its size and mtime restored (a copy that keeps times) still changes it: ctime moves."""
    h = hashlib.sha256()
    for p in sorted(set(p for p in paths if p)):
        h.update(f"{p}\0{_file_state(p)}\n".encode())
    return h.hexdigest()


def manifest_fingerprint(manifest: str | Path) -> str:
    """Manifest bytes + its media files' stat fingerprint."""
    from pipeline.dataset.manifest import MEDIA_COLUMNS, read_manifest

    df = read_manifest(manifest)
    media = [p for col in MEDIA_COLUMNS for p in df[col]]
    return combine(file_digest(manifest), media_fingerprint(media))


def text_model_fingerprint(text_model: str) -> str:
    """A local sentence-encoder folder by its files' content (an encoder fine-tuned again into the
    same folder is another model); a packaged name or model id as given."""
    path = Path(text_model).expanduser()
    return tree_digest(path) if path.is_dir() else text_model


def combine(*parts: Any) -> str:
    """One hex digest of any JSON-able parts."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def short(digest: str) -> str:
    return digest[:10]


# --- the key ----------------------------------------------------------------------------------


@dataclass
class StageCache(CachePolicy):
    """Cache key of a stage's task: its code, the content of the files its parameters name, its
    parameters. ``content`` maps a parameter to the digest of what it names (tree_digest for a
    folder, manifest_fingerprint for a manifest, ...); an empty value (no manifest) is skipped."""

    stage: str = ""  # by keyword: CachePolicy's own fields come first
    content: dict[str, Callable[[Any], str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stage not in STAGE_MODULES:
            raise ValueError(f"StageCache(stage={self.stage!r}): one of {', '.join(STAGE_MODULES)}")

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str:
        # The task's own source (what it passes to the pipeline) is not in the stage's closure.
        source = TASK_SOURCE.compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        return combine(self.digest(inputs), source)

    def digest(self, inputs: dict[str, Any]) -> str:
        """Hash of the stage's code, the content named by ``inputs`` and ``inputs`` themselves."""
        contents = {
            name: digest(inputs[name]) for name, digest in self.content.items() if inputs.get(name)
        }
        return combine(stage_identity(self.stage), contents, inputs)


def content_name(task: Task, **inputs: Any) -> str:
    """Short digest of ``task``'s inputs without its output folder: names that folder, so a run
    with other inputs (or other code) writes elsewhere."""
    return short(task.cache_policy.digest(inputs))


# --- stale results ----------------------------------------------------------------------------


def written(path: str | Path) -> str:
    """The state of what a task wrote at ``path`` (a file or a folder): (name, stat key) of every
    visible file; an atomic rewrite gets a new inode even within one mtime tick."""
    if not Path(path).exists():
        return "missing"
    h = hashlib.sha256()
    for rel, p in _visible_files(path):
        h.update(f"{rel}\0{_file_state(p)}\n".encode())
    return h.hexdigest()


def stamped(value: Any, *outputs: str | Path) -> dict[str, Any]:
    """A task's result: its ``value`` and the state of the ``outputs`` it wrote (see run_cached)."""
    return {"value": value, "written": {str(p): written(p) for p in outputs}}


def still_written(result: dict[str, Any]) -> bool:
    """The files a stamped result points at are there and unchanged since its task wrote them."""
    return all(written(p) == state for p, state in result["written"].items())


def cached_task(task: Task, cache_dir: Path, refresh: bool = False) -> Task:
    """``task`` with results and cache keys under ``cache_dir`` (the run's output folder)."""
    return task.with_options(
        persist_result=True,
        result_storage=cache_dir,
        result_serializer="json",
        refresh_cache=refresh or None,
    )


def run_cached(
    task: Task, cache_dir: Path, refresh: bool = False, **parameters: Any
) -> tuple[Any, bool]:
    """Run ``task`` (or take its cached result) -> (its value, whether it came from the cache).

    ``task`` returns ``stamped(value, *outputs)``; a cached result whose outputs were since
    deleted or written again is recomputed. A failure raises, which fails the flow.
    """
    state = cached_task(task, cache_dir, refresh)(**parameters, return_state=True)
    result, cached = state.result(), state.name == "Cached"
    if cached and not still_written(result):
        state = cached_task(task, cache_dir, refresh=True)(**parameters, return_state=True)
        result, cached = state.result(), False
    return result["value"], cached


def _visible_files(root: str | Path) -> list[tuple[str, Path]]:
    """(relative name, path) of the files under ``root`` (``root`` itself if a file), sorted;
    hidden names skipped (temp files of atomic writes, caches)."""
    root = Path(root)
    if root.is_file():
        return [(root.name, root)]
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if not any(part.startswith(".") for part in rel.parts):
            out.append((rel.as_posix(), path))
    return out
