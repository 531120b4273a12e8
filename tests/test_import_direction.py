"""Imports go one way: flows -> pipeline -> {extractors, model}; only flows/ imports prefect.

Inside pipeline/ the stages go one way too: dataset -> features -> training -> inference -> cli.
A stage imports only earlier stages and the shared helpers at pipeline/ top level; cli/ may import
every stage; a shared helper imports no stage.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"flows", "pipeline", "extractors", "model", "bench"}
ALLOWED = {
    "model": set(),
    "extractors": set(),
    "pipeline": {"extractors", "model"},
    "flows": {"pipeline"},
    "bench": {"pipeline", "extractors", "model"},
}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_downstream(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        imported = _imported_top_levels(path)
        bad = (imported & OURS) - ALLOWED[package] - {package}
        if "prefect" in imported and package != "flows":
            bad.add("prefect")
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_model_is_torch_only():
    third_party = set()
    for path in (ROOT / "model").rglob("*.py"):
        third_party |= _imported_top_levels(path)
    assert not third_party & {"transformers", "sentence_transformers", "cv2", "facenet_pytorch"}


# pipeline's stages in import order: a module may import its own stage and earlier ones.
STAGES = ("dataset", "features", "training", "inference", "cli")
# Top-level modules that are entry points, not shared helpers: ranked with the stage they run.
ENTRY_POINTS = {"__main__": "cli"}


def _pipeline_imports(path: Path) -> set[str]:
    """Dotted pipeline modules ``path`` imports anywhere (function-local imports included)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # `from pipeline import media` names a module; `from pipeline.x import f` a member.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] == "pipeline"}


def _stage_rank(dotted: str) -> int | None:
    """Rank of the stage a dotted pipeline name belongs to; None for shared helpers."""
    parts = dotted.split(".")
    if len(parts) < 2:
        return None
    first = ENTRY_POINTS.get(parts[1], parts[1])
    return STAGES.index(first) if first in STAGES else None


def _stage_offenders(root: Path) -> list[str]:
    offenders = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        own = _stage_rank(module)
        for target in sorted(_pipeline_imports(path)):
            rank = _stage_rank(target)
            if rank is not None and (own is None or rank > own):
                where = "a shared helper" if own is None else STAGES[own]
                offenders.append(f"{path.relative_to(ROOT)} ({where}) imports {target}")
    return offenders


def test_pipeline_stages_import_only_earlier_stages():
    assert (ROOT / "pipeline" / "dataset").is_dir()
    offenders = _stage_offenders(ROOT / "pipeline")
    assert not offenders, "\n".join(offenders)


def test_stage_checker_sees_a_violation(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "pipeline" / "dataset").mkdir(parents=True)
    (tmp_path / "pipeline" / "dataset" / "late.py").write_text(
        "def f():\n    from pipeline.training import train\n"
    )
    (tmp_path / "pipeline" / "helper.py").write_text("from pipeline import features\n")
    (tmp_path / "pipeline" / "cli").mkdir()
    (tmp_path / "pipeline" / "cli" / "ok.py").write_text("from pipeline.inference import predict\n")
    assert _stage_offenders(tmp_path / "pipeline") == [
        "pipeline/dataset/late.py (dataset) imports pipeline.training.train",
        "pipeline/helper.py (a shared helper) imports pipeline.features",
    ]


def test_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import flows.train\nfrom prefect import flow\n")
    assert {"flows", "prefect"} <= _imported_top_levels(bad)
