"""Optional parts stay optional: prefect-dask is the extra `dask`, fastapi only a constraint."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("prefect")

from flows.extract import extract, require_dask  # noqa: E402

PYPROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())


def test_dask_is_an_extra_and_fastapi_a_constraint():
    deps = PYPROJECT["project"]["dependencies"]
    assert not any(d.startswith(("prefect-dask", "fastapi")) for d in deps)
    assert PYPROJECT["project"]["optional-dependencies"]["dask"] == ["prefect-dask>=0.3"]
    assert PYPROJECT["tool"]["uv"]["constraint-dependencies"] == ["fastapi<0.151"]


def test_without_prefect_dask_the_dask_runner_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"uv sync --extra dask"):
        require_dask()
    # the flow refuses before any work (fn: the flow's function, no Prefect run needed)
    with pytest.raises(ImportError, match="optional extra"):
        extract.fn(task_runner="dask", out_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
