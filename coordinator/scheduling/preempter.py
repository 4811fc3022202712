"""Preemption at run time: from the job records to the requests workers act on, and back.

The rule is `coordinator.scheduling.preemption_rule.decide` (pure); this module feeds it what Redis holds and
carries out what it decides:

- `running_jobs`: the attempts holding GPU slots, as `RunningJob`s, from their job records
  (`started_at`, `fence`, `preemptions`, a pending request, the newest epoch as its checkpoint,
  and `score_at_start` / `picked_starving` that dispatch writes with `Preempter.mark_dispatch`).
- `candidates`: the eligible configs of the scheduler's ranking, best first.
- `Preempter.tick(free_slots)`: reads both, decides, and asks each chosen job to yield with
  `JobStore.request_preemption` (only a running attempt with the same fencing token and no pending
  request). The worker's lease renewal then reports the stop reason 'preempted'; the worker signals
  the trainer (`preemption.signal`), which checkpoints and exits, and ends the attempt in state
  preempted (no retry or breaker count) with TRAINING_PREEMPTED.
- `Preempter.resume(config_key, job_id)`: when the scheduler picks that config again, the same job
  goes back to RQ's queue (preempted -> queued) and resumes from its checkpoint with a new
  attempt and the next fencing token.
- Worker side: `lost_gpu_hours` (the work since the newest checkpoint). The job record changes are
  the job store's (`JobStore.request_preemption`, `resume_preempted`, `preempted`); what a record
  asks of its running attempt (`stop_reason`) and the pending requests for `priorities` and
  `status` are read in `stores/job_records.py`.

Job record fields of a request: `preempt_requested_at`, `preempt_for`, `preempt_kind` ('wait' |
'value'), `preempt_why`, `preempt_fence`; cleared when the job resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from coordinator.core.job_states import PREEMPTED
from coordinator.core.settings import PreemptionSettings, Settings
from coordinator.scheduling.preemption_rule import Candidate, Decision, RunningJob, decide
from coordinator.stores.job_records import SLOT_STATES, active_records

if TYPE_CHECKING:
    from coordinator.scheduling.scheduler import Priority, TrainingScheduler
    from coordinator.stores.jobs import JobStore

log = logging.getLogger(__name__)



def dispatch_fields(rest: object, curriculum: object, starving: object) -> dict[str, str]:
    """What dispatch writes on a job record when its config is picked, from the config's stored
    explanation (`rest`, `c_curriculum`, `starving`): the value a later preemption compares against,
    and whether it was picked as starving (never preempted for value then)."""
    value = float(_text(rest) or 0) + float(_text(curriculum) or 0)
    return {"score_at_start": f"{value:.6f}", "picked_starving": "1" if _text(starving) == "1" else "0"}


def _text(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


def _number(record: Mapping[str, str], name: str) -> float | None:
    return float(record[name]) if record.get(name) else None


def running_jobs(records: Iterable[tuple[str, Mapping[str, str]]],
                 value_of: Callable[[str], float]) -> list[RunningJob]:
    """The attempts holding GPU slots; `value_of(config_key)` stands in for a record without
    `score_at_start` (written by a dispatch older than preemption)."""
    jobs = []
    for job_id, r in records:
        if r.get("state") not in SLOT_STATES or not r.get("started_at"):
            continue
        config_key = r.get("config_key", "")
        value = _number(r, "score_at_start")
        jobs.append(RunningJob(
            job_id, config_key, job_id, float(r["started_at"]), value_of(config_key) if value is None else value,
            starving=r.get("picked_starving") == "1", preemptions=int(float(r.get("preemptions") or 0)),
            preempt_requested_at=_number(r, "preempt_requested_at"),
            checkpoint_at=_number(r, "updated_at") if r.get("epoch") else None,
            checkpoint_epoch=int(float(r.get("epoch") or 0))))
    return jobs


def candidates(ranked: Sequence[Priority]) -> list[Candidate]:
    """The eligible configs, best first, as `decide` takes them."""
    return [Candidate(p.config_key, p.score, p.starving, p.hours_waiting) for p in ranked if p.eligible]


class Preempter:
    """Carries out `decide` against Redis through the stores; the orchestrator calls `tick` and `resume`."""

    def __init__(self, store: JobStore, scheduler: TrainingScheduler, settings: Settings,
                 clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self.configs = scheduler.configs
        self.conn = store.conn
        self.keys = store.keys
        self.scheduler = scheduler
        self.settings = settings
        self.preemption: PreemptionSettings = settings.preemption
        self.clock = clock or store.clock

    def decide(self, free_slots: int) -> Decision:
        """The decision for the cluster as Redis holds it now (reads only)."""
        return self._decide(free_slots)[0]

    def _decide(self, free_slots: int) -> tuple[Decision, dict[str, str]]:
        """The decision, and the fencing token of each active job's attempt it was made on."""
        now = self.clock()
        records = active_records(self.conn, self.keys)
        fences = {job_id: r.get("fence", "") for job_id, r in records}
        if not any(r.get("state") in SLOT_STATES for _, r in records):
            return Decision(), fences  # nothing to preempt: no need to rank every config
        ranked = self.scheduler.ranked(preemption_notes={})  # `candidates` reads no notes: no second read
        values = {p.config_key: p.rest + p.contributions["curriculum"] for p in ranked}
        running = running_jobs(records, lambda c: values.get(c, 0.0))
        return decide(running, candidates(ranked), free_slots, self.preemption, now), fences

    def tick(self, free_slots: int) -> list[str]:
        """Ask the jobs `decide` chooses to yield (each the attempt it was decided on: a newer attempt
        of the job is not asked); the ids of those asked."""
        if not self.preemption.enabled:
            return []
        decision, fences = self._decide(free_slots)
        asked = []
        for p in decision.preempt:
            if self.store.request_preemption(p.job_id, fences.get(p.job_id, ""), p.for_config, p.kind, p.why):
                asked.append(p.job_id)
                log.info("%s: job %s asked to yield its GPU to %s (%s)", p.config_key, p.job_id, p.for_config, p.why)
        return asked

    def mark_dispatch(self, config_key: str, job_id: str) -> None:
        """Dispatch picked `config_key` for `job_id` (new or resumed): its value and starving flag on
        the record (call before the config is rescored as taken), and its wait is over."""
        fields = dispatch_fields(*self.configs.dispatch_inputs(config_key))
        self.store.mark_dispatch(job_id, config_key, fields, self.configs)

    def preempted_job(self, config_key: str) -> str | None:
        """The config's job waiting in state preempted, if any (dispatch resumes it)."""
        return self.configs.preempted_job(config_key)

    def busy_slots(self) -> int:
        """Active jobs that hold or wait for a slot: a preempted job keeps its config's active entry
        while it waits to resume, but not a slot."""
        return sum(1 for _, r in active_records(self.conn, self.keys) if r.get("state") != PREEMPTED)

    def resume(self, config_key: str, job_id: str) -> bool:
        """preempted -> queued, back on RQ's queue under the same job id (a new RQ id per resume);
        False when the job is no longer preempted (resumed or cancelled meanwhile)."""
        resumed = self.store.resume_preempted(self.settings, config_key, job_id, self.configs)
        if resumed:
            log.info("%s: preempted job %s queued to resume from its checkpoint", config_key, job_id)
        return resumed


# -- worker side ----------------------------------------------------------------------------------
def lost_gpu_hours(checkpoint_mtime: float | None, attempt_started_at: float, stopped_at: float,
                   gpus: int = 1) -> float:
    """GPU-hours the preemption cost: this attempt's work after its newest checkpoint (all of it
    without one). A trainer that saves on the signal (the reference trainer) loses ~nothing."""
    since = max(checkpoint_mtime or attempt_started_at, attempt_started_at)
    return max(0.0, stopped_at - since) / 3600.0 * gpus


