"""Imports go one way: flows -> pipeline -> {extractors, model}; only flows/ imports prefect."""

from __future__ import annotations

import ast
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


def test_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import flows.train\nfrom prefect import flow\n")
    assert {"flows", "prefect"} <= _imported_top_levels(bad)
