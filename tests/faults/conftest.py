"""Fault tests get their own redis-server each (with AOF, so one can be restarted mid-run)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from coordinator.ops.local_redis import LocalRedis
from tests.support.tools import console_script


@pytest.fixture
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis(appendonly=True) as server:
        yield server


@pytest.fixture
def more_orchestrators(tmp_path) -> Iterator:
    """Start further `ringrift-train run` processes on the `service` fixture's config file."""
    procs: list[subprocess.Popen] = []

    def start(consumer: str) -> subprocess.Popen:
        with open(tmp_path / f"service-{consumer}.log", "ab") as log:
            proc = subprocess.Popen(
                [console_script("ringrift-train"), "--config", str(tmp_path / "coordinator.yaml"), "run"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RINGRIFT_CONSUMER": consumer})
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=15)
