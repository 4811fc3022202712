"""Simulated GPU workers for the scheduling simulator: `rq worker training` + `workers/tasks.py`
emulated at the Redis level, on the simulated clock, one worker per 1-GPU node.

Per attempt, the same store calls as `run_training` / `TrainingRun`, in the same order:
1. take the next RQ job from the `training` queue, FIFO (`Queue.dequeue_any`, as RQ's worker does);
   its args are (job_id, prefix);
2. the config lease and the node's GPU slot (`LeaseManager.try_acquire`: one try; busy -> the job
   is deferred with `JobStore.defer`, as the task does after its tries);
3. `JobStore.start` (job_start.lua) with the fencing token, the epoch of the job's newest checkpoint
   (kept here per job: what `newest_checkpoint` would find) and the newest published model of
   `warm_start_from` (the files "exist"); `mark_running`;
4. the trainer: the record's `epochs` over the config's true GPU-hours (a resumed attempt first
   pays RESUME_OVERHEAD_H); `JobStore.progress` with the newest epoch reached, written when the
   coordinator is about to read it (`flush_progress`, at the epoch's end time) rather than once per
   epoch: the preempter reads only the newest epoch and its time;
5. the lease renewal's reply carries the stop reason (`LeaseManager.renew`); 'preempted' -> the
   trainer stops at once (RingRift's trainer saves on SIGTERM, but the next attempt resumes from the
   newest whole epoch, so the partial epoch is lost: `lost_gpu_hours` since that epoch's end),
   `JobStore.preempted`; else the trainer completes: `JobStore.finish` (job_finish.lua) with the
   fields `TrainingRun._complete` writes (model path from `attempt_paths`, its command fingerprint);
6. the leases are released.
Not emulated: circuit breakers and quality holds (nothing fails here), the trainer's timeout (the
simulator sets `training.timeout_s` above every training), lease loss. The lease keeper renews in
the host's time; so does this (`renew_due`), so leases never lapse while the simulation runs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from rq import Queue

from bench.sim_world import RESUME_OVERHEAD_H
from coordinator.bus.events import TRAINING_COMPLETE
from coordinator.core.clock import ManualClock
from coordinator.core.errors import LeaseUnavailable
from coordinator.core.job_states import COMPLETE
from coordinator.core.keys import TRAINING_QUEUE
from coordinator.scheduling.preempter import lost_gpu_hours
from coordinator.stores.job_records import PREEMPTED_STOP, Outcome
from coordinator.stores.jobs import JobStore
from coordinator.stores.leases import Lease, LeaseManager
from coordinator.trainer.command import attempt_paths
from coordinator.trainer.warm_start import command_fingerprint

HOUR = 3600.0


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

    @property
    def ends_at(self) -> float:
        return self.started + self.overhead_s + (self.epochs - self.resumed_epoch) * self.epoch_s

    def epoch_at(self, now: float) -> int:
        done = math.floor((now - self.started - self.overhead_s) / self.epoch_s + 1e-9)
        return min(self.epochs, self.resumed_epoch + max(0, done))

    def epoch_end(self, epoch: int) -> float:
        return self.started + self.overhead_s + (epoch - self.resumed_epoch) * self.epoch_s


@dataclass
class Counters:
    attempts: int = 0
    completed: int = 0
    preempted: dict[str, int] = field(default_factory=lambda: {"wait": 0, "value": 0})
    lost_gpu_hours: float = 0.0  # partial epochs lost + resume overheads
    deferred: int = 0
    not_started: int = 0
    release_lost: int = 0
    renew_lost: int = 0
    overlaps: int = 0  # a config with two attempts at once (must stay 0)


class Workers:
    """One simulated worker per node; `on_*` callbacks tell the simulator what happened."""

    def __init__(self, conn: redis.Redis, store: JobStore, leases: LeaseManager, clock: ManualClock,
                 nodes: list[str], gpu_hours: Callable[[str], float], defer_s: float,
                 on_start: Callable[[Attempt], None], on_end: Callable[[Attempt, str, dict[str, str]], None]) -> None:
        self.conn = conn
        self.store = store
        self.leases = leases
        self.clock = clock
        self.queue = Queue(TRAINING_QUEUE, connection=conn)
        self.running: dict[str, Attempt | None] = {n: None for n in nodes}
        self.gpu_hours = gpu_hours
        self.defer_s = defer_s
        self.on_start = on_start
        self.on_end = on_end
        self.checkpoints: dict[str, int] = {}  # job id -> newest checkpoint's epoch
        self.counters = Counters()
        self.tokens = 0
        self._renewed = time.monotonic()

    # -- taking work --------------------------------------------------------------------------------
    def take_jobs(self) -> int:
        """Idle workers take RQ jobs in FIFO order; how many attempts started."""
        started = 0
        for node, current in self.running.items():
            if current is not None:
                continue
            while True:
                taken = Queue.dequeue_any([self.queue], None, connection=self.conn)
                if taken is None:
                    return started
                if self._run_task(node, taken[0].args[0]):
                    started += 1
                    break
        return started

    def _run_task(self, node: str, job_id: str) -> bool:
        """`run_training` up to the trainer's start; False when the attempt did not start."""
        record = self.store.get(job_id)
        config_key = record["config_key"]
        try:
            lease = self.leases.try_acquire(config_key, node, f"{node}:sim", job_id)
        except LeaseUnavailable as exc:
            self.store.defer(job_id, self.defer_s, str(exc), count_as="lease_busy")
            self.counters.deferred += 1
            return False
        resumed = self.checkpoints.get(job_id, 0)
        parents = json.loads(record.get("warm_start_from") or "[]")
        attempt = self.store.start(job_id, config_key, node, f"{node}:sim", fence=lease.fence, resumed_epoch=resumed,
                                   init_weights=parents[0] if parents else None)
        if attempt is None:
            self.counters.not_started += 1
            self.leases.release(lease)
            return False
        self.store.mark_running(job_id, config_key)
        if any(a is not None and a.config_key == config_key for a in self.running.values()):
            self.counters.overlaps += 1
        epochs = int(record["epochs"])
        self.tokens += 1
        run = Attempt(job_id, config_key, self.store.get(job_id), lease, attempt, self.clock(), resumed, epochs,
                      self.gpu_hours(config_key) * HOUR / epochs, RESUME_OVERHEAD_H * HOUR if resumed else 0.0,
                      self.tokens, resumed)
        self.running[node] = run
        self.counters.attempts += 1
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
                self.store.progress(run.job_id, run.config_key, {
                    "board_type": run.record["board_type"], "num_players": run.record["num_players"],
                    "epoch": epoch, "total_epochs": run.epochs})
                self.clock.at = now
                run.written_epoch = epoch
                self.checkpoints[run.job_id] = epoch

    def renew_due(self) -> None:
        """The lease keepers' renewals, every TTL/3 of the host's time."""
        if time.monotonic() - self._renewed >= self.leases.ttl_ms / 3000.0:
            self.check_stops()

    def check_stops(self) -> list[str]:
        """Renew every running lease; the attempts asked to yield do so now. Returns their nodes."""
        self._renewed = time.monotonic()
        yielded = []
        for node, run in self.running.items():
            if run is None:
                continue
            renewal = self.leases.renew(run.lease, run.job_id)
            if not renewal.held:
                self.counters.renew_lost += 1
            elif renewal.stop == PREEMPTED_STOP and self.clock() < run.ends_at:
                self._preempted(node, run)
                yielded.append(node)
        return yielded

    # -- ends ---------------------------------------------------------------------------------------
    def _preempted(self, node: str, run: Attempt) -> None:
        """`TrainingRun._preempted`: the attempt ends at the newest whole epoch."""
        now = self.clock()
        self.flush_progress()
        epoch = run.epoch_at(now)
        checkpoint_at = run.epoch_end(epoch) if epoch > run.resumed_epoch else None
        lost = lost_gpu_hours(checkpoint_at, run.started, now)
        record = self.store.get(run.job_id)
        self.store.preempted(run.job_id, run.config_key, run.lease.fence, node, run.attempt, epoch, lost,
                             run.record["board_type"], run.record["num_players"])
        self.checkpoints[run.job_id] = epoch
        kind = record.get("preempt_kind", "?")
        self.counters.preempted[kind] = self.counters.preempted.get(kind, 0) + 1
        self.counters.lost_gpu_hours += lost + RESUME_OVERHEAD_H  # the resume pays its overhead
        self._release(node, run)
        self.on_end(run, "preempted", {**record, "lost_gpu_hours": f"{lost:.6f}"})

    def complete(self, node: str, token: int) -> bool:
        """The trainer of `node`'s attempt `token` exited 0: `TrainingRun._complete`. False when that
        attempt ended earlier (it yielded)."""
        run = self.running.get(node)
        if run is None or run.token != token:
            return False
        self.flush_progress()
        record = self.store.get(run.job_id)  # the data it trains on now (a queued job follows newer exports)
        paths = attempt_paths(record["output_dir"], run.attempt)
        model = str(paths.model_path)
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
        self._release(node, run)
        self.on_end(run, "complete" if outcome_text == "recorded" else outcome_text, {**record, "model_path": model})
        return True

    def _release(self, node: str, run: Attempt) -> None:
        if not self.leases.release(run.lease):
            self.counters.release_lost += 1
        self.running[node] = None
