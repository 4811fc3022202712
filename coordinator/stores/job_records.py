"""Job records as the other layers read them: the value types a job is made from and ended with,
the views of its active attempts (the preempter's, `priorities`' and `status`'), and what a record
asks of its running attempt. Nothing here writes: every change of a job is `stores/jobs.py`'s.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from coordinator.core.errors import CoordinatorError
from coordinator.core.job_states import LEASED, RUNNING
from coordinator.core.keys import TRAINING_QUEUE, Keys, rq_queue_key
from coordinator.core.settings import Settings

# Why a running attempt is asked to stop (`stop_reason`, from its lease renewal's reply): cancelled
# by an operator, preempted by the scheduler, or its ephemeral host announced its termination
# (NOTICE_STOP is also that yield's TRAINING_PREEMPTED `kind`).
CANCELLED_STOP, PREEMPTED_STOP, NOTICE_STOP = "cancelled", "preempted", "node_notice"
# What `active_records` reads of each active job (the preempter's view of the running attempts).
RECORD_FIELDS = ("state", "config_key", "node", "started_at", "fence", "score_at_start", "picked_starving",
                 "preemptions", "preempt_requested_at", "preempt_for", "preempt_kind", "preempt_why",
                 "updated_at", "epoch", "epochs", "resumed_epoch", "created_at", "gpu_model",
                 "gpu_memory_gb", "gpus_held")  # epochs, resumed_epoch: `eta_s`, the expected end
SLOT_STATES = frozenset({LEASED, RUNNING})  # attempts that hold a GPU slot


@dataclass(frozen=True)
class TrainingParams:
    """Hyper-parameters of one job; defaults come from the `training` settings."""

    epochs: int
    batch_size: int
    learning_rate: float
    early_stopping_patience: int

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TrainingParams:
        t = settings.training
        values = {
            "epochs": t.default_epochs,
            "batch_size": t.batch_size,
            "learning_rate": t.learning_rate,
            "early_stopping_patience": t.early_stopping_patience,
        }
        for name, value in overrides.items():
            if name not in values:
                raise CoordinatorError(f"unknown training parameter {name!r}")
            if value is not None:
                values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class Outcome:
    """What an ending attempt records: job fields, config fields (on success), and its event."""

    event_type: str
    event_fields: Mapping[str, Any]
    job_fields: Mapping[str, Any]
    node: str
    attempt: int
    fence: int | None = None
    config_fields: Mapping[str, Any] = field(default_factory=dict)
    payload: Any = None


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    action: str  # created | exists (the config's queued or running job)


def new_job_id(config_key: str) -> str:
    return f"{config_key}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class PendingPreemption:
    """A request a worker has not acted on yet."""

    job_id: str
    config_key: str
    for_config: str
    kind: str
    why: str
    requested_at: float


def stop_reason(cancel_requested: object, preempt_requested_at: object, notice: object = None) -> str | None:
    """What its running attempt is asked: 'cancelled' (wins), 'node_notice' (its worker's host is
    going away: it yields without it counting as a preemption), 'preempted' or nothing."""
    if cancel_requested:
        return CANCELLED_STOP
    if notice:
        return NOTICE_STOP
    return PREEMPTED_STOP if preempt_requested_at else None



def active_records(conn: redis.Redis, keys: Keys) -> list[tuple[str, dict[str, str]]]:
    """(job id, record fields in RECORD_FIELDS) of every config's active job: two round trips
    whatever their number (the preempter's view of the running attempts)."""
    job_ids = sorted({v.decode() for v in conn.hvals(keys.active)})
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), RECORD_FIELDS)
        rows = pipe.execute()
    return [(job_id, {n: v.decode() for n, v in zip(RECORD_FIELDS, row) if v is not None})
            for job_id, row in zip(job_ids, rows)]


def pending_preemptions(conn: redis.Redis, keys: Keys) -> list[PendingPreemption]:
    """Requests to yield that the job's worker has not acted on yet (oldest first)."""
    out = [PendingPreemption(job_id, r.get("config_key", ""), r.get("preempt_for", ""), r.get("preempt_kind", ""),
                             r.get("preempt_why", ""), float(r["preempt_requested_at"]))
           for job_id, r in active_records(conn, keys)
           if r.get("state") in SLOT_STATES and r.get("preempt_requested_at")]
    return sorted(out, key=lambda p: (p.requested_at, p.job_id))


def training_queues(conn: redis.Redis, keys: Keys) -> dict[str, int]:
    """RQ queue -> jobs waiting on it: `training` and each GPU requirement's (`Keys.placement_queues`),
    one round trip after the names."""
    names = [TRAINING_QUEUE, *sorted(n.decode() for n in conn.hkeys(keys.placement_queues))]
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for name in names:
            pipe.llen(rq_queue_key(name))
        return dict(zip(names, pipe.execute()))


def eta_s(r: dict[str, str], now: float) -> float | None:
    """Seconds left of a running attempt at its pace so far (epochs done since it started or resumed)."""
    epoch, total = int(r.get("epoch") or 0), int(r.get("epochs") or 0)
    done = max(epoch - int(r.get("resumed_epoch") or 0), 0)
    elapsed = now - float(r.get("started_at") or now)
    return round(elapsed / done * max(total - epoch, 0), 1) if done and total else None
