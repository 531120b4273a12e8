"""pipeline/code_identity.py: one code identity per stage, from its import closure."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.code_identity import PROJECT_ROOT, code_identity, import_closure, stage_identity


def _project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for pkg in ("pipeline", "extractors", "model", "flows"):
        shutil.copytree(
            PROJECT_ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__")
        )
    return root


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_closure_follows_absolute_relative_lazy_and_submodule_imports(tmp_path):
    _write(tmp_path, "pipeline/__init__.py", "")
    _write(tmp_path, "pipeline/a.py", "from . import b\nimport os\n")
    _write(tmp_path, "pipeline/b.py", "def f():\n    from pipeline.sub import c  # lazy\n")
    _write(tmp_path, "pipeline/sub/__init__.py", "")
    _write(tmp_path, "pipeline/sub/c.py", "from ..d import name\n")
    _write(tmp_path, "pipeline/d.py", "name = 1\n")
    _write(tmp_path, "pipeline/unused.py", "")
    assert import_closure("pipeline.a", root=tmp_path) == [
        "pipeline/__init__.py",
        "pipeline/a.py",
        "pipeline/b.py",
        "pipeline/d.py",
        "pipeline/sub/__init__.py",
        "pipeline/sub/c.py",
    ]
    before = code_identity("pipeline.a", root=tmp_path)
    _write(tmp_path, "pipeline/unused.py", "x = 1\n")
    assert code_identity("pipeline.a", root=tmp_path) == before  # outside the closure
    _write(tmp_path, "pipeline/d.py", "name = 2\n")
    assert code_identity("pipeline.a", root=tmp_path) != before


def test_an_unknown_module_or_stage_is_refused():
    with pytest.raises(ValueError, match="no module 'pipeline.nope'"):
        import_closure("pipeline.nope")
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        stage_identity("nope")


def test_the_train_flow_and_the_run_folder_share_one_training_identity():
    """They once kept two hand lists: the flow's lacked optim.py, the resumable state's module and
    evaluate.py, so after an edit to the optimiser `erc train` refused the folder while the train
    flow served its cached (stale) checkpoint."""
    from flows.train import train_model
    from pipeline.training.run_folder import code_digest as run_code

    assert train_model.cache_policy.stage == "train"  # its key hashes stage_identity("train")
    assert run_code() == stage_identity("train")
    closure = import_closure("pipeline.training.train")
    for rel in (
        "pipeline/training/optim.py",
        "pipeline/training/train.py",  # the loop and its resumable state
        "pipeline/training/evaluate.py",
        "pipeline/training/diagnostics.py",
        "pipeline/features/featureset.py",
        "model/ada2i.py",
        "model/objective.py",
    ):
        assert rel in closure


@pytest.mark.parametrize(
    "edited",
    [
        "pipeline/training/optim.py",
        "pipeline/training/train.py",
        "model/ada2i.py",
        "model/objective.py",
    ],
)
def test_editing_training_code_changes_the_train_identity_and_not_the_manifest_one(
    tmp_path, edited
):
    root = _project_copy(tmp_path)
    train, manifest = stage_identity("train", root), stage_identity("manifest", root)
    assert train == stage_identity("train")  # a copy has the same identity
    with open(root / edited, "a") as f:
        f.write("\n# an edit\n")
    assert stage_identity("train", root) != train
    assert stage_identity("manifest", root) == manifest


def test_an_edited_report_template_changes_the_predict_identity(tmp_path):
    root = _project_copy(tmp_path)
    templates = sorted((root / "pipeline/inference/templates").glob("*.html.j2"))
    assert templates, "the HTML reports are rendered from templates"
    closure = import_closure("pipeline.inference.predict", root=root)
    assert "pipeline/inference/templates/index.html.j2" in closure
    before = stage_identity("predict", root=root)
    index = root / "pipeline/inference/templates/index.html.j2"
    index.write_text(index.read_text() + "\n")
    assert stage_identity("predict", root=root) != before
    assert "pipeline/inference/templates/index.html.j2" not in import_closure(
        "pipeline.training.train", root=root
    )  # training does not read the report templates
