"""The orchestrator side of the RingRift training coordinator (see README for the map).

`TrainingOrchestrator` and `TrainingScheduler` are imported on first use, so that a GPU node's
work horse, which imports `coordinator.stores.jobs` and friends for every job it runs, does not also
load the orchestrator's metrics server, rq-scheduler and the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coordinator.core.errors import ConfigError, CoordinatorError, EventError, JobError, TrainingFailed
from coordinator.core.keys import Keys
from coordinator.core.settings import Settings, load_settings

if TYPE_CHECKING:
    from coordinator.scheduling.scheduler import TrainingScheduler
    from coordinator.service.orchestrator import TrainingOrchestrator

__all__ = [
    "ConfigError", "CoordinatorError", "EventError", "JobError", "Keys", "Settings",
    "TrainingFailed", "TrainingOrchestrator", "TrainingScheduler", "load_settings",
]


def __getattr__(name: str) -> Any:
    if name == "TrainingOrchestrator":
        from coordinator.service.orchestrator import TrainingOrchestrator

        return TrainingOrchestrator
    if name == "TrainingScheduler":
        from coordinator.scheduling.scheduler import TrainingScheduler

        return TrainingScheduler
    raise AttributeError(f"module 'coordinator' has no attribute {name!r}")
