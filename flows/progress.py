"""Progress of a long stage, shown in the run: a Prefect progress artifact (the bar on the run's
Artifacts tab) and plain log lines, so an hour-long extraction is visibly alive. A stage that runs
as a subflow (extract-and-train's extract and train) shows its bar on the top-level run too: that
is the run a user started and watches.

pipeline/ knows nothing of Prefect: its long functions take an ``on_progress`` callback that gets
a dict per step (extraction: done/total entries; training: one per epoch). The reporters here are
those callbacks. Extraction calls back after every stored batch, so updates are rate-limited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prefect import get_client
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.schemas.actions import ArtifactCreate
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

LOG_EVERY_S = 30.0  # an extraction log line at most this often (and at the end)
UPDATE_EVERY_S = 2.0  # the progress artifact at most this often (and at the end)


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger, or the module's outside a flow or task run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("flows")


class Reporter:
    """``percent(event)`` -> 0..100 and ``line(event)`` -> log text, reported at a bounded rate."""

    def __init__(
        self,
        description: str,
        percent: Callable[[dict[str, Any]], float],
        line: Callable[[dict[str, Any]], str],
        logger: logging.Logger | logging.LoggerAdapter,
        log_every_s: float = LOG_EVERY_S,
    ):
        self.description, self.percent, self.line = description, percent, line
        self.logger, self.log_every_s = logger, log_every_s
        # Outside a flow or task run (a task's .fn() called directly, as tests do) there is no run
        # to attach a progress artifact to: log lines only.
        in_run = FlowRunContext.get() is not None or TaskRunContext.get() is not None
        self.artifact_ids = []
        if in_run:
            self.artifact_ids.append(
                create_progress_artifact(progress=0.0, description=description)
            )
            top = _top_level_run()
            if top is not None:
                with get_client(sync_client=True) as client:
                    artifact = client.create_artifact(
                        ArtifactCreate(
                            type="progress", data=0.0, description=description, flow_run_id=top
                        )
                    )
                self.artifact_ids.append(artifact.id)
        self.last_update = self.last_log = float("-inf")
        self.last_percent = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        pct = max(0.0, min(100.0, float(self.percent(event))))
        finished = pct >= 100.0
        due = finished or (now - self.last_update >= UPDATE_EVERY_S and pct > self.last_percent)
        if due and self.artifact_ids:
            for artifact_id in self.artifact_ids:
                update_progress_artifact(artifact_id, progress=round(pct, 1))
            self.last_update, self.last_percent = now, pct
        if finished or now - self.last_log >= self.log_every_s:
            self.logger.info("%s: %s", self.description, self.line(event))
            self.last_log = now

    def finish(self) -> None:
        """The stage is over (training may stop early; extraction may find nothing to do)."""
        if self.last_percent < 100.0 and self.artifact_ids:
            for artifact_id in self.artifact_ids:
                update_progress_artifact(artifact_id, progress=100.0)
            self.last_percent = 100.0


def _top_level_run():
    """The id of the flow run at the top of this one's parents, or None when this run is it."""
    flow_ctx, task_ctx = FlowRunContext.get(), TaskRunContext.get()
    start = task_ctx.task_run.flow_run_id if task_ctx else flow_ctx.flow_run.id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(start)
        while run.parent_task_run_id is not None:
            run = client.read_flow_run(client.read_task_run(run.parent_task_run_id).flow_run_id)
    return None if run.id == start else run.id


def extraction(description: str, logger: logging.Logger | logging.LoggerAdapter) -> Reporter:
    """For pipeline.features.extract.extract_features: {"done", "total", "failed"} entries."""

    def percent(e: dict[str, Any]) -> float:
        return 100.0 * e["done"] / e["total"] if e["total"] else 100.0

    def line(e: dict[str, Any]) -> str:
        failed = f", {e['failed']} failed" if e.get("failed") else ""
        return f"{e['done']}/{e['total']} entries computed ({percent(e):.0f}%){failed}"

    return Reporter(description, percent, line, logger)


def training(description: str, logger: logging.Logger | logging.LoggerAdapter) -> Reporter:
    """For pipeline.training.train.train: one event per epoch; every epoch is logged."""

    def percent(e: dict[str, Any]) -> float:
        return 100.0 * e["epoch"] / e["epochs"]

    def line(e: dict[str, Any]) -> str:
        return (
            f"epoch {e['epoch']}/{e['epochs']}: loss {e['loss']:.3f}, dev W-F1 "
            f"{e['dev_wf1']:.3f} (best {e['best_wf1']:.3f} at epoch {e['best_epoch']})"
        )

    return Reporter(description, percent, line, logger, log_every_s=0.0)
