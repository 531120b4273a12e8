"""flows/caching.py: a stage's cache key follows its inputs' content, its code and its parameters;
a cached result whose files were deleted or rewritten is recomputed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("prefect")

from prefect import flow, task  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows import caching  # noqa: E402
from flows.caching import StageCache, file_digest, run_cached, stamped, tree_digest  # noqa: E402
from pipeline.code_identity import PROJECT_ROOT, stage_identity  # noqa: E402


@task(name="shout", cache_policy=StageCache(stage="demo", content={"text_file": file_digest}))
def shout(text_file: str, out_dir: str, times: int) -> dict:
    """A tiny stage: the input file's text in capitals, ``times`` times, into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shout.txt").write_text(Path(text_file).read_text().upper() * times)
    return stamped(str(out / "shout.txt"), out_dir)


@flow(name="shout-flow")
def shout_flow(text_file: str, out_dir: str, cache_dir: str, times: int = 1) -> tuple[str, bool]:
    return run_cached(shout, Path(cache_dir), text_file=text_file, out_dir=out_dir, times=times)


@pytest.fixture(scope="module")
def harness():
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_a_rerun_is_cached_until_an_input_output_or_parameter_changes(harness, tmp_path):
    text, out, cache = tmp_path / "in.txt", tmp_path / "out", tmp_path / ".cache"
    text.write_text("abc")
    run = lambda **kw: shout_flow(str(text), str(out), str(cache), **kw)  # noqa: E731

    path, cached = run()
    assert not cached and Path(path).read_text() == "ABC"
    assert run() == (path, True)  # unchanged: served from the cache

    before = os.stat(text)
    text.write_text("abd")  # same size, same path: only the content says it changed
    os.utime(text, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    assert run() == (path, False) and Path(path).read_text() == "ABD"
    assert run() == (path, True)

    shutil.rmtree(out)  # deleted output: recomputed, not served stale
    assert run() == (path, False) and Path(path).read_text() == "ABD"

    Path(path).write_text("something else")  # rewritten by another writer
    assert run() == (path, False) and Path(path).read_text() == "ABD"

    assert run(times=2)[1] is False and Path(path).read_text() == "ABDABD"  # another parameter


def test_tree_digest_follows_content_and_names_not_hidden_files(tmp_path):
    (tmp_path / "a").write_text("1")
    before = tree_digest(tmp_path)
    (tmp_path / ".tmp-write").write_text("partial")  # an atomic write in progress
    assert tree_digest(tmp_path) == before
    # (another size: a same-size rewrite within the filesystem clock's tick keeps the stat key
    # the digests are remembered by; extractors/file_digest.py)
    (tmp_path / "a").write_text("22")
    assert tree_digest(tmp_path) != before


def test_a_media_file_rewritten_with_its_size_and_mtime_restored_changes_the_fingerprint(tmp_path):
    """The extract and predict stages key media by stat, not bytes: a video replaced by another of
    the same size whose mtime is set back (a copy that keeps times) must still rerun the stage."""
    video = tmp_path / "a.mp4"
    video.write_bytes(b"first take")
    before_stat, before = os.stat(video), caching.media_fingerprint([str(video)])
    replacement = tmp_path / "b.mp4"
    replacement.write_bytes(b"other take")  # same size
    os.utime(replacement, ns=(before_stat.st_atime_ns, before_stat.st_mtime_ns))
    os.replace(replacement, video)
    assert os.stat(video).st_size == before_stat.st_size
    assert os.stat(video).st_mtime_ns == before_stat.st_mtime_ns
    assert caching.media_fingerprint([str(video)]) != before
    video.unlink()
    assert caching.media_fingerprint([str(video)]) not in (before, "")


def test_a_tasks_key_and_folder_name_read_each_input_file_once(tmp_path, monkeypatch):
    """The key and the output folder's name both digest the inputs (a feature set can be large):
    each file is read once per change, not once per digest."""
    import extractors.file_digest as digests

    for name in ("features.safetensors", "meta.json"):
        (tmp_path / name).write_bytes(name.encode() * 1000)
    reads = []
    real = digests.sha256_file
    monkeypatch.setattr(digests, "sha256_file", lambda p: reads.append(Path(p).name) or real(p))
    assert tree_digest(tmp_path) == tree_digest(tmp_path)
    assert sorted(reads) == ["features.safetensors", "meta.json"]
    (tmp_path / "meta.json").write_bytes(b"{}")
    tree_digest(tmp_path)
    assert sorted(reads) == ["features.safetensors", "meta.json", "meta.json"]


def test_a_stage_is_named_by_keyword_and_must_exist():
    with pytest.raises(ValueError, match="StageCache"):
        StageCache("train")  # positionally: the base class's key_storage
    with pytest.raises(ValueError, match="one of"):
        StageCache(stage="nope")


def test_editing_training_code_changes_the_train_flow_key(tmp_path, monkeypatch):
    """The train task's key follows the training closure (pipeline/code_identity.py): after an
    edit to the optimiser the train flow trains again instead of serving the old checkpoint."""
    from flows.train import train_model

    root = tmp_path / "project"
    for pkg in ("pipeline", "extractors", "model", "flows"):
        shutil.copytree(
            PROJECT_ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__")
        )
    featureset = tmp_path / "featureset"
    featureset.mkdir()
    (featureset / "features.safetensors").write_bytes(b"\0" * 8)
    inputs = dict(
        featureset_dir=str(featureset), model_preset="tiny", modalities="ta", seed=0, overrides={}
    )
    monkeypatch.setattr(caching, "stage_identity", lambda stage: stage_identity(stage, root))
    before = train_model.cache_policy.digest(inputs)
    assert before == train_model.cache_policy.digest(dict(inputs))
    with open(root / "pipeline/training/optim.py", "a") as f:
        f.write("\n# an edit\n")
    assert train_model.cache_policy.digest(inputs) != before
