"""The RQ worker class for GPU nodes: `rq.Worker` itself, but importing this module imports the
training task in the worker's main process, so every forked work horse inherits it. Without it RQ
imports the task's module in each horse, which costs ~20 ms on every job start (measured by
`bench.event_to_start`). Selected by the environment, so the node command stays the same:

    RQ_WORKER_CLASS=workers.worker.TrainingWorker rq worker training --url redis://...
"""

from __future__ import annotations

from rq import Worker

import workers.tasks  # the preload is the point of this module
from coordinator.status import WORKER_NODE_FIELD


class TrainingWorker(Worker):
    """`rq.Worker`; see the module docstring. Its hash also names its node (`WORKER_NODE_FIELD`),
    so `status` shows an idle worker under the node it runs on."""

    def serialize(self) -> dict:
        return {**super().serialize(), WORKER_NODE_FIELD: workers.tasks.node_name()}
