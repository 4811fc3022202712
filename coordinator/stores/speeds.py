"""Learned training speeds in Redis: one hash (`Keys.speeds`), field "<workload>|<GPU class>" ->
JSON `{"s": seconds per epoch per sample, "n": epochs timed, "at": unix time, "id": last event id}`.
Every write is here (`speeds_observe.lua`: the smoothing of `coordinator/scheduling/speeds.py`,
atomic, a redelivered event counted once); what the numbers mean is that module's docstring.

    redis-cli HGETALL ringrift:speeds      # hexagonal|H100 -> {"s":2.1e-05,"n":12,...}
"""

from __future__ import annotations

import json
import logging

import redis

from coordinator.core.keys import Keys
from coordinator.core.lua import script

log = logging.getLogger(__name__)
SEPARATOR = "|"


def field(workload: str, cls: str) -> str:
    return f"{workload}{SEPARATOR}{cls}"


class SpeedStore:
    """Writes and reads the learned speeds."""

    def __init__(self, conn: redis.Redis, keys: Keys) -> None:
        self.conn = conn
        self.keys = keys
        self._observe = script(conn, "speeds_observe.lua")

    def observe(self, workload: str, cls: str, seconds_per_sample: float, alpha: float, now: float,
                event_id: str = "") -> float | None:
        """Count one timed epoch; the new estimate, None when `event_id` was counted already."""
        result = self._observe(keys=[self.keys.speeds], args=[
            field(workload, cls), repr(float(seconds_per_sample)), repr(float(alpha)), f"{now:.3f}", event_id])
        return float(result) if result else None

    def read(self) -> dict[tuple[str, str], tuple[float, int]]:
        """(workload, class) -> (seconds per epoch per sample, epochs timed); unreadable fields skipped."""
        out = {}
        for raw_field, raw in self.conn.hgetall(self.keys.speeds).items():
            name = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
            workload, _, cls = name.rpartition(SEPARATOR)
            try:
                value = json.loads(raw)
                out[(workload, cls)] = (float(value["s"]), int(value["n"]))
            except (ValueError, KeyError, TypeError):
                log.warning("speeds: field %r unreadable (skipped)", name)
        return out
