"""The RQ worker class for GPU nodes, selected by the environment (RQ reads it as --worker-class):

    RQ_WORKER_CLASS=workers.worker.TrainingWorker rq worker training --url redis://...

`rq.Worker` with three differences:

- Importing this module imports the training task in the worker's main process, so every forked
  work horse inherits it. Without it RQ imports the task's module in each horse, which costs
  ~20 ms on every job start (measured by `bench.event_to_start`).
- It rides out a Redis outage or failover shorter than `FAILOVER_RETRY_S` (30 s) with a plain URL
  too: every command is retried on connection errors and timeouts, as `workers.rq_settings` does
  for a Sentinel URL (redis-py's default gives up after three quick tries), and a heartbeat that
  still fails while a job runs is logged instead of ending the worker (RQ's main loop quits on it;
  the work horse holds the job's lease and records the job's end by itself).
  `tests/faults/test_worker_outage.py` and `bench.chaos` check it.
- Its hash also names its node (`WORKER_NODE_FIELD`), so `status` shows an idle worker under the
  node it runs on, and its GPU slot and GPU.
- When it starts it finds its GPUs (`workers.gpu_inventory`: NVML, else its environment, else its
  node's `hosts` entry) and writes its node's inventory and its slot to Redis; a failure there is
  logged and the worker starts anyway (each job registers again).
- It takes only jobs its GPU fits (issue 26's placement). A job whose config needs something of a
  GPU (`gpus.boards`, `gpus.per_config`: memory, allowed classes) is queued on that requirement's
  own RQ queue (`training-ge40gb`, ...; `coordinator/stores/jobs.py`), registered in
  `<prefix>:placement:queues` with the requirement. Before each dequeue, and at least every
  `PLACEMENT_REFRESH_S` while idle, a worker listening to `training` adds the registered queues its
  GPU meets (`gpu_requirements.meets`), most demanding first, before `training`: RQ takes from
  the first non-empty queue, so a big GPU takes the jobs only it (and its kind) can run before
  the ones any GPU can, and a small GPU never sees a job it cannot hold. A worker whose GPU is
  unknown (no NVML, environment or `hosts` entry) meets no memory or class requirement: it runs
  only jobs without one. `rq info` lists each queue with its jobs and each worker with its queues.

  Why queues and not "take any job, hand back what does not fit": a handed-back job goes through
  the delayed set and a new RQ job; while it is out, a free big GPU takes a small job instead, so
  a big job could be bounced by small workers indefinitely, and idle small workers would take and
  return it in a loop. With a queue per requirement nothing is taken that cannot run, nothing
  spins, and a big GPU serves its big jobs first. `workers/tasks.py` still checks the fit as a
  backstop (a job queued before its requirement was set) and hands such a job back onto its
  requirement's queue, without a failure.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import redis
from rq import Worker

import workers.tasks  # the preload is the point of this module
from coordinator.core.connection import failover_retry
from coordinator.core.gpu_requirements import Gpu, from_spec, meets
from coordinator.core.keys import TRAINING_QUEUE, Keys
from coordinator.core.settings import RedisSettings
from coordinator.ops.status import WORKER_NODE_FIELD
from workers import gpu_inventory
from workers.tasks import slot_gpu

# How often an idle worker looks for new requirement queues (a new config's requirement).
PLACEMENT_REFRESH_S = 5


def fitting_queues(registered: Mapping[bytes | str, bytes | str], gpu: Gpu) -> list[str]:
    """The registered requirement queues (`Keys.placement_queues`: name -> requirement JSON) whose
    requirement `gpu` meets, most demanding first (more memory, then a class restriction, then name)."""
    fitting = []
    for raw_name, raw_spec in registered.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        try:
            requirement, classes = from_spec(json.loads(raw_spec))
        except (ValueError, TypeError, KeyError):
            continue  # not ours to judge: no worker listens to a queue it cannot read
        if meets(gpu, requirement, classes):
            fitting.append((-(requirement.min_memory_gb or 0.0), requirement.allowed is None, name))
    return [name for *_rank, name in sorted(fitting)]


class TrainingWorker(Worker):
    """`rq.Worker`; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        wanted = failover_retry()["retry"]
        current = self.connection.get_retry()
        if current is None or current.get_retries() < wanted.get_retries():  # type: ignore[attr-defined]
            self.connection.set_retry(wanted)  # the pool's connections too, and the forked horses'
        self._base_queues = list(self.queues)  # as named on the command line

    def listen_for_placement(self) -> list[str]:
        """Listen to the requirement queues this worker's GPU meets, before `training` (see the
        module docstring); the queue names now. A Redis error keeps the queues it had."""
        if TRAINING_QUEUE not in {q.name for q in self._base_queues}:
            return self.queue_names()
        registered = gpu_inventory.current()
        prefix = registered.prefix if registered else os.environ.get(gpu_inventory.PREFIX_ENV) or RedisSettings.prefix
        try:
            extra = fitting_queues(self.connection.hgetall(Keys(prefix).placement_queues), slot_gpu(registered))
        except redis.RedisError as exc:
            self.log.warning("Worker %s: placement queues not read (%s)", self.name, exc)
            return self.queue_names()
        names = [*extra, *(q.name for q in self._base_queues if q.name not in extra)]
        if names != self.queue_names():
            by_name = {q.name: q for q in self.queues}
            self.queues = [by_name.get(n) or self.queue_class(
                name=n, connection=self.connection, job_class=self.job_class, serializer=self.serializer,
                death_penalty_class=self.death_penalty_class) for n in names]
            self._ordered_queues = self.queues[:]
            self.log.info("Worker %s: listening on %s (GPU %s)", self.name, ", ".join(names),
                          slot_gpu(registered).describe() if registered else "unknown")
            try:
                self.connection.hset(self.key, "queues", ",".join(names))  # what `rq info` shows
            except redis.RedisError:
                pass
        return names

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue, with the queues refreshed first and again every PLACEMENT_REFRESH_S while idle."""
        self.listen_for_placement()
        if timeout is None:  # burst: one pass over the queues as they are now
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        idle_since = time.monotonic()
        while True:
            step = max(1, min(timeout, PLACEMENT_REFRESH_S))
            result = super().dequeue_job_and_maintain_ttl(step, step)
            if result is not None:
                return result
            if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                return None
            self.listen_for_placement()

    def register_birth(self) -> None:
        super().register_birth()
        try:
            registered = gpu_inventory.register(self.connection, self.name)
            self.connection.hset(self.key, mapping=gpu_inventory.slot_fields(registered))
        except redis.RedisError as exc:
            self.log.warning("Worker %s: GPU inventory not recorded (%s); each job records it", self.name, exc)

    def serialize(self) -> dict:
        fields = gpu_inventory.slot_fields(gpu_inventory.current())
        return {**super().serialize(), WORKER_NODE_FIELD: workers.tasks.node_name(), **fields}

    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.log.warning("Worker %s: heartbeat of job %s not sent (%s); its work horse carries on",
                             self.name, job.id, exc)
