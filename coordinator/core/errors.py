"""The exception tree: one root, grouped by layer, each carrying its context."""

from __future__ import annotations


class CoordinatorError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(CoordinatorError):
    """A configuration file (or override) is invalid; lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


class EventError(CoordinatorError):
    """An event on the stream cannot be understood; the reason goes to the dead-letter stream."""


class JobError(CoordinatorError):
    """A job record is missing or in a state that does not allow the requested change."""

    def __init__(self, job_id: str, message: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id}: {message}")


class LeaseError(CoordinatorError):
    """Root of the lease layer's errors."""


class LeaseUnavailable(LeaseError):
    """The config is leased by someone else, the node has no free GPU slot, or the node is down."""

    def __init__(self, config_key: str, node: str, reason: str, detail: str) -> None:
        self.config_key = config_key
        self.node = node
        self.reason = reason
        self.detail = detail
        super().__init__(f"no lease for {config_key} on {node}: {reason} ({detail})")


class TrainingFailed(CoordinatorError):
    """Raised by the RQ job after TRAINING_FAILED is recorded, so RQ files the job as failed too."""

    def __init__(self, job_id: str, error: str) -> None:
        self.job_id = job_id
        self.error = error
        super().__init__(f"training job {job_id} failed: {error}")
