"""Circuit breakers per config and per node, kept in Redis so every process sees the same state.

`failures` consecutive failures within `window_s` open a breaker (CIRCUIT_OPENED): the scheduler
skips that config, that node's workers hand their jobs back. After `cooldown_s` it is half-open:
one trial goes through; success closes it (CIRCUIT_CLOSED), failure opens it for another
cooldown. Fenced and cancelled attempts are not failures of the config or the node.
An operator closes one by hand with `CircuitBreakers.reset` (`ringrift-train breakers --reset`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis

from coordinator.core.clock import Clock, RedisClock
from coordinator.core.keys import Keys
from coordinator.core.lua import script
from coordinator.core.settings import BreakerSettings, Settings

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def open_until(raw: Mapping[str, str], settings: BreakerSettings) -> float | None:
    """When an open breaker lets its trial through (opened_at + cooldown_s); None when not open."""
    if raw.get("state") != OPEN:
        return None
    return float(raw.get("opened_at") or 0) + settings.cooldown_s


def describe(raw: Mapping[str, str], settings: BreakerSettings, now: float) -> dict[str, Any]:
    """A breaker for people: its state, consecutive failures, and while open when its trial goes
    through (`trial_at`, unix s; `trial_in_s`): the next attempt after it closes it on success."""
    until = open_until(raw, settings)
    return {"state": breaker_state(raw, settings, now), "failures": int(float(raw.get("failures") or 0)),
            "opened_at": float(raw["opened_at"]) if until is not None else None, "trial_at": until,
            "trial_in_s": None if until is None else round(max(until - now, 0.0), 1)}


def breaker_state(raw: Mapping[str, str], settings: BreakerSettings, now: float) -> str:
    """closed, open, or half_open (open, and the cooldown is over: the next attempt is the trial)."""
    until = open_until(raw, settings)
    if until is None:
        return CLOSED
    return HALF_OPEN if now >= until else OPEN


def node_breakers_open(conn: redis.Redis, keys: Keys, settings: BreakerSettings, nodes: Iterable[str],
                       now: float) -> dict[str, bool]:
    """Whether each node's circuit breaker is open (its workers hand every job back): one round trip."""
    names = list(nodes)
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for name in names:
            pipe.hgetall(keys.breaker("node", name))
        raws = pipe.execute()
    return {name: breaker_state(_decode(raw), settings, now) == OPEN for name, raw in zip(names, raws)}


def list_breakers(conn: redis.Redis, keys: Keys, settings: BreakerSettings, now: float) -> list[dict[str, Any]]:
    """Every breaker Redis holds (one that never saw a failure has no hash: closed), sorted by kind
    and name, each `describe`d with its `kind` and `name`."""
    names = sorted(k.decode() for k in conn.scan_iter(match=keys.breaker("*", "*"), count=500))
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for name in names:
            pipe.hgetall(name)
        raws = pipe.execute()
    rows = []
    for key, raw in zip(names, raws):
        kind, _, name = key[len(keys.breaker("", "")) - 1:].partition(":")
        rows.append({"kind": kind, "name": name, **describe(_decode(raw), settings, now)})
    return rows


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


class CircuitBreakers:
    def __init__(self, conn: redis.Redis, keys: Keys, settings: BreakerSettings, stream_maxlen: int,
                 clock: Clock | None = None) -> None:
        """`stream_maxlen`: the settings' `events.stream_maxlen` (CIRCUIT_OPENED/CLOSED trim to it)."""
        self.conn = conn
        self.keys = keys
        self.settings = settings
        self.stream_maxlen = stream_maxlen
        self.clock = clock or RedisClock(conn)
        self._record = script(conn, "breaker_record.lua")
        self._reset = script(conn, "breaker_reset.lua")

    @classmethod
    def from_settings(cls, conn: redis.Redis, keys: Keys, settings: Settings,
                      clock: Clock | None = None) -> CircuitBreakers:
        return cls(conn, keys, settings.breakers, settings.events.stream_maxlen, clock)

    def record(self, kind: str, name: str, success: bool) -> str:
        s = self.settings
        reply = self._record(keys=[self.keys.breaker(kind, name), self.keys.events],
                             args=[self.stream_maxlen, "1" if success else "0", f"{self.clock():.3f}",
                                   s.failures, s.window_s, kind, name, s.cooldown_s])
        return reply.decode() if isinstance(reply, bytes) else reply

    def reset(self, kind: str, name: str) -> str:
        """Close the breaker now and forget its failures, with CIRCUIT_CLOSED (reason `reset`);
        returns its state before ('closed': nothing was open, nothing written)."""
        reply = self._reset(keys=[self.keys.breaker(kind, name), self.keys.events],
                            args=[self.stream_maxlen, f"{self.clock():.3f}", kind, name])
        return reply.decode() if isinstance(reply, bytes) else reply

    def state(self, kind: str, name: str) -> str:
        return breaker_state(_decode(self.conn.hgetall(self.keys.breaker(kind, name))), self.settings, self.clock())

    def allows(self, kind: str, name: str) -> bool:
        return self.state(kind, name) != OPEN
