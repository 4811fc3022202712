"""Memory-aware placement: which GPUs a config's jobs may run on, whether dispatch has a place for
one more, and why a waiting job waits (issue 26, step 2). Reads Redis; decides nothing else.

How a job reaches a GPU that fits it is RQ's: a job whose config needs something of a GPU
(`gpus.boards`, `gpus.per_config`) is queued on its requirement's own queue (`training-ge40gb`,
`coordinator/stores/jobs.py`), which only workers whose GPU meets it listen to, most demanding
queue first (`workers/worker.py`). So no job starts on a GPU that does not meet its requirement,
and a big GPU takes the big jobs before the ones any GPU can run.

What this module adds is dispatch's count. Without requirements every GPU takes every job and
dispatch fills `free GPUs + scheduler.prefetch` with queued jobs in priority order. With them, a
count of GPUs would let queued jobs that only a busy big GPU can run use up the count while small
GPUs idle (head-of-line blocking). `Placement.admits` counts by a maximum matching of queued jobs
to the free GPUs that fit them (`max_matching`, Kuhn's augmenting paths; a running attempt holds
its node's GPU): a new job is admitted when it raises the matching (a free GPU gets a job it
would otherwise not) or when the queued jobs no free GPU takes stay within the prefetch.
Dispatch then goes on past a config it cannot place, so the next one that fits a free GPU is
queued. A config that no GPU known to the cluster meets is never queued by dispatch (nothing
would run it); `notes` says so, and `check-config` warns of it. Without requirements the rule
is today's count (matching = min(queued, free)).

Learned speeds (step 3, `coordinator/scheduling/speeds.py`): `rank_gpus` orders the GPUs that fit
by the config's `preferred` classes, then the expected finish (`expected_finish`: when the GPU
frees plus epochs x samples x the learned seconds per epoch per sample of the job's workload on its
class; the prior where untimed), then cost per hour (ties). How the preference steers a job, with
a queue per requirement where the first free fitting worker takes it: **the taker checks**. An idle
worker marks its GPU idle (`GpuStore.mark_idle`); a worker that dequeues a job asks
`better_elsewhere` whether another GPU, free now, should have it (a preferred class; an expected
finish `gpus.faster_margin` times sooner where both speeds on the job's workload were timed, never
on a prior; or as soon and a cheaper hour) and, when there are more such GPUs than jobs waiting
behind it, puts it back at the front of its queue, where the better idle worker (blocked on that
queue) takes it at once (`workers/worker.py`). A free GPU never idles for a job that fits it: a
busy faster GPU is never waited for (Gavel-style waiting on estimated free times broke the wait
bound in the heterogeneous simulator).

What it does not do: no global assignment (each taker decides for the job it dequeued, counting
better GPUs against the jobs waiting on that queue, not across queues); a job whose workload was
not timed on both GPUs is not moved for speed; a big GPU idle when a small job comes takes it
(the wait bound across classes, `preemption_rule.py`, moves it off at a checkpoint);
dispatch's count (`admits`) is unchanged. The record's `placement` adds `speed_note` ("~3.1x the
24GB's epochs/h (learned on hexagonal)"); `notes` (priorities) still names the first free GPU by
preference and cost, without speeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import redis

from coordinator.core.errors import EventError
from coordinator.core.gpu_requirements import Gpu, gpus_needed, meets, need_text, preference_rank, restricts
from coordinator.core.job_states import QUEUED
from coordinator.core.keys import Keys
from coordinator.core.settings import GpuClass, GpuRequirement, GpuSettings
from coordinator.scheduling.speeds import SpeedTable, class_key, workload_of
from coordinator.stores.gpus import GpuStore
from coordinator.stores.job_records import SLOT_STATES, active_records
from coordinator.stores.leases import LeaseManager

DOWN = "down"


@dataclass(frozen=True)
class SlotGpu:
    """One GPU slot of a node that is not down, with the GPU it has, what an hour of it costs, and
    when it is free (0: now; else the expected seconds until its running training ends)."""

    gpu: Gpu
    cost_per_hour: float | None = None
    free_in_s: float = 0.0
    ephemeral: bool = False  # on an ephemeral host (it may go away with little notice)


@dataclass(frozen=True)
class Workload:
    """What ranking needs of one job: its workload (`speeds.workload_of`) and its work in
    sample-epochs (epochs left x samples; None when unknown: then only free GPUs compete)."""

    name: str
    work: float | None = None


def job_workload(record: Mapping[str, str]) -> Workload:
    """A job record's workload (board, or board/model) and the work it has left (epochs left x samples)."""
    samples = float(record.get("samples") or 0)
    left = float(record.get("epochs") or 1) - float(record.get("epoch") or 0)
    return Workload(workload_of(record.get("board_type", ""), json.loads(record.get("command") or "[]")),
                    max(left, 1.0) * samples if samples > 0 else None)


def expected_run_s(speeds: SpeedTable, job: Workload, gpu: Gpu, classes: Mapping[str, GpuClass]) -> float | None:
    """Seconds `job` is expected to train on `gpu` (None: its work or the speed is unknown)."""
    return speeds.expected_seconds(job.name, class_key(gpu, classes), job.work, gpu) if job.work else None


def expected_finish(slot: SlotGpu, speeds: SpeedTable, job: Workload, classes: Mapping[str, GpuClass]) -> float:
    """Seconds from now until `job` would be done on `slot`: when it frees plus the job's run time
    there. Where no run time is known (nothing timed on the workload, or no work), a free slot's
    is 1 / its relative speed (comparable only between free slots) and a busy one's is infinite."""
    run = expected_run_s(speeds, job, slot.gpu, classes)
    if run is not None:
        return slot.free_in_s + run
    return 1.0 / speeds.relative(job.name, class_key(slot.gpu, classes), slot.gpu) if slot.free_in_s <= 0 \
        else float("inf")


def requirement_of(gpus: GpuSettings, config_key: str) -> GpuRequirement:
    """The config's requirement; none for a key that is not a config's."""
    try:
        return gpus.requirement_for(config_key)
    except EventError:
        return GpuRequirement()


def _cost(s: SlotGpu) -> float:
    return s.cost_per_hour if s.cost_per_hour is not None else float("inf")


def rank_gpus(requirement: GpuRequirement, slots: Iterable[SlotGpu], classes: Mapping[str, GpuClass],
              speeds: SpeedTable | None = None, job: Workload | None = None) -> list[SlotGpu]:
    """The slots whose GPU meets `requirement`, best first: the config's `preferred` classes in
    order, then (given `speeds` and `job`) the earliest expected finish (`expected_finish`: learned
    speed per workload and GPU class, the prior where untimed), then the cheaper hour (unknown cost
    last: cost breaks ties), then node name."""
    fitting = [s for s in slots if meets(s.gpu, requirement, classes)]

    def finish(s: SlotGpu) -> float:
        return expected_finish(s, speeds, job, classes) if speeds is not None and job is not None else 0.0

    return sorted(fitting, key=lambda s: (preference_rank(s.gpu, requirement, classes), finish(s), _cost(s),
                                          s.gpu.node, s.gpu.index))


def better_elsewhere(me: SlotGpu, others: Iterable[SlotGpu], requirement: GpuRequirement,
                     classes: Mapping[str, GpuClass], speeds: SpeedTable, job: Workload,
                     margin: float) -> list[SlotGpu]:
    """The free slots that `job` should rather go to than `me`, a free GPU that could start it now:
    a preferred class, or an expected finish `margin` times sooner where both speeds on the job's
    workload were timed, or no later and a cheaper hour. A busy GPU never counts, however soon it
    frees (Gavel-style waiting): in the heterogeneous simulator, waiting for estimated free times
    pushed the worst wait on the contended cluster to 21.7 h, past the 12 h bound (11.0 h without).
    A prior never sends a job away: priors
    rank GPUs by large models (a GH200 3.6x a 4090), while on a small board the 4090 is nearly as
    fast, and trusting them sent small boards' jobs to the big GPUs the large boards wait for (the
    heterogeneous simulator: 27% of big-GPU time on small boards, Elo/GPU-h 5.30 against 7.20).
    None for a multi-GPU job: one slot elsewhere says nothing of a node with room for all of it."""
    if gpus_needed(requirement) > 1:
        return []
    mine = expected_finish(me, speeds, job, classes)
    mine_timed = speeds.timed(job.name, class_key(me.gpu, classes))
    my_rank = preference_rank(me.gpu, requirement, classes)
    out = []
    for other in others:
        if other.free_in_s > 0 or not meets(other.gpu, requirement, classes):
            continue
        rank = preference_rank(other.gpu, requirement, classes)
        if rank > my_rank:
            continue
        theirs = expected_finish(other, speeds, job, classes)
        measured = mine_timed and speeds.timed(job.name, class_key(other.gpu, classes))
        if rank < my_rank or (measured and theirs * margin <= mine) or (theirs <= mine and _cost(other) < _cost(me)):
            out.append(other)
    return out


def better_node_class(me: SlotGpu, others: Iterable[SlotGpu], requirement: GpuRequirement,
                      classes: Mapping[str, GpuClass], speeds: SpeedTable, job: Workload, margin: float,
                      lifetime_s: float, long_share: float) -> list[SlotGpu]:
    """The idle GPUs of the other node class `job` should rather go to than `me`: a long training
    (expected to run more than `long_share` of an ephemeral host's expected lifetime `lifetime_s`)
    on an ephemeral GPU goes to a stable one, a shorter one on a stable GPU to an ephemeral one
    (keeping the stable GPUs for the trainings a vanishing host would cut). Only to a GPU that fits
    it and is not expected slower: of the same class, or both speeds timed and its finish within
    `margin`. None when the run time is unknown (no move on a guess) or for a multi-GPU job."""
    run_s = expected_run_s(speeds, job, me.gpu, classes)
    if gpus_needed(requirement) > 1 or run_s is None:
        return []
    if (run_s > long_share * lifetime_s) != me.ephemeral:
        return []  # a long training on a stable GPU, a short one on an ephemeral GPU: where each belongs
    mine_cls = class_key(me.gpu, classes)
    out = []
    for other in others:
        if other.free_in_s > 0 or other.ephemeral == me.ephemeral or not meets(other.gpu, requirement, classes):
            continue
        cls = class_key(other.gpu, classes)
        timed = speeds.timed(job.name, cls) and speeds.timed(job.name, mine_cls)
        if cls == mine_cls or (timed and expected_finish(other, speeds, job, classes) <= run_s * margin):
            out.append(other)
    return out


def speed_note(speeds: SpeedTable, workload: str, mine: Gpu, cluster: Iterable[Gpu],
               classes: Mapping[str, GpuClass]) -> str:
    """How `mine` compares with the slowest other GPU class of the cluster on `workload`, for the
    job record: "~3.1x the RTX 4090's epochs/h (learned)"; "" in a cluster of one class."""
    own = class_key(mine, classes)
    others = {class_key(g, classes): g for g in cluster}
    others.pop(own, None)
    others.pop("unknown", None)
    if not others:
        return ""
    slowest = min(others, key=lambda c: (speeds.relative(workload, c, others[c]), c))
    ratio = speeds.relative(workload, own, mine) / speeds.relative(workload, slowest, others[slowest])
    learned = speeds.basis(workload, own) != "prior" and speeds.basis(workload, slowest) != "prior"
    basis = f"learned on {workload}" if learned else "prior"
    return f"~{ratio:.1f}x the {slowest}'s epochs/h ({basis})"


def max_matching(jobs: Sequence[GpuRequirement], slots: Sequence[SlotGpu],
                 fits: Callable[[GpuRequirement, SlotGpu], bool]) -> int:
    """How many of `jobs` can each have a distinct slot that fits it (Kuhn's augmenting paths;
    tens of jobs and GPUs: microseconds)."""
    owner: list[int | None] = [None] * len(slots)
    edges = [[i for i, s in enumerate(slots) if fits(job, s)] for job in jobs]

    def augment(j: int, seen: set[int]) -> bool:
        for i in edges[j]:
            if i in seen:
                continue
            seen.add(i)
            if owner[i] is None or augment(owner[i], seen):
                owner[i] = j
                return True
        return False

    return sum(1 for j in range(len(jobs)) if augment(j, set()))


@dataclass
class Placement:
    """The cluster's GPUs as dispatch sees them: every usable slot, those no attempt holds, and the
    requirements of the queued jobs (each needs one free GPU that fits it)."""

    slots: list[SlotGpu]
    free: list[SlotGpu]
    classes: Mapping[str, GpuClass]
    waiting: list[GpuRequirement] = field(default_factory=list)

    def fits(self, requirement: GpuRequirement, slot: SlotGpu) -> bool:
        """The slot's GPU meets it, and (a multi-GPU job) its node has as many GPUs that do. Such a
        job counts as one slot in the matching: whether all of its node's GPUs are free when a
        worker takes it is the lease's to say (all at once, or deferred)."""
        if not meets(slot.gpu, requirement, self.classes):
            return False
        needed = gpus_needed(requirement)
        return needed == 1 or sum(1 for s in self.slots if s.gpu.node == slot.gpu.node
                                  and meets(s.gpu, requirement, self.classes)) >= needed

    def known(self, requirement: GpuRequirement) -> bool:
        """Whether any GPU of the cluster (free or not) meets it."""
        return any(self.fits(requirement, s) for s in self.slots)

    def matched(self, jobs: Sequence[GpuRequirement]) -> int:
        ranked = rank_gpus(GpuRequirement(), self.free, self.classes)  # a stable order of the free GPUs
        return max_matching(jobs, ranked, self.fits)

    def admits(self, requirement: GpuRequirement, prefetch: int) -> bool:
        """Whether dispatch may queue one more job of `requirement` (module docstring)."""
        if not self.known(requirement):
            return False
        before = self.matched(self.waiting)
        after = self.matched([*self.waiting, requirement])
        return after > before or len(self.waiting) + 1 - after <= prefetch

    def add(self, requirement: GpuRequirement) -> None:
        """A job of `requirement` was queued: it waits for a GPU too."""
        if self.known(requirement):
            self.waiting.append(requirement)

    def why_waiting(self, requirement: GpuRequirement, queued: bool = False) -> str:
        """Why a job of `requirement` is not on a GPU: "no free GPU with >= 40 GB" (none is free, or
        queued jobs take the free ones), that no GPU of the cluster has it, or the free GPU a
        worker will take it to. `queued`: the job is among `waiting` (else: a config not queued)."""
        if not restricts(requirement):
            return ""
        need = need_text(requirement)
        if not self.known(requirement):
            return f"no GPU in the cluster with {need}: it waits for one to join"
        free = rank_gpus(requirement, self.free, self.classes)
        if not free:
            return f"no free GPU with {need}"
        if not queued and self.matched([*self.waiting, requirement]) == self.matched(self.waiting):
            return f"no free GPU with {need} (queued jobs take the free ones)"
        return f"needs {need}: {free[0].gpu.node} ({free[0].gpu.describe()}) is free"


def cluster_slots(leases: LeaseManager, gpus: GpuStore) -> list[SlotGpu]:
    """Every GPU slot of a node that is not down (its `gpus` count), each with the node's GPU from
    the inventory (device by index; the node's first device past the listed ones; unknown without
    an inventory)."""
    slots = []
    for node in leases.nodes():
        if node["status"] == DOWN:
            continue
        name, count = node["node"], int(node["gpus"])
        inventory = gpus.node(name)
        devices = inventory.devices if inventory else ()
        cost = inventory.cost_per_hour if inventory else None
        for i in range(count):
            device = devices[i] if i < len(devices) else (devices[0] if devices else Gpu("", 0.0, i))
            slots.append(SlotGpu(Gpu(device.model, device.memory_gb, i, name), cost))
    return slots


def read_placement(conn: redis.Redis, keys: Keys, leases: LeaseManager, settings: GpuSettings) -> Placement:
    """The placement as Redis holds it now: slots, those held by attempts (by node), queued jobs."""
    slots = cluster_slots(leases, GpuStore(conn, keys))
    free = list(slots)
    records = active_records(conn, keys)
    held = [r for _, r in records if r.get("state") in SLOT_STATES]
    for r in sorted(held, key=lambda r: -(requirement_of(settings, r.get("config_key", "")).min_memory_gb or 0)):
        requirement = requirement_of(settings, r.get("config_key", ""))
        for _ in range(gpus_needed(requirement)):  # a multi-GPU attempt holds that many of its node's
            on_node = [s for s in free if s.gpu.node == r.get("node")]
            fitting = [s for s in on_node if meets(s.gpu, requirement, settings.classes)] or on_node
            if fitting:  # the smallest that fits: what its attempt most likely holds
                free.remove(min(fitting, key=lambda s: s.gpu.memory_gb))
    placement = Placement(slots, free, settings.classes)
    for _, r in records:
        if r.get("state") == QUEUED:
            placement.add(requirement_of(settings, r.get("config_key", "")))
    return placement


def notes(conn: redis.Redis, keys: Keys, leases: LeaseManager, settings: GpuSettings,
          config_keys: Iterable[str]) -> dict[str, str]:
    """Config key -> why its job (queued, or not yet dispatched) waits for a GPU, for the configs
    whose requirement refuses some GPU and that are not on one: what `priorities` shows."""
    placement = read_placement(conn, keys, leases, settings)
    states = {r.get("config_key"): r.get("state") for _, r in active_records(conn, keys)}
    out = {}
    for config_key in config_keys:
        requirement = requirement_of(settings, config_key)
        if states.get(config_key) in SLOT_STATES or not restricts(requirement):
            continue
        out[config_key] = placement.why_waiting(requirement, queued=states.get(config_key) == QUEUED)
    return out
