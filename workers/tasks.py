"""The RQ job that `rq worker training` runs on a GPU node: one training job, start to end.

`run_training(job_id, prefix)` moves the job to running (TRAINING_STARTED), runs the configured
trainer as a subprocess, turns its per-epoch lines into TRAINING_PROGRESS, and ends with
TRAINING_COMPLETE or TRAINING_FAILED (with the stderr tail). Everything it needs is in the job
record the orchestrator wrote, so a worker needs nothing but the Redis URL.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import redis
from rq import get_current_job

from coordinator.errors import TrainingFailed
from coordinator.events import TRAINING_COMPLETE, TRAINING_FAILED
from coordinator.jobs import COMPLETE, FAILED, JobStore
from coordinator.keys import Keys
from workers.trainer_process import build_argv, run_trainer

log = logging.getLogger(__name__)
NODE_ENV = "RINGRIFT_NODE"
METRICS_FILE = "metrics.json"


def node_name() -> str:
    return os.environ.get(NODE_ENV) or socket.gethostname()


def run_training(job_id: str, prefix: str = "ringrift") -> dict[str, Any]:
    rq_job = get_current_job()
    conn = rq_job.connection if rq_job else redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://"))
    keys = Keys(prefix)
    record = JobStore(conn, keys).get(job_id)
    store = JobStore(conn, keys, int(record.get("stream_maxlen", 100_000)))
    node = node_name()
    worker = (rq_job.worker_name if rq_job and rq_job.worker_name else None) or f"{node}:{os.getpid()}"
    attempt = store.start(job_id, record["config_key"], node, worker)
    if attempt is None:
        state = store.get(job_id).get("state")
        log.warning("job %s is %s, not queued: not running it", job_id, state)
        return {"job_id": job_id, "skipped": state}
    return TrainingRun(store, store.get(job_id), node, attempt).execute()


class TrainingRun:
    """One attempt of one job on this worker."""

    def __init__(self, store: JobStore, record: dict[str, str], node: str, attempt: int) -> None:
        self.store = store
        self.record = record
        self.job_id = record["job_id"]
        self.config_key = record["config_key"]
        self.node = node
        self.attempt = attempt
        self.started = time.monotonic()

    def execute(self) -> dict[str, Any]:
        try:
            npz_path = Path(self.record["npz_path"])
            if not npz_path.is_file():
                self._fail(f"npz_path not found: {npz_path}", "")
            Path(self.record["output_dir"]).mkdir(parents=True, exist_ok=True)
            result = run_trainer(
                build_argv(self.record),
                timeout_s=float(self.record["timeout_s"]),
                kill_grace_s=float(self.record["kill_grace_s"]),
                on_progress=self._progress,
            )
            if result.timed_out:
                self._fail(f"trainer timed out after {self.record['timeout_s']} s", result.stderr_tail)
            if result.returncode != 0:
                self._fail(f"trainer exited with status {result.returncode}", result.stderr_tail)
            return self._complete()
        except TrainingFailed:
            raise
        except Exception as exc:  # our own failure: the job must still end, with the reason
            self._fail(f"worker error: {exc!r}", "")
            raise  # unreachable: _fail raises

    def _progress(self, figures: dict[str, Any]) -> None:
        keep = ("epoch", "total_epochs", "train_loss", "val_loss", "epoch_time_s")
        self.store.progress(self.job_id, self.config_key, {k: figures[k] for k in keep if k in figures})

    def _complete(self) -> dict[str, Any]:
        metrics_path = Path(self.record["output_dir"]) / METRICS_FILE
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as exc:
            self._fail(f"trainer exited 0 but {metrics_path} is unreadable: {exc}", "")
        history = metrics.get("history") or [{}]
        result = {
            "model_path": metrics["model_path"],
            "epochs_completed": metrics["epochs_completed"],
            "first_loss": history[0].get("train_loss"),
            "final_loss": metrics["final_loss"],
            "duration_s": round(time.monotonic() - self.started, 3),
        }
        self.store.finish(
            self.job_id, self.config_key, COMPLETE,
            job_fields=result,
            event_type=TRAINING_COMPLETE,
            event_fields={**result, "node": self.node, "attempt": self.attempt},
            config_fields={
                "latest_model": metrics["model_path"], "latest_job": self.job_id,
                "last_trained_at": time.time(), "trained_data_version": self.record.get("data_version"),
            },
            payload={"history": history},
        )
        return {"job_id": self.job_id, **result}

    def _fail(self, error: str, stderr_tail: str) -> None:
        fields = {"error": error, "stderr_tail": stderr_tail, "attempt": self.attempt, "node": self.node}
        self.store.finish(
            self.job_id, self.config_key, FAILED,
            job_fields={**fields, "duration_s": round(time.monotonic() - self.started, 3)},
            event_type=TRAINING_FAILED,
            event_fields=fields,
            config_fields={"last_failed_at": time.time(), "last_error": error, "last_failed_job": self.job_id},
        )
        raise TrainingFailed(self.job_id, error)
