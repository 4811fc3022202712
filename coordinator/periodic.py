"""Periodic work as rq-scheduler jobs: the scheduler tick (rescore, fill free slots), the reaper,
putting deferred/retrying/lost jobs back on the queue, stream trimming and pruning old job records.

`ringrift-train run` registers them with fixed ids, so a restart (or a second coordinator)
finds them registered and adds nothing; an interval changed in the YAML replaces the old entry.
Each coordinator loop moves due jobs onto the `ringrift-maintenance` queue under rq-scheduler's
lock (one mover at a time) and runs what it dequeues; a job is dequeued by one coordinator only,
so two coordinators never run the same round twice. An `rqscheduler` process and an
`rq worker ringrift-maintenance` may do the same work instead (`maintenance()` below is an
ordinary RQ job function); `rq info` and `rqscheduler`'s tools show the entries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from rq import Queue
from rq_scheduler import Scheduler

if TYPE_CHECKING:
    from coordinator.orchestrator import TrainingOrchestrator

log = logging.getLogger(__name__)
MAINTENANCE_QUEUE = "ringrift-maintenance"
MAINTENANCE_FUNC = "coordinator.periodic.maintenance"
MAX_RUNS_PER_CALL = 20
PRUNE_INTERVAL_S = 600.0


def task_intervals(orchestrator: TrainingOrchestrator) -> dict[str, float]:
    s = orchestrator.settings
    return {"tick": s.scheduler.rescore_interval_s, "reap": s.leases.reaper_interval_s, "requeue_due": 1.0,
            "requeue_lost": 5.0, "trim": 60.0, "prune": PRUNE_INTERVAL_S}


def task_methods(orchestrator: TrainingOrchestrator) -> dict[str, Callable[[], object]]:
    o = orchestrator
    return {"tick": o.tick, "reap": o.recovery.reap, "requeue_due": o.recovery.requeue_due,
            "requeue_lost": o.recovery.requeue_lost,
            "trim": lambda: o.consumer.trim(o.settings.events.stream_maxlen),
            "prune": lambda: prune_job_history(o)}


def prune_job_history(o: TrainingOrchestrator) -> int:
    """Job records past `training.job_retention_days` (0 keeps them), a batch per run."""
    days = o.settings.training.job_retention_days
    return o.jobs.prune(time.time() - days * 86_400) if days > 0 else 0


class PeriodicWork:
    def __init__(self, orchestrator: TrainingOrchestrator) -> None:
        self.orchestrator = orchestrator
        self.conn = orchestrator.conn
        self.prefix = orchestrator.keys.prefix
        self.scheduler = Scheduler(queue_name=MAINTENANCE_QUEUE, connection=self.conn, interval=1)
        self.queue = Queue(MAINTENANCE_QUEUE, connection=self.conn)
        self.methods = task_methods(orchestrator)

    def job_id(self, task: str) -> str:
        return f"{self.prefix}-periodic-{task}"

    def register(self) -> list[str]:
        """Schedule each task once (idempotent); returns the ids newly (re)scheduled."""
        added = []
        for task, interval in task_intervals(self.orchestrator).items():
            job_id = self.job_id(task)
            existing = next((j for j in self.scheduler.get_jobs() if j.id == job_id), None)
            if existing is not None and int(existing.meta.get("interval", 0)) == max(1, int(interval)):
                continue
            if existing is not None:
                self.scheduler.cancel(existing)
            self.scheduler.schedule(datetime.now(timezone.utc), MAINTENANCE_FUNC, args=(self.prefix, task),
                                    id=job_id, interval=max(1, int(interval)), queue_name=MAINTENANCE_QUEUE,
                                    description=f"ringrift periodic {task}")
            added.append(job_id)
        return added

    def run_due(self) -> list[str]:
        """Move due entries to the maintenance queue (under rq-scheduler's lock) and run what this
        coordinator dequeues; returns the tasks run."""
        if self.scheduler.acquire_lock():
            try:
                self.scheduler.enqueue_jobs()
            finally:
                self.scheduler.remove_lock()
        ran = []
        for _ in range(MAX_RUNS_PER_CALL):
            job_id = self.conn.lpop(self.queue.key)
            if job_id is None:
                break
            job_id = job_id.decode()
            self.conn.lrem(self.queue.key, 0, job_id)  # queued again while nobody ran it: once is enough
            task = job_id.removeprefix(f"{self.prefix}-periodic-")
            method = self.methods.get(task)
            if method is None:
                log.warning("unknown periodic job %s on %s", job_id, MAINTENANCE_QUEUE)
                continue
            method()
            ran.append(task)
        return ran


def maintenance(prefix: str, task: str) -> object:
    """The RQ job function, for an `rq worker ringrift-maintenance` that runs the periodic work
    instead of the coordinator (settings from RINGRIFT_CONFIG / REDIS_URL, as for `run`)."""
    from rq import get_current_job

    from coordinator.config import load_settings
    from coordinator.orchestrator import TrainingOrchestrator

    settings = load_settings()
    orchestrator = TrainingOrchestrator(settings, get_current_job().connection, consumer_name="maintenance")
    return task_methods(orchestrator)[task]()
