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
"""

from __future__ import annotations

from typing import Any

import redis
from rq import Worker

import workers.tasks  # the preload is the point of this module
from coordinator.core.connection import failover_retry
from coordinator.ops.status import WORKER_NODE_FIELD
from workers import gpu_inventory


class TrainingWorker(Worker):
    """`rq.Worker`; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        wanted = failover_retry()["retry"]
        current = self.connection.get_retry()
        if current is None or current.get_retries() < wanted.get_retries():  # type: ignore[attr-defined]
            self.connection.set_retry(wanted)  # the pool's connections too, and the forked horses'

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
