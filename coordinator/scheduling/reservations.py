"""Reservations for multi-GPU trainings waiting for GPUs of one node (backfill with a bound, like
Slurm's backfill scheduler): which node each waits for, from when, and what else may start there.

A pure function of the waiting multi-GPU jobs (in the line's order) and every known GPU of the
cluster with the time it is expected free (now when idle; a running training's expected end):

- each waiting job takes the node whose N-th GPU that fits it frees first (N: its `gpus`; ties: the
  node's name), and those N GPUs are set aside for it (a later job of the line plans around them);
  unless that is no sooner than the job starves (`starves_at`): its wait bound then frees a node for
  it anyway (preemption rule 5), and a reservation would only idle GPUs meanwhile (the gang simulator,
  RingRift-length trainings: reserved nodes expected free 20-35 h ahead, past the 12 h bound); a job
  that holds a reservation keeps its node (while that node still has N GPUs that fit it) however the
  estimates move;
- `start_at` is that time; `spare` is how many more of the node's GPUs are expected free by then,
  i.e. how many other jobs may still start there without delaying it; `promised_at` is the start
  expected when the job first reserved that node (kept on every later tick while it keeps the node:
  estimates slip as trainings run late, the promise does not).

What a worker on a reserved node may start (`coordinator/stores/reservation_admit.lua`): the reserved
job itself; with `backfill`, a job expected to end before `promised_at` (its expected run time on
that GPU from the learned speeds, `coordinator/scheduling/speeds.py`); any job while `spare` > 0
(each one takes one); else none: the job is deferred and another node takes it. So the reserved job
starts by `promised_at`, unless the trainings there run past their expected end:
`reservation_grace_minutes` after `promised_at` the preemption rule asks them to yield at a
checkpoint (`preemption_rule` rule 5), which bounds its wait by the node's expected free time
plus the grace and one checkpoint interval.

The preempter plans on every tick and replaces the stored reservations (a started job's goes; the
estimates are refreshed). `backfill: off` plans none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from coordinator.core.gpu_requirements import Gpu
from coordinator.core.settings import GpuRequirement
from coordinator.stores.reservations import BACKFILL, OFF, Reservation


@dataclass(frozen=True)
class Waiting:
    """A queued multi-GPU job, as the line orders them."""

    job_id: str
    config_key: str
    requirement: GpuRequirement
    starves_at: float = float("inf")  # when its wait bound takes GPUs for it anyway (preemption on)


def plan(waiting: Sequence[Waiting], gpus: Sequence[tuple[Gpu, float]],
         fits: Callable[[GpuRequirement, Gpu], bool], now: float, mode: str = BACKFILL,
         before: Mapping[str, Reservation] | None = None) -> list[Reservation]:
    """The reservations for `waiting` (module docstring), given each known GPU with the unix time it
    is expected free (`float('inf')`: unknown); none with mode OFF. `before`: the stored ones, by
    job id: a job that keeps its node keeps the start promised when it first reserved it."""
    if mode == OFF:
        return []
    left = [(g, max(free_at, now)) for g, free_at in gpus]
    made = []
    for w in waiting:
        n = max(w.requirement.gpus or 1, 1)
        kept = (before or {}).get(w.job_id)
        options: dict[str, tuple[float, list[tuple[Gpu, float]]]] = {}
        for node in sorted({g.node for g, _ in left}):
            fitting = sorted((e for e in left if e[0].node == node and fits(w.requirement, e[0])), key=lambda e: e[1])
            if len(fitting) >= n and fitting[n - 1][1] != float("inf"):
                options[node] = (fitting[n - 1][1], fitting[:n])
        if kept is not None and kept.node in options:
            node = kept.node  # a reservation holds: the promise stands however the estimates slip
        else:
            node = min(options, key=lambda k: (options[k][0], k), default=None)
            if node is None or options[node][0] >= w.starves_at:
                continue  # no node frees N GPUs that fit it before its wait bound would: that bound serves it
        start_at, taken = options[node]
        for entry in taken:
            left.remove(entry)
        spare = sum(1 for g, free_at in left if g.node == node and free_at <= start_at)
        promised_at = kept.promised_at if kept is not None and kept.node == node else start_at
        made.append(Reservation(w.job_id, w.config_key, node, n, start_at, spare, mode, promised_at))
    return made
