"""The one clock (coordinator/core/clock.py): the Redis server's time, one TIME per resync interval."""

from __future__ import annotations

import time

import pytest

from coordinator.core import clock as clock_module
from coordinator.core.clock import ManualClock, RedisClock


class ServerAhead:
    """A connection whose server clock runs `ahead_s` ahead of this host's; counts TIME calls."""

    def __init__(self, ahead_s: float) -> None:
        self.ahead_s = ahead_s
        self.calls = 0

    def time(self) -> tuple[int, int]:
        self.calls += 1
        now = time.time() + self.ahead_s
        return int(now), int(now % 1 * 1_000_000)


def test_it_is_the_servers_clock_not_this_hosts() -> None:
    conn = ServerAhead(3600.0)
    assert RedisClock(conn)() == pytest.approx(time.time() + 3600.0, abs=0.05)


def test_it_reads_time_once_per_resync_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    conn, mono = ServerAhead(0.0), [1000.0]
    monkeypatch.setattr(clock_module.time, "monotonic", lambda: mono[0])
    clock = RedisClock(conn, resync_s=30.0)
    first = clock()
    mono[0] += 10.0
    assert clock() == pytest.approx(first + 10.0) and conn.calls == 1  # carried forward, no round trip
    mono[0] += 25.0
    clock()
    assert conn.calls == 2  # 35 s after the first reading: read again


def test_a_fake_redis_clock_and_a_manual_one(fake_conn) -> None:
    clock = RedisClock(fake_conn)
    readings = [clock() for _ in range(3)]
    assert readings == sorted(readings) and readings[0] == pytest.approx(time.time(), abs=0.5)
    manual = ManualClock(100.0)
    manual.advance(5.0)
    assert manual() == 105.0
