"""The RQ job that `rq worker training` runs on a GPU node: one attempt of one training job.

`run_training(job_id, prefix)`:
1. hands the job back (deferred, not lost) when this node's circuit breaker is open, the
   config is blocked by quality, or the worker's GPU does not meet the requirement of the queue
   the job came from (a backstop: `workers/worker.py` listens only to queues its GPU meets),
   then takes the config's training lease and one of this node's GPU slots (one script, with a
   fencing token) — a multi-GPU training (`gpus: k`) takes k slots of this node at once, this
   worker's own device first, or none; if they are busy the job is deferred too;
2. moves the job to leased (TRAINING_STARTED, with the epoch it resumes from: the newest
   checkpoint of an earlier attempt) and runs the trainer as a subprocess (CUDA_VISIBLE_DEVICES:
   exactly the devices its lease holds; `{gpus}`, `{devices}`, `{master_port}` for a torchrun
   template: `coordinator/trainer/command.py`), renewing the leases
   every TTL/3 and stopping the trainer when a lease is lost or the job is cancelled (the
   renewal's reply says so: no polling);
3. turns the trainer's per-epoch lines into TRAINING_PROGRESS;
4. ends with TRAINING_COMPLETE (published only under the newest fencing token), or
   TRAINING_FAILED with its reason, failure class and whether it will retry (after backoff), or
   TRAINING_CANCELLED, or TRAINING_PREEMPTED (asked to yield: `preemption.signal` to the trainer,
   which checkpoints and exits; `JobStore.preempted`; on an ephemeral host a termination notice
   does the same, kind `node_notice`, and the job is queued again at once: `workers/node_notice.py`);
   records the result on
   the config's and node's circuit breakers (not for a preemption); frees the leases.
Everything it needs is in the job record the orchestrator wrote: a worker needs only Redis.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import redis
from rq import get_current_job

from coordinator.bus.events import TRAINING_CANCELLED, TRAINING_COMPLETE, TRAINING_FAILED
from coordinator.bus.schemas import FIELD_LIMITS
from coordinator.core.errors import EventError, JobError, LeaseUnavailable, TrainingFailed
from coordinator.core.gpu_requirements import (
    BatchSize,
    Gpu,
    batch_size_for,
    from_spec,
    gpu_class,
    gpus_needed,
    meets,
    need_text,
    node_meets,
    restricts,
)
from coordinator.core.job_states import CANCELLED, COMPLETE, FAILED, RETRYING
from coordinator.core.keys import STAT_MARK_RUNNING_LOST, STAT_RELEASE_LOST, TRAINING_QUEUE, Keys
from coordinator.core.logs import for_job
from coordinator.core.retry import BAD_INPUT_EXIT, decide
from coordinator.core.settings import (
    GpuClass,
    GpuRequirement,
    RetrySettings,
    Settings,
    submitted_batch_size,
    worker_settings,
)
from coordinator.core.text import decode_hash
from coordinator.scheduling.placement import expected_run_s, job_workload, speed_note
from coordinator.scheduling.preempter import lost_gpu_hours
from coordinator.scheduling.scheduler import quality_block_until
from coordinator.scheduling.speeds import table_from, workload_of
from coordinator.stores.breakers import OPEN, CircuitBreakers, breaker_state
from coordinator.stores.configs import ConfigStore
from coordinator.stores.gpus import GpuStore
from coordinator.stores.job_records import CANCELLED_STOP, NOTICE_STOP, PREEMPTED_STOP, Outcome
from coordinator.stores.jobs import JobStore
from coordinator.stores.leases import Lease, LeaseKeeper, LeaseManager
from coordinator.stores.reservations import ReservationStore
from coordinator.stores.speeds import SpeedStore
from coordinator.trainer.checkpoints import newest_checkpoint
from coordinator.trainer.command import (
    attempt_paths,
    build_argv,
    gpu_values,
    record_values,
    visible_devices_env,
)
from coordinator.trainer.output import OutputParser, result_figures
from coordinator.trainer.warm_start import command_fingerprint, init_weights_failure
from workers import gpu_inventory, node_notice
from workers.trainer_process import TrainerResult, run_trainer

log = logging.getLogger(__name__)
NODE_ENV = "RINGRIFT_NODE"
GPUS_ENV = "RINGRIFT_GPUS"
# How long the worker keeps trying to record an attempt's end while Redis is unreachable.
FINISH_RETRY_S = 60.0
# TRAINING_FAILED's stderr_tail: at most the schema's limit for the field, in bytes of UTF-8.
STDERR_TAIL_BYTES = FIELD_LIMITS["stderr_tail"]
# An attempt that could not load its init weights: its reason, failure class and how much of the
# trainer's own words the record keeps (`warm_start_dropped`).
INIT_WEIGHTS_FAILED, WARM_START_CLASS, DROPPED_WHY_CHARS = "init_weights_failed", "warm_start", 300


def node_name() -> str:
    return gpu_inventory.node_name()


def run_training(job_id: str, prefix: str) -> dict[str, Any]:
    """RQ calls it with the args its job was enqueued with, (job_id, `redis.prefix`): no default."""
    rq_job = get_current_job()
    conn = rq_job.connection if rq_job else redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://"))
    keys, node = Keys(prefix), node_name()
    with conn.pipeline(transaction=False) as pipe:  # one round trip: the record and the node's breaker
        pipe.hgetall(keys.job(job_id))
        pipe.hgetall(keys.breaker("node", node))
        record, node_breaker = (decode_hash(raw) for raw in pipe.execute())
    if not record:
        raise JobError(job_id, "no such job")
    settings = worker_settings(record)
    store = JobStore.from_settings(conn, keys, settings)
    config_key = record["config_key"]
    worker = (rq_job.worker_name if rq_job and rq_job.worker_name else None) or f"{node}:{os.getpid()}"
    breakers = CircuitBreakers.from_settings(conn, keys, settings, store.clock)  # one clock a job
    defer_s = settings.leases.defer_s
    held = _hold_reason(conn, keys, settings, breakers, config_key, node, node_breaker) or _misfit(
        conn, keys, rq_job, worker)
    if held:
        store.defer(job_id, defer_s * random.uniform(1.0, 2.0), held)
        return {"job_id": job_id, "deferred": held}
    reserved = reservation_refusal(conn, keys, settings, record, node, worker, store.clock())
    if reserved:
        store.defer(job_id, defer_s * random.uniform(1.0, 2.0), reserved, count_as="reserved")
        log.info("job %s deferred: %s", job_id, reserved)
        return {"job_id": job_id, "deferred": reserved}
    leases = LeaseManager.from_settings(conn, keys, settings, int(os.environ.get(GPUS_ENV) or 0) or None)
    requirement = _requirement(settings, config_key)
    devices, only_listed = device_pool(_registered(conn, keys, worker), requirement, settings.gpus.classes)
    try:
        lease = leases.acquire(config_key, node, worker, job_id, attempts=settings.leases.acquire_attempts,
                               max_delay_s=settings.leases.acquire_max_delay_s, gpus=gpus_needed(requirement),
                               devices=devices, only_listed=only_listed)
    except LeaseUnavailable as exc:
        store.defer(job_id, defer_s * random.uniform(1.0, 2.0), str(exc), count_as="lease_busy")
        log.info("job %s deferred: %s", job_id, exc)
        return {"job_id": job_id, "deferred": exc.reason, "detail": exc.detail}
    if lease.gpus > 1:
        _drop_reservation(conn, keys, job_id)
    run: TrainingRun | None = None
    try:
        resume, resumed_epoch = job_checkpoint(record)
        attempt = store.start(job_id, config_key, node, worker, fence=lease.fence, resumed_epoch=resumed_epoch,
                              init_weights=warm_start_model(record))
        if attempt is None:
            state = store.get(job_id).get("state")
            log.warning("job %s is %s, not queued: not running it", job_id, state)
            return {"job_id": job_id, "skipped": state}
        _record_gpu(store, settings, record, worker, resumes=resume is not None, lease=lease)
        run = TrainingRun(store, store.get(job_id), node, attempt, leases, lease, breakers, settings.retries,
                          resume, rq_job, preempt_signal=signal.Signals[settings.preemption.signal],
                          master_port_base=settings.gpus.master_port_base)
        run.notice = worker_notice(conn, keys, worker, settings)
        return run.execute()
    finally:
        try:
            if (run is None or not run.released) and not leases.release(lease):
                count_lost(conn, keys, STAT_RELEASE_LOST)
                log.warning("lease of %s was no longer ours at release (expired or taken over)", job_id,
                            extra={"job_id": job_id, "config_key": config_key})
        except redis.RedisError:  # it expires by itself; the reaper treats it as abandoned
            log.warning("could not release the lease of %s; it will expire", job_id,
                        extra={"job_id": job_id, "config_key": config_key})


def reservation_refusal(conn: redis.Redis, keys: Keys, settings: Settings, record: Mapping[str, str], node: str,
                        worker: str, now: float) -> str | None:
    """Why a reservation of `node` for a waiting multi-GPU job keeps this job off it (None: it may
    start: `ReservationStore.admit`, with the job's expected end on this worker's GPU from the
    learned speeds and the GPUs it takes; `coordinator/scheduling/reservations.py` has the rules)."""
    try:
        if not conn.hexists(keys.reservations, node):
            return None
        gpus = settings.gpus
        table = table_from(SpeedStore(conn, keys).read(), gpus.classes, gpus.speed_priors)
        run_s = expected_run_s(table, job_workload(record), slot_gpu(_registered(conn, keys, worker)), gpus.classes)
        gpus_wanted = gpus_needed(_requirement(settings, record.get("config_key", "")))
        r = ReservationStore(conn, keys).admit(node, record.get("job_id", ""), None if run_s is None else now + run_s,
                                               gpus_wanted)
    except redis.RedisError as exc:  # the next tick's preemption of the node keeps the reservation's bound
        log.warning("reservation of %s not checked (%s)", node, exc)
        return None
    if r is None:
        return None
    ends = "unknown" if run_s is None else f"{run_s / 3600:.1f} h"
    start = time.strftime("%H:%M", time.gmtime(r.start_at))
    return f"node {node} reserved for {r.config_key} ({r.gpus} GPUs) from {start} UTC; this job ({ends}) ends later"


def _drop_reservation(conn: redis.Redis, keys: Keys, job_id: str) -> None:
    try:
        ReservationStore(conn, keys).drop(job_id)
    except redis.RedisError:  # the next tick replaces it
        pass


def speed_class(record: Mapping[str, str], gpus: int) -> str:
    """The GPU class an attempt's epochs are timed for (`speeds.class_key`), on each TRAINING_PROGRESS;
    a multi-GPU attempt's epochs time N GPUs at once: kept apart ("H100 x2"), never taken for one GPU's."""
    cls = record.get("gpu_class") or (record.get("gpu_model") or "").removeprefix("NVIDIA ").strip()
    return f"{cls} x{gpus}" if cls and gpus > 1 else cls


def worker_notice(conn: redis.Redis, keys: Keys, worker: str, settings: Settings) -> Notice | None:
    """What this attempt listens to for a termination notice: None unless the worker's host is
    ephemeral (`hosts.<node>.ephemeral`, RINGRIFT_EPHEMERAL)."""
    registered = _registered(conn, keys, worker)
    if registered is None or not registered.inventory.ephemeral:
        return None
    return Notice(worker, settings)


@dataclass(frozen=True)
class Notice:
    """An ephemeral worker's notice sources: its notice key (SIGTERM), read by the lease renewals,
    and the provider's file or URL (`settings.nodes`), polled by `node_notice.Watcher`. `settings`
    also requeue the job at once after such a yield."""

    worker: str
    settings: Settings


def slot_gpu(registered: gpu_inventory.Registered | None) -> Gpu:
    """The GPU a worker's jobs run on: its slot's (the smallest where the slot has several);
    unknown (no model, 0 GB) when nothing says."""
    gpus = registered.slot.gpus if registered else ()
    if not gpus:
        return Gpu("", 0.0)
    smallest = min(gpus, key=lambda g: g.memory_gb)
    return Gpu(smallest.model, smallest.memory_gb, smallest.index, registered.slot.node if registered else "")


def _requirement(settings: Settings, config_key: str) -> GpuRequirement:
    try:
        return settings.gpus.requirement_for(config_key)
    except EventError:  # not a config key (a test's or an old record's): no requirement
        return GpuRequirement()


def _registered(conn: redis.Redis, keys: Keys, worker: str) -> gpu_inventory.Registered | None:
    try:
        return gpu_inventory.for_job(conn, worker, keys.prefix)
    except redis.RedisError as exc:
        log.warning("GPU inventory not read (%s): any device of the node", exc)
        return gpu_inventory.current()


def device_pool(registered: gpu_inventory.Registered | None, requirement: GpuRequirement,
                classes: Mapping[str, GpuClass]) -> tuple[tuple[int, ...], bool]:
    """The node's devices this job's lease may take, best first: this worker's own, then the
    node's others that meet `requirement` (by index); and whether only those (a requirement that
    refuses some GPU: memory, class) or, after them, any device of the node (`try_acquire`)."""
    if registered is None:
        return (), False
    own = registered.slot.devices
    fitting = [d.index for d in registered.inventory.devices if meets(d, requirement, classes)]
    known = {d.index for d in registered.inventory.devices}
    pool = [d for d in own if d in fitting or d not in known] + [d for d in fitting if d not in own]
    strict = requirement.min_memory_gb is not None or requirement.allowed is not None
    return tuple(pool), strict


def queue_requirement(conn: redis.Redis, keys: Keys, queue: str) -> tuple[GpuRequirement, dict[str, GpuClass]] | None:
    """The GPU requirement of an RQ queue's jobs (`Keys.placement_queues`), None for `training` or
    an unregistered queue (no requirement)."""
    raw = conn.hget(keys.placement_queues, queue) if queue and queue != TRAINING_QUEUE else None
    return from_spec(json.loads(raw)) if raw else None


def _misfit(conn: redis.Redis, keys: Keys, rq_job: Any, worker: str) -> str:
    """Why this worker's GPU cannot take the job ("" when it can): the requirement of the queue it
    came from against the worker's GPU. The worker class listens only to queues its GPU meets, so
    this is a backstop (a worker started by hand on a requirement's queue): the job is handed back
    onto that queue, no failure counted."""
    needed = queue_requirement(conn, keys, rq_job.origin) if rq_job is not None else None
    if needed is None:
        return ""
    registered = gpu_inventory.for_job(conn, worker, keys.prefix)
    verdict = node_meets(slot_gpu(registered), registered.inventory.devices if registered else (), *needed)
    return "" if verdict else f"does not fit this GPU: {verdict.why}"


def placement_text(config_key: str, node: str, gpu: Gpu, requirement: GpuRequirement, speed: str = "") -> str:
    """Why the job went where it went, for its record: "hexagonal_2p -> node-1 (H100, 80 GB): needs
    >= 40 GB; ~3.1x the 24GB's epochs/h (learned on hexagonal)" (the GPU took it from its
    requirement's queue, where no GPU that does not meet it listens; `speed`: `placement.speed_note`)."""
    why = f"needs {need_text(requirement)}" if restricts(requirement) else "no GPU requirement: any GPU"
    where = f"{config_key} -> {node} ({gpu.describe() if gpu.model or gpu.memory_gb else 'unknown GPU'}): {why}"
    return f"{where}; {speed}" if speed else where


def speed_text(conn: redis.Redis, keys: Keys, settings: Settings, record: Mapping[str, str], gpu: Gpu) -> str:
    """How fast this GPU trains the job's workload against the cluster's slowest other class
    (`placement.speed_note`); "" when Redis cannot say."""
    g = settings.gpus
    try:
        table = table_from(SpeedStore(conn, keys).read(), g.classes, g.speed_priors)
        cluster = GpuStore(conn, keys).all_gpus()
    except redis.RedisError as exc:
        log.warning("speeds not read: %s", exc)
        return ""
    return speed_note(table, workload_of(record.get("board_type", ""), json.loads(record.get("command") or "[]")),
                      gpu, cluster, g.classes)


def attempt_gpu(registered: gpu_inventory.Registered | None, settings: Settings, record: Mapping[str, str],
                resumes: bool, speed: str = "") -> tuple[dict[str, str], BatchSize]:
    """The GPU this attempt got (the worker's slot) as the job record keeps it, and its batch size
    (`coordinator.core.gpu_requirements.batch_size_for`: submitted, kept on resume, the GPU class's)."""
    slot = registered.slot if registered else None
    gpu = slot.gpus[0] if slot and slot.gpus and (slot.gpus[0].model or slot.gpus[0].memory_gb) else None
    classes = settings.gpus.classes
    started = record.get("batch_size_started")
    size = batch_size_for(gpu, classes, int(record["batch_size"]), submitted_batch_size(record),
                          int(started) if resumes and started else None)
    fields = {"gpu_slot": slot.name if slot else "", "gpu_model": gpu.model if gpu else "",
              "gpu_memory_gb": f"{gpu.memory_gb:g}" if gpu else "", "gpu_class": (gpu_class(gpu, classes) or "")
              if gpu else "", "batch_size_why": size.why}
    config_key = record.get("config_key", "")
    try:
        requirement = settings.gpus.requirement_for(config_key)
    except EventError:
        requirement = GpuRequirement()
    fields["placement"] = placement_text(config_key, slot.node if slot else "", slot_gpu(registered), requirement,
                                         speed)
    return fields, size


def _record_gpu(store: JobStore, settings: Settings, record: Mapping[str, str], worker: str, resumes: bool,
                lease: Lease | None = None, made: gpu_inventory.Registered | None = None) -> None:
    """Put the attempt's GPU and batch size on the job record (the trainer's {batch_size} is it),
    and the devices its lease holds (`gpu_devices`: its CUDA_VISIBLE_DEVICES) with its master port.
    `made`: the worker's registration (default: this process's, `gpu_inventory.current()`)."""
    try:
        registered = gpu_inventory.for_job(store.conn, worker, store.keys.prefix, made)
    except redis.RedisError as exc:
        log.warning("GPU inventory not recorded: %s", exc)
        registered = made if made is not None else gpu_inventory.current()
    speed = speed_text(store.conn, store.keys, settings, record, slot_gpu(registered)) if registered else ""
    fields, size = attempt_gpu(registered, settings, record, resumes, speed)
    ephemeral = bool(registered and registered.inventory.ephemeral)
    fields["checkpoint_interval"] = settings.nodes.checkpoint_interval(ephemeral)  # per node class
    if lease is not None and lease.devices:
        values = gpu_values(lease.devices, settings.gpus.master_port_base)
        fields.update(gpu_devices=values["devices"], gpus_held=values["gpus"], master_port=values["master_port"])
    store.record_attempt_gpu(record["job_id"], fields, size.value)


def count_lost(conn: redis.Redis, keys: Keys, stat: str) -> None:
    """Add one to a `<prefix>:stats` counter of lost steps (keys.STAT_*)."""
    conn.hincrby(keys.stats, stat, 1)


def _hold_reason(conn: redis.Redis, keys: Keys, settings: Settings, breakers: CircuitBreakers, config_key: str,
                 node: str, node_breaker: dict[str, str]) -> str:
    """Why this job must wait (not run here now), or "" to go ahead. `node_breaker`: the node's
    breaker hash, as read with the job record."""
    if breaker_state(node_breaker, breakers.settings, breakers.clock()) == OPEN:
        return f"circuit breaker of node {node} is open"
    blocked_at, until, exported_at = (float(v) if v else None for v in conn.hmget(
        keys.config(config_key), "quality_blocked_at", "quality_blocked_until", "exported_at"))
    blocked_until = quality_block_until(blocked_at, until, exported_at, settings.scheduler)
    if blocked_until is not None and blocked_until > breakers.clock():
        return f"{config_key} blocked by quality until {blocked_until:.0f}"
    return ""


def job_checkpoint(record: Mapping[str, str]) -> tuple[str | None, int]:
    """The newest checkpoint any attempt of the job left, as its command names them: (path, epoch)."""
    return newest_checkpoint(record["output_dir"], record.get("checkpoint_pattern") or None)


def warm_start_model(record: Mapping[str, str]) -> str | None:
    """The model a job starts from: the newest of its config's published models (as the job was
    created, written by the same trainer command) whose file still exists; None for none (first
    training, warm start off, all gone, or an earlier attempt could not load it: `warm_start_dropped`)."""
    if record.get("warm_start_dropped"):
        return None
    for path in json.loads(record.get("warm_start_from") or "[]"):
        if os.path.isfile(path):
            return path
    return None


class TrainingRun:
    """One attempt of one job on this worker, holding its leases."""

    def __init__(self, store: JobStore, record: dict[str, str], node: str, attempt: int, leases: LeaseManager,
                 lease: Lease, breakers: CircuitBreakers, retries: RetrySettings, resume: str | None,
                 rq_job: Any = None, preempt_signal: int = signal.SIGTERM, *, master_port_base: int) -> None:
        self.store = store
        self.record = record
        self.job_id = record["job_id"]
        self.config_key = record["config_key"]
        self.node = node
        self.attempt = attempt
        self.leases = leases
        self.lease = lease
        self.breakers = breakers
        self.retries = retries
        self.resume = resume
        self.rq_job = rq_job
        self.log = for_job(log, job_id=self.job_id, config_key=self.config_key, attempt=attempt, node=node)
        self.started = time.monotonic()
        self.started_at = time.time()  # this host's: compared only with its checkpoints' mtimes
        self.stop = threading.Event()
        self.preempt_signal = preempt_signal
        self.master_port_base = master_port_base
        self.stop_why: str | None = None  # why the trainer is being stopped (the keeper's reason)
        self.notice: Notice | None = None  # set on an ephemeral host (`worker_notice`)
        self.released = False  # the lease was given back before the attempt's end (a notice's requeue)
        # Each attempt writes its own directory: a stale attempt never overwrites a published model.
        self.paths = attempt_paths(record["output_dir"], attempt)
        self.output_dir = self.paths.output_dir
        self.parent_model = record.get("parent_model") or None  # set by store.start (warm start)
        # Beside config_key on every event of the job (issue 15 point 5).
        self.config_fields = {"board_type": record["board_type"], "num_players": record["num_players"]}
        self.speed_class = speed_class(record, lease.gpus)
        self._timed: tuple[float, float] | None = None  # (epoch, monotonic time) of the last progress line

    def execute(self) -> dict[str, Any]:
        try:
            with LeaseKeeper(self.leases, self.lease, on_lost=self._stop_trainer, job_id=self.job_id,
                             worker=self.notice.worker if self.notice else None) as keeper, node_notice.watching(
                    self.notice.settings.nodes if self.notice else None, lambda found: self._provider_notice(keeper)):
                return self._train(keeper)
        except TrainingFailed:
            raise
        except redis.RedisError as exc:
            self._fail("redis_error", f"Redis error: {exc}", "")
        except Exception as exc:  # our own failure: the job must still end, with the reason
            self._fail("worker_error", f"worker error: {exc!r}", "")

    def _stop_trainer(self, reason: str) -> None:
        self.stop_why = reason
        self.stop.set()

    def _provider_notice(self, keeper: LeaseKeeper) -> None:
        """The provider announced this host's termination: stop for it now, and tell the worker
        (its warm shutdown: it takes nothing more here)."""
        keeper.ask_stop(NOTICE_STOP)
        node_notice.signal_worker()

    def _stop_signal(self) -> int:
        """Preemption and a termination notice ask with `preemption.signal` (checkpoint and exit); a
        lost lease kills at once (another attempt may start as soon as it expires: no time for a
        checkpoint); anything else asks with SIGTERM."""
        if self.stop_why in (PREEMPTED_STOP, NOTICE_STOP):
            return self.preempt_signal
        if (self.stop_why or "").startswith("lease_lost"):
            return signal.SIGKILL
        return signal.SIGTERM

    def _train(self, keeper: LeaseKeeper) -> dict[str, Any]:
        npz_path = Path(self.record["npz_path"])
        if not npz_path.is_file():
            self._fail("missing_input", f"npz_path not found: {npz_path}", "")
        if self.record.get("check_npz", "1") == "1":
            from coordinator.trainer.npz_data import BadTrainingData, check_npz  # numpy: loaded after TRAINING_STARTED

            try:
                check_npz(npz_path, self.record["board_type"])
            except BadTrainingData as exc:  # before any GPU time: poison, never retried
                self._fail("bad_input", str(exc), "")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        values = {**record_values(self.record, self.paths, self.attempt, self.resume, self.parent_model),
                  **gpu_values(self.lease.devices, self.master_port_base)}
        result = run_trainer(
            build_argv(json.loads(self.record["command"]), values),
            timeout_s=float(self.record["timeout_s"]),
            kill_grace_s=float(self.record["kill_grace_s"]),
            on_progress=self._progress,
            stop=self.stop,
            on_start=self._mark_running,
            parser=OutputParser(json.loads(self.record.get("progress_patterns") or "[]"),
                                self.record.get("summary_pattern") or None),
            model_path=self.paths.model_path,
            cwd=self.record.get("working_dir") or None,
            stop_signal=self._stop_signal,
            extra_env=visible_devices_env(self.lease.devices),
        )
        if keeper.lost_reason == CANCELLED_STOP and result.stopped:
            return self._cancelled()
        if keeper.lost_reason == PREEMPTED_STOP and result.stopped:  # whatever its exit status
            return self._preempted(result)
        if keeper.lost_reason == NOTICE_STOP and result.stopped:
            return self._preempted(result, kind=NOTICE_STOP)
        if keeper.lost_reason and result.stopped:
            self._fail("lease_lost", keeper.lost_reason, result.stderr_tail)
        if result.timed_out:
            self._fail("timeout", f"trainer timed out after {self.record['timeout_s']} s", result.stderr_tail)
        why = init_weights_failure(self.parent_model, result.returncode, bool(result.history), result.stderr_tail,
                                   resumed=self.resume is not None)
        if why:
            self._drop_warm_start(why, result.stderr_tail)
        if result.returncode == BAD_INPUT_EXIT:
            self._fail("bad_input", "trainer rejected its input (exit status 2)", result.stderr_tail)
        if result.returncode != 0:
            self._fail("trainer_error", f"trainer exited with status {result.returncode}", result.stderr_tail)
        if result.model_missing:
            self._fail("no_model", f"trainer exited 0 without writing {self.paths.model_path}", result.stderr_tail)
        return self._complete(result)

    def _mark_running(self) -> None:
        """leased -> running once the trainer is up; a job moved on meanwhile (reaped, cancelled)
        is logged and counted (the lease keeper stops a trainer whose lease is gone)."""
        if not self.store.mark_running(self.job_id, self.config_key):
            count_lost(self.store.conn, self.store.keys, STAT_MARK_RUNNING_LOST)
            self.log.warning("job %s was no longer leased when its trainer started", self.job_id)

    def _progress(self, figures: dict[str, Any]) -> None:
        """One progress line's figures (every number it carries) on the record and the stream, with
        the epoch's time (`epoch_time_s`, learned speeds): the trainer's, else this worker's clock
        between two lines whose epoch advanced (the first line's includes the trainer's start-up:
        none)."""
        shown = {k: v for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._time_epoch(shown)
        rq_meta = None
        if self.rq_job is not None:  # what `rq info` and rq-dashboard show, in the same round trip
            self.rq_job.meta.update({"config_key": self.config_key, "attempt": self.attempt, **shown})
            rq_meta = (self.rq_job.key, self.rq_job.serializer.dumps(self.rq_job.meta))
        try:
            speed = {"speed_class": self.speed_class} if self.speed_class else {}
            self.store.progress(self.job_id, self.config_key, {**self.config_fields, **speed, **shown}, rq_meta)
        except redis.RedisError as exc:  # progress is best-effort; the lease keeper judges Redis loss
            self.log.warning("progress not recorded: %s", exc)

    def _time_epoch(self, shown: dict[str, Any]) -> None:
        epoch, now = shown.get("epoch"), time.monotonic()
        if epoch is None:
            return
        if "epoch_time_s" not in shown and self._timed is not None and epoch > self._timed[0]:
            shown["epoch_time_s"] = round((now - self._timed[1]) / (epoch - self._timed[0]), 3)
        if self._timed is None or epoch > self._timed[0]:
            self._timed = (float(epoch), now)

    def _complete(self, trainer: TrainerResult) -> dict[str, Any]:
        figures = result_figures(self.output_dir, trainer.summary, trainer.history, self.paths.model_path)
        history = figures["history"] or [{}]
        model = str(figures["model_path"])
        result = {
            "model_path": model,
            "epochs_completed": figures.get("epochs_completed"),
            "first_loss": figures.get("first_loss", history[0].get("train_loss")),
            "final_loss": figures.get("final_loss"),
            # The published model is the best-validation one where the trainer keeps it: say which.
            "best_val_loss": figures.get("best_val_loss"), "best_epoch": figures.get("best_epoch"),
            "early_stopped": _flag(figures.get("early_stopped")),
            "duration_s": round(time.monotonic() - self.started, 3),
            # Lineage: what it started from and what it trained on.
            "parent_model": self.parent_model or "",
            "data_version": self.record.get("data_version", ""),
            "samples": figures.get("samples", self.record.get("samples", "")),
        }
        outcome = self._outcome(
            TRAINING_COMPLETE, {**result, "fence": self.lease.fence}, {**result, "history": json.dumps(history)},
            config_fields={"latest_model": model, "latest_job": self.job_id,
                           "latest_fence": self.lease.fence, "last_trained_at": self.store.clock(),
                           "trained_data_version": self.record.get("data_version")},
            payload={"history": history},
        )
        fingerprint = command_fingerprint(json.loads(self.record["command"]))
        if self._finish(COMPLETE, outcome, model=model, model_command=fingerprint) == "fenced":
            raise TrainingFailed(self.job_id, "fenced: a newer lease exists; result recorded as stale")
        self._breakers(success=True)
        return {"job_id": self.job_id, **result}

    def _preempted(self, result: TrainerResult, kind: str = "") -> dict[str, Any]:
        """The trainer yielded its GPU on request: the attempt ends preempted (no retry, no breaker
        count; the job resumes from its checkpoint when its config is picked again). `kind`
        NOTICE_STOP: its host is going away: not a preemption the cap counts, and the job is queued
        again at once (`_requeue_now`)."""
        checkpoint, _ = job_checkpoint(self.record)
        mtime = os.path.getmtime(checkpoint) if checkpoint else None
        epoch = int(result.history[-1].get("epoch", 0)) if result.history else int(
            self.record.get("resumed_epoch") or 0)
        outcome = self.store.preempted(
            self.job_id, self.config_key,
            self.lease.fence, self.node, self.attempt, epoch,
            lost_gpu_hours(mtime, self.started_at, time.time(), self.lease.gpus),
            **self.config_fields, kind=kind)
        self.log.info("job %s preempted at epoch %s (%s%s)", self.job_id, epoch, outcome, f", {kind}" if kind else "")
        if kind == NOTICE_STOP and outcome == "recorded":
            return {"job_id": self.job_id, "preempted": outcome, "kind": kind, "requeued": self._requeue_now()}
        return {"job_id": self.job_id, "preempted": outcome}

    def _requeue_now(self) -> bool:
        """After a termination notice: give the lease back (its fence already advanced), then queue
        the job again at once, to resume from its checkpoint on another worker. Should this worker
        die in between, the job waits in state preempted and its config's next pick resumes it."""
        try:
            self.leases.release(self.lease)
            self.released = True  # run_training's own release would find it gone
        except redis.RedisError as exc:  # it expires by itself; the resume is deferred until then
            self.log.warning("lease of %s not released after the notice (%s)", self.job_id, exc)
        settings = self.notice.settings if self.notice else worker_settings(self.record)
        # The record's own trainer limits (a worker's `training` section is the built-in one).
        settings = replace(settings, training=replace(settings.training, timeout_s=int(float(self.record["timeout_s"])),
                                                      kill_grace_s=int(float(self.record["kill_grace_s"]))))
        configs = ConfigStore(self.store.conn, self.store.keys, settings.scheduler, self.store.clock)
        try:
            return self.store.resume_preempted(settings, self.config_key, self.job_id, configs)
        except redis.RedisError as exc:
            self.log.warning("job %s not requeued after the notice (%s): its config's next pick resumes it",
                             self.job_id, exc)
            return False

    def _cancelled(self) -> dict[str, Any]:
        fields = {"reason": "cancelled", "attempt": self.attempt, "node": self.node}
        self._finish(CANCELLED, self._outcome(TRAINING_CANCELLED, fields, fields))
        # RQ logs "Job OK" for any task that returns: say in the worker's log, and in the result RQ
        # stores (rq info, rq-dashboard), that this one was cancelled, not trained.
        self.log.warning("job %s CANCELLED on request: trainer stopped, nothing published (RQ's 'Job OK' "
                         "below only means the task ended)", self.job_id)
        return {"job_id": self.job_id, "outcome": "cancelled", "cancelled": True}

    def _failure(self, reason: str, error: str, stderr_tail: str, failure_class: str, will_retry: bool,
                 delay_s: float, **job_fields: Any) -> Outcome:
        """The outcome of a failed attempt: TRAINING_FAILED and the record's fields (+ `job_fields`)."""
        fields = {"reason": reason, "error": error, "stderr_tail": utf8_tail(stderr_tail), "attempt": self.attempt,
                  "node": self.node, "failure_class": failure_class,
                  "will_retry": str(will_retry).lower(), "retry_in_s": round(delay_s, 3)}
        return self._outcome(
            TRAINING_FAILED, fields,
            {**fields, "duration_s": round(time.monotonic() - self.started, 3), **job_fields},
            config_fields={} if will_retry else {
                "last_failed_at": self.store.clock(), "last_error": error, "last_failed_job": self.job_id},
        )

    def _drop_warm_start(self, why: str, stderr_tail: str) -> NoReturn:
        """The trainer failed while loading its init weights (warm_start.py says how that is told):
        the job is retried at once from scratch (`warm_start_dropped` on the record keeps the next
        attempts from using them), and this is no failure of the config, the node or the trainer:
        neither the breakers nor the job's failure counts hear of it."""
        why = why[:DROPPED_WHY_CHARS]
        error = f"could not load init weights {self.parent_model}; retrying from scratch: {why}"
        outcome = self._failure(INIT_WEIGHTS_FAILED, error, stderr_tail, WARM_START_CLASS, True, 0.0,
                                warm_start_dropped=why, init_weights_failed=self.parent_model)
        self._finish(RETRYING, outcome, retry_at=self.store.clock())
        self.log.warning("job %s: %s", self.job_id, error)
        raise TrainingFailed(self.job_id, error)

    def _fail(self, reason: str, error: str, stderr_tail: str) -> NoReturn:
        previous = int(self.record.get(f"failures_{decide(reason, 0, self.retries).failure_class}", 0))
        decision = decide(reason, previous, self.retries)
        outcome = self._failure(reason, error, stderr_tail, decision.failure_class, decision.will_retry,
                                decision.delay_s, **{f"failures_{decision.failure_class}": decision.failures_of_class})
        if decision.will_retry:
            self._finish(RETRYING, outcome, retry_at=self.store.clock() + decision.delay_s)
        else:
            self._finish(FAILED, outcome)
        if reason not in ("lease_lost",):
            self._breakers(success=False)
        raise TrainingFailed(self.job_id, error)

    def _outcome(self, event_type: str, event_fields: dict[str, Any], job_fields: dict[str, Any],
                 **extra: Any) -> Outcome:
        return Outcome(event_type, {**event_fields, **self.config_fields, "node": self.node, "attempt": self.attempt},
                       job_fields,
                       node=self.node, attempt=self.attempt, fence=self.lease.fence, **extra)

    def _finish(self, state: str, outcome: Outcome, retry_at: float | None = None, model: str | None = None,
                model_command: str = "") -> str:
        """Record the end, retrying while Redis is briefly away (past that, the reaper retries the job)."""
        deadline, delay = time.monotonic() + FINISH_RETRY_S, 0.2
        while True:
            try:
                return self.store.finish(self.job_id, self.config_key, state, outcome, retry_at, model, model_command)
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _breakers(self, success: bool) -> None:
        try:
            self.breakers.record("config", self.config_key, success)
            self.breakers.record("node", self.node, success)
        except redis.RedisError as exc:
            self.log.warning("circuit breakers not updated: %s", exc)


def _flag(value: object) -> str | None:
    """A yes/no figure as the events write it ("true"/"false"); None when the trainer did not say."""
    return None if value is None else str(bool(value)).lower()


def utf8_tail(text: str, limit_bytes: int = STDERR_TAIL_BYTES) -> str:
    """The end of `text` that fits in `limit_bytes` bytes of UTF-8 (a character cut in half at the
    start is dropped), so a tail of multi-byte characters still passes the schema's byte limit."""
    data = text.encode("utf-8", "replace")
    return text if len(data) <= limit_bytes else data[-limit_bytes:].decode("utf-8", "ignore")
