"""TrainingOrchestrator: turns pipeline events into training jobs on RQ's `training` queue.

The work is synchronous Redis calls (`process_once` is the unit tests' entry point); the
seed's asyncio API (`start`, `submit_training`, `stop`) runs them in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable

import redis

from coordinator import events as ev
from coordinator.boards import make_config_key, parse_config_key
from coordinator.config import Settings, load_settings
from coordinator.errors import EventError
from coordinator.events import Event, EventConsumer, Export
from coordinator.jobs import JobStore, SubmitResult, TrainingParams, decode_hash
from coordinator.keys import Keys

log = logging.getLogger(__name__)
TRIM_INTERVAL_S = 60.0
ERROR_BACKOFF_S = 1.0


class TrainingOrchestrator:
    def __init__(
        self,
        settings: Settings | None = None,
        conn: redis.Redis | None = None,
        consumer_name: str | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.conn = conn or redis.Redis.from_url(self.settings.redis.url)
        self.keys = Keys(self.settings.redis.prefix)
        e = self.settings.events
        self.jobs = JobStore(self.conn, self.keys, e.stream_maxlen)
        # A stable name per host: a restarted orchestrator finds its own unacknowledged entries.
        self.consumer = EventConsumer(self.conn, self.keys, e.group, consumer_name or socket.gethostname())
        self._handlers: dict[str, Callable[[Event], None]] = {
            ev.NPZ_EXPORT_COMPLETE: self._on_export,
            ev.TRAINING_COMPLETE: self._on_training_end,
            ev.TRAINING_FAILED: self._on_training_end,
            ev.TRAINING_BLOCKED_BY_QUALITY: self._on_quality_block,
            ev.CLUSTER_HEALTH_CHANGED: self._on_cluster_health,
        }
        self._stopping = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_reclaim = 0.0
        self._next_trim = 0.0

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

    async def run_until_signal(self) -> None:
        """`ringrift-train run`: consume until SIGINT or SIGTERM."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await self.start()
        log.info("orchestrator consuming %s as %s/%s", self.keys.events, self.consumer.group, self.consumer.consumer)
        await done.wait()
        await self.stop()

    # -- synchronous core -----------------------------------------------------------------------
    def prepare(self) -> None:
        self.consumer.ensure_group()
        self._handle_batch(self.consumer.read_own_pending(self.settings.events.read_count))

    def submit_training_sync(
        self, board_type: str, num_players: int, npz_path: str, samples: int = 0, **overrides: float | int | None
    ) -> str:
        export = Export(board_type, num_players, make_config_key(board_type, num_players), npz_path, samples)
        return self._submit(export, None, overrides).job_id

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
        while not self._stopping.is_set():
            try:
                self.process_once()
            except redis.RedisError as exc:  # Redis restarting or unreachable: keep trying
                log.warning("event loop: %s; retrying in %.0f s", exc, ERROR_BACKOFF_S)
                self._stopping.wait(ERROR_BACKOFF_S)

    def _maintain(self) -> None:
        now, e = time.monotonic(), self.settings.events
        if now >= self._next_reclaim:
            self._next_reclaim = now + e.reclaim_idle_ms / 2000.0
            self._handle_batch(self.consumer.reclaim(e.reclaim_idle_ms, e.read_count))
        if now >= self._next_trim:
            self._next_trim = now + TRIM_INTERVAL_S
            self.consumer.trim(e.stream_maxlen)

    def _handle_batch(self, batch: list[Event]) -> None:
        done: list[str] = []
        for event in batch:
            if self._handle(event):
                done.append(event.id)
        self.consumer.ack(done)

    def _handle(self, event: Event) -> bool:
        """Apply one event; True when it may be acknowledged with the batch."""
        try:
            if event.type not in ev.KNOWN_TYPES:
                raise EventError(f"unknown event type {event.type!r}" if event.type else "missing field 'type'")
            handler = self._handlers.get(event.type)
            if handler is not None:
                handler(event)
            return True
        except EventError as exc:
            log.warning("dead-lettering event %s (%s): %s", event.id, event.type, exc)
            self.consumer.dead_letter(event, str(exc))
            return False
        except redis.RedisError:
            raise
        except Exception:
            # Left pending: reclaimed and retried after reclaim_idle_ms.
            log.exception("handling event %s (%s) failed", event.id, event.type)
            return False

    # -- handlers -------------------------------------------------------------------------------
    def _on_export(self, event: Event) -> None:
        self._submit(ev.parse_export(event), event.id, {})

    def _submit(self, export: Export, event_id: str | None, overrides: dict) -> SubmitResult:
        params = TrainingParams.from_settings(self.settings, **overrides)
        result = self.jobs.submit(self.settings, export, params, event_id=event_id)
        log.info("%s %s: job %s %s", export.config_key, export.npz_path, result.job_id, result.action)
        return result

    def _on_training_end(self, event: Event) -> None:
        """If exports arrived while the job ran, train again on the newest data."""
        config_key, job_id = event.fields.get("config_key", ""), event.fields.get("job_id", "")
        board_type, num_players = parse_config_key(config_key)
        cfg = decode_hash(self.conn.hgetall(self.keys.config(config_key)))
        trained = self.conn.hget(self.keys.job(job_id), "data_version")
        if not cfg.get("npz_path") or self.jobs.active_job(config_key):
            return
        if int(cfg.get("data_version", 0)) > int(trained or 0):
            export = Export(board_type, num_players, config_key, cfg["npz_path"], int(cfg.get("samples", 0)))
            params = TrainingParams.from_settings(self.settings)
            result = self.jobs.submit(self.settings, export, params, record_export=False)
            log.info("%s: newer data arrived during %s; job %s %s", config_key, job_id, result.job_id, result.action)

    def _on_quality_block(self, event: Event) -> None:
        config_key = _event_config_key(event)
        self.conn.hset(self.keys.config(config_key), mapping={
            "quality_blocked_at": f"{time.time():.3f}",
            "quality_block_reason": event.fields.get("reason", ""),
            "quality_block_event": event.id,
        })

    def _on_cluster_health(self, event: Event) -> None:
        fields = {k: v for k, v in event.fields.items() if k != "type"}
        self.conn.hset(self.keys.cluster_health, mapping={**fields, "event_id": event.id,
                                                          "recorded_at": f"{time.time():.3f}"})


def _event_config_key(event: Event) -> str:
    f = event.fields
    if f.get("config_key") or f.get("config"):
        key = f.get("config_key") or f["config"]
        parse_config_key(key)
        return key
    try:
        return make_config_key(f.get("board_type", ""), int(f.get("num_players", "0")))
    except ValueError:
        raise EventError("num_players must be an integer") from None
