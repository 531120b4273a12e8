"""The Dask task runner is optional: without prefect-dask the rest works and the runner names the
extra to install."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("prefect")

from flows.extract import extract, require_dask  # noqa: E402


def test_without_prefect_dask_the_dask_runner_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"uv sync --extra dask"):
        require_dask()
    # the flow refuses before any work (fn: the flow's function, no Prefect run needed)
    with pytest.raises(ImportError, match="optional extra"):
        extract.fn(task_runner="dask", out_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
