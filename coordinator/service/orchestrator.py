"""TrainingOrchestrator: turns pipeline events into training jobs on RQ's `training` queue.

Events update each config's inputs (exports, training ends, evaluations, curriculum weights,
quality blocks); the touched configs are rescored, then free GPU slots (the `hosts` GPUs plus
`scheduler.prefetch`, minus the queued-or-running jobs) are filled in priority order; a starving
config is queued even past that (the preempter puts it at the head of RQ's queue and frees a GPU
for it, so the wait bound holds with prefetch). Periodic
work (`periodic.py`, on rq-scheduler) rescores every config and dispatches again, so time alone
can make a config due, and reaps abandoned attempts.

The work is synchronous Redis calls (`process_once` is the unit tests' entry point); the
seed's asyncio API (`start`, `submit_training`, `stop`) runs them in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from coordinator.bus import events as ev
from coordinator.bus import intake, schemas
from coordinator.bus.events import Event, EventConsumer, Export
from coordinator.core.boards import parse_config_key
from coordinator.core.clock import RedisClock
from coordinator.core.connection import connect
from coordinator.core.errors import ConfigError, CoordinatorError, EventError
from coordinator.core.gpu_requirements import need_text, restricts
from coordinator.core.keys import Keys
from coordinator.core.settings import BUILT_IN, Settings, load_settings, redact_url
from coordinator.scheduling.placement import read_placement, requirement_of
from coordinator.scheduling.preempter import Preempter
from coordinator.scheduling.scheduler import TrainingScheduler
from coordinator.service.handlers import EventHandlers
from coordinator.service.metrics import Metrics
from coordinator.service.periodic import (
    PRUNE_INTERVAL_S,
    REQUEUE_DUE_INTERVAL_S,
    REQUEUE_LOST_INTERVAL_S,
    TRIM_INTERVAL_S,
    PeriodicTask,
    PeriodicWork,
    prune_before,
)
from coordinator.service.recovery import Recovery
from coordinator.stores.job_records import TrainingParams
from coordinator.stores.jobs import JobStore
from coordinator.stores.leases import LeaseManager

log = logging.getLogger(__name__)
T = TypeVar("T")
PERIODIC_POLL_S = 0.5
CONSUMER_ENV = "RINGRIFT_CONSUMER"
ERROR_BACKOFF_S = 0.5
MAX_DISPATCH_PER_CALL = 1000
MAX_ERROR_BACKOFF_S = 30.0
RESCORE_DEBOUNCE_S = 0.5  # during a burst of exports, rescore at most this often
SLOTS_CACHE_S = 5.0  # usable GPU slots are read again after this long
MAX_REASON_CHARS = 500
# Errors that say nothing about the entry being handled: the batch stays pending and is retried
# (reclaimed after reclaim_idle_ms; after events.max_deliveries it is dead-lettered as poison).
# Any other error while handling an entry dead-letters that entry with the error as its reason.
TRANSIENT_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
                          redis.exceptions.ReadOnlyError, redis.exceptions.TryAgainError)


class ConsumerDied(CoordinatorError):
    """The consumer thread ended while the service was meant to run (`run` exits non-zero)."""


class TrainingOrchestrator:
    def __init__(
        self,
        settings: Settings | None = None,
        conn: redis.Redis | None = None,
        consumer_name: str | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.conn = conn or connect(self.settings.redis.url)
        self.keys = Keys(self.settings.redis.prefix)
        e = self.settings.events
        self.clock = RedisClock(self.conn)  # the one clock of every stored time (core/clock.py)
        self.jobs = JobStore(self.conn, self.keys, e.stream_maxlen, self.clock)
        # A stable name per host: a restarted orchestrator finds its own unacknowledged entries.
        # Two orchestrators on one host need their own names (RINGRIFT_CONSUMER).
        name = consumer_name or os.environ.get(CONSUMER_ENV) or socket.gethostname()
        self.consumer = EventConsumer(self.conn, self.keys, e.group, name)
        self.scheduler = TrainingScheduler.from_settings(self.conn, self.keys, self.settings, self.clock)
        self.configs = self.scheduler.configs
        lease = self.settings.leases
        self.leases = LeaseManager(self.conn, self.keys, lease.ttl_s, lease.default_node_slots)
        self.preempter = Preempter(self.jobs, self.scheduler, self.settings, leases=self.leases)
        self.recovery = Recovery(self.jobs, self.settings)
        self.metrics = Metrics(self.conn, self.keys, self.settings)
        self.periodic = PeriodicWork(self.conn, self.keys.prefix, self.periodic_tasks())
        self._handlers = EventHandlers(self.settings, self.conn, self.keys, self.configs, self.leases, self.clock,
                                       on_nodes_changed=self._forget_slots).by_type()
        self._stopping = threading.Event()
        self._dead: list[tuple[Event, str]] = []  # this batch's dead letters, written together
        self._task: asyncio.Task[None] | None = None
        self._next_reclaim = 0.0
        self._next_periodic = 0.0
        self._dirty: set[str] = set()  # configs whose score inputs changed, not yet rescored
        self._slots: tuple[int, float] | None = None  # (usable GPU slots, when read)
        self._rescored_at = 0.0
        self._queues_registered = False  # the GPU requirements' queues, registered at the first dispatch

    def periodic_tasks(self) -> dict[str, PeriodicTask]:
        """The periodic work: what runs, how often."""
        s = self.settings
        return {
            "tick": PeriodicTask(s.scheduler.rescore_interval_s, self.tick),
            "reap": PeriodicTask(s.leases.reaper_interval_s, self.recovery.reap),
            "requeue_due": PeriodicTask(REQUEUE_DUE_INTERVAL_S, self.recovery.requeue_due),
            "requeue_lost": PeriodicTask(REQUEUE_LOST_INTERVAL_S, self.recovery.requeue_lost),
            "trim": PeriodicTask(TRIM_INTERVAL_S, lambda: self.consumer.trim(s.events.stream_maxlen,
                                                                              s.events.stream_max_bytes)),
            "prune": PeriodicTask(PRUNE_INTERVAL_S, self.prune_job_history),
        }

    def prune_job_history(self) -> int:
        """Job records past `training.job_retention_days` (0 keeps them), a batch per run."""
        return prune_before(self.jobs, self.settings.training.job_retention_days, self.clock())

    # -- the seed's asyncio API -----------------------------------------------------------------
    async def start(self) -> None:
        """Join the consumer group, replay this consumer's unacknowledged entries, start consuming."""
        await asyncio.to_thread(self.prepare)
        self._stopping.clear()
        self._task = asyncio.create_task(self._consume_loop())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def submit_training(
        self,
        board_type: str,
        num_players: int,
        npz_path: str,
        samples: int = 0,
        **overrides: float | int | None,
    ) -> str:
        """Submit a training job directly (no event); returns the id of the job that covers it."""
        return await asyncio.to_thread(
            self.submit_training_sync, board_type, num_players, npz_path, samples, **overrides
        )

    async def run_until_signal(self, metrics_port: int | None = None) -> None:
        """`ringrift-train run`: consume until SIGINT or SIGTERM; serve metrics on `metrics_port`."""
        if metrics_port:
            self.metrics.serve(metrics_port)
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await self.start()
        log.info("orchestrator on %s consuming %s as %s/%s", redact_url(self.settings.redis.url), self.keys.events,
                 self.consumer.group, self.consumer.consumer)
        assert self._task is not None
        signalled = asyncio.create_task(done.wait())
        await asyncio.wait({signalled, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not signalled.done():  # the consumer ended by itself: say why and let the supervisor restart us
            signalled.cancel()
            task, self._task = self._task, None
            why = repr(task.exception()) if not task.cancelled() and task.exception() else "returned"
            log.critical("the event consumer stopped (%s); exiting so that the service is restarted", why)
            raise ConsumerDied(f"the event consumer stopped: {why}")
        await self.stop()

    # -- synchronous core -----------------------------------------------------------------------
    def prepare(self) -> None:
        """Join the group and catch up. Nothing stored can make this fail: a bad entry is
        dead-lettered, a bad config skipped (logged, `configs_skipped` on the stats hash, its
        `skipped_reason`); only Redis being unreachable does."""
        self.consumer.ensure_group()
        self.leases.register_nodes(dict(self.settings.hosts))
        unless_transient(self.periodic.register, self._startup_problem)  # a stored entry we cannot read
        for stored in self.conn.zrange(self.keys.priority, 0, -1):
            try:
                parse_config_key(stored.decode("utf-8"))
            except (EventError, UnicodeDecodeError) as exc:
                self._skip_config(stored, str(exc))
        self._handle_batch(self.consumer.read_own_pending(self.settings.events.read_count))
        self.tick()

    def tick(self) -> list[str]:
        """Rescore every config (the time factors move) and fill free slots: the periodic work."""
        self._slots = None
        self._rescore(None)
        created = self.dispatch()
        # Reservations for multi-GPU jobs; with preemption on, a running job yields to a more urgent config.
        self.preempter.tick(max(0, self.total_slots() - self.preempter.held_slots()))
        return created

    def _rescore(self, config_keys: list[str] | None) -> None:
        """Rescore; when a stored config cannot be scored, the others are scored one by one and
        that one is skipped."""
        if unless_transient(lambda: self.scheduler.rescore(config_keys) >= 0, lambda _exc: False):
            return
        for config_key in config_keys if config_keys is not None else [  # find the config it came from
                k.decode("utf-8", "replace") for k in self.conn.zrange(self.keys.priority, 0, -1)]:
            unless_transient(lambda k=config_key: self.scheduler.rescore([k]),
                             lambda exc, k=config_key: self._skip_config(k, f"cannot be scored: {_reason(exc)}"))

    def _skip_config(self, config_key: str | bytes, reason: str) -> None:
        """Take a stored config out of the priorities (its hash stays, with the reason)."""
        log.error("config %r skipped: %s", config_key, reason)
        self.configs.skip(config_key, reason)

    def _startup_problem(self, exc: Exception) -> None:
        log.error("periodic tasks not registered: %s", _reason(exc))
        self.conn.hincrby(self.keys.stats, "startup_problems", 1)

    def _forget_slots(self) -> None:
        """A node's health changed: usable slots are read again at the next dispatch."""
        self._slots = None

    def total_slots(self) -> int:
        """GPU slots on nodes that are not down, read at most every SLOTS_CACHE_S: every dispatch
        needs it, and it changes only with a node's health (a health event here drops the cache;
        one handled by another coordinator is seen within SLOTS_CACHE_S)."""
        now = time.monotonic()
        if self._slots is None or now - self._slots[1] >= SLOTS_CACHE_S:
            self._slots = (self.leases.usable_slots(), now)
        return self._slots[0]

    def dispatch(self) -> list[str]:
        """Fill free GPU slots (plus the prefetch) with the highest-priority configs; new job ids.
        With GPU requirements (`gpus.boards`, `gpus.per_config`) the count is by placement: a config
        is queued when a free GPU that fits it would otherwise idle (`scheduling/placement.py`)."""
        if self._placing():
            return self._dispatch_placed()
        created: list[str] = []
        config_key = self.scheduler.get_next_training_config()
        if config_key is None:
            return created  # the common case after an export batch: no need to read every node's slots
        params = TrainingParams.from_settings(self.settings)
        capacity = self.total_slots() + self.settings.scheduler.prefetch  # read once per call
        busy = self.preempter.busy_slots()  # a preempted job keeps its config's entry, not a slot
        for _ in range(MAX_DISPATCH_PER_CALL):
            if config_key is None or (busy >= capacity and not self.scheduler.is_starving(config_key)):
                break  # a starving config is queued past the prefetch: the preempter frees a GPU for it
            preempted = self.preempter.preempted_job(config_key)
            if preempted is not None:  # picked again: the same job resumes from its checkpoint
                self.preempter.mark_dispatch(config_key, preempted)
                if self.preempter.resume(config_key, preempted):
                    busy += 1
                self._rescore([config_key])
                config_key = self.scheduler.get_next_training_config()
                continue
            result = unless_transient(  # one stored config must not stop dispatch
                lambda k=config_key: self.jobs.create_job(self.settings, k, params),
                lambda exc, k=config_key: self._skip_config(k, f"cannot be dispatched: {_reason(exc)}"))
            if result is None:
                config_key = self.scheduler.get_next_training_config()
                continue
            if result.action == "created":
                self.preempter.mark_dispatch(config_key, result.job_id)
            self._rescore([config_key])
            if result.action == "created":
                busy += 1
                created.append(result.job_id)
                log.info("%s: job %s queued (priority dispatch)", config_key, result.job_id)
            config_key = self.scheduler.get_next_training_config()
        return created

    def _placing(self) -> bool:
        """Whether some board or config needs something of a GPU (else every GPU takes every job)."""
        g = self.settings.gpus
        return any(restricts(r) for r in (*g.boards.values(), *g.per_config.values()))

    def _dispatch_placed(self) -> list[str]:
        """`dispatch` by placement: eligible configs in priority order, each queued (or its
        preempted job resumed) when `Placement.admits` it, or when it starves (the preempter frees
        a GPU for it); a config without a place is passed over, so the next one that fits a free
        GPU gets it (no head-of-line blocking)."""
        created: list[str] = []
        if not self._queues_registered:
            self.jobs.register_queues(self.settings)
            self._queues_registered = True
        ordered = [k.decode() for k in self.conn.zrevrangebyscore(self.keys.priority, "+inf", 0,
                                                                   start=0, num=MAX_DISPATCH_PER_CALL)]
        if not ordered:
            return created
        params = TrainingParams.from_settings(self.settings)
        prefetch = self.settings.scheduler.prefetch
        placement = read_placement(self.conn, self.keys, self.leases, self.settings.gpus)
        for config_key in ordered:
            requirement = requirement_of(self.settings.gpus, config_key)
            starving = self.scheduler.is_starving(config_key)
            if not placement.admits(requirement, prefetch) and not (starving and placement.known(requirement)):
                if not starving and not placement.free and len(placement.waiting) >= prefetch:
                    break  # no free GPU and the prefetch full: only a starving config (ranked first) goes on
                continue
            preempted = self.preempter.preempted_job(config_key)
            if preempted is not None:  # picked again: the same job resumes from its checkpoint
                self.preempter.mark_dispatch(config_key, preempted)
                if self.preempter.resume(config_key, preempted):
                    placement.add(requirement)
                self._rescore([config_key])
                continue
            result = unless_transient(
                lambda k=config_key: self.jobs.create_job(self.settings, k, params),
                lambda exc, k=config_key: self._skip_config(k, f"cannot be dispatched: {_reason(exc)}"))
            if result is None:
                continue
            if result.action == "created":
                self.preempter.mark_dispatch(config_key, result.job_id)
            self._rescore([config_key])
            if result.action == "created":
                placement.add(requirement)
                created.append(result.job_id)
                log.info("%s: job %s queued (priority dispatch, needs %s)", config_key, result.job_id,
                         need_text(requirement))
        return created

    def submit_training_sync(
        self, board_type: str, num_players: int, npz_path: str, samples: int = 0, **overrides: float | int | None
    ) -> str:
        """An explicit request: checked like an export event (the same schema), recorded like one and
        queued at once, whatever the priorities. Raises EventError with the reason."""
        request = ev.decode_entry("0-0", {"type": ev.NPZ_EXPORT_COMPLETE, "board_type": board_type,
                                          "num_players": str(num_players), "npz_path": npz_path,
                                          "samples": str(samples)})
        export = schemas.parse_export(request, self.settings.training.data_roots)
        params = TrainingParams.from_settings(self.settings, **overrides)
        self.configs.record_export(export)
        result = self.jobs.create_job(self.settings, export.config_key, params)
        self.scheduler.rescore([export.config_key])
        return result.job_id

    def process_once(self, block_ms: int | None = None) -> int:
        """Run due maintenance, read one batch of new events and handle it; returns how many."""
        self._maintain()
        e = self.settings.events
        batch = self.consumer.read(e.read_count, e.block_ms if block_ms is None else block_ms)
        self._handle_batch(batch)
        return len(batch)

    async def _consume_loop(self) -> None:
        await asyncio.to_thread(self._consume_until_stopped)

    def _consume_until_stopped(self) -> None:
        """The loop; while Redis is unreachable it backs off (doubling, capped) and resumes by itself.
        An entry's own errors never get here (they dead-letter it); any other error is logged with
        its traceback and the loop goes on after the same backoff."""
        backoff = ERROR_BACKOFF_S
        while not self._stopping.is_set():
            try:
                self.process_once()
                backoff = ERROR_BACKOFF_S
                continue
            except redis.RedisError as exc:
                if "NOGROUP" in str(exc):  # a new primary without our group (data lost in a failover)
                    self._recreate_group()
                log.warning("event loop: %s; retrying in %.1f s", exc, backoff)
            except Exception:  # noqa: BLE001 - the loop must outlive any bug; it says so loudly
                log.exception("event loop failed; retrying in %.1f s", backoff)
                self._count("loop_errors")
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, MAX_ERROR_BACKOFF_S)

    def _count(self, name: str) -> None:
        try:
            self.conn.hincrby(self.keys.stats, name, 1)
        except redis.RedisError:
            pass  # only a counter

    def _recreate_group(self) -> None:
        try:
            self.consumer.ensure_group()
        except redis.RedisError as exc:
            log.warning("could not recreate the consumer group: %s", exc)

    def _maintain(self) -> None:
        """Exporters' submissions onto the stream (`intake.py`), this consumer's reclaim of stale
        entries, then the periodic work that is due (rq-scheduler)."""
        intake.move(self.conn, self.keys)  # one script call, an empty LPOP when none wait
        now, e = time.monotonic(), self.settings.events
        if now >= self._next_reclaim:
            self._next_reclaim = now + e.reclaim_idle_ms / 2000.0
            self._handle_batch(self.consumer.reclaim(e.reclaim_idle_ms, e.read_count))
        if now >= self._next_periodic:
            self._next_periodic = now + PERIODIC_POLL_S
            self.periodic.run_due()

    def _handle_batch(self, batch: list[Event]) -> None:
        """Apply a batch, then rescore the configs it touched and dispatch once, then acknowledge.

        Consecutive exports are coalesced per config (one transaction per config, the newest file
        wins, every export's samples count); any other event first flushes the exports before it,
        so the stream's order holds between kinds."""
        self._dead.clear()  # left over from a batch that a Redis error interrupted: it is redelivered
        done: list[str] = []
        touched: set[str] = set()
        pending: dict[str, list[tuple[Event, Export]]] = {}
        for event in batch:
            if event.type == ev.NPZ_EXPORT_COMPLETE:
                export = self._valid_export(event)
                if export is not None:
                    pending.setdefault(export.config_key, []).append((event, export))
                continue
            self._flush_exports(pending, done, touched)
            changed = self._handle(event)
            if changed is not None:
                done.append(event.id)
                touched.update(changed)
        self._flush_exports(pending, done, touched)
        self._dirty |= touched
        rescore_now, rescored = not self._in_export_burst(batch), bool(self._dirty)
        if rescore_now and rescored:
            self._rescore(sorted(self._dirty))
            self._dirty.clear()
            self._rescored_at = time.monotonic()
        self.consumer.dead_letter_many(self._dead)
        self._dead.clear()
        if rescore_now and (batch or rescored):
            self.dispatch()  # a training ended, a node changed or new data was scored: slots may be used
        self.consumer.ack(done)  # a config left dirty is still rescored: next batch, idle poll or tick

    def _in_export_burst(self, batch: list[Event]) -> bool:
        """A full batch of nothing but exports, soon after the last rescore: the stream is behind,
        so rescoring waits (at most RESCORE_DEBOUNCE_S) and covers every config the burst touched
        once, not once per batch. A short batch (caught up) or any other event rescores at once."""
        return (len(batch) >= self.settings.events.read_count
                and time.monotonic() - self._rescored_at < RESCORE_DEBOUNCE_S
                and all(event.type == ev.NPZ_EXPORT_COMPLETE for event in batch))

    def _valid_export(self, event: Event) -> Export | None:
        """The export, or None when it was dead-lettered (its reason stored)."""
        def parse() -> Export:
            self._not_poison(event)
            return schemas.parse_export(event, self.settings.training.data_roots)

        return unless_transient(parse, lambda exc: self._entry_failed(event, exc))

    def _admit(self, event: Event) -> None:
        """The checks every entry passes before it is acted on: not poison, valid (schemas.py)."""
        self._not_poison(event)
        schemas.validate(event)

    def _not_poison(self, event: Event) -> None:
        if event.deliveries > self.settings.events.max_deliveries:
            raise EventError(f"poison: delivered {event.deliveries} times without being handled")

    def _flush_exports(self, pending: dict[str, list[tuple[Event, Export]]], done: list[str],
                       touched: set[str]) -> None:
        groups = list(pending.items())
        actions = unless_transient(
            lambda: self.configs.record_exports_many([[(export, event.id) for event, export in items]
                                                      for _key, items in groups]),
            lambda _exc: [self._record_alone(items) for _key, items in groups])  # find the config: one at a time
        for (config_key, items), action in zip(groups, actions):
            if action is None:
                continue
            self.metrics.observe_exports(len(items))
            done.extend(event.id for event, _ in items)
            if action != "duplicate":
                touched.add(config_key)
            log.info("%s: %d export(s), newest %s: %s", config_key, len(items), items[-1][1].npz_path, action)
        pending.clear()

    def _record_alone(self, items: list[tuple[Event, Export]]) -> str | None:
        """One config's exports; on an error they are dead-lettered with it (None)."""
        def dead(exc: Exception) -> None:  # any error of these entries is their dead letter
            for event, _export in items:
                self._dead_letter(event, _reason(exc), unexpected=True)

        return unless_transient(
            lambda: self.configs.record_exports_many([[(export, event.id) for event, export in items]])[0], dead)

    def _handle(self, event: Event) -> list[str] | None:
        """Apply one event; the configs it touched, or None when it must not be acknowledged here."""
        def apply() -> list[str]:
            self._admit(event)
            handler = self._handlers.get(event.type)
            touched = handler(event) if handler is not None else []
            self.metrics.observe(event, dead=False)
            return touched

        return unless_transient(apply, lambda exc: self._entry_failed(event, exc))

    def _entry_failed(self, event: Event, exc: Exception) -> None:
        """An entry's own error: a validation's message, or any other error, is its dead letter."""
        if isinstance(exc, EventError):
            self._dead_letter(event, str(exc))
        else:
            self._dead_letter(event, _reason(exc), unexpected=True)

    def _dead_letter(self, event: Event, reason: str, unexpected: bool = False) -> None:
        """Queue the event for the dead-letter stream; written (and acked) with the batch. An
        unexpected error (not a validation) is logged with its traceback and counted."""
        if unexpected:
            log.exception("event %s (%r) failed; dead-lettered: %s", event.id, event.type[:40], reason)
            self._count("handler_errors")
        else:
            log.warning("dead-lettering event %s (%r): %s", event.id, event.type[:40], reason)
        self._dead.append((event, reason))
        self.metrics.observe(event, dead=True)


def unless_transient(action: Callable[[], T], on_error: Callable[[Exception], T]) -> T:
    """`action()`, or `on_error(exc)` for any error but Redis being unreachable: that one propagates
    (the batch stays pending, the loop backs off and the entries are retried, see
    TRANSIENT_REDIS_ERRORS). The one place the consumer tells the two apart."""
    try:
        return action()
    except TRANSIENT_REDIS_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - anything else belongs to the entry or config at hand
        return on_error(exc)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]


@functools.cache
def _maintainer() -> TrainingOrchestrator:
    """One orchestrator per `rq worker ringrift-maintenance` process, built on its first job. It
    needs the coordinator's settings file (RINGRIFT_CONFIG or the default path): on built-in
    defaults it would act on the wrong prefix, hosts and data roots without a word."""
    from rq import get_current_job

    settings = load_settings()
    if settings.source == BUILT_IN:
        raise ConfigError("the maintenance worker found no settings file: set RINGRIFT_CONFIG to the coordinator's")
    return TrainingOrchestrator(settings, get_current_job().connection, consumer_name="maintenance")


def maintenance(task: str, *_older: str) -> object:
    """The RQ job function of the periodic work, for an `rq worker ringrift-maintenance` that runs
    it instead of the coordinator (settings from RINGRIFT_CONFIG / REDIS_URL, as for `run`). An
    entry an older version scheduled passes (prefix, task): the task is the last argument."""
    name = (task, *_older)[-1]
    return _maintainer().periodic.tasks[name].run()
