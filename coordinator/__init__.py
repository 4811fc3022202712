"""The orchestrator side of the RingRift training coordinator (see README for the map)."""

from coordinator.config import Settings, load_settings
from coordinator.errors import ConfigError, CoordinatorError, EventError, JobError, TrainingFailed
from coordinator.keys import Keys
from coordinator.orchestrator import TrainingOrchestrator
from coordinator.scheduler import TrainingScheduler

__all__ = [
    "ConfigError", "CoordinatorError", "EventError", "JobError", "Keys", "Settings",
    "TrainingFailed", "TrainingOrchestrator", "TrainingScheduler", "load_settings",
]
