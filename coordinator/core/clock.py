"""The one clock for stored times: every time written to Redis that is ever compared with another
(a job's created/started/finished, a config's export, wait and block times, when a deferred job
wakes, a lease's expiry) is on the Redis server's `TIME`, read through a `Clock` the components are
built with (`RedisClock`: the server's TIME, carried forward between readings). The
orchestrator's, the workers' and the dashboard's hosts may disagree by seconds or minutes; Redis
is the one thing they share. Scripts take `now` as an argument, so a test replaces the clock
(`ManualClock`) and every component sees the same simulated time.

A clock that is not Redis' (`WallClock`, the host's) is for code with no Redis, such as the
scheduling simulator's pure formulas.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

# A clock is read by calling it: seconds since the epoch. Components take one (a plain function
# such as `lambda: NOW` in a test is a clock too).
Clock = Callable[[], float]
# How often a RedisClock reads the server's TIME again.
RESYNC_S = 30.0


class RedisClock:
    """The Redis server's TIME, read once every `resync_s` and carried forward on this process'
    monotonic clock in between: no round trip per reading, and every process on one timebase (the
    error is half a round trip at the last reading, plus the monotonic clock's drift since: well
    under a millisecond)."""

    def __init__(self, conn: redis.Redis, resync_s: float = RESYNC_S) -> None:
        self.conn = conn
        self.resync_s = resync_s
        self._base: tuple[float, float] | None = None  # (server time, monotonic time) at the last reading

    def now(self) -> float:
        mono = time.monotonic()
        if self._base is None or mono - self._base[1] >= self.resync_s:
            seconds, micros = self.conn.time()
            after = time.monotonic()
            self._base = (seconds + micros / 1_000_000, (mono + after) / 2)  # the reply's middle
            mono = after
        return self._base[0] + (mono - self._base[1])

    def __call__(self) -> float:  # the components that take a plain `() -> float`
        return self.now()


class ManualClock:
    """A clock a test sets and moves."""

    def __init__(self, start: float | None = None) -> None:
        self.at = time.time() if start is None else start

    def now(self) -> float:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += seconds

    def __call__(self) -> float:
        return self.now()


class WallClock:
    """This host's clock, for code that has no Redis."""

    def now(self) -> float:
        return time.time()

    def __call__(self) -> float:
        return self.now()
