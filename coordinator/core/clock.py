"""The one clock for stored times: every time written to Redis that is ever compared with another
(a job's created/started/finished, a config's export, wait and block times, when a deferred job
wakes, a lease's expiry) is the Redis server's `TIME`, read through a `Clock` the components are
built with. The orchestrator's, the workers' and the dashboard's hosts may disagree by seconds or
minutes; Redis is the one thing they share. Scripts take `now` as an argument, so a test replaces
the clock (`ManualClock`) and every component sees the same simulated time.

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


class RedisClock:
    """The Redis server's TIME: one round trip a reading."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    def now(self) -> float:
        seconds, micros = self.conn.time()
        return seconds + micros / 1_000_000

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
