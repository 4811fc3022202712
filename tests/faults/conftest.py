"""Fault tests get their own redis-server each (with AOF, so one can be restarted mid-run)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import psutil
import pytest

from coordinator.ops.local_redis import LocalRedis


@pytest.fixture
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis(appendonly=True) as server:
        yield server


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and everything under it, at once (a node losing power)."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in procs]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def more_orchestrators(tmp_path) -> Iterator:
    """Start further `ringrift-train run` processes on the `service` fixture's config file."""
    from tests.conftest import console_script

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
