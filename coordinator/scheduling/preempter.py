"""Preemption at run time: from the job records to the requests workers act on, and back.

The rule is `coordinator.scheduling.preemption_rule.decide` (pure); this module feeds it what Redis holds and
carries out what it decides:

- `running_jobs`: the attempts holding GPU slots, as `RunningJob`s, from their job records
  (`started_at`, `fence`, `preemptions`, a pending request, the newest epoch as its checkpoint,
  `picked_starving` that dispatch writes with `Preempter.mark_dispatch`), each valued by its config's
  score now, as if it waited (like with like: a frozen value at dispatch against a live candidate
  score made waiting configs outrank running jobs by staleness alone).
- `line`: who waits for a GPU, in the order they get one: queued jobs whose config starves (the
  config's wait clock runs until its job starts), the other queued jobs, then the eligible configs.
- `Preempter.tick(free_slots)`: reads all that, puts the starving queued jobs at the head of RQ's
  queue (so the GPU freed for one goes to it), decides, and asks each chosen job to yield with
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
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from coordinator.core.gpu_requirements import Gpu, restricts
from coordinator.core.job_states import PREEMPTED, QUEUED
from coordinator.core.settings import GpuRequirement, PreemptionSettings, Settings
from coordinator.scheduling.placement import read_placement, requirement_of
from coordinator.scheduling.preemption_rule import Candidate, Decision, Fits, RunningJob, decide
from coordinator.scheduling.reservations import Waiting, plan
from coordinator.stores.job_records import SLOT_STATES, active_records, eta_s
from coordinator.stores.reservations import Reservation, ReservationStore

if TYPE_CHECKING:

    from coordinator.scheduling.scheduler import Priority, TrainingScheduler
    from coordinator.stores.jobs import JobStore
    from coordinator.stores.leases import LeaseManager

log = logging.getLogger(__name__)



def dispatch_fields(rest: object, curriculum: object, starving: object) -> dict[str, str]:
    """What dispatch writes on a job record when its config is picked, from the config's stored
    explanation (`rest`, `c_curriculum`, `starving`): the score it was picked with (shown by `jobs`)
    and whether it was picked as starving (never preempted for value then)."""
    value = float(_text(rest) or 0) + float(_text(curriculum) or 0)
    return {"score_at_start": f"{value:.6f}", "picked_starving": "1" if _text(starving) == "1" else "0"}


def _text(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


def _value(p: Priority | None) -> float:
    """A config's score as if it waited: what a candidate's score is compared with."""
    return 0.0 if p is None else p.rest + p.contributions["curriculum"]


def _number(record: Mapping[str, str], name: str) -> float | None:
    return float(record[name]) if record.get(name) else None


def ends_at(r: Mapping[str, str], expected_gpu_hours: float, now: float) -> float | None:
    """When a running attempt is expected to end: at its pace so far (`eta_s`), else from its config's
    expected GPU-hours over the GPUs it holds; None when neither is known."""
    eta = eta_s(dict(r), now)
    if eta is not None:
        return now + eta
    if expected_gpu_hours > 0 and r.get("started_at"):
        return float(r["started_at"]) + expected_gpu_hours * 3600.0 / int(r.get("gpus_held") or 1)
    return None


def running_jobs(records: Iterable[tuple[str, Mapping[str, str]]], value_of: Callable[[str], float],
                 hours_of: Callable[[str], float] = lambda _c: 0.0,
                 requirement_of: Callable[[str], GpuRequirement] = lambda _c: GpuRequirement(),
                 now: float | None = None) -> list[RunningJob]:
    """The attempts holding GPU slots, each valued `value_of(config_key)` (its score now) with its
    config's expected training hours `hours_of(config_key)`, the GPU its attempt recorded, what
    its config needs of one and (given `now`) when it is expected to end."""
    jobs = []
    for job_id, r in records:
        if r.get("state") not in SLOT_STATES or not r.get("started_at"):
            continue
        config_key = r.get("config_key", "")
        jobs.append(RunningJob(
            job_id, config_key, job_id, float(r["started_at"]), value_of(config_key),
            starving=r.get("picked_starving") == "1", preemptions=int(float(r.get("preemptions") or 0)),
            preempt_requested_at=_number(r, "preempt_requested_at"),
            checkpoint_at=_number(r, "updated_at") if r.get("epoch") else None,
            checkpoint_epoch=int(float(r.get("epoch") or 0)), expected_hours=hours_of(config_key),
            gpu=_attempt_gpu(r), requirement=requirement_of(config_key), gpus=int(r.get("gpus_held") or 1),
            ends_at=None if now is None else ends_at(r, hours_of(config_key), now)))
    return jobs


def _attempt_gpu(r: Mapping[str, str]) -> Gpu | None:
    """The GPU the attempt recorded (`JobStore.record_attempt_gpu`); of unknown model on its node
    when it recorded only the node; None when neither."""
    if not r.get("gpu_model") and not r.get("gpu_memory_gb") and not r.get("node"):
        return None
    return Gpu(r.get("gpu_model", ""), float(r.get("gpu_memory_gb") or 0), node=r.get("node", ""))


def queued_jobs(records: Iterable[tuple[str, Mapping[str, str]]], waiting_since: Mapping[str, float | None],
                ready: Container[str], s: PreemptionSettings, now: float,
                requirement_of: Callable[[str], GpuRequirement] = lambda _c: GpuRequirement(),
                ) -> list[tuple[Candidate, str]]:
    """Queued jobs of `ready` configs (eligible but for their own job: not held by a quality block
    or a breaker), deferred for a lease or not, as members of the line with their job ids: starving
    ones (their config waited `starve_after_hours`) first, longest wait first, then the others
    oldest first (RQ's order)."""
    queued = []
    for job_id, r in records:
        config_key = r.get("config_key", "")
        if r.get("state") != QUEUED or config_key not in ready:
            continue
        since = waiting_since.get(config_key)
        waited = 0.0 if since is None else max(0.0, now - since) / 3600.0
        starving = since is not None and waited >= s.starve_after_hours
        queued.append((Candidate(config_key, waited, starving, waited, queued=True,
                                 requirement=requirement_of(config_key), job_id=job_id), job_id,
                       _number(r, "created_at") or 0.0))
    queued.sort(key=lambda q: (not q[0].starving, -q[0].waited_hours if q[0].starving else q[2]))
    return [(c, job_id) for c, job_id, _ in queued]


def candidates(ranked: Sequence[Priority],
               requirement_of: Callable[[str], GpuRequirement] = lambda _c: GpuRequirement()) -> list[Candidate]:
    """The eligible configs, best first, as `decide` takes them."""
    return [Candidate(p.config_key, p.score, p.starving, p.hours_waiting, requirement=requirement_of(p.config_key))
            for p in ranked if p.eligible]


class Preempter:
    """Carries out `decide` against Redis through the stores; the orchestrator calls `tick` and `resume`."""

    def __init__(self, store: JobStore, scheduler: TrainingScheduler, settings: Settings,
                 clock: Callable[[], float] | None = None, leases: LeaseManager | None = None) -> None:
        self.store = store
        self.configs = scheduler.configs
        self.conn = store.conn
        self.keys = store.keys
        self.scheduler = scheduler
        self.settings = settings
        self.preemption: PreemptionSettings = settings.preemption
        self.clock = clock or store.clock
        self.leases = leases  # the GPU slots, for the idle GPUs' models when requirements are set
        self.reservations = ReservationStore(self.conn, self.keys)

    def decide(self, free_slots: int) -> Decision:
        """The decision for the cluster as Redis holds it now (reads only). `free_slots`: the GPUs
        no attempt holds (queued jobs take them first)."""
        return self._decide(free_slots)[0]

    def _decide(self, free_slots: int) -> tuple[Decision, dict[str, str], list[str], list[Reservation]]:
        """The decision, the fencing token of each active job's attempt it was made on, the ids of
        the starving queued jobs, longest wait first (the head of RQ's queue), and the reservations
        of nodes for the queued multi-GPU jobs (`reservations.plan`)."""
        now = self.clock()
        records = active_records(self.conn, self.keys)
        fences = {job_id: r.get("fence", "") for job_id, r in records}
        if not any(r.get("state") in SLOT_STATES for _, r in records) or not (
                self.preemption.enabled or self._multi_gpu()):
            return Decision(), fences, [], []  # nothing to preempt or reserve: no need to rank every config
        ranked = self.scheduler.ranked(preemption_notes={})  # `candidates` reads no notes: no second read
        by_config = {p.config_key: p for p in ranked}
        gpus = self.settings.gpus
        running = running_jobs(records, lambda c: _value(by_config.get(c)),
                               lambda c: by_config[c].expected_gpu_hours if c in by_config else 0.0,
                               lambda c: requirement_of(gpus, c), now)
        waiting_since = self.configs.waiting_since(r.get("config_key", "") for _, r in records
                                                   if r.get("state") == QUEUED)
        ready = {p.config_key for p in ranked if p.ready}
        queued = queued_jobs(records, waiting_since, ready, self.preemption, now, lambda c: requirement_of(gpus, c))
        idle = self._idle_gpus(free_slots)
        waiting = [c for c, _ in queued]
        reservations = self._reserve(waiting, running, idle, now)
        line = waiting + candidates(ranked, lambda c: requirement_of(gpus, c))
        front = [job_id for c, job_id in queued if c.starving]
        decision = decide(running, line, idle, self.preemption, now, gpus.classes) \
            if self.preemption.enabled else Decision()
        return decision, fences, front, reservations

    def _reserve(self, queued: list[Candidate], running: Sequence[RunningJob], idle: int | list[Gpu | None],
                 now: float) -> list[Reservation]:
        """Plan the queued multi-GPU jobs' reservations (`reservations.plan`) on the known GPUs (the
        idle ones, and each running job's until its expected end), and mark in `queued` which node
        each holds and whether it is due (past its start by `reservation_grace_minutes`)."""
        bound = self.preemption
        gangs = [Waiting(c.job_id, c.config_key, c.requirement,
                         now + (bound.starve_after_hours - c.waited_hours) * 3600.0 if bound.enabled else float("inf"))
                 for c in queued if (c.requirement.gpus or 1) > 1]
        if not gangs or isinstance(idle, int):
            return []
        known = [(g, now) for g in idle if g is not None]
        known += [(j.gpu, j.ends_at if j.ends_at is not None else float("inf"))
                  for j in running if j.gpu is not None for _ in range(j.gpus)]
        fits = Fits(self.settings.gpus.classes)
        before = {r.job_id: r for r in self.reservations.all().values()}
        made = plan(gangs, known, fits, now, self.settings.gpus.backfill, before)
        grace_s = self.settings.gpus.reservation_grace_minutes * 60.0
        by_job = {r.job_id: r for r in made}
        for i, c in enumerate(queued):
            if (r := by_job.get(c.job_id)) is not None:
                queued[i] = replace(c, reserved_node=r.node, reservation_due=now >= r.promised_at + grace_s)
        return made

    def _multi_gpu(self) -> bool:
        """Whether some board or config asks for several GPUs (only those make reservations)."""
        gpus = self.settings.gpus
        return any((r.gpus or 1) > 1 for r in (*gpus.boards.values(), *gpus.per_config.values()))

    def _idle_gpus(self, free_slots: int) -> int | list[Gpu | None]:
        """The idle GPUs: how many, or with GPU requirements set (and a lease view), each one's GPU
        (`scheduling/placement.py` `read_placement`), so candidates take only GPUs that fit them."""
        gpus = self.settings.gpus
        needs = (*gpus.boards.values(), *gpus.per_config.values())
        if self.leases is None or not any(restricts(r) or (r.gpus or 1) > 1 for r in needs):
            return free_slots
        return [s.gpu for s in read_placement(self.conn, self.keys, self.leases, gpus).free]

    def tick(self, free_slots: int) -> list[str]:
        """Put the starving queued jobs at the head of RQ's queue, then ask the jobs `decide` chooses
        to yield (each the attempt it was decided on: a newer attempt of the job is not asked); the
        ids of those asked. `free_slots`: the GPUs no attempt holds."""
        decision, fences, front, reservations = self._decide(free_slots)
        self.reservations.replace(reservations)
        if not self.preemption.enabled:
            return []
        if front:
            self._to_the_head(front)
        asked = []
        for p in decision.preempt:
            if self.store.request_preemption(p.job_id, fences.get(p.job_id, ""), p.for_config, p.kind, p.why):
                asked.append(p.job_id)
                log.info("%s: job %s asked to yield its GPU to %s (%s)", p.config_key, p.job_id, p.for_config, p.why)
        return asked

    def _to_the_head(self, job_ids: list[str]) -> None:
        """Starving queued jobs at the head of RQ's queue, in this order; one held back after a busy
        lease goes back on the queue now (else the GPU freed for it would go to the next in line)."""
        for job_id in self.store.deferred(job_ids):
            self.store.requeue_delayed(self.settings, job_id)
        self.store.queue_first(self.store.rq_job_ids(job_ids))

    def mark_dispatch(self, config_key: str, job_id: str) -> None:
        """Dispatch picked `config_key` for `job_id` (new or resumed): its score and starving flag on
        the record (call before the config is rescored as taken). Its wait goes on until the job
        starts (a queued job keeps its wait clock: the wait bound holds with prefetch)."""
        fields = dispatch_fields(*self.configs.dispatch_inputs(config_key))
        self.store.mark_dispatch(job_id, fields)

    def preempted_job(self, config_key: str) -> str | None:
        """The config's job waiting in state preempted, if any (dispatch resumes it)."""
        return self.configs.preempted_job(config_key)

    def held_slots(self) -> int:
        """GPU slots held by attempts (leased or running)."""
        return sum(1 for _, r in active_records(self.conn, self.keys) if r.get("state") in SLOT_STATES)

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


