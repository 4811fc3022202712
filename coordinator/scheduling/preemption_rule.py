"""The preemption decision: which running trainings must yield their GPU at a checkpoint, and why.

A pure function of the running jobs, the ranked eligible configs and the free slots (like
`compute_priority`), so the orchestrator, tests and `bench/scheduling_sim.py` call the same rule.

Rules, in order (every number a setting of `PreemptionSettings`, the `preemption` section in config.py):

1. Off switch: `enabled: false` preempts nothing.
2. The best candidates take the free slots, then the slots that pending preemptions will free (one
   preemption in flight per slot: a job already asked to yield is never asked again, and its slot
   counts as promised to the best waiting candidate).
3. Each remaining candidate, best first, may take one victim:
   - a **starving** candidate (waited `starve_after_hours` = `max_wait_hours` - min run time; it
     then starts within `max_wait_hours` + one checkpoint interval) takes the lowest-value job that
     was not itself started as starving, else the starving-started job that has run longest: the
     wait bound time-slices the GPUs when more configs starve than there are slots. The
     per-job cap does not apply here (no bound could hold with it). The bound holds while
     min run < `max_wait_hours` x S / N (S GPUs, N configs: each GPU changes hands at most once
     per min run); a cold start where k configs starve together adds up to
     (ceil(k / S) - 1) x (min run + checkpoint interval);
   - any other candidate takes the lowest-value job only if its score exceeds that job's value by
     `margin`, the job was not started as starving (a starving job is never preempted for value)
     and the job has been preempted fewer than `max_preemptions_per_job` times.
   A job is never preempted before it has run `min_run_minutes` in its current attempt.
   Ties between victims: the newest checkpoint first (least work to redo), then the job id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from coordinator.core.settings import PreemptionSettings

__all__ = ["PreemptionSettings", "RunningJob", "decide"]

WAIT = "wait"  # the wait bound: a starving config
VALUE = "value"  # a candidate outranks the job by the margin


@dataclass(frozen=True)
class RunningJob:
    """A training holding a GPU slot, as the job record and the lease say."""

    job_id: str
    config_key: str
    slot: str  # node and slot, or any name unique per GPU
    started_at: float  # unix s, this attempt
    value: float  # the score its config had when this attempt was picked
    starving: bool = False  # picked because its config was starving
    preemptions: int = 0  # times this job has yielded so far
    preempt_requested_at: float | None = None  # a pending request to yield
    checkpoint_at: float | None = None  # unix s of its newest checkpoint (None: none yet)
    checkpoint_epoch: int = 0


@dataclass(frozen=True)
class Candidate:
    """An eligible config waiting for a GPU (from its `Priority`)."""

    config_key: str
    score: float
    starving: bool = False
    waited_hours: float = 0.0


@dataclass(frozen=True)
class Preemption:
    job_id: str
    config_key: str
    slot: str
    for_config: str
    kind: str  # WAIT or VALUE
    why: str


@dataclass(frozen=True)
class Decision:
    preempt: tuple[Preemption, ...] = ()
    # Running jobs that may not be preempted now, and why (for `priorities` and `status`).
    protected: dict[str, str] = field(default_factory=dict)


def decide(running: Sequence[RunningJob], ranked: Iterable[Candidate], free_slots: int,
           s: PreemptionSettings, now: float) -> Decision:
    """Which running jobs to ask to yield, given the eligible configs ranked best first."""
    if not s.enabled:
        return Decision(protected={j.job_id: "preemption disabled" for j in running})
    pending = sum(1 for j in running if j.preempt_requested_at is not None)
    waiting = list(ranked)[max(free_slots, 0) + pending:]
    protected = {j.job_id: why for j in running if (why := _protected(j, s, now))}
    pool = [j for j in running if j.job_id not in protected]
    chosen: list[Preemption] = []
    for c in waiting:
        if not pool:
            break
        victim = _victim(c, pool, s)
        if victim is None:  # only a value candidate: no later (lower) one outranks any job by more
            break
        pool.remove(victim)
        if c.starving:
            why = f"{c.config_key} starving: waited {_hours(c.waited_hours)} (bound {_hours(s.max_wait_hours)})"
        else:
            why = f"{c.config_key} scores {c.score:.2f} >= {victim.value:.2f} + margin {s.margin:g}"
        chosen.append(Preemption(victim.job_id, victim.config_key, victim.slot, c.config_key,
                                 WAIT if c.starving else VALUE, why))
    return Decision(tuple(chosen), protected)


def _hours(h: float) -> str:
    """Hours as people read them: 13.4 h, or 7.5 min under a tenth of an hour."""
    return f"{h:.1f} h" if h >= 0.1 else f"{h * 60:.1f} min"


def _protected(j: RunningJob, s: PreemptionSettings, now: float) -> str | None:
    if j.preempt_requested_at is not None:
        return "a preemption is already pending"
    ran_min = (now - j.started_at) / 60.0
    if ran_min < s.min_run_minutes:
        return f"ran {ran_min:.0f} min < min_run_minutes {s.min_run_minutes:g}"
    return None


def _victim(c: Candidate, pool: list[RunningJob], s: PreemptionSettings) -> RunningJob | None:
    def newest_checkpoint_first(j: RunningJob) -> tuple[float, str]:
        return (-(j.checkpoint_at or 0.0), j.job_id)

    by_value = [j for j in pool if not j.starving]
    if c.starving:
        if by_value:
            return min(by_value, key=lambda j: (j.value, *newest_checkpoint_first(j)))
        return min(pool, key=lambda j: (j.started_at, *newest_checkpoint_first(j)))
    allowed = [j for j in by_value if j.preemptions < s.max_preemptions_per_job]
    if not allowed:
        return None
    lowest = min(allowed, key=lambda j: (j.value, *newest_checkpoint_first(j)))
    return lowest if c.score >= lowest.value + s.margin else None
