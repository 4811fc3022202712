"""Periodic work as rq-scheduler jobs: the scheduler tick (rescore, fill free slots), the reaper,
putting deferred/retrying/lost jobs back on the queue, stream trimming and pruning old job records.

The orchestrator hands `PeriodicWork` its task table (name -> interval and callable); this module
knows nothing else of it. `ringrift-train run` registers the tasks with fixed ids, so a restart
(or a second coordinator) finds them registered and adds nothing; an interval changed in the YAML
replaces the old entry. Each coordinator loop moves due jobs onto the `ringrift-maintenance` queue
under rq-scheduler's lock (one mover at a time) and runs what it dequeues (RQ's `dequeue_any`); a
job is dequeued by one coordinator only, so two coordinators never run the same round twice. An
`rqscheduler` process and an `rq worker ringrift-maintenance` may do the same work instead
(`coordinator.service.orchestrator.maintenance` is the RQ job function); `rq info` and rqscheduler's tools
show the entries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import redis
from rq import Queue
from rq_scheduler import Scheduler

log = logging.getLogger(__name__)
MAINTENANCE_QUEUE = "ringrift-maintenance"
MAINTENANCE_FUNC = "coordinator.service.orchestrator.maintenance"
MAX_RUNS_PER_CALL = 20
SCHEDULER_POLL_S = 1  # rq-scheduler's own interval (whole seconds)
# rq-scheduler moves a repeating entry with a ZREM and a separate ZADD: a Redis error between them
# drops the task for good. Checking the entries this often puts a dropped one back.
REREGISTER_INTERVAL_S = 10.0
# The fixed intervals (the tick's and the reaper's come from the settings).
REQUEUE_DUE_INTERVAL_S = 1.0
REQUEUE_LOST_INTERVAL_S = 5.0
TRIM_INTERVAL_S = 60.0
PRUNE_INTERVAL_S = 600.0
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class PeriodicTask:
    interval_s: float
    run: Callable[[], object]


class _PrunesJobs(Protocol):
    def prune(self, before: float) -> int: ...


def prune_before(jobs: _PrunesJobs, retention_days: float, now: float) -> int:
    """Job records past the retention (0 keeps them), a batch per run."""
    return jobs.prune(now - retention_days * SECONDS_PER_DAY) if retention_days > 0 else 0


class PeriodicWork:
    def __init__(self, conn: redis.Redis, id_prefix: str, tasks: Mapping[str, PeriodicTask]) -> None:
        self.conn = conn
        self.id_prefix = f"{id_prefix}-periodic-"
        self.tasks = dict(tasks)
        self.scheduler = Scheduler(queue_name=MAINTENANCE_QUEUE, connection=conn, interval=SCHEDULER_POLL_S)
        self.queue = Queue(MAINTENANCE_QUEUE, connection=conn)
        self._registered_at = float("-inf")  # monotonic time of the last register()

    def job_id(self, task: str) -> str:
        return f"{self.id_prefix}{task}"

    def intervals(self) -> dict[str, float]:
        return {name: task.interval_s for name, task in self.tasks.items()}

    def register(self) -> list[str]:
        """Schedule each task once (idempotent); returns the ids newly (re)scheduled. An entry with
        another interval or other arguments (an older version's) is replaced."""
        added = []
        self._registered_at = time.monotonic()
        existing_jobs = {job.id: job for job in self.scheduler.get_jobs()}
        for task, spec in self.tasks.items():
            job_id, interval = self.job_id(task), max(1, int(spec.interval_s))
            existing = existing_jobs.get(job_id)
            if (existing is not None and int(existing.meta.get("interval", 0)) == interval
                    and tuple(existing.args) == (task,) and existing.func_name == MAINTENANCE_FUNC):
                continue
            if existing is not None:
                self.scheduler.cancel(existing)
            self.scheduler.schedule(datetime.now(timezone.utc), MAINTENANCE_FUNC, args=(task,), id=job_id,
                                    interval=interval, queue_name=MAINTENANCE_QUEUE,
                                    description=f"ringrift periodic {task}")
            added.append(job_id)
        return added

    def run_due(self) -> list[str]:
        """Move due entries to the maintenance queue (under rq-scheduler's lock) and run what this
        coordinator dequeues; returns the tasks run."""
        if time.monotonic() - self._registered_at >= REREGISTER_INTERVAL_S:
            for job_id in self.register():
                log.warning("periodic job %s was missing and is scheduled again", job_id)
        if self.scheduler.acquire_lock():
            try:
                self.scheduler.enqueue_jobs()
            finally:
                self.scheduler.remove_lock()
        ran = []
        for _ in range(MAX_RUNS_PER_CALL):
            taken = Queue.dequeue_any([self.queue], None, connection=self.conn)  # no wait: None when empty
            if taken is None:
                break
            job_id = taken[0].id
            self.conn.lrem(self.queue.key, 0, job_id)  # queued again while nobody ran it: once is enough
            name = job_id.removeprefix(self.id_prefix)
            task = self.tasks.get(name)
            if task is None:
                log.warning("unknown periodic job %s on %s", job_id, MAINTENANCE_QUEUE)
                continue
            task.run()
            ran.append(name)
        return ran

