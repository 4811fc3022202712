"""Redis access by role: a real redis-server loaded with deploy/redis/users.acl (rendered)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis

from coordinator.local_redis import LocalRedis
from tests.conftest import stream_events, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parent.parent
PASSWORDS = {"exporter": "ex-pw", "worker": "wk-pw", "coordinator": "co-pw", "viewer": "vw-pw"}


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory):
    acl = tmp_path_factory.mktemp("acl") / "users.acl"
    env = {**os.environ, **{f"{role.upper()}_PASSWORD": pw for role, pw in PASSWORDS.items()}}
    acl.write_text(subprocess.run([str(ROOT / "deploy/redis/render-acl.sh")], env=env, capture_output=True,
                                  text=True, check=True).stdout)
    with LocalRedis(extra_args=("--aclfile", str(acl)), username="coordinator",
                    password=PASSWORDS["coordinator"]) as server:
        yield server


def url(server: LocalRedis, role: str) -> str:
    return f"redis://{role}:{PASSWORDS[role]}@127.0.0.1:{server.port}/0"


def as_role(server: LocalRedis, role: str) -> redis.Redis:
    return redis.Redis.from_url(url(server, role))


# role -> (operation, callable, allowed)
OPERATIONS = {
    "XADD ringrift:events": lambda c: c.xadd("ringrift:events", {"type": "EVALUATION_COMPLETED",
                                                                  "config_key": "hex8_2p", "elo": "1500"}),
    "XRANGE ringrift:events": lambda c: c.xrange("ringrift:events", count=1),
    "HGETALL ringrift:job:x": lambda c: c.hgetall("ringrift:job:x"),
    "HSET ringrift:job:x": lambda c: c.hset("ringrift:job:x", "state", "queued"),
    "RPUSH rq:queue:training (enqueue)": lambda c: c.rpush("rq:queue:training", "forged-job"),
    "SET ringrift:{lease}:train:hex8_2p": lambda c: c.set("ringrift:{lease}:train:hex8_2p", "forged"),
    "SET other:key": lambda c: c.set("other:key", "1"),
    "KEYS *": lambda c: c.keys("*"),
    "CONFIG GET *": lambda c: c.config_get("*"),
    "FLUSHALL": lambda c: c.flushall(),
}
ALLOWED = {
    "exporter": {"XADD ringrift:events"},
    "viewer": {"XRANGE ringrift:events", "HGETALL ringrift:job:x"},
    "worker": {"XADD ringrift:events", "XRANGE ringrift:events", "HGETALL ringrift:job:x", "HSET ringrift:job:x",
               "RPUSH rq:queue:training (enqueue)", "SET ringrift:{lease}:train:hex8_2p"},
}
ALLOWED["coordinator"] = ALLOWED["worker"]


@pytest.mark.parametrize("role", sorted(PASSWORDS))
def test_each_role_is_refused_outside_its_job(acl_server, role):
    conn = as_role(acl_server, role)
    matrix = {}
    for name, operation in OPERATIONS.items():
        try:
            operation(conn)
            matrix[name] = "allowed"
        except redis.exceptions.NoPermissionError:
            matrix[name] = "NOPERM"
    print(f"\n{role}: " + ", ".join(f"{k} -> {v}" for k, v in matrix.items()))
    assert {k for k, v in matrix.items() if v == "allowed"} == ALLOWED[role]
    as_role(acl_server, "coordinator").delete("rq:queue:training", "ringrift:{lease}:train:hex8_2p")


def test_the_default_user_is_off(acl_server):
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=acl_server.port).ping()


def test_roles_run_the_pipeline_end_to_end(acl_server, tmp_path):
    """Exporter XADDs, `ringrift-train run` as coordinator, `rq worker training` as worker."""
    from coordinator.workers_pool import start_worker, stop_workers
    from tests.conftest import console_script

    as_role(acl_server, "coordinator").delete("ringrift:events")
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"stub")
    config = tmp_path / "c.yaml"
    config.write_text(f"training:\n  command: ['{{python}}', '-m', 'workers.stub_train']\n  check_npz: false\n"
                      f"  models_root: {tmp_path / 'models'}\n  default_epochs: 2\nevents:\n  block_ms: 100\n")
    env = {**os.environ, "REDIS_URL": url(acl_server, "coordinator")}
    with open(tmp_path / "service.log", "wb") as log:
        service = subprocess.Popen([console_script("ringrift-train"), "--config", str(config), "run"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    worker = start_worker(url(acl_server, "worker"), "acl-worker", "node-0", log_path=tmp_path / "worker.log")
    try:
        as_role(acl_server, "exporter").xadd("ringrift:events", {
            "type": "NPZ_EXPORT_COMPLETE", "config_key": "hex8_2p", "npz_path": str(npz), "samples": "10"})
        viewer = as_role(acl_server, "viewer")
        [done] = wait_for(lambda: stream_events(viewer, "TRAINING_COMPLETE"), timeout_s=60)
        assert done.fields["config_key"] == "hex8_2p"
    finally:
        stop_workers([worker])
        service.terminate()
        service.wait(timeout=15)
    for log in ("service.log", "worker.log"):
        assert "NOPERM" not in (tmp_path / log).read_text(), (tmp_path / log).read_text()[-2000:]
