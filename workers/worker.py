"""The RQ worker class for GPU nodes, selected by the environment (RQ reads it as --worker-class):

    RQ_WORKER_CLASS=workers.worker.TrainingWorker rq worker training --url redis://...

`rq.Worker` with three differences:

- Importing this module imports the training task in the worker's main process, so every forked
  work horse inherits it. Without it RQ imports the task's module in each horse, which costs
  ~20 ms on every job start (measured by `bench.event_to_start`).
- It rides out a Redis outage or failover shorter than `FAILOVER_RETRY_S` (30 s) with a plain URL
  too: every command is retried on connection errors and timeouts, as `workers.rq_settings` does
  for a Sentinel URL (redis-py's default gives up after three quick tries), and a heartbeat that
  still fails while a job runs is logged instead of ending the worker (RQ's main loop quits on it;
  the work horse holds the job's lease and records the job's end by itself).
  `tests/faults/test_worker_outage.py` and `bench.chaos` check it.
- Its hash also names its node (`WORKER_NODE_FIELD`), so `status` shows an idle worker under the
  node it runs on, and its GPU slot and GPU.
- When it starts it finds its GPUs (`workers.gpu_inventory`: NVML, else its environment, else its
  node's `hosts` entry) and writes its node's inventory and its slot to Redis; a failure there is
  logged and the worker starts anyway (each job registers again).
- On an ephemeral host (`hosts.<node>.ephemeral`, RINGRIFT_EPHEMERAL) SIGTERM is also a termination
  notice: beside RQ's warm shutdown it writes the worker's notice key, which the running training's
  lease renewal reads; the training checkpoints and is requeued elsewhere (`workers/node_notice.py`).
  Elsewhere SIGTERM is only RQ's warm shutdown.
- It takes only jobs its GPU fits (issue 26's placement). A job whose config needs something of a
  GPU (`gpus.boards`, `gpus.per_config`: memory, allowed classes) is queued on that requirement's
  own RQ queue (`training-ge40gb`, ...; `coordinator/stores/jobs.py`), registered in
  `<prefix>:placement:queues` with the requirement. Before each dequeue, and at least every
  `PLACEMENT_REFRESH_S` while idle, a worker listening to `training` adds the registered queues its
  GPU meets (`gpu_requirements.meets`), most demanding first, before `training`: RQ takes from
  the first non-empty queue, so a big GPU takes the jobs only it (and its kind) can run before
  the ones any GPU can, and a small GPU never sees a job it cannot hold. A worker whose GPU is
  unknown (no NVML, environment or `hosts` entry) meets no memory or class requirement: it runs
  only jobs without one. `rq info` lists each queue with its jobs and each worker with its queues.

- Among the GPUs that fit, the job goes to the one expected to finish it first (issue 26's learned
  speeds; `coordinator/scheduling/placement.py` says what this does and does not do): an idle
  worker marks its GPU idle (`GpuStore.mark_idle`, refreshed every loop, dropped when it takes a
  job); a worker that dequeues a job checks `placement.better_elsewhere` against the idle GPUs (a
  busy one is never waited for), and when at least one more better GPU than jobs waiting behind it
  exists, it puts the job back at the front of its queue (where a faster idle worker, blocked on
  that queue, takes it at once; popped again within LEAVE_S, it is kept: the better GPU was not
  there). `keep_or_hand_back` also handles better GPUs that are all busy (TO_BUSY: the caller
  leaves the queue for LEAVE_S), which `better_elsewhere` no longer offers.

  Why queues and not "take any job, hand back what does not fit": a handed-back job goes through
  the delayed set and a new RQ job; while it is out, a free big GPU takes a small job instead, so
  a big job could be bounced by small workers indefinitely, and idle small workers would take and
  return it in a loop. With a queue per requirement nothing is taken that cannot run, nothing
  spins, and a big GPU serves its big jobs first. `workers/tasks.py` still checks the fit as a
  backstop (a job queued before its requirement was set) and hands such a job back onto its
  requirement's queue, without a failure.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis
from rq import Worker
from rq.intermediate_queue import IntermediateQueue

import workers.tasks  # the preload is the point of this module
from coordinator.core.clock import RedisClock
from coordinator.core.connection import failover_retry
from coordinator.core.errors import EventError
from coordinator.core.gpu_requirements import Gpu, from_spec, node_meets
from coordinator.core.keys import TRAINING_QUEUE, Keys
from coordinator.core.settings import GpuRequirement, RedisSettings, worker_settings
from coordinator.ops.status import WORKER_NODE_FIELD
from coordinator.scheduling.placement import SlotGpu, better_elsewhere, better_node_class, job_workload
from coordinator.scheduling.speeds import table_from
from coordinator.stores.gpus import GpuStore
from coordinator.stores.job_records import SLOT_STATES, active_records, eta_s
from coordinator.stores.leases import held_devices
from coordinator.stores.speeds import SpeedStore
from workers import gpu_inventory, node_notice
from workers.tasks import slot_gpu

# How often an idle worker looks for new requirement queues (a new config's requirement).
PLACEMENT_REFRESH_S = 5
# An idle mark older than this is a worker that died idle (it refreshes every PLACEMENT_REFRESH_S).
IDLE_MAX_AGE_S = 3 * PLACEMENT_REFRESH_S
# How long a worker leaves a queue whose job it put back for a better GPU.
LEAVE_S = 2.0
RECORD_FIELDS = ("job_id", "config_key", "board_type", "command", "samples", "epochs", "epoch", "settings",
                 "batch_size")


def better_gpus(conn: redis.Redis, prefix: str, job_id: str, me: SlotGpu, worker: str, now: float) -> list[SlotGpu]:
    """The GPUs (idle now, or running a training about to end) that job `job_id` should rather go
    to than `me` (`placement.better_elsewhere`, with the job's settings and the learned speeds)."""
    keys = Keys(prefix)
    record = dict(zip(RECORD_FIELDS, (v.decode() if v else "" for v in conn.hmget(keys.job(job_id), *RECORD_FIELDS))))
    if not record["config_key"]:
        return []
    settings = worker_settings(record)
    gpus = settings.gpus
    try:
        requirement = gpus.requirement_for(record["config_key"])
    except EventError:
        requirement = GpuRequirement()
    store = GpuStore(conn, keys)
    ephemeral = _ephemeral_nodes(store)
    reserved = set(conn.hkeys(keys.reservations))  # idle there for a multi-GPU job: they would refuse it
    others = [SlotGpu(g, cost, ephemeral=ephemeral(g.node)) for name, g, cost in store.idle(now, IDLE_MAX_AGE_S)
              if name != worker and g.node.encode() not in reserved]
    for _, r in active_records(conn, keys):
        eta = eta_s(r, now) if r.get("state") in SLOT_STATES and r.get("gpu_model") else None
        if eta is not None:
            inventory = store.node(r.get("node", ""))
            others.append(SlotGpu(Gpu(r["gpu_model"], float(r.get("gpu_memory_gb") or 0), 0, r.get("node", "")),
                                  inventory.cost_per_hour if inventory else None, max(eta, 1.0)))
    job = job_workload(record)
    table = table_from(SpeedStore(conn, keys).read(), gpus.classes, gpus.speed_priors)
    faster = better_elsewhere(me, others, requirement, gpus.classes, table, job, gpus.faster_margin)
    if faster:
        return faster
    lifetime_s = store.lifetime_hours(settings.nodes.ephemeral_lifetime_hours) * 3600
    return better_node_class(replace(me, ephemeral=ephemeral(me.gpu.node)), others, requirement, gpus.classes,
                             table, job, gpus.faster_margin, lifetime_s, settings.nodes.long_training_share)


def _ephemeral_nodes(store: GpuStore) -> Callable[[str], bool]:
    """Whether a node is ephemeral, by its stored inventory (read once per node)."""
    seen: dict[str, bool] = {}

    def ephemeral(node: str) -> bool:
        if node not in seen:
            inventory = store.node(node)
            seen[node] = bool(inventory and inventory.ephemeral)
        return seen[node]

    return ephemeral


KEEP, TO_IDLE, TO_BUSY = "keep", "to_idle", "to_busy"


def keep_or_hand_back(conn: redis.Redis, queue_key: str, rq_id: str, better: Sequence[SlotGpu], waiting: int,
                      left_jobs: dict[str, float], now: float) -> str:
    """A worker's decision on the RQ job `rq_id` it dequeued from `queue_key`, given the GPUs it
    should rather go to (`better_gpus`) and the jobs `waiting` behind it in that queue: KEEP (not
    more better GPUs than jobs waiting, or the job came back within LEAVE_S of being put back: the
    better GPU did not take it), else the job is put back at the front of its queue (and out of RQ's
    intermediate queue): TO_IDLE when a better GPU is free now (one blocked on the queue takes it;
    `left_jobs[rq_id]` is set to `now + LEAVE_S`), TO_BUSY when they are all about to free
    (Gavel-style: the caller leaves the queue for LEAVE_S). `left_jobs`: RQ job -> until when it was
    left to a better idle GPU, on the caller's clock (`now`); expired entries are dropped."""
    if len(better) <= waiting or left_jobs.get(rq_id, float("-inf")) > now:
        return KEEP
    with conn.pipeline(transaction=True) as pipe:
        pipe.lrem(IntermediateQueue(queue_key, conn).key, 1, rq_id)
        pipe.lpush(queue_key, rq_id)
        pipe.execute()
    for expired in [j for j, until in left_jobs.items() if until <= now]:
        del left_jobs[expired]
    if any(b.free_in_s <= 0 for b in better):
        left_jobs[rq_id] = now + LEAVE_S
        return TO_IDLE
    return TO_BUSY


def fitting_queues(registered: Mapping[bytes | str, bytes | str], gpu: Gpu,
                   node_devices: Sequence[Gpu] = ()) -> list[str]:
    """The registered requirement queues (`Keys.placement_queues`: name -> requirement JSON) whose
    requirement `gpu` meets (a multi-GPU one: and `node_devices`, its node's GPUs, have as many that
    meet it: `gpu_requirements.node_meets`), most demanding first (more memory, then a class
    restriction, then name)."""
    fitting = []
    for raw_name, raw_spec in registered.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        try:
            requirement, classes = from_spec(json.loads(raw_spec))
        except (ValueError, TypeError, KeyError):
            continue  # not ours to judge: no worker listens to a queue it cannot read
        if node_meets(gpu, node_devices, requirement, classes):
            fitting.append((-(requirement.min_memory_gb or 0.0), requirement.allowed is None, name))
    return [name for *_rank, name in sorted(fitting)]


def slot_held(conn: redis.Redis, registered: gpu_inventory.Registered | None) -> bool:
    """Whether leases hold every GPU of a worker's slot (a multi-GPU training took it with its own):
    the devices its CUDA_VISIBLE_DEVICES names; for a worker of the whole node, as many devices as the
    node has (its `hosts` count, else its inventory's). A worker that could not tell its node's GPU
    count counts one, and a one-GPU training on device 0 of a two-GPU node must not stop the others."""
    if registered is None or not registered.slot.devices:
        return False
    keys, node = Keys(registered.prefix), registered.slot.node
    held = held_devices(conn, keys, node)
    if registered.whole_node:
        configured = int(conn.hget(keys.node(node), "gpus") or 0)
        return len(held) >= max(configured, len(registered.inventory.devices), 1)
    return set(registered.slot.devices) <= held


class TrainingWorker(Worker):
    """`rq.Worker`; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        wanted = failover_retry()["retry"]
        current = self.connection.get_retry()
        if current is None or current.get_retries() < wanted.get_retries():  # type: ignore[attr-defined]
            self.connection.set_retry(wanted)  # the pool's connections too, and the forked horses'
        self._base_queues = list(self.queues)  # as named on the command line
        self._left: dict[str, float] = {}  # queue -> monotonic time until which it is left to better GPUs
        self._left_jobs: dict[str, float] = {}  # job put back for a better idle GPU -> until when it was
        node_notice.remember_worker(os.getpid())  # the pid its work horses signal on a provider notice

    def listen_for_placement(self) -> list[str]:
        """Listen to the requirement queues this worker's GPU meets, before `training` (see the
        module docstring); the queue names now. A Redis error keeps the queues it had."""
        if TRAINING_QUEUE not in {q.name for q in self._base_queues}:
            return self.queue_names()
        registered = gpu_inventory.current()
        prefix = registered.prefix if registered else os.environ.get(gpu_inventory.PREFIX_ENV) or RedisSettings.prefix
        try:
            extra = fitting_queues(self.connection.hgetall(Keys(prefix).placement_queues), slot_gpu(registered),
                                   registered.inventory.devices if registered and registered.inventory else ())
        except redis.RedisError as exc:
            self.log.warning("Worker %s: placement queues not read (%s)", self.name, exc)
            return self.queue_names()
        names = [*extra, *(q.name for q in self._base_queues if q.name not in extra)]
        names = [n for n in names if self._left.get(n, 0.0) <= time.monotonic()]
        if names != self.queue_names():
            by_name = {q.name: q for q in self.queues}
            self.queues = [by_name.get(n) or self.queue_class(
                name=n, connection=self.connection, job_class=self.job_class, serializer=self.serializer,
                death_penalty_class=self.death_penalty_class) for n in names]
            self._ordered_queues = self.queues[:]
            self.log.info("Worker %s: listening on %s (GPU %s)", self.name, ", ".join(names),
                          slot_gpu(registered).describe() if registered else "unknown")
            try:
                self.connection.hset(self.key, "queues", ",".join(names))  # what `rq info` shows
            except redis.RedisError:
                pass
        return names

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue, with the queues refreshed first and again every PLACEMENT_REFRESH_S while idle
        (every LEAVE_S while a queue is left to a better GPU), and a job a better GPU should train put
        back (module docstring)."""
        self.listen_for_placement()
        self._mark(idle=True)
        if timeout is None:  # burst: one pass over the queues as they are now
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time) if self.queues else None
            return self._keep(result)
        idle_since = time.monotonic()
        while True:
            step = max(1, min(timeout, PLACEMENT_REFRESH_S, int(LEAVE_S) if self._left else timeout))
            if self.queues and not self._slot_held():
                result = self._keep(super().dequeue_job_and_maintain_ttl(step, step))
            else:  # every queue is left to better GPUs for now, or a multi-GPU lease holds our GPU
                self.heartbeat()
                time.sleep(step)
                result = None
            if result is not None:
                return result
            if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                return None
            self._left = {n: t for n, t in self._left.items() if t > time.monotonic()}
            self.listen_for_placement()
            self._mark(idle=True)

    def _slot_held(self) -> bool:
        """Whether leases hold this worker's GPUs (`slot_held`): it then takes nothing until one is
        released."""
        try:
            return slot_held(self.connection, gpu_inventory.current())
        except redis.RedisError as exc:
            self.log.warning("Worker %s: held GPUs not read (%s)", self.name, exc)
            return False

    def _my_gpu(self) -> tuple[SlotGpu, str] | None:
        registered = gpu_inventory.current()
        gpu = slot_gpu(registered)
        if registered is None or not (gpu.model or gpu.memory_gb):
            return None
        return SlotGpu(gpu, registered.inventory.cost_per_hour), registered.prefix

    def _mark(self, idle: bool) -> None:
        """Say in the idle set whether this worker's GPU is free (`GpuStore.mark_idle`)."""
        mine = self._my_gpu()
        if mine is None:
            return
        slot, store = mine[0], GpuStore(self.connection, Keys(mine[1]))
        try:
            if idle:
                store.mark_idle(slot.gpu, slot.cost_per_hour, self.name, RedisClock(self.connection)(), IDLE_MAX_AGE_S)
            else:
                store.mark_busy(slot.gpu, slot.cost_per_hour, self.name)
        except redis.RedisError as exc:
            self.log.warning("Worker %s: idle mark not written (%s)", self.name, exc)

    def _keep(self, result: Any) -> Any:
        """`result` (job, queue), or None when the job was put back for a better GPU."""
        if result is None:
            return None
        job, queue = result
        mine = self._my_gpu()
        try:
            job_id, prefix = job.args[0], job.args[1]
            better = better_gpus(self.connection, prefix, job_id, mine[0], self.name,
                                 RedisClock(self.connection)()) if mine else []
            waiting = int(self.connection.llen(queue.key)) if better else 0
        except (redis.RedisError, ValueError, TypeError, KeyError, IndexError) as exc:
            self.log.warning("Worker %s: placement not checked for job %s (%s)", self.name, job.id, exc)
            better, waiting = [], 0
        now = time.monotonic()
        verdict = keep_or_hand_back(self.connection, queue.key, job.id, better, waiting, self._left_jobs, now)
        if verdict == KEEP:
            self._mark(idle=False)
            return result
        if verdict == TO_BUSY:  # it waits for a better GPU about to free: leave the queue meanwhile
            self._left[queue.name] = now + LEAVE_S
        self.log.info("Worker %s: job %s left on %s for %s", self.name, job.id, queue.name,
                      ", ".join(f"{b.gpu.node} ({b.gpu.describe()}, free in {b.free_in_s:.0f} s)" for b in better[:3]))
        self.listen_for_placement()
        return None

    def register_birth(self) -> None:
        super().register_birth()
        try:
            registered = gpu_inventory.register(self.connection, self.name)
            self.connection.hset(self.key, mapping=gpu_inventory.slot_fields(registered))
            node_notice.clear_notice(self.connection, Keys(registered.prefix), self.name)
        except redis.RedisError as exc:
            self.log.warning("Worker %s: GPU inventory not recorded (%s); each job records it", self.name, exc)

    def serialize(self) -> dict:
        fields = gpu_inventory.slot_fields(gpu_inventory.current())
        return {**super().serialize(), WORKER_NODE_FIELD: workers.tasks.node_name(), **fields}

    def unsubscribe(self) -> None:
        """RQ's, without its hang on a warm shutdown: once unsubscribed, redis-py's pubsub thread may
        wait for a new subscription for its whole sleep time (RQ's 60 s), and RQ's `stop()` joins it
        without a timeout (seen: a noticed worker's exit held 15 s and more). Wake it, bound the join
        (the thread is a daemon), then close."""
        if not self.pubsub_thread:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        self.pubsub.unsubscribe()
        self.pubsub.subscribed_event.set()  # a get_message waiting for a subscription returns now
        self.pubsub_thread.stop(timeout=1)
        self.pubsub.close()

    def request_stop(self, signum: int, frame: Any) -> None:
        """RQ's warm shutdown (no new job; the running one may end), and on an ephemeral host SIGTERM
        is also a termination notice: its key is written (from a thread: no Redis inside a signal
        handler), the running training's next lease renewal reads it, checkpoints and is requeued
        (`workers/node_notice.py`); the work horse records that before this worker exits."""
        registered = gpu_inventory.current()
        if signum == signal.SIGTERM and registered is not None and registered.inventory.ephemeral:
            threading.Thread(target=self._write_notice, args=(registered.prefix,), daemon=True).start()
        super().request_stop(signum, frame)

    def _write_notice(self, prefix: str) -> None:
        try:
            job = self.get_current_job()
            prefix = job.args[1] if job is not None and len(job.args) > 1 else prefix  # the job's keys
            node_notice.write_notice(self.connection, Keys(prefix), self.name, "sigterm")
            registered = gpu_inventory.current()
            if registered is not None:  # the host's life ends: placement learns how long ephemeral hosts live
                GpuStore(self.connection, Keys(prefix)).end_of_life(registered.slot.node,
                                                                    RedisClock(self.connection)())
            self.log.warning("Worker %s: SIGTERM on an ephemeral host: termination notice for job %s", self.name,
                             job.id if job is not None else "(none)")
        except redis.RedisError as exc:  # its lease then expires as for a node that vanished
            self.log.warning("Worker %s: termination notice not written (%s)", self.name, exc)

    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.log.warning("Worker %s: heartbeat of job %s not sent (%s); its work horse carries on",
                             self.name, job.id, exc)
