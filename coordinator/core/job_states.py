"""The job state machine: every state and every legal move between states, in one table.

    queued --lease--> leased --trainer up--> running --> complete
       |                 |                      |-----> failed      (no retry left, or poison)
       |                 |                      |-----> retrying --(backoff over)--> queued
       |                 |                      |-----> stale       (fenced: a newer attempt won)
       |                 |                      |-----> preempted --(its config picked again)--> queued
       +--> cancelled <--+----------------------+
    retrying --> cancelled
    preempted --> cancelled

A preempted job yielded its GPU at a checkpoint for a more urgent config (`coordinator.scheduling.preemption_rule`):
not a failure (no retry or breaker count); it resumes from that checkpoint with a new attempt.

Every change of a job's state is made by the job store (`coordinator/stores/jobs.py`), whose
scripts and transactions take their allowed "from" states from `TRANSITIONS` (passed in), so no
component can move a job along an edge this table does not have.
"""

from __future__ import annotations

QUEUED = "queued"
LEASED = "leased"
RUNNING = "running"
COMPLETE = "complete"
FAILED = "failed"
RETRYING = "retrying"
CANCELLED = "cancelled"
STALE = "stale"
PREEMPTED = "preempted"

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({LEASED, CANCELLED}),
    LEASED: frozenset({RUNNING, COMPLETE, FAILED, RETRYING, CANCELLED, STALE}),
    RUNNING: frozenset({COMPLETE, FAILED, RETRYING, CANCELLED, STALE, PREEMPTED}),
    RETRYING: frozenset({QUEUED, CANCELLED}),
    PREEMPTED: frozenset({QUEUED, CANCELLED}),
    COMPLETE: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    STALE: frozenset(),
}
FINAL_STATES = frozenset(state for state, moves in TRANSITIONS.items() if not moves)
# States in which an attempt holds (or should hold) the config's lease.
ACTIVE_ATTEMPT_STATES = frozenset({LEASED, RUNNING})


def allowed_from(target: str) -> frozenset[str]:
    """The states a job may be in to move to `target`."""
    return frozenset(state for state, moves in TRANSITIONS.items() if target in moves)
