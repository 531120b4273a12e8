"""The identity of a stage's code: a hash over the import closure of the module that runs it.

    import_closure("pipeline.training.train") -> ["model/ada2i.py", ..., "pipeline/training/optim.py"]
    code_identity("pipeline.training.train")  -> sha256 hex of those files (relative path + bytes)
    stage_identity("train")                   -> code_identity of the stage's STAGE_MODULES

A result made by other code must not be reused (a flow's cache, a run folder's resume), and a
hand-kept list of "the files training depends on" drifts from the code: two such lists once
disagreed, so an edit to the optimiser changed one and not the other. The closure is found
statically (ast): every ``import``/``from ... import`` of a project module anywhere in a file,
function-level imports included (the extractors are imported lazily), followed transitively,
with each package's ``__init__.py`` and the files of a ``templates/`` folder beside an imported
module (the HTML reports read them). Nothing is executed, so the answer does not depend on what
happens to be imported in this process. Third-party code is not hashed: the lock file pins it.
"""

from __future__ import annotations

import ast
import hashlib
import threading
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Top-level packages whose code is part of a stage's identity.
PROJECT_PACKAGES = ("pipeline", "extractors", "model", "flows")
# A package folder's data that its code reads at run time (report templates): part of the identity
# of every stage that imports a module of that folder, so an edited template is not served stale.
DATA_FOLDER = "templates"
# The module(s) each stage runs: its identity is their import closure. The flows' caches and the
# training run folders both use it, so a flow never serves a result `erc train` would refuse.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "demo": ("pipeline.dataset.demo",),
    "manifest": ("pipeline.dataset.manifest", "pipeline.dataset.adapters"),
    "extract": ("pipeline.features.extract",),
    "featureset": ("pipeline.features.extract",),
    "train": ("pipeline.training.train",),
    "evaluate": ("pipeline.training.evaluate",),
    "predict": ("pipeline.inference.predict",),
}


# One parse at a time: CPython 3.11's AST constructor keeps its recursion-depth check in state
# that threads share, so two parses at once (two flow runs of one worker process computing their
# cache keys) can fail with "SystemError: AST constructor recursion depth mismatch".
_PARSE_LOCK = threading.Lock()


def _module_file(name: str, root: Path) -> Path | None:
    """Dotted module name -> its file under root (a package's __init__.py), or None."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Dotted names a file imports (absolute; relative imports resolved), submodules included."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    with _PARSE_LOCK:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            # `from pkg import name`: name may be a submodule (checked against files later)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _closure(entries: tuple[str, ...], root: Path) -> tuple[str, ...]:
    seen: dict[str, Path] = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] not in PROJECT_PACKAGES:
            continue
        path = _module_file(name, root)
        if path is None:
            continue  # an attribute imported from a module, not a module
        seen[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += sorted(_imported_names(path, name))
    files = set(seen.values())
    for folder in {p.parent for p in seen.values()}:  # data a module reads: HTML templates
        files.update(f for f in (folder / DATA_FOLDER).rglob("*") if f.is_file())
    return tuple(sorted(p.relative_to(root).as_posix() for p in files))


def import_closure(*entries: str, root: Path = PROJECT_ROOT) -> list[str]:
    """Project files (relative POSIX paths, sorted) that importing ``entries`` can load."""
    for entry in entries:
        if _module_file(entry, root) is None:
            raise ValueError(f"no module {entry!r} under {root}")
    return list(_closure(tuple(sorted(entries)), root.resolve()))


def code_identity(*entries: str, root: Path = PROJECT_ROOT) -> str:
    """sha256 hex of the import closure of ``entries``: each file's relative path and bytes."""
    h = hashlib.sha256()
    for rel in import_closure(*entries, root=root):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()


def stage_identity(stage: str, root: Path = PROJECT_ROOT) -> str:
    """code_identity of the module(s) a pipeline stage runs (STAGE_MODULES)."""
    if stage not in STAGE_MODULES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_MODULES)}")
    return code_identity(*STAGE_MODULES[stage], root=root)
