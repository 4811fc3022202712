"""The preemption decision: which running trainings must yield their GPU at a checkpoint, and why.

A pure function of the running jobs, the ranked eligible configs and the free slots (like
`compute_priority`), so the orchestrator, tests and `bench/scheduling_sim.py` call the same rule.

Rules, in order (every number a setting of `PreemptionSettings`, the `preemption` section):

1. Off switch: `enabled: false` preempts nothing.
2. The line for GPUs: queued jobs whose config starves (at the head of RQ's queue, longest wait
   first: the preempter puts them there), the other queued jobs (RQ's order), then the eligible
   configs ranked best first. The head of the line takes the idle GPUs, then the slots that pending
   preemptions will free (one preemption in flight per slot: a job already asked to yield is never
   asked again, and its slot counts as promised to the next in line).
3. Each remaining member of the line may take one victim (a queued job that does not starve waits
   for the next GPU RQ gives it):
   - a **starving** one (waited `starve_after_hours` = `max_wait_hours` - min run time; it then
     starts within `max_wait_hours` + one checkpoint interval, queued or not: a queued job keeps its
     wait clock until it starts) always takes one. The victim: jobs under the per-job cap
     (`max_preemptions_per_job`, counted across wait and value preemptions) before those at it; jobs
     picked by value before jobs picked as starving; then the least work lost, weighted by how often
     the job has yielded: (hours since its newest checkpoint in this attempt, or since it started,
     plus `restart_minutes`) x (1 + its preemptions); then the lowest value. So the wait bound always
     wins, and when more configs starve than there are GPUs the GPUs are time-sliced among the jobs
     that have yielded least and lose least, rather than chopping one job at every turn;
   - any other candidate takes the lowest-value job only when it pays: its score (now) exceeds the
     job's value, scored now on the same terms (the config's score as if it waited: staleness and
     freshness move on both sides), by `margin` plus the job's value x its lost work / its expected
     training hours (the share of the job's value that redoing the lost work costs). Never a job
     picked as starving, nor one at the per-job cap.
   A job is never preempted before it has run `min_run_minutes` in its current attempt.
   Ties between victims: the newest checkpoint first (least work to redo), then the job id.
4. GPUs that differ (issue 26): a member of the line takes only an idle GPU, a promised slot or a
   victim whose GPU meets its requirement (`gpus.boards` / `per_config`; a GPU of unknown model
   meets only a config without one). A starving big-memory config thus frees a big GPU, and among
   those prefers a job that can move at once to an idle GPU that fits it (a small job taken off a
   big GPU at its checkpoint and resumed on a small one), before the lost-work order.
5. Multi-GPU trainings (`gpus: N`, issue 27): one is served only by N idle or promised GPUs of one
   node; starving, it takes the fewest jobs of one node whose GPUs, with that node's idle ones, make
   N (each in the victim order above); it never preempts for value. A queued one holds a reservation
   of the node expected to free N GPUs first (`reservations.py`: only jobs that end before it start
   there meanwhile); `reservation_grace_minutes` past its start, the jobs still on that node yield
   to it the same way (the estimate of their end was too early).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from coordinator.core.gpu_requirements import Gpu, meets, restricts
from coordinator.core.settings import GpuClass, GpuRequirement, PreemptionSettings

__all__ = ["PreemptionSettings", "RunningJob", "decide", "lost_hours"]

WAIT = "wait"  # the wait bound: a starving config
VALUE = "value"  # a candidate outranks the job by the margin


@dataclass(frozen=True)
class RunningJob:
    """A training holding a GPU slot, as the job record and the lease say."""

    job_id: str
    config_key: str
    slot: str  # node and slot, or any name unique per GPU
    started_at: float  # unix s, this attempt
    value: float  # its config's score now, on a waiting config's terms (the preempter computes it)
    starving: bool = False  # picked because its config was starving
    preemptions: int = 0  # times this job has yielded so far
    preempt_requested_at: float | None = None  # a pending request to yield
    checkpoint_at: float | None = None  # unix s of its newest checkpoint (None: none yet)
    checkpoint_epoch: int = 0
    expected_hours: float = 0.0  # its config's expected training hours (0: unknown, no lost-work cost)
    gpu: Gpu | None = None  # the GPU its attempt holds (None: unknown)
    gpus: int = 1  # how many GPUs of its node it holds (a multi-GPU training: more than one)
    requirement: GpuRequirement = GpuRequirement()  # what its config needs of a GPU (where it could move)
    ends_at: float | None = None  # unix s its training is expected to end (None: unknown)


@dataclass(frozen=True)
class Candidate:
    """An eligible config waiting for a GPU (from its `Priority`)."""

    config_key: str
    score: float
    starving: bool = False
    waited_hours: float = 0.0
    queued: bool = False  # its job is already in RQ's queue (takes a GPU in the queue's order)
    requirement: GpuRequirement = GpuRequirement()  # what its config needs of a GPU
    job_id: str = ""  # a queued one's job
    reserved_node: str | None = None  # a multi-GPU one: the node reserved for it (`reservations.plan`)
    reservation_due: bool = False  # ... and that reservation's start passed by the grace: its GPUs are due


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


def decide(running: Sequence[RunningJob], ranked: Iterable[Candidate], free: int | Sequence[Gpu | None],
           s: PreemptionSettings, now: float, classes: Mapping[str, GpuClass] | None = None) -> Decision:
    """Which running jobs to ask to yield, given the line for GPUs (queued jobs first, then the
    eligible configs best first) and the idle GPUs (`free`: how many, or each one's GPU; `classes`
    sorts GPUs into the classes requirements name)."""
    if not s.enabled:
        return Decision(protected={j.job_id: "preemption disabled" for j in running})
    fits = Fits(classes or {})
    ranked = list(ranked)
    waiting = _unserved(ranked, [None] * max(free, 0) if isinstance(free, int) else list(free),
                        [j.gpu for j in running if j.preempt_requested_at is not None], fits)
    protected = {j.job_id: why for j in running if (why := _protected(j, s, now))}
    pool = [j for j in running if j.job_id not in protected]
    left_idle = [] if isinstance(free, int) else _left_idle(list(ranked), list(free), fits)
    chosen: list[Preemption] = []
    for c in waiting:
        if c.queued and not c.starving and not c.reservation_due:
            continue  # RQ gives it the next GPU that frees up
        if _gpus(c) > 1:  # a multi-GPU training: only the wait bound or its due reservation frees GPUs for it
            due = c.reservation_due and not c.starving
            # The idle GPUs the members ahead of it leave (those behind it do not outrank it).
            ahead_idle = [] if isinstance(free, int) else _left_idle(ranked[:ranked.index(c)], list(free), fits)
            victims = _gang_victims(c, pool, ahead_idle, s, now, fits, c.reserved_node if due else None) \
                if c.starving or c.reservation_due else []
            for victim in victims:
                pool.remove(victim)
                reason = (f"its reservation of {c.reserved_node} is due" if due else
                          f"waited {_hours(c.waited_hours)} (bound {_hours(s.max_wait_hours)})")
                chosen.append(Preemption(victim.job_id, victim.config_key, victim.slot, c.config_key, WAIT,
                                         f"{c.config_key} {'' if due else 'starving: '}{reason}; needs {_gpus(c)} "
                                         f"GPUs on {victim.gpu.node if victim.gpu else '?'}"))
            continue
        fitting = [j for j in pool if fits(c.requirement, j.gpu)]
        if not fitting:
            continue
        victim = _victim(c, fitting, s, now, lambda j: any(fits(j.requirement, g) for g in left_idle))
        if victim is None:  # a value candidate that does not pay
            continue
        pool.remove(victim)
        if c.starving:
            why = f"{c.config_key} starving: waited {_hours(c.waited_hours)} (bound {_hours(s.max_wait_hours)})"
        else:
            why = (f"{c.config_key} scores {c.score:.2f} >= {victim.value:.2f} + margin {s.margin:g} + "
                   f"{_lost_cost(victim, s, now):.2f} for {_hours(lost_hours(victim, s, now))} of work to redo")
        chosen.append(Preemption(victim.job_id, victim.config_key, victim.slot, c.config_key,
                                 WAIT if c.starving else VALUE, why))
    return Decision(tuple(chosen), protected)


class Fits:
    """Whether a GPU meets a requirement: every GPU meets none; an unknown GPU meets only none."""

    def __init__(self, classes: Mapping[str, GpuClass]) -> None:
        self.classes = classes

    def __call__(self, requirement: GpuRequirement, gpu: Gpu | None) -> bool:
        if not restricts(requirement):
            return True
        return gpu is not None and meets(gpu, requirement, self.classes).ok


def _gpus(c: Candidate) -> int:
    return c.requirement.gpus or 1


def _unserved(line: list[Candidate], idle: list[Gpu | None], promised: list[Gpu | None],
              fits: Fits) -> list[Candidate]:
    """The members of the line that neither an idle GPU nor a slot a pending preemption frees will
    serve: in order, each takes the first such GPU that fits it (a multi-GPU one, N of them on one
    node, idle or promised)."""
    waiting = []
    for c in line:
        if _gpus(c) > 1:
            if not _take_on_one_node(c, idle, promised, fits):
                waiting.append(c)
            continue
        for gpus in (idle, promised):
            g = next((i for i, gpu in enumerate(gpus) if fits(c.requirement, gpu)), None)
            if g is not None:
                gpus.pop(g)
                break
        else:
            waiting.append(c)
    return waiting


def _take_on_one_node(c: Candidate, idle: list[Gpu | None], promised: list[Gpu | None], fits: Fits) -> bool:
    """Take N idle or promised GPUs of one node that fit `c` (N = its GPUs), if some node has them."""
    n = _gpus(c)
    for node in sorted({g.node for g in (*idle, *promised) if g is not None}):
        here = [(gpus, g) for gpus in (idle, promised) for g in gpus
                if g is not None and g.node == node and fits(c.requirement, g)]
        if len(here) >= n:
            for gpus, g in here[:n]:
                gpus.remove(g)
            return True
    return False


def _gang_victims(c: Candidate, pool: list[RunningJob], left_idle: list[Gpu | None], s: PreemptionSettings,
                  now: float, fits: Fits, only_node: str | None = None) -> list[RunningJob]:
    """The fewest jobs whose GPUs, with the idle ones of their node, give `c` its N GPUs on one node
    (`only_node` when given; each job in the wait bound's victim order); none when no node can."""
    def order(j: RunningJob) -> tuple:
        return (j.preemptions >= s.max_preemptions_per_job, j.starving,
                lost_hours(j, s, now) * (1 + j.preemptions), j.value, -(j.checkpoint_at or 0.0), j.job_id)

    n, best = _gpus(c), None
    for node in sorted({j.gpu.node for j in pool if j.gpu is not None and only_node in (None, j.gpu.node)}):
        have = sum(1 for g in left_idle if g is not None and g.node == node and fits(c.requirement, g))
        picked: list[RunningJob] = []
        for j in sorted((j for j in pool if j.gpu is not None and j.gpu.node == node
                         and fits(c.requirement, j.gpu)), key=order):
            if have >= n:
                break
            picked.append(j)
            have += j.gpus
        if have >= n and picked and (best is None or len(picked) < len(best)):
            best = picked
    return best or []


def _left_idle(line: list[Candidate], idle: list[Gpu | None], fits: Fits) -> list[Gpu | None]:
    """The idle GPUs no member of the line takes (where a preempted job could move at once)."""
    left = list(idle)
    for c in line:
        if _gpus(c) > 1:  # takes N of one node, or none (they stay idle, its victims' node's own)
            _take_on_one_node(c, left, [], fits)
            continue
        g = next((i for i, gpu in enumerate(left) if fits(c.requirement, gpu)), None)
        if g is not None:
            left.pop(g)
    return left


def lost_hours(j: RunningJob, s: PreemptionSettings, now: float) -> float:
    """The work a preemption now costs the job: hours since its newest checkpoint in this attempt
    (since the attempt started without one), plus the restart."""
    since = max(j.checkpoint_at or j.started_at, j.started_at)
    return max(0.0, now - since) / 3600.0 + s.restart_minutes / 60.0


def _lost_cost(j: RunningJob, s: PreemptionSettings, now: float) -> float:
    """The lost work in score points: that share of the job's value (0 when its length is unknown)."""
    if j.expected_hours <= 0:
        return 0.0
    return max(j.value, 0.0) * lost_hours(j, s, now) / j.expected_hours


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


def _victim(c: Candidate, pool: list[RunningJob], s: PreemptionSettings, now: float,
            movable: Callable[[RunningJob], bool]) -> RunningJob | None:
    def newest_checkpoint_first(j: RunningJob) -> tuple[float, str]:
        return (-(j.checkpoint_at or 0.0), j.job_id)

    if c.starving:
        return min(pool, key=lambda j: (j.preemptions >= s.max_preemptions_per_job, j.starving, not movable(j),
                                        lost_hours(j, s, now) * (1 + j.preemptions), j.value,
                                        *newest_checkpoint_first(j)))
    allowed = [j for j in pool if not j.starving and j.preemptions < s.max_preemptions_per_job]
    if not allowed:
        return None
    cheapest = min(allowed, key=lambda j: (j.value + _lost_cost(j, s, now), *newest_checkpoint_first(j)))
    return cheapest if c.score >= cheapest.value + s.margin + _lost_cost(cheapest, s, now) else None
