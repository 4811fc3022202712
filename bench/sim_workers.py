"""Simulated GPU workers for the scheduling simulator: `rq worker training` + `workers/tasks.py`
emulated at the Redis level, on the simulated clock, one worker per GPU slot (`SimGpu`: a 1-GPU
node on the uniform cluster; on a heterogeneous one a host's GPUs, each its own worker).

Per attempt, the same store calls as `run_training` / `TrainingRun`, in the same order:
1. take the next RQ job, FIFO (`Queue.dequeue_any`, as RQ's worker does) from the queues the shipped
   worker listens to: `workers.worker.fitting_queues` (the registered requirement queues its GPU
   meets, most demanding first) before `training`; its args are (job_id, prefix). A worker on a
   heterogeneous cluster registers its GPU when it starts as a real one without NVML does
   (`workers.gpu_inventory.register`: its node's `hosts` entry); idle workers take jobs longest
   idle first (Redis serves the client blocked longest on BLPOP); `tasks._hold_reason` (the node's
   open breaker) and the fit backstop (`tasks.queue_requirement` + `meets`) hand a job back;
2. the config lease and the node's GPU slot (`LeaseManager.try_acquire`: one try; busy -> the job
   is deferred with `JobStore.defer`, as the task does after its tries);
3. `JobStore.start` (job_start.lua) with the fencing token, the epoch of the job's newest checkpoint
   (kept here per job: what `newest_checkpoint` would find) and the newest published model of
   `warm_start_from` (the files "exist"); `mark_running`;
4. the trainer: the record's `epochs`, each one pass over the record's `samples` at the board's true
   cost per sample on its GPU (`World.training_hours`; a resumed attempt first pays RESUME_OVERHEAD_H);
   `JobStore.progress` with the newest epoch reached, written when the coordinator is about to read
   it (`flush_progress`, at the epoch's end time) rather than once per epoch: the preempter reads only
   the newest epoch and its time;
5. the lease renewal's reply carries the stop reason (`LeaseManager.renew`); 'preempted' -> the
   trainer stops at once (RingRift's trainer saves on SIGTERM, but the next attempt resumes from the
   newest whole epoch, so the partial epoch is lost: `lost_gpu_hours` since that epoch's end),
   `JobStore.preempted`; else the trainer completes: `JobStore.finish` (job_finish.lua) with the
   fields `TrainingRun._complete` writes (model path from `attempt_paths`, its command fingerprint);
6. the leases are released.
Heterogeneous clusters (`bench/sim_cluster.py`) add the shipped worker's placement: idle marks
(`GpuStore.mark_idle`, refreshed at each wake-up), `workers.worker.better_gpus` and
`keep_or_hand_back` (the decision and put-back `TrainingWorker._keep` makes) on each dequeued job,
`tasks._record_gpu` with the worker's own registration after the start, and `epoch_time_s` +
`speed_class` on each progress entry after an attempt's first (the coordinator learns speeds from
them); and:
a training runs at its GPU's true speed; one on a
GPU with less memory than it truly needs fails `OOM_AFTER_H` after its start as `TrainingRun._fail`
('trainer_error': retried once after backoff, then failed) and is recorded on the config's and the
node's circuit breakers, as a success is; an ephemeral host vanishes (`vanish`): its attempts stop
at once, the work since their newest whole epoch is lost, their leases expire (the lease key and
the node slot go, the reaper's expiry entry is set to the simulated expiry) and the orchestrator's
reaper retries them. Not emulated: quality holds, the trainer's timeout (the simulator sets
`training.timeout_s` above every training).

Multi-GPU ("gang") trainings (`gpus: N` in `gpus.boards`/`per_config`), as `run_training` does them:
the worker listens to the requirement queues its node can serve (`fitting_queues` with its node's
devices); before the lease, the shipped `workers.tasks.reservation_refusal` (a node reserved for a
waiting multi-GPU job admits only that job, one expected to end before the reservation, or one of its
spare GPUs): refused -> `JobStore.defer(..., count_as="reserved")`; the lease takes N GPUs of the node
at once (`try_acquire(gpus=N, devices=...)` with the shipped `device_pool` of the worker's
registration; every attempt passes its devices, so the lease holds the worker's own GPU), then the
job's reservation is dropped (`ReservationStore.drop`, as `_drop_reservation`); `_record_gpu` gets the
lease (`gpus_held`, `gpu_devices` on the record). The other workers of the GPUs a gang holds take
nothing meanwhile (the shipped `workers.worker.slot_held`, checked after the idle mark, as the shipped
worker's loop does). A gang of N trains `sim_cluster.gang_speedup(N)` (N x 0.9) times as fast as one
GPU of its class; its epoch times are reported with its GPU's class, as the shipped worker does; a
preemption or a vanished host stops all its GPUs, and it loses N x the GPU time since its checkpoint.
The lease keeper renews in the host's time; so does this (`renew_due`), so leases never lapse while the simulation runs.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from rq import Queue

from bench.sim_cluster import OOM_AFTER_H, SimGpu, fits, gang_speedup
from bench.sim_world import RESUME_OVERHEAD_H
from coordinator.bus.events import TRAINING_COMPLETE, TRAINING_FAILED
from coordinator.core.clock import ManualClock
from coordinator.core.errors import LeaseUnavailable
from coordinator.core.gpu_requirements import gpus_needed, node_meets
from coordinator.core.job_states import COMPLETE, FAILED, RETRYING
from coordinator.core.keys import TRAINING_QUEUE
from coordinator.core.retry import decide
from coordinator.core.settings import Settings, worker_settings
from coordinator.core.text import decode_hash
from coordinator.scheduling.placement import SlotGpu
from coordinator.scheduling.preempter import lost_gpu_hours
from coordinator.stores.breakers import CircuitBreakers
from coordinator.stores.gpus import GpuStore
from coordinator.stores.job_records import PREEMPTED_STOP, Outcome
from coordinator.stores.jobs import JobStore
from coordinator.stores.leases import Lease, LeaseManager
from coordinator.trainer.command import attempt_paths
from coordinator.trainer.warm_start import command_fingerprint
from workers import gpu_inventory
from workers.tasks import (
    _drop_reservation,
    _hold_reason,
    _record_gpu,
    _requirement,
    device_pool,
    queue_requirement,
    reservation_refusal,
    slot_gpu,
    speed_class,
)
from workers.worker import (
    IDLE_MAX_AGE_S,
    KEEP,
    LEAVE_S,
    TO_BUSY,
    TO_IDLE,
    better_gpus,
    fitting_queues,
    keep_or_hand_back,
    slot_held,
)

HOUR = 3600.0
OOM_ERROR = "torch.OutOfMemoryError: CUDA out of memory."


class _NoNvml:
    """What `pynvml` is on a machine without a driver: the worker falls back to its `hosts` entry."""

    @staticmethod
    def nvmlInit() -> None:
        raise RuntimeError("NVML Shared Library Not Found (simulated worker)")


@dataclass
class Attempt:
    job_id: str
    config_key: str
    record: dict[str, str]
    lease: Lease
    attempt: int
    started: float  # sim unix s
    resumed_epoch: int
    epochs: int
    epoch_s: float
    overhead_s: float
    token: int
    written_epoch: int = 0
    worker: str = ""
    fails_at: float | None = None  # out of memory: the trainer dies then
    speed_class: str = ""  # the GPU class its epochs are timed for (`TrainingRun.speed_class`)

    @property
    def ends_at(self) -> float:
        if self.fails_at is not None:
            return self.fails_at
        return self.started + self.overhead_s + (self.epochs - self.resumed_epoch) * self.epoch_s

    def epoch_at(self, now: float) -> int:
        if self.fails_at is not None:
            return self.resumed_epoch
        done = math.floor((now - self.started - self.overhead_s) / self.epoch_s + 1e-9)
        return min(self.epochs, self.resumed_epoch + max(0, done))

    def epoch_end(self, epoch: int) -> float:
        return self.started + self.overhead_s + (epoch - self.resumed_epoch) * self.epoch_s


@dataclass
class Counters:
    attempts: int = 0
    completed: int = 0
    preempted: dict[str, int] = field(default_factory=lambda: {"wait": 0, "value": 0})
    lost_gpu_hours: float = 0.0  # partial epochs lost + resume overheads (preemptions)
    deferred: int = 0
    not_started: int = 0
    release_lost: int = 0
    renew_lost: int = 0
    overlaps: int = 0  # a config with two attempts at once (must stay 0)
    oom: int = 0  # attempts started on a GPU with less memory than their training needs
    oom_gpu_hours: float = 0.0
    failed_jobs: int = 0  # jobs that ended failed (their retries spent)
    vanished: int = 0  # attempts whose GPU vanished under them
    vanish_gpu_hours: float = 0.0  # work since the newest checkpoint + the resume's overhead
    held: int = 0  # jobs handed back: the node's breaker was open
    misfits: int = 0  # jobs a worker took whose queue's requirement its GPU does not meet (must stay 0)
    hand_backs: int = 0  # dequeued jobs put back for a better GPU (the shipped worker's `_keep`)
    hand_backs_to_idle: int = 0  # ... of them for a better GPU free now (the rest: one about to free)
    timed_epochs: int = 0  # TRAINING_PROGRESS entries that carried an `epoch_time_s`
    reserved: int = 0  # jobs deferred by a node's reservation for a multi-GPU job (`reservation_refusal`)
    gang_attempts: int = 0  # attempts on more than one GPU
    drop_missed: int = 0  # a multi-GPU attempt started and its reservation stayed (must stay 0)
    device_overlaps: int = 0  # an attempt started on a GPU another attempt holds (must stay 0)


class Workers:
    """One simulated worker per GPU slot; `on_*` callbacks tell the simulator what happened.
    `duration_h(config_key, gpu, samples)`: the training's true hours on that GPU, on an export of
    `samples` (the job record's at the attempt's start). `settings`: given on a
    heterogeneous cluster, it turns on GPU registration, out-of-memory, breakers and vanishing."""

    def __init__(self, conn: redis.Redis, store: JobStore, leases: LeaseManager, clock: ManualClock,
                 gpus: list[SimGpu], duration_h: Callable[[str, SimGpu, float], float], defer_s: float,
                 on_start: Callable[[Attempt], None], on_end: Callable[[Attempt, str, dict[str, str]], None],
                 settings: Settings | None = None) -> None:
        self.conn = conn
        self.store = store
        self.leases = leases
        self.clock = clock
        self.queue = Queue(TRAINING_QUEUE, connection=conn)
        self.gpus = {g.worker: g for g in gpus}
        self.running: dict[str, Attempt | None] = {g.worker: None for g in gpus}
        self.duration_h = duration_h
        self.defer_s = defer_s
        self.on_start = on_start
        self.on_end = on_end
        self.checkpoints: dict[str, int] = {}  # job id -> newest checkpoint's epoch
        self.counters = Counters()
        self.tokens = 0
        self._renewed = time.monotonic()
        self.settings = settings
        self.hetero = settings is not None
        self.gone: set[str] = set()  # workers whose host vanished
        self.idle_since: dict[str, float] = {g.worker: 0.0 for g in gpus}
        self.registered: dict[str, gpu_inventory.Registered] = {}
        self._queues: dict[str, Queue] = {TRAINING_QUEUE: self.queue}
        self.breakers = CircuitBreakers.from_settings(conn, store.keys, settings, clock) if settings else None
        self.rng = random.Random(1)  # the retry backoff's jitter: the same for every run
        self.left: dict[str, dict[str, float]] = {}  # worker -> queue -> until when it is left to a better GPU
        self.left_jobs: dict[str, dict[str, float]] = {}  # worker -> RQ job put back for a better idle GPU -> until
        self.handed_back: set[str] = set()  # jobs put back at least once

    # -- GPUs ---------------------------------------------------------------------------------------
    def register(self, node: str | None = None) -> None:
        """Each worker (of `node`) registers its GPU as `TrainingWorker.register_birth` does."""
        for gpu in self.gpus.values():
            if node is None or gpu.node == node:
                env = {gpu_inventory.NODE_ENV: gpu.node, "CUDA_VISIBLE_DEVICES": str(gpu.index)}
                self.registered[gpu.worker] = gpu_inventory.register(
                    self.conn, gpu.worker, self.store.keys.prefix, env=env, nvml=_NoNvml)  # type: ignore[arg-type]

    def queues_for(self, worker: str) -> list[Queue]:
        """`TrainingWorker.listen_for_placement`: the requirement queues its GPU meets, then `training`,
        less those it left to a better GPU about to free (until LEAVE_S after, on the simulated clock)."""
        registered = self.registered.get(worker)
        if registered is None:
            return [self.queue]
        names = fitting_queues(self.conn.hgetall(self.store.keys.placement_queues), slot_gpu(registered),
                               registered.inventory.devices)
        left = self.left.get(worker, {})
        now = self.clock()
        queues = [*(self._queues.setdefault(n, Queue(n, connection=self.conn)) for n in names), self.queue]
        return [q for q in queues if left.get(q.name, float("-inf")) <= now]

    # -- taking work --------------------------------------------------------------------------------
    def take_jobs(self) -> int:
        """Idle workers take RQ jobs in FIFO order; how many attempts started. On a heterogeneous
        cluster each idle worker first refreshes its idle mark (`TrainingWorker._mark`), and a job it
        dequeues goes through the shipped worker's placement check (`_keep`): one a better GPU should
        train is put back at the front of its queue; the worker then blocks again behind the idle
        workers already waiting (Redis serves the client blocked longest), so a better idle one takes it."""
        started = 0
        idle = [w for w, current in self.running.items() if current is None and w not in self.gone]
        if self.hetero:
            idle.sort(key=lambda w: self.idle_since[w])
            for worker in idle:
                self._mark(worker, idle=True)
            # the shipped loop marks idle, then takes nothing while a multi-GPU lease holds its GPU
            idle = [w for w in idle if not slot_held(self.conn, self.registered.get(w))]
        order = deque(idle)
        empty: set[tuple[str, ...]] = set()
        while order:
            worker = order.popleft()
            queues = self.queues_for(worker)
            names = tuple(q.name for q in queues)
            while names not in empty:
                taken = Queue.dequeue_any(queues, None, connection=self.conn) if queues else None
                if taken is None:
                    empty.add(names)
                    break
                job, queue = taken
                if self.hetero:
                    verdict = self._keep(worker, job.id, job.args[0], queue)
                    if verdict == TO_IDLE:  # a better idle worker, blocked on that queue, takes it now
                        order.append(worker)
                        break
                    if verdict == TO_BUSY:  # it waits for a better GPU about to free: leave the queue
                        queues = self.queues_for(worker)
                        names = tuple(q.name for q in queues)
                        continue
                if self._run_task(worker, taken[0].args[0], taken[1].name):
                    started += 1
                    break
                if self.hetero:
                    self._mark(worker, idle=True)  # the job was handed on (deferred): idle again
                    self.idle_since[worker] = self.clock()  # and blocked again, behind the idle workers
            if not self.hetero and empty:
                return started
        return started

    def _mark(self, worker: str, idle: bool) -> None:
        """`TrainingWorker._mark`: this worker's GPU in the idle set (`GpuStore.mark_idle`/`mark_busy`)."""
        mine = self._slot(worker)
        if mine is None:
            return
        store = GpuStore(self.conn, self.store.keys)
        if idle:
            store.mark_idle(mine.gpu, mine.cost_per_hour, worker, self.clock(), IDLE_MAX_AGE_S)
        else:
            store.mark_busy(mine.gpu, mine.cost_per_hour, worker)

    def _slot(self, worker: str) -> SlotGpu | None:
        """`TrainingWorker._my_gpu`: the worker's registered GPU and its host's cost per hour."""
        registered = self.registered.get(worker)
        gpu = slot_gpu(registered)
        if registered is None or not (gpu.model or gpu.memory_gb):
            return None
        return SlotGpu(gpu, registered.inventory.cost_per_hour)

    def _keep(self, worker: str, rq_id: str, job_id: str, queue: Queue) -> str:
        """`TrainingWorker._keep` on the simulated clock: KEEP, or the job was put back at the front of
        its queue for a better GPU, TO_IDLE (one is free now) or TO_BUSY (they are all about to free,
        Gavel-style: this worker leaves the queue for LEAVE_S). The shipped `better_gpus`
        (`placement.better_elsewhere` with the learned speeds) and `keep_or_hand_back` (the decision
        and the put-back) decide; only the worker's own bookkeeping around them is here (the method
        needs a live RQ worker)."""
        mine = self._slot(worker)
        now = self.clock()
        better = better_gpus(self.conn, self.store.keys.prefix, job_id, mine, worker, now) if mine else []
        waiting = int(self.conn.llen(queue.key)) if better else 0
        verdict = keep_or_hand_back(self.conn, queue.key, rq_id, better, waiting,
                                    self.left_jobs.setdefault(worker, {}), now)
        if verdict == KEEP:
            self._mark(worker, idle=False)
            return verdict
        self.counters.hand_backs += 1
        self.handed_back.add(job_id)
        if verdict == TO_IDLE:
            self.counters.hand_backs_to_idle += 1
        else:
            self.left.setdefault(worker, {})[queue.name] = now + LEAVE_S
        return verdict

    def _held(self, worker: str, job_id: str, record: dict[str, str], origin: str) -> str:
        """`run_training`'s hand-backs before the leases: the node's breaker, and the fit backstop."""
        node = self.gpus[worker].node
        assert self.settings is not None and self.breakers is not None
        node_breaker = decode_hash(self.conn.hgetall(self.store.keys.breaker("node", node)))
        held = _hold_reason(self.conn, self.store.keys, self.settings, self.breakers, record["config_key"], node,
                            node_breaker)
        if held:
            self.counters.held += 1
            return held
        needed = queue_requirement(self.conn, self.store.keys, origin)
        registered = self.registered.get(worker)
        devices = registered.inventory.devices if registered else ()
        if needed is not None and not node_meets(slot_gpu(registered), devices, *needed):
            self.counters.misfits += 1
            return "does not fit this GPU"
        return ""

    def _run_task(self, worker: str, job_id: str, origin: str = TRAINING_QUEUE) -> bool:
        """`run_training` up to the trainer's start; False when the attempt did not start."""
        record = self.store.get(job_id)
        config_key = record["config_key"]
        gpu = self.gpus[worker]
        node = gpu.node
        gpus, devices, only_listed = 1, (), False
        if self.hetero:
            held = self._held(worker, job_id, record, origin)
            if held:
                self.store.defer(job_id, self.defer_s * 1.5, held)
                return False
            assert self.settings is not None
            settings = worker_settings(record)
            reserved = reservation_refusal(self.conn, self.store.keys, settings, record, node, worker, self.clock())
            if reserved:
                self.store.defer(job_id, self.defer_s * 1.5, reserved, count_as="reserved")
                self.counters.reserved += 1
                return False
            requirement = _requirement(settings, config_key)
            gpus = gpus_needed(requirement)
            devices, only_listed = device_pool(self.registered.get(worker), requirement, settings.gpus.classes)
        try:
            lease = self.leases.try_acquire(config_key, node, f"{worker}:sim", job_id, gpus=gpus, devices=devices,
                                            only_listed=only_listed)
        except LeaseUnavailable as exc:
            self.store.defer(job_id, self.defer_s, str(exc), count_as="lease_busy")
            self.counters.deferred += 1
            return False
        if lease.gpus > 1:  # `_drop_reservation`
            _drop_reservation(self.conn, self.store.keys, job_id)
            raw = self.conn.hget(self.store.keys.reservations, node)
            self.counters.drop_missed += bool(raw and json.loads(raw)["job_id"] == job_id)
        resumed = self.checkpoints.get(job_id, 0)
        parents = json.loads(record.get("warm_start_from") or "[]")
        attempt = self.store.start(job_id, config_key, node, f"{worker}:sim", fence=lease.fence,
                                   resumed_epoch=resumed, init_weights=parents[0] if parents else None)
        if attempt is None:
            self.counters.not_started += 1
            self.leases.release(lease)
            return False
        if self.hetero:  # `_record_gpu`: the attempt's GPU, class and batch size on the record
            _record_gpu(self.store, worker_settings(record), record, f"{worker}:sim", resumes=resumed > 0,
                        lease=lease, made=self.registered.get(worker))
        self.store.mark_running(job_id, config_key)
        if any(a is not None and a.config_key == config_key for a in self.running.values()):
            self.counters.overlaps += 1
        self.counters.device_overlaps += any(a is not None and a.lease.node == node and set(a.lease.devices)
                                             & set(lease.devices) for a in self.running.values())
        epochs = int(record["epochs"])
        self.tokens += 1
        now = self.clock()
        started = self.store.get(job_id)  # the export it trains on: one pass over its samples per epoch
        hours = self.duration_h(config_key, gpu, float(started.get("samples") or 0)) / gang_speedup(lease.gpus)
        run = Attempt(job_id, config_key, started, lease, attempt, now, resumed, epochs, hours * HOUR / epochs,
                      RESUME_OVERHEAD_H * HOUR if resumed else 0.0, self.tokens, resumed, worker)
        run.speed_class = speed_class(run.record, lease.gpus)  # as `TrainingRun`
        if not fits(gpu, config_key):
            run.fails_at = now + OOM_AFTER_H * HOUR
        self.running[worker] = run
        self.counters.attempts += 1
        self.counters.gang_attempts += lease.gpus > 1
        self.on_start(run)
        return True

    # -- while running ------------------------------------------------------------------------------
    def flush_progress(self) -> None:
        """Each running attempt's newest epoch onto its record (job_progress.lua), at that epoch's time."""
        now = self.clock.at
        for run in self.running.values():
            if run is None:
                continue
            epoch = run.epoch_at(now)
            if epoch > run.written_epoch:
                self.clock.at = run.epoch_end(epoch)
                figures: dict[str, object] = {"epoch": epoch, "total_epochs": run.epochs}
                if epoch >= run.resumed_epoch + 2:  # `TrainingRun._time_epoch`: lines after the attempt's first
                    figures["epoch_time_s"] = round(run.epoch_s, 3)
                    self.counters.timed_epochs += 1
                speed = {"speed_class": run.speed_class} if run.speed_class else {}
                self.store.progress(run.job_id, run.config_key, {
                    "board_type": run.record["board_type"], "num_players": run.record["num_players"], **speed,
                    **figures})
                self.clock.at = now
                run.written_epoch = epoch
                self.checkpoints[run.job_id] = epoch

    def renew_due(self) -> None:
        """The lease keepers' renewals, every TTL/3 of the host's time."""
        if time.monotonic() - self._renewed >= self.leases.ttl_ms / 3000.0:
            self.check_stops()

    def check_stops(self) -> list[str]:
        """Renew every running lease; the attempts asked to yield do so now. Returns their workers."""
        self._renewed = time.monotonic()
        yielded = []
        for worker, run in self.running.items():
            if run is None:
                continue
            renewal = self.leases.renew(run.lease, run.job_id)
            if not renewal.held:
                self.counters.renew_lost += 1
            elif renewal.stop == PREEMPTED_STOP and self.clock() < run.ends_at:
                self._preempted(worker, run)
                yielded.append(worker)
        return yielded

    # -- ends ---------------------------------------------------------------------------------------
    def _preempted(self, worker: str, run: Attempt) -> None:
        """`TrainingRun._preempted`: the attempt ends at the newest whole epoch."""
        now = self.clock()
        self.flush_progress()
        epoch = run.epoch_at(now)
        checkpoint_at = run.epoch_end(epoch) if epoch > run.resumed_epoch else None
        lost = lost_gpu_hours(checkpoint_at, run.started, now, run.lease.gpus)
        record = self.store.get(run.job_id)
        node = run.lease.node
        self.store.preempted(run.job_id, run.config_key, run.lease.fence, node, run.attempt, epoch, lost,
                             run.record["board_type"], run.record["num_players"])
        self.checkpoints[run.job_id] = epoch
        kind = record.get("preempt_kind", "?")
        self.counters.preempted[kind] = self.counters.preempted.get(kind, 0) + 1
        self.counters.lost_gpu_hours += lost + RESUME_OVERHEAD_H * run.lease.gpus  # the resume pays its overhead
        self._release(worker, run)
        self.on_end(run, "preempted", {**record, "lost_gpu_hours": f"{lost:.6f}"})

    def complete(self, worker: str, token: int) -> bool:
        """The trainer of `worker`'s attempt `token` exited (0, or out of memory): `TrainingRun._complete`
        or `_fail`. False when that attempt ended earlier (it yielded, or its GPU vanished)."""
        run = self.running.get(worker)
        if run is None or run.token != token:
            return False
        if run.fails_at is not None:
            self._out_of_memory(worker, run)
            return True
        self.flush_progress()
        record = self.store.get(run.job_id)  # the data it trains on now (a queued job follows newer exports)
        paths = attempt_paths(record["output_dir"], run.attempt)
        model = str(paths.model_path)
        node = run.lease.node
        result = {
            "model_path": model, "epochs_completed": run.epochs, "duration_s": round(self.clock() - run.started, 3),
            "parent_model": record.get("parent_model", ""), "data_version": record.get("data_version", ""),
            "samples": record.get("samples", ""),
        }
        fields = {"board_type": record["board_type"], "num_players": record["num_players"]}
        outcome = Outcome(
            TRAINING_COMPLETE, {**result, "fence": run.lease.fence, **fields, "node": node, "attempt": run.attempt},
            {**result, "history": "[]"}, node=node, attempt=run.attempt, fence=run.lease.fence,
            config_fields={"latest_model": model, "latest_job": run.job_id, "latest_fence": run.lease.fence,
                           "last_trained_at": self.clock(), "trained_data_version": record.get("data_version")},
            payload={"history": []})
        fingerprint = command_fingerprint(json.loads(record["command"]))
        outcome_text = self.store.finish(run.job_id, run.config_key, COMPLETE, outcome, model=model,
                                         model_command=fingerprint)
        self.counters.completed += outcome_text == "recorded"
        self.checkpoints.pop(run.job_id, None)
        self._record_breakers(run, success=True)
        self._release(worker, run)
        self.on_end(run, "complete" if outcome_text == "recorded" else outcome_text, {**record, "model_path": model})
        return True

    def _out_of_memory(self, worker: str, run: Attempt) -> None:
        """`TrainingRun._fail('trainer_error', ...)`: the trainer died of out-of-memory; retried after
        backoff up to `retries.trainer` times, then failed; both breakers hear of it."""
        assert self.settings is not None
        now, node = self.clock(), run.lease.node
        record = self.store.get(run.job_id)
        decision = decide("trainer_error", int(record.get("failures_trainer", 0)), self.settings.retries,
                          self.rng)
        fields = {"reason": "trainer_error", "error": "trainer exited with status 1", "stderr_tail": OOM_ERROR,
                  "attempt": run.attempt, "node": node, "failure_class": decision.failure_class,
                  "will_retry": str(decision.will_retry).lower(), "retry_in_s": round(decision.delay_s, 3)}
        config_fields = {} if decision.will_retry else {
            "last_failed_at": now, "last_error": fields["error"], "last_failed_job": run.job_id}
        outcome = Outcome(TRAINING_FAILED, {**fields, "board_type": record["board_type"],
                                            "num_players": record["num_players"]},
                          {**fields, "duration_s": round(now - run.started, 3),
                           f"failures_{decision.failure_class}": decision.failures_of_class},
                          node=node, attempt=run.attempt, fence=run.lease.fence, config_fields=config_fields)
        state = RETRYING if decision.will_retry else FAILED
        self.store.finish(run.job_id, run.config_key, state, outcome,
                          retry_at=now + decision.delay_s if decision.will_retry else None)
        self.counters.oom += 1
        self.counters.oom_gpu_hours += (now - run.started) / HOUR
        self.counters.failed_jobs += state == FAILED
        self._record_breakers(run, success=False)
        self._release(worker, run)
        self.on_end(run, "oom", record)

    def _record_breakers(self, run: Attempt, success: bool) -> None:
        if self.breakers is not None:
            self.breakers.record("config", run.config_key, success)
            self.breakers.record("node", run.lease.node, success)

    def vanish(self, node: str) -> list[Attempt]:
        """`node`'s host is gone (an ephemeral instance reclaimed): its workers stop at once, each
        attempt's work since its newest whole epoch is lost, and its leases expire `ttl` later
        (the key and the slot vanish; the reaper's expiry entry gets the simulated expiry)."""
        now = self.clock()
        self.flush_progress()
        stopped = []
        for worker, gpu in self.gpus.items():
            if gpu.node != node:
                continue
            self.gone.add(worker)
            run = self.running.get(worker)
            if run is None:
                continue
            epoch = run.epoch_at(now)
            since = run.epoch_end(epoch) if epoch > run.resumed_epoch else run.started
            self.checkpoints[run.job_id] = epoch
            self.counters.vanished += 1
            self.counters.vanish_gpu_hours += ((now - since) / HOUR + RESUME_OVERHEAD_H) * run.lease.gpus
            keys, lease = self.store.keys, run.lease
            holder = self.conn.get(keys.lease(lease.config_key))
            if holder is not None and holder.decode().startswith(lease.token + "|"):
                self.conn.delete(keys.lease(lease.config_key))
            members = [lease.token, *(f"{lease.token}+{i}" for i in range(2, lease.gpus + 1))]  # lease_acquire.lua's
            self.conn.zrem(keys.node_slots(node), *members)
            self.conn.zadd(keys.lease_expiry, {run.job_id: int((now + lease.ttl_ms / 1000.0) * 1000)})
            self.running[worker] = None
            stopped.append(run)
            self.on_end(run, "vanished", self.store.get(run.job_id))
        return stopped

    def back(self, node: str) -> None:
        """A fresh instance of `node`'s host: its workers start and register their GPUs again."""
        for worker, gpu in self.gpus.items():
            if gpu.node == node:
                self.gone.discard(worker)
                self.idle_since[worker] = self.clock()
        self.register(node)

    def _release(self, worker: str, run: Attempt) -> None:
        if not self.leases.release(run.lease):
            self.counters.release_lost += 1
        self.running[worker] = None
        self.idle_since[worker] = self.clock()
        for other, gpu in self.gpus.items():  # the gang's other GPUs: their workers block again now
            if gpu.node == run.lease.node and gpu.index in run.lease.devices and other != worker:
                self.idle_since[other] = self.clock()
