"""The Prefect flows under prefect_test_harness, on a tiny generated demo set.

One module-scoped run of extract-and-train (tiny extractors, text + audio, 3 dialogues x 4
utterances, 2 epochs) is shared by the tests that check its outputs, its artifacts and that a
second run comes entirely from the caches. Visual extraction is left out to keep the module fast
(DenseNet on CPU dominates the run); the flows pass modalities through unchanged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytest.importorskip("prefect")

from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows.evaluate import evaluate  # noqa: E402
from flows.extract import extract  # noqa: E402
from flows.extract_and_train import extract_and_train  # noqa: E402
from flows.grid import grid  # noqa: E402
from flows.predict import predict  # noqa: E402
from flows.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(
    preset="tiny",
    modalities="ta",
    model_preset="tiny",
    demo_dialogues=3,
    demo_utterances=4,
    overrides={"epochs": 2},
)
FLOW_NAMES = {"extract", "train", "evaluate", "predict", "extract-and-train", "grid"}


@pytest.fixture(scope="module")
def harness():
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary API server takes long to start on a busy 2-core machine.
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def demo_runs(harness, tmp_path_factory):
    """The same extract-and-train run twice: (out_dir, first summary, second summary, and the
    tensor files of the first run with their modification times, then after the second run)."""
    out = tmp_path_factory.mktemp("flows") / "demo"
    first = extract_and_train(out_dir=str(out), **TINY)
    written = _tensor_files(out)
    second = extract_and_train(out_dir=str(out), **TINY)
    return out, first, second, (written, _tensor_files(out))


def _tensor_files(root: Path) -> dict[str, int]:
    """Every safetensors file under root (store entries, feature set, checkpoints) -> mtime_ns."""
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*.safetensors"))}


# --- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda out: extract(manifest="/no/such/manifest.csv", out_dir=out), "manifest not found"),
        (lambda out: extract(modalities="tx", out_dir=out), "unknown letter(s) x"),
        (lambda out: extract(modalities="", out_dir=out), "non-empty subset"),
        (lambda out: extract(preset="huge", out_dir=out), "preset"),
        (lambda out: extract(dataset="iemocap", out_dir=out), "needs root="),
        (lambda out: extract(dataset="meld", root="/no/such/dir", out_dir=out), "root not found"),
        (
            lambda out: extract_and_train(model_preset="giant", out_dir=out),
            "model_preset: Input should be",
        ),
        (lambda out: extract_and_train(seeds=(), out_dir=out), "at least one seed"),
        (lambda out: extract_and_train(overrides={"epochz": 1}, out_dir=out), "epochz"),
        (lambda out: extract_and_train(overrides={"use_afw": "maybe"}, out_dir=out), "use_afw="),
        (lambda out: train(overrides={"lr": float("nan")}, out_dir=out), "lr=nan: expected"),
        (lambda out: train(seeds=(-1,), out_dir=out), "seed=-1"),
        (lambda out: extract_and_train(modalities="tvv", out_dir=out), "without repeats"),
        (lambda out: train(out_dir=out), "run the extract flow first"),
        (lambda out: evaluate(out_dir=out), "run the train flow first"),
        (lambda out: evaluate(split="final", out_dir=out), "split"),
        (lambda out: extract(store_index="nfs", out_dir=out), "store_index"),
        (lambda out: grid(seeds=(), out_dir=out), "at least one seed"),
        (lambda out: grid(deployment="train/moon", out_dir=out), "deployment"),
        (lambda out: grid(timeout_s=0, out_dir=out), "timeout_s 0"),
        (lambda out: grid(overrides={"lr": -1}, out_dir=out), "lr=-1"),
        (lambda out: grid(out_dir=out), "run the extract flow first"),
    ],
)
def test_bad_parameters_fail_at_once(harness, tmp_path, call, message):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    with pytest.raises(Exception) as info:
        call(str(out))
    assert message in str(info.value)
    assert time.perf_counter() - t0 < 30  # before any extraction or training
    assert not (out / "demo-data").exists() and not (out / "store").exists()


# --- the whole job on the demo -----------------------------------------------------------------


def test_extract_and_train_writes_outputs(demo_runs):
    out, first, _, _ = demo_runs
    assert set(first["stages"].values()) == {"ran"}
    assert first["failed_utterances"] == 0
    summary = json.loads((out / "summary.json").read_text())  # written again by the second run
    assert summary["paths"] == first["paths"]
    [row] = first["metrics"]  # one seed
    assert row["modalities"] == "ta"
    paths = first["paths"]
    # The scores the flow reports are scikit-learn's over the predictions it wrote (the summary
    # rounds them to 6 decimals).
    from sklearn.metrics import accuracy_score, f1_score

    [predictions] = [p for p in paths.values() if Path(p).name == "predictions.csv"]
    table = pd.read_csv(predictions, keep_default_na=False)
    labels = [c.removeprefix("p_") for c in table.columns if c.startswith("p_")]
    known = table[table["label"] != ""]
    acc = accuracy_score(known["label"], known["predicted"])
    wf1 = f1_score(known["label"], known["predicted"], labels=labels, average="weighted",
                   zero_division=0)  # fmt: skip
    assert row["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert row["weighted_f1"] == pytest.approx(wf1, abs=1e-6)
    assert all(Path(p).exists() for p in paths.values())
    checkpoint = Path(paths["checkpoint seed 0"])
    assert (out / "best").is_symlink() and (out / "best").resolve() == checkpoint  # README's path
    assert (checkpoint / "model.safetensors").is_file()
    assert (checkpoint / "checkpoint.json").is_file()
    by_suffix = {Path(p).name for p in paths.values()}
    assert {"metrics.json", "per_class.csv", "predictions.csv", "confusion.png"} <= by_suffix
    featureset = Path(paths["featureset"])
    assert (featureset / "features.safetensors").is_file()
    meta = json.loads((featureset / "meta.json").read_text())
    assert sum(d["length"] for d in meta["dialogues"]) == 3 * 4


def test_second_run_comes_from_the_caches(demo_runs):
    _, first, second, (written, after) = demo_runs
    assert set(second["stages"].values()) == {"cached"}, second["stages"]
    assert second["paths"] == first["paths"]
    assert second["metrics"] == first["metrics"]
    # nothing was extracted or trained again: no tensor file is new or rewritten
    assert any("store" in p for p in written) and any("model.safetensors" in p for p in written)
    assert after == written


def test_run_publishes_artifacts(demo_runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        keys = {
            a.key
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(
                        any_=[
                            "erc-metrics",
                            "erc-per-class",
                            "erc-confusion-matrix",
                            "erc-reports",
                            "erc-checkpoints",
                            "erc-training",
                            "erc-extraction",
                            "erc-summary",
                        ]
                    )
                )
            )
        }
    assert {"erc-metrics", "erc-per-class", "erc-confusion-matrix", "erc-summary"} <= keys
    assert {"erc-extraction", "erc-training", "erc-checkpoints", "erc-reports"} <= keys


def test_parent_run_shows_the_result_and_stages_report_progress(demo_runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, ArtifactFilterType
    from prefect.client.schemas.sorting import ArtifactSort

    _, first, second, _ = demo_runs
    with get_client(sync_client=True) as client:
        [result, older] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["erc-summary"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=2,
        )
        progress = client.read_artifacts(
            artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"]))
        )
    for md in (result.data, older.data):
        assert "| accuracy | W-F1 | macro F1 |" in md and "t alone" in md
        assert md.count("![seed 0: ") == 2  # training curves and confusion matrix, embedded
        assert "(file:///" in md
    # the second run computed nothing: every entry came from the first run's cache
    assert "**0** entries computed" in result.data
    assert first["extraction"]["computed"] > 0 and second["extraction"]["computed"] == 0
    assert second["extraction"]["from_cache"] == sum(first["extraction"].values())
    # extraction and training published progress bars, finished at 100 %
    descriptions = {a.description: a.data for a in progress}
    assert any(d.startswith("extract ") for d in descriptions)
    assert any(d.startswith("train tiny ta seed 0") for d in descriptions)
    assert set(descriptions.values()) == {100.0}
    # ... on the stage's own (sub)flow run and on the extract-and-train run the user started
    with get_client(sync_client=True) as client:
        tops = {
            a.flow_run_id
            for a in progress
            if client.read_flow_run(a.flow_run_id).parent_task_run_id is None
        }
        top_names = {client.read_flow_run(r).flow_id for r in tops}
        parent_bars = [a.description for a in progress if a.flow_run_id in tops]
    assert len(top_names) == 1  # the extract-and-train flow
    assert any(d.startswith("extract ") for d in parent_bars)
    assert any(d.startswith("train tiny ta seed 0") for d in parent_bars)
    # and log lines: the shard's entries done of total, each epoch with its dev W-F1
    with get_client(sync_client=True) as client:
        messages = [log.message for log in client.read_logs()]
    computed = first["extraction"]["computed"]
    assert any(f"{computed}/{computed} entries computed (100%)" in m for m in messages), messages
    assert any("epoch 2/2: loss" in m and "dev W-F1" in m for m in messages)


def test_train_again_does_not_extract_and_reuses_finished_seeds(demo_runs):
    out, first, _, _ = demo_runs
    runs = train(
        out_dir=str(out), preset="tiny", modalities="ta", model_preset="tiny", seeds=(0, 1),
        overrides={"epochs": 2},
    )  # fmt: skip
    assert [r["status"] for r in runs] == ["cached", "ran"]
    assert runs[0]["checkpoint_dir"] == first["paths"]["checkpoint seed 0"]
    assert Path(runs[1]["checkpoint_dir"], "model.safetensors").is_file()
    # evaluate defaults to the last train run's checkpoints: seed 0 cached, seed 1 new.
    reports = evaluate(out_dir=str(out))
    assert [r["status"] for r in reports] == ["cached", "ran"]


def test_deleted_output_is_recomputed_not_served_stale(demo_runs):
    import shutil

    out, first, _, _ = demo_runs
    shutil.rmtree(first["paths"]["featureset"])
    again = extract(
        out_dir=str(out), preset="tiny", modalities="ta", demo_dialogues=3, demo_utterances=4
    )
    assert again["stages"] == {"manifest": "cached", "extract": "cached", "featureset": "ran"}
    assert Path(again["featureset_dir"], "features.safetensors").is_file()


def test_failed_video_is_reported_and_others_complete(demo_runs, tmp_path):
    """One missing video: non-strict completes with a failures report; strict fails the run."""
    from pipeline.dataset.manifest import read_manifest, write_manifest

    out, first, _, _ = demo_runs
    df = read_manifest(first["paths"]["manifest"])
    bad = df["dialogue_id"] == df["dialogue_id"].iloc[-1]
    df.loc[bad, "video_path"] = str(tmp_path / "missing.mp4")
    manifest = write_manifest(df, tmp_path / "manifest.csv")
    store = first["paths"]["feature store"]  # the good utterances come from the store
    result = extract(
        manifest=str(manifest), store_root=store, out_dir=str(tmp_path / "out"),
        preset="tiny", modalities="ta",
    )  # fmt: skip
    assert result["failed"] >= int(bad.sum())
    [shard] = result["shards"]
    assert Path(shard["failures_path"]).is_file()
    assert "missing.mp4" in Path(shard["failures_path"]).read_text()
    assert Path(result["featureset_dir"], "features.safetensors").is_file()
    with pytest.raises(Exception, match="(?i)fail|missing|not found"):
        extract(
            manifest=str(manifest), store_root=store, out_dir=str(tmp_path / "strict"),
            preset="tiny", modalities="ta", strict=True,
        )  # fmt: skip


def test_extract_with_a_text_model_folder_is_cached_until_the_folder_changes(demo_runs, tmp_path):
    """text_model: the manifest's text encoded by that sentence encoder (its weights in the feature
    spec); an encoder rewritten into the same folder (fine-tuned again) is not served from the
    cache of the one before."""
    import shutil

    from safetensors.torch import load_file, save_file

    from extractors.text import SentenceTextExtractor, packaged_minilm_path
    from pipeline.features.featureset import FeatureSet

    out, first, _, _ = demo_runs
    encoder = tmp_path / "encoder"
    shutil.copytree(packaged_minilm_path(), encoder)
    run = lambda: extract(  # noqa: E731
        manifest=first["paths"]["manifest"], store_root=first["paths"]["feature store"],
        out_dir=str(tmp_path / "out"), preset="tiny", modalities="t", text_model=str(encoder),
    )  # fmt: skip

    def spec_hash(result) -> str:
        return FeatureSet.load(result["featureset_dir"]).feature_spec["t"]["extractors"][0][
            "weights_hash"
        ]

    before = run()
    assert spec_hash(before) == SentenceTextExtractor(str(encoder)).weights_hash
    assert FeatureSet.load(before["featureset_dir"]).features["t"].shape[1] == 384  # not tiny's
    assert run()["stages"] == {"manifest": "given", "extract": "cached", "featureset": "cached"}

    weights = load_file(encoder / "model.safetensors")
    name = next(k for k in weights if k.endswith("LayerNorm.weight"))
    weights[name] = weights[name] * 1.5
    save_file(weights, encoder / "model.safetensors", metadata={"format": "pt"})
    after = run()
    assert after["stages"] == {"manifest": "given", "extract": "ran", "featureset": "ran"}
    assert spec_hash(after) == SentenceTextExtractor(str(encoder)).weights_hash != spec_hash(before)
    assert after["featureset_dir"] != before["featureset_dir"]


def test_predict_demo_videos_with_the_trained_checkpoint(demo_runs, tmp_path):
    out, first, _, _ = demo_runs
    # defaults: new demo conversations (not the training ones), the last train run's checkpoint
    result = predict(out_dir=str(out))
    assert result["status"] == "ran"
    assert [v["status"] for v in result["videos"]] == ["ok"] * 2
    assert all(Path(v["video"]).is_relative_to(out / "demo-unseen") for v in result["videos"])
    assert sum(v["utterances"] for v in result["videos"]) == 2 * 8
    for v in result["videos"]:  # readable in the artifact's table: "happy 3, sad 1", not JSON
        counts = [part.rsplit(" ", 1) for part in v["labels"].split(", ")]
        assert sum(int(n) for _, n in counts) == v["utterances"] and "{" not in v["labels"]
    assert Path(result["index_html"]).is_file() and Path(result["summary_csv"]).is_file()
    assert Path(result["out_dir"]) == out / "predictions"  # where the user said: not hashed
    assert predict(out_dir=str(out))["status"] == "cached"
    Path(result["index_html"]).unlink()  # an edited predictions folder is predicted again
    assert predict(out_dir=str(out))["status"] == "ran" and Path(result["index_html"]).is_file()
    # the store extraction filled is the default: no feature was extracted again
    entries = len(list((out / "store").rglob("*.safetensors")))
    mine = tmp_path / "mine"
    one = sorted((out / "demo-data").rglob("*.mp4"))[0]
    assert (
        predict(inputs=[str(one)], out_dir=str(out), predictions_dir=str(mine))["status"] == "ran"
    )
    assert len(list((out / "store").rglob("*.safetensors"))) == entries
    assert (mine / "index.html").is_file() and not (mine / "store").exists()
    # the same folder written by another prediction: the earlier cached result is not served
    predict(inputs=[str(out / "demo-data")], out_dir=str(out), predictions_dir=str(mine))
    again = predict(inputs=[str(one)], out_dir=str(out), predictions_dir=str(mine))
    assert again["status"] == "ran" and len(again["videos"]) == 1
    with pytest.raises(FileNotFoundError, match="inputs not found"):
        predict(inputs=[str(tmp_path / "none.mp4")], out_dir=str(out))
    # With the demo manifest's labels the run is scored, and names its demo-trained model.
    scored = predict(
        inputs=[str(out / "demo-data")], out_dir=str(out), manifest=first["paths"]["manifest"],
        predictions_dir=str(tmp_path / "s"),
    )  # fmt: skip
    metrics = json.loads(Path(scored["metrics_json"]).read_text())
    assert metrics["n"] == 3 * 4 and Path(scored["confusion_png"]).is_file()
    assert scored["model"]["caveat"].startswith("trained on generated demo data")


@pytest.mark.integration  # a local Dask cluster of two worker processes
def test_dask_task_runner_fans_out_shards(demo_runs, tmp_path):
    """Two shards on a local Dask cluster of two worker processes."""
    pytest.importorskip("prefect_dask")  # the optional extra `dask` (make install has it)
    _, first, _, _ = demo_runs
    result = extract(
        manifest=first["paths"]["manifest"], out_dir=str(tmp_path / "dask"), preset="tiny",
        modalities="t", task_runner="dask", dask_workers=2, shards=2,
    )  # fmt: skip
    assert len(result["shards"]) == 2
    assert all(s["status"] == "ran" for s in result["shards"])
    assert sum(s["computed"] + s["from_store"] for s in result["shards"]) > 0
    assert sum(s["failed"] for s in result["shards"]) == 0
    assert Path(result["featureset_dir"], "features.safetensors").is_file()


def test_keeper_store_index_ingests_what_the_shards_wrote(demo_runs, tmp_path):
    """store_index="keeper": shard tasks write entry files only, the flow indexes them."""
    from pipeline.features.store import FeatureStore

    _, first, _, _ = demo_runs
    common = {
        "manifest": first["paths"]["manifest"],
        "preset": "tiny",
        "modalities": "t",
        "shards": 2,
    }
    shared = extract(out_dir=str(tmp_path / "shared"), store_index="shared", **common)
    keeper = extract(out_dir=str(tmp_path / "keeper"), store_index="keeper", **common)
    assert sum(s["computed"] for s in keeper["shards"]) > 0
    with FeatureStore(keeper["store_root"], create=False) as store:
        keys = {r["key"] for r in store.entries()}
        assert store.verify() == (len(keys), [])  # every entry file is indexed, none damaged
    with FeatureStore(shared["store_root"], create=False) as store:
        assert {r["key"] for r in store.entries()} == keys
    a, b = (
        Path(r["featureset_dir"], "features.safetensors").read_bytes() for r in (shared, keeper)
    )
    assert a == b


# --- deployments and docker files (structure only; no server, no engine) ------------------------


def test_prefect_yaml_deploys_every_flow_on_the_process_pool():
    import importlib

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = set()
    for d in spec["deployments"]:
        module, func = d["entrypoint"].split(":")
        fl = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), func)
        names.add(fl.name)
        pool = d["work_pool"]["name"]
        assert (d["name"], pool) in {("local", "erc-process"), ("gpu", "erc-gpu")}
    assert names == FLOW_NAMES
    local = {d["entrypoint"] for d in spec["deployments"] if d["name"] == "local"}
    assert "flows/extract_and_train.py:extract_and_train" in local
    [pull] = spec["pull"]
    assert "prefect.deployments.steps.set_working_directory" in pull


def test_docker_compose_has_postgres_server_worker_and_deploy():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "server", "worker", "deploy"} <= set(services)
    server_env = services["server"]["environment"]
    assert "postgresql+asyncpg" in str(server_env)
    assert services["deploy"].get("restart", "no") == "no"
    for name in ("worker", "deploy"):
        assert "PREFECT_API_URL" in str(services[name]["environment"])
    # Users get the official postgres image; a registry-less machine substitutes its own build.
    assert services["postgres"]["image"] == "${ERC_POSTGRES_IMAGE:-postgres:16-alpine}"
    # The server runs the slim Prefect-only image, the worker and deploy the project's image.
    assert services["server"]["build"]["dockerfile"] == "docker/Dockerfile.server"
    for name in ("worker", "deploy"):
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    # Published ports only on the loopback interface.
    for svc in services.values():
        assert all(str(p).startswith("127.0.0.1:") for p in svc.get("ports", []))
    # No top-level "name:": Debian's docker-compose 1.29 rejects it (docker/.env names the project).
    assert "name" not in compose
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert "uv sync" in text and "--frozen" in text
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.cuda", "Dockerfile.server"):
        text = (ROOT / "docker" / dockerfile).read_text()
        # No image registry besides the base: uv from PyPI, no "# syntax=" frontend image.
        assert "ghcr.io" not in text and not text.startswith("# syntax=")
        assert "bootstrap.sh" in text and "id=ca" in text
    server = (ROOT / "docker" / "Dockerfile.server").read_text()
    assert "uv export --frozen" in server and "-c constraints.txt prefect asyncpg" in server
