"""The RQ job that `rq worker training` runs on a GPU node: one attempt of one training job.

`run_training(job_id, prefix)`:
1. takes the config's training lease and one of this node's GPU slots (one script, with a
   fencing token); if they are busy the job goes back to the queue after a delay, and the worker
   moves on instead of waiting;
2. moves the job to running (TRAINING_STARTED) and runs the configured trainer as a subprocess,
   renewing the leases every TTL/3; a lost lease stops the trainer (`lease_lost`);
3. turns the trainer's per-epoch lines into TRAINING_PROGRESS;
4. ends with TRAINING_COMPLETE, published only if its fencing token is still the newest, or
   TRAINING_FAILED with a `reason` and the stderr tail; then gives the leases back.
Everything it needs is in the job record the orchestrator wrote: a worker needs only Redis.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import redis
from rq import get_current_job

from coordinator.errors import LeaseUnavailable, TrainingFailed
from coordinator.events import TRAINING_COMPLETE, TRAINING_FAILED
from coordinator.jobs import COMPLETE, FAILED, JobStore, Outcome
from coordinator.keys import Keys
from coordinator.leases import Lease, LeaseKeeper, LeaseManager
from workers.trainer_process import build_argv, run_trainer

log = logging.getLogger(__name__)
NODE_ENV = "RINGRIFT_NODE"
GPUS_ENV = "RINGRIFT_GPUS"
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
    leases = LeaseManager(conn, keys, float(record.get("lease_ttl_s", 30)),
                          int(os.environ.get(GPUS_ENV) or record.get("lease_default_slots", 1)))
    try:
        lease = leases.acquire(record["config_key"], node, worker, job_id,
                               attempts=int(record.get("lease_attempts", 3)),
                               max_delay_s=float(record.get("lease_max_delay_s", 0.5)))
    except LeaseUnavailable as exc:
        delay = float(record.get("lease_defer_s", 5)) * random.uniform(1.0, 2.0)
        store.defer(job_id, delay, str(exc))
        log.info("job %s deferred %.1f s: %s", job_id, delay, exc)
        return {"job_id": job_id, "deferred": exc.reason, "detail": exc.detail}
    try:
        attempt = store.start(job_id, record["config_key"], node, worker, fence=lease.fence)
        if attempt is None:
            state = store.get(job_id).get("state")
            log.warning("job %s is %s, not queued: not running it", job_id, state)
            return {"job_id": job_id, "skipped": state}
        return TrainingRun(store, store.get(job_id), node, attempt, leases, lease).execute()
    finally:
        leases.release(lease)


class TrainingRun:
    """One attempt of one job on this worker, holding its leases."""

    def __init__(self, store: JobStore, record: dict[str, str], node: str, attempt: int,
                 leases: LeaseManager, lease: Lease) -> None:
        self.store = store
        self.record = record
        self.job_id = record["job_id"]
        self.config_key = record["config_key"]
        self.node = node
        self.attempt = attempt
        self.leases = leases
        self.lease = lease
        self.started = time.monotonic()
        self.stop = threading.Event()
        # Each attempt writes its own directory: a stale attempt never overwrites a published model.
        self.output_dir = Path(record["output_dir"]) / f"attempt-{attempt}"

    def execute(self) -> dict[str, Any]:
        try:
            with LeaseKeeper(self.leases, self.lease, on_lost=lambda _reason: self.stop.set()) as keeper:
                return self._train(keeper)
        except TrainingFailed:
            raise
        except Exception as exc:  # our own failure: the job must still end, with the reason
            self._fail("worker_error", f"worker error: {exc!r}", "")
            raise  # unreachable: _fail raises

    def _train(self, keeper: LeaseKeeper) -> dict[str, Any]:
        npz_path = Path(self.record["npz_path"])
        if not npz_path.is_file():
            self._fail("missing_input", f"npz_path not found: {npz_path}", "")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        result = run_trainer(
            build_argv(self.record, str(self.output_dir)),
            timeout_s=float(self.record["timeout_s"]),
            kill_grace_s=float(self.record["kill_grace_s"]),
            on_progress=self._progress,
            stop=self.stop,
        )
        if keeper.lost_reason and result.stopped:
            self._fail("lease_lost", keeper.lost_reason, result.stderr_tail)
        if result.timed_out:
            self._fail("timeout", f"trainer timed out after {self.record['timeout_s']} s", result.stderr_tail)
        if result.returncode != 0:
            self._fail("trainer_error", f"trainer exited with status {result.returncode}", result.stderr_tail)
        return self._complete()

    def _progress(self, figures: dict[str, Any]) -> None:
        keep = ("epoch", "total_epochs", "train_loss", "val_loss", "epoch_time_s")
        self.store.progress(self.job_id, self.config_key, {k: figures[k] for k in keep if k in figures})

    def _complete(self) -> dict[str, Any]:
        metrics_path = self.output_dir / METRICS_FILE
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as exc:
            self._fail("trainer_error", f"trainer exited 0 but {metrics_path} is unreadable: {exc}", "")
        history = metrics.get("history") or [{}]
        result = {
            "model_path": metrics["model_path"],
            "epochs_completed": metrics["epochs_completed"],
            "first_loss": history[0].get("train_loss"),
            "final_loss": metrics["final_loss"],
            "duration_s": round(time.monotonic() - self.started, 3),
        }
        outcome = Outcome(
            TRAINING_COMPLETE, {**result, "node": self.node, "attempt": self.attempt, "fence": self.lease.fence},
            job_fields=result, node=self.node, attempt=self.attempt, fence=self.lease.fence,
            config_fields={"latest_model": metrics["model_path"], "latest_job": self.job_id,
                           "latest_fence": self.lease.fence, "last_trained_at": time.time(),
                           "trained_data_version": self.record.get("data_version")},
            payload={"history": history},
        )
        if self.store.finish(self.job_id, self.config_key, COMPLETE, outcome) == "fenced":
            raise TrainingFailed(self.job_id, "fenced: a newer lease exists; result recorded as stale")
        return {"job_id": self.job_id, **result}

    def _fail(self, reason: str, error: str, stderr_tail: str) -> None:
        fields = {"reason": reason, "error": error, "stderr_tail": stderr_tail, "attempt": self.attempt,
                  "node": self.node}
        outcome = Outcome(
            TRAINING_FAILED, fields,
            job_fields={**fields, "duration_s": round(time.monotonic() - self.started, 3)},
            node=self.node, attempt=self.attempt, fence=self.lease.fence,
            config_fields={"last_failed_at": time.time(), "last_error": error, "last_failed_job": self.job_id},
        )
        self.store.finish(self.job_id, self.config_key, FAILED, outcome)
        raise TrainingFailed(self.job_id, error)
