"""The `extract` flow: a dataset or manifest -> features in the store -> a FeatureSet folder.

    manifest (given, built by an adapter, or the generated demo)
      -> shards (whole dialogues, balanced by utterance count)
      -> extract-shards subflow: one `extract-shard` task per shard, on the chosen task runner
         (threads in this process, or Dask: a local cluster or the address of one)
      -> `build-featureset` -> <out>/featureset/<preset>-<modalities>-<key>/

Every step is cached on content (flows/caching.py); the feature store below is content-addressed
too, so even a forced rerun computes only what changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import artifacts, progress
from flows.caching import (
    StageCache,
    cached_task,
    content_name,
    file_digest,
    manifest_fingerprint,
    run_cached,
    short,
    stamped,
    text_model_fingerprint,
)
from flows.params import (
    DEFAULT_OUT,
    Dataset,
    Layout,
    Modalities,
    Preset,
    StoreIndexChoice,
    TaskRunnerChoice,
    check_manifest_source,
)

SHARDS_PER_DASK_WORKER = 2  # smaller shards even out the load when dialogues differ in length
SHARDS_FOR_REMOTE_CLUSTER = 8  # when the Dask cluster's size is not known up front


# --- tasks: each returns paths or small JSON summaries, never tensors --------------------------


@task(name="make-demo-data", cache_policy=StageCache(stage="demo"))
def make_demo_data(out_dir: str, n_dialogues: int, utterances: int) -> dict[str, Any]:
    """Generate the demo conversations (real face image, generated audio, written transcripts)
    -> the manifest path, stamped with the state of ``out_dir``."""
    from pipeline.dataset.demo import make_demo_dataset

    manifest = make_demo_dataset(
        out_dir, n_dialogues=n_dialogues, utterances_per_dialogue=utterances
    )
    return stamped(str(manifest), out_dir)


@task(name="build-manifest", retries=2, retry_delay_seconds=5)  # reads the raw dataset: I/O
def build_manifest(dataset: str, root: str | None, out_path: str) -> str:
    """Raw dataset layout -> manifest file, by the dataset's adapter (pipeline/dataset/adapters/)."""
    from pipeline.dataset.adapters import load_dataset
    from pipeline.dataset.manifest import write_manifest

    return str(write_manifest(load_dataset(dataset, root), out_path))


@task(name="write-shards", retries=2, retry_delay_seconds=2)  # file I/O only
def write_shards(manifest: str, shard_dir: str, n_shards: int) -> list[str]:
    """Split a manifest into ``n_shards`` manifests of whole dialogues, balanced by row count.

    Shards are written with absolute media paths, so they work from any folder.
    """
    from pipeline.dataset.manifest import dialogues, read_manifest, write_manifest

    df = read_manifest(manifest)
    groups = [rows.index for _, rows in dialogues(df)]
    n = max(1, min(n_shards, len(groups)))
    # Longest dialogues first onto the least-loaded shard (LPT); each shard keeps manifest order.
    loads, members = [0] * n, [[] for _ in range(n)]
    for k in sorted(range(len(groups)), key=lambda k: -len(groups[k])):
        target = loads.index(min(loads))
        loads[target] += len(groups[k])
        members[target].append(k)
    out = Path(shard_dir)
    paths = []
    for i, ks in enumerate(members):
        rows = [j for k in sorted(ks) for j in groups[k]]
        paths.append(str(write_manifest(df.loc[rows], out / f"shard-{i + 1:03d}-of-{n:03d}.csv")))
    return paths


# What a stage's result depends on beyond its parameters' values: the files they name.
INPUT_CONTENT = {"manifest": manifest_fingerprint, "text_model": text_model_fingerprint}


@task(name="extract-shard", cache_policy=StageCache(stage="extract", content=INPUT_CONTENT))
def extract_shard(
    manifest: str,
    store_root: str,
    preset: str,
    modalities: str,
    strict: bool,
    index: bool = True,
    text_model: str | None = None,
) -> dict[str, Any]:
    """Extract every utterance of one manifest shard into the store -> counts + failures path.

    ``index`` False: write entry files only (the flow's process ingests them into the index).
    Not stamped: the store is shared and grows with other runs; a deleted store refreshes the
    shards instead (see extract)."""
    from pipeline.features.extract import extract_features

    report = progress.extraction(f"extract {Path(manifest).stem}", progress.run_logger())
    s = extract_features(
        manifest,
        store_root,
        preset=preset,
        modalities=modalities,
        strict=strict,
        progress=False,
        report_dir=str(Path(manifest).with_suffix("")) + "-reports",  # one per shard
        on_progress=report,
        index=index,
        text_model=text_model,
    )
    report.finish()
    return {
        "shard": Path(manifest).name,
        "done": int(s.done),
        "cached": int(s.cached),
        "failed": int(s.failed),
        "failures_path": str(s.failures_path) if s.failures_path else "",
    }


@task(name="build-featureset", cache_policy=StageCache(stage="featureset", content=INPUT_CONTENT))
def build_featureset(
    manifest: str,
    store_root: str,
    preset: str,
    modalities: str,
    out_dir: str,
    text_model: str | None = None,
) -> dict[str, Any]:
    """Store entries of a manifest -> the FeatureSet folder that training reads, stamped."""
    from pipeline.features.extract import build_featureset as build

    fs_dir = build(manifest, store_root, preset, modalities, out_dir, text_model=text_model)
    return stamped(str(fs_dir), out_dir)


# --- fan-out -----------------------------------------------------------------------------------


def require_dask() -> type[TaskRunner]:
    """prefect-dask's DaskTaskRunner, or a clear error: it is the optional extra `dask`."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ImportError(
            'task_runner="dask" needs prefect-dask, the optional extra "dask": '
            "run `uv sync --extra dask` (make install does)"
        ) from exc
    return DaskTaskRunner


def make_task_runner(choice: str, address: str | None, n_workers: int) -> TaskRunner:
    """The task runner for extraction: threads here, or Dask (a local cluster or ``address``)."""
    if choice == "default":
        return ThreadPoolTaskRunner(max_workers=1)  # extractors load big models: one at a time
    DaskTaskRunner = require_dask()
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": n_workers,
            "threads_per_worker": 1,
            "processes": True,
            # Loopback only: a local cluster serves this machine, not the network (its dashboard
            # bound 0.0.0.0 before). Any free port: never clashes with another cluster.
            "host": "127.0.0.1",
            "dashboard_address": "127.0.0.1:0",
        }
    )


@flow(name="extract-shards")
def extract_shards(
    shards: list[str],
    store_root: str,
    preset: str,
    modalities: str,
    strict: bool,
    cache_dir: str,
    refresh: bool = False,
    index: bool = True,
    text_model: str | None = None,
) -> list[dict[str, Any]]:
    """One `extract-shard` task per shard, all submitted at once to this flow's task runner."""
    shard_task = cached_task(extract_shard, Path(cache_dir), refresh)
    futures = [
        shard_task.submit(
            manifest=shard,
            store_root=store_root,
            preset=preset,
            modalities=modalities,
            strict=strict,
            index=index,
            text_model=text_model,
        )
        for shard in shards
    ]
    return [
        # .result() raises the shard's error (strict mode): fails the run
        shard_counts(future.result(), cached=future.state.name == "Cached")
        for future in futures
    ]


@task(name="ingest-entries")
def ingest_entries(store_root: str) -> dict[str, int]:
    """Index the entry files the shard tasks wrote without the index (store_index="keeper")."""
    from pipeline.features.store import FeatureStore

    with FeatureStore(store_root) as store:
        report = store.ingest()
    for line in report.damaged:  # no row: the next extraction recomputes it, gc deletes it
        get_run_logger().warning("damaged entry not indexed: %s", line)
    print(f"store index: {report.added} entries ingested, {report.already} already indexed")
    return {"added": report.added, "already": report.already, "damaged": len(report.damaged)}


def shard_counts(result: dict[str, Any], cached: bool) -> dict[str, Any]:
    """What happened to a shard in this run. A task served from Prefect's cache returns the counts
    of the run that computed it: here all of its entries were reused, none computed."""
    entries = result["done"] + result["cached"]
    return {
        "shard": result["shard"],
        "status": "cached" if cached else "ran",
        "computed": 0 if cached else result["done"],
        "from_store": 0 if cached else result["cached"],
        "from_cache": entries if cached else 0,
        "failed": result["failed"],
        "failures_path": result["failures_path"],
    }


# --- the flow ----------------------------------------------------------------------------------


def prepare_manifest(
    manifest: str | None,
    dataset: str,
    root: str | None,
    layout: Layout,
    demo_size: tuple[int, int],
    refresh: bool,
) -> tuple[str, bool]:
    """The run's manifest -> (path, whether it came from the cache)."""
    if manifest:
        return str(Path(manifest).expanduser().resolve()), True
    if dataset == "demo":
        return run_cached(
            make_demo_data,
            layout.cache,
            refresh,
            out_dir=str(layout.demo_data),
            n_dialogues=demo_size[0],
            utterances=demo_size[1],
        )
    root = str(Path(root).expanduser().resolve()) if root else None
    return build_manifest(dataset, root, str(layout.manifest)), False


def resolve_text_model(text_model: str | None, modalities: str) -> str | None:
    """The text model as the tasks get it: None without text; a local folder made absolute (the
    workers may run elsewhere); a name as given. A folder that is not there fails here."""
    if not text_model or "t" not in modalities:
        return None
    path = Path(text_model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if text_model.startswith((".", "/", "~")):
        raise FileNotFoundError(f"text_model {text_model!r}: no such folder")
    return text_model


def warn_in_fold(text_model: str | None, manifest: str) -> None:
    """Say which of the manifest's dialogues a fine-tuned text model without fold encoders learnt
    from (in fold)."""
    from pipeline.features.importers.text_features import in_fold_warning

    warning = in_fold_warning(text_model, manifest)
    if warning:
        get_run_logger().warning(warning)


def auto_shards(shards: int, task_runner: str, address: str | None, dask_workers: int) -> int:
    if shards > 0:
        return shards
    if task_runner == "default":
        return 1
    return SHARDS_FOR_REMOTE_CLUSTER if address else SHARDS_PER_DASK_WORKER * dask_workers


@flow(name="extract", log_prints=True)
def extract(
    manifest: str | None = None,
    dataset: Dataset = "demo",
    root: str | None = None,
    preset: Preset = "offline",
    modalities: Modalities = "tav",
    text_model: str | None = None,
    out_dir: str = DEFAULT_OUT,
    store_root: str | None = None,
    strict: bool = False,
    task_runner: TaskRunnerChoice = "default",
    dask_address: str | None = None,
    dask_workers: int = 2,
    shards: int = 0,
    store_index: StoreIndexChoice = "auto",
    demo_dialogues: int = 6,
    demo_utterances: int = 8,
    refresh: bool = False,
) -> dict[str, Any]:
    """Features for every utterance of a manifest (or dataset), then a FeatureSet folder.

    Args:
        manifest: manifest file (CSV/JSONL/Parquet); when set, dataset and root are ignored.
        dataset: "demo" (generated into the output folder) or a raw dataset layout under root.
        root: folder of the raw dataset (not for "demo").
        preset: extractor preset: "offline" (works without downloads), "paper", "tiny" (tests).
        modalities: subset of "tav" (text, audio, visual).
        text_model: sentence encoder for the text instead of the preset's: "mpnet", "minilm", a
            sentence-transformers folder (e.g. one `erc finetune-text` wrote) or a model id.
        out_dir: output folder (see flows/params.py for its layout).
        store_root: feature store folder to share between runs; default <out_dir>/store.
        strict: any failed utterance fails the run (default: report it and carry on).
        task_runner: "default" (in this process) or "dask" (a local cluster, or dask_address).
        dask_address: address of an existing Dask scheduler, e.g. "tcp://10.0.0.5:8786".
        dask_workers: worker processes of the local Dask cluster.
        shards: manifest shards (extraction tasks); 0 = 1 in-process, 2 per Dask worker.
        store_index: "shared" (every shard task writes the store's SQLite index: one host),
            "keeper" (shard tasks write entry files only and this flow indexes them: workers on
            other hosts, docs/architecture.md), "auto" = keeper with a dask_address, else shared.
        demo_dialogues, demo_utterances: size of the generated demo set (dataset "demo").
        refresh: ignore Prefect's cache (the feature store still skips unchanged work).
    Returns:
        {"manifest", "featureset_dir", "store_root", "shards", "failed", "counts", "stages"};
        counts and shards say what happened in this run: entries computed, reused from the
        store, or served from Prefect's cache of an earlier run.
    """
    check_manifest_source(manifest, dataset, root)
    if task_runner == "dask":
        require_dask()  # before any work
    keeper = store_index == "keeper" or (store_index == "auto" and bool(dask_address))
    if dask_workers < 1 or shards < 0 or demo_dialogues < 1 or demo_utterances < 1:
        raise ValueError(
            "dask_workers, demo_dialogues and demo_utterances must be >= 1, shards >= 0"
        )
    logger = get_run_logger()
    layout = Layout.at(out_dir)
    store = str(Path(store_root).expanduser().resolve() if store_root else layout.store)
    stages: dict[str, str] = {}
    text_model = resolve_text_model(text_model, modalities)

    manifest_path, cached = prepare_manifest(
        manifest, dataset, root, layout, (demo_dialogues, demo_utterances), refresh
    )
    stages["manifest"] = "given" if manifest else "cached" if cached else "ran"
    manifest_name = short(file_digest(manifest_path))
    logger.info("manifest %s (%s)", manifest_path, manifest_name)
    warn_in_fold(text_model, manifest_path)

    n_shards = auto_shards(shards, task_runner, dask_address, dask_workers)
    shard_dir = layout.shards / f"{manifest_name}-{n_shards}"
    shard_paths = write_shards(manifest_path, str(shard_dir), n_shards)
    runner = make_task_runner(task_runner, dask_address, dask_workers)
    results = extract_shards.with_options(task_runner=runner)(
        shards=shard_paths,
        store_root=store,
        preset=preset,
        modalities=modalities,
        strict=strict,
        cache_dir=str(layout.cache),
        # A deleted store invalidates every cached extraction.
        refresh=refresh or not Path(store).is_dir(),
        index=not keeper,
        text_model=text_model,
    )
    if keeper:
        ingest_entries(store)
    stages["extract"] = "cached" if all(r["status"] == "cached" for r in results) else "ran"
    artifacts.publish_extraction(
        results, sorted({r["failures_path"] for r in results if r["failed"]})
    )
    failed = sum(r["failed"] for r in results)
    if failed:
        logger.warning("%d utterance(s) failed extraction: see the erc-failures artifact", failed)
        if strict:
            raise RuntimeError(f"strict mode: {failed} utterance(s) failed extraction")

    inputs = dict(manifest=manifest_path, store_root=store, preset=preset, modalities=modalities)
    if text_model:  # absent otherwise: the default run keeps its cache key and folder name
        inputs["text_model"] = text_model
    fs_dir = (
        layout.featuresets / f"{preset}-{modalities}-{content_name(build_featureset, **inputs)}"
    )
    featureset, cached = run_cached(
        build_featureset, layout.cache, refresh, out_dir=str(fs_dir), **inputs
    )
    stages["featureset"] = "cached" if cached else "ran"
    counts = {k: sum(r[k] for r in results) for k in ("computed", "from_store", "from_cache")}
    print(
        f"extract: {counts['computed']} entries computed, {counts['from_store']} reused from the "
        f"store, {counts['from_cache']} from an earlier run (Prefect cache), {failed} failed"
    )
    print(f"featureset: {featureset}")
    return {
        "manifest": manifest_path,
        "featureset_dir": featureset,
        "store_root": store,
        "shards": results,
        "failed": failed,
        "counts": counts,
        "stages": stages,
    }
