"""The dashboard's memory of the event stream: per-job loss curves, Elo points, recent failures.

Job records keep only an attempt's latest epoch, so the curves come from the stream itself
(TRAINING_PROGRESS per epoch, TRAINING_COMPLETE's `history` payload), read incrementally with
XRANGE (a read command: the `viewer` role may run it) from the last entry seen. Everything kept
is bounded: the stream's own MAXLEN and BACKFILL_HOURS on start, at most CURVE_POINTS epochs per
job, CURVES_KEPT jobs, ELO_POINTS evaluations per config and FAILURES_KEPT failures.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Any

import redis

from coordinator.bus import events as ev
from coordinator.bus.schemas import config_of
from coordinator.core.clock import Clock, RedisClock
from coordinator.core.keys import Keys

BACKFILL_HOURS = 48.0  # how far back a fresh dashboard reads the stream
READ_CHUNK = 5000  # entries per XRANGE
MAX_CHUNKS_PER_POLL = 40  # one poll reads at most this many chunks; the next goes on
CURVE_POINTS = 1000
CURVES_KEPT = 2000
ELO_POINTS = 500
FAILURES_KEPT = 50
STDERR_TAIL_CHARS = 2000

Point = tuple[int, float | None, float | None]  # (epoch, train loss, val loss)


class StreamTail:
    def __init__(self, conn: redis.Redis, keys: Keys, clock: Clock | None = None) -> None:
        self.conn, self.keys, self.clock = conn, keys, clock or RedisClock(conn)
        self.last_id: str | None = None
        self.curves: OrderedDict[str, dict[int, Point]] = OrderedDict()
        self.elo: dict[str, deque[tuple[float, float]]] = {}
        self.failures: deque[dict[str, Any]] = deque(maxlen=FAILURES_KEPT)
        self.attempts: deque[dict[str, Any]] = deque(maxlen=CURVES_KEPT)  # ended attempts that retry

    def catch_up(self) -> int:
        """Read what was added since the last call; returns the number of entries read."""
        start = f"({self.last_id}" if self.last_id else f"{int((self.clock() - BACKFILL_HOURS * 3600) * 1000)}-0"
        read = 0
        for _ in range(MAX_CHUNKS_PER_POLL):
            entries = self.conn.xrange(self.keys.events, min=start, max="+", count=READ_CHUNK)
            for entry_id, raw in entries:
                self._apply(ev.decode_entry(entry_id, raw))
            read += len(entries)
            if entries:
                self.last_id = entries[-1][0].decode()
                start = f"({self.last_id}"
            if len(entries) < READ_CHUNK:
                break
        return read

    def curve(self, job_id: str) -> list[Point]:
        return [p for _, p in sorted(self.curves.get(job_id, {}).items())]

    def elo_points(self, config_key: str) -> list[tuple[float, float]]:
        return list(self.elo.get(config_key, ()))

    # -- folding events ---------------------------------------------------------------------------
    def _apply(self, event: ev.Event) -> None:
        f = event.fields
        if event.type == ev.TRAINING_PROGRESS:
            self._point(f.get("job_id", ""), f)
        elif event.type == ev.TRAINING_COMPLETE:
            history = event.payload.get("history") if isinstance(event.payload, dict) else None
            for row in history or []:
                if isinstance(row, dict):
                    self._point(f.get("job_id", ""), row)
        elif event.type == ev.TRAINING_FAILED:
            at = _event_time(event.id)
            self.failures.appendleft({
                "id": event.id, "at": at, "job_id": f.get("job_id", ""), "config_key": f.get("config_key", ""),
                "node": f.get("node", ""), "attempt": f.get("attempt", ""), "reason": f.get("reason", ""),
                "error": f.get("error", ""), "will_retry": f.get("will_retry", ""),
                "stderr_tail": f.get("stderr_tail", "")[-STDERR_TAIL_CHARS:]})
            if f.get("will_retry") == "true":  # the record keeps only the newest attempt: remember this one
                duration = _number(f.get("duration_s")) or 0.0
                self.attempts.append({"job_id": f.get("job_id", ""), "config_key": f.get("config_key", ""),
                                      "node": f.get("node", ""), "start": at - duration, "end": at,
                                      "reason": f.get("reason", "")})
        elif event.type == ev.EVALUATION_COMPLETED:
            try:
                config_key = config_of(f)[2]
            except Exception:  # noqa: BLE001 - the orchestrator dead-letters it; nothing to draw
                return
            elo = _number(f.get("elo"))
            if elo is not None:
                at = _number(f.get("timestamp")) or _event_time(event.id)
                self.elo.setdefault(config_key, deque(maxlen=ELO_POINTS)).append((at, elo))

    def _point(self, job_id: str, f: dict[str, Any]) -> None:
        epoch = _number(f.get("epoch"))
        if not job_id or epoch is None:
            return
        points = self.curves.get(job_id)
        if points is None:
            points = self.curves[job_id] = {}
            while len(self.curves) > CURVES_KEPT:
                self.curves.popitem(last=False)
        if len(points) < CURVE_POINTS or int(epoch) in points:
            points[int(epoch)] = (int(epoch), _number(f.get("train_loss")), _number(f.get("val_loss")))


def _event_time(entry_id: str) -> float:
    return int(entry_id.split("-")[0]) / 1000.0


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None
