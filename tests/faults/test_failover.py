"""Redis HA: a primary, a replica and three sentinels on loopback; the primary is SIGKILLed while
jobs start and the orchestrator and both `rq worker` processes (all on the Sentinel URL) carry on
with the new primary: every export ends in one completed training, no job runs twice.

Two things this found: redis-py 8 reconnected a dropped Sentinel connection to the dead primary's
address on every retry (`PrimaryFollowingConnection`), and `rq worker` quit on a Redis error while
a job ran (the failover retry in `workers.rq_settings`).
"""

from __future__ import annotations

import subprocess
import time

import pytest
import redis

from coordinator.core.connection import connect
from coordinator.ops.local_redis import LocalRedis, free_port, redis_server_binary
from coordinator.ops.workers_pool import start_worker, stop_workers
from tests.support.exports import xadd_export
from tests.support.polling import or_none, wait_for
from tests.support.streams import stream_events
from tests.support.trainers import stub_trainer

pytestmark = pytest.mark.integration
MASTER = "mymaster"
FAILING_OVER = redis.RedisError  # what a probe reads as "not yet" while the primary is replaced


@pytest.fixture
def sentinels(redis_server, tmp_path):
    """A replica of `redis_server` and three sentinels watching it; yields the Sentinel URL."""
    replica = LocalRedis(appendonly=True, extra_args=("--replicaof", "127.0.0.1", str(redis_server.port))).start()
    procs, ports = [], [free_port() for _ in range(3)]
    for i, port in enumerate(ports):
        conf = tmp_path / f"sentinel-{i}.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                        f"sentinel monitor {MASTER} 127.0.0.1 {redis_server.port} 2\n"
                        f"sentinel down-after-milliseconds {MASTER} 1000\n"
                        f"sentinel failover-timeout {MASTER} 3000\nsentinel parallel-syncs {MASTER} 1\n")
        with open(tmp_path / f"sentinel-{i}.log", "wb") as log:
            procs.append(subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"], stdout=log,
                                          stderr=subprocess.STDOUT))
    url = f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in ports)}/{MASTER}/0"
    probe = redis.Redis(port=ports[0])
    wait_for(lambda: or_none(lambda: probe.sentinel_slaves(MASTER), FAILING_OVER), timeout_s=20)  # the replica is known
    linked = redis.Redis(port=replica.port)  # the first full sync waits out repl-diskless-sync-delay
    wait_for(lambda: linked.info("replication").get("master_link_status") == "up", timeout_s=30)
    yield url
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)
    replica.stop()


def test_primary_killed_while_jobs_start_everything_still_trains_once(redis_server, sentinels, service, tmp_path,
                                                                      npz):
    service(stub_trainer("--epoch-seconds", "1"), epochs=3,
            redis={"url": sentinels, "prefix": "ringrift"})
    workers = [start_worker(sentinels, f"ha-worker-{i}", f"node-{i}", log_path=tmp_path / f"worker-{i}.log")
               for i in range(2)]
    conn = connect(sentinels)
    configs = ["hex8_2p", "square8_2p", "square19_2p"]
    try:
        for key in configs:
            xadd_export(conn, key, npz, 100)
        wait_for(lambda: conn.hlen("ringrift:training:active") == 3, timeout_s=30)  # jobs queued or starting
        conn.wait(1, 2000)  # what was written so far has reached the replica
        killed = time.time()
        redis_server.proc.kill()
        redis_server.proc.wait()
        probe_id = wait_for(lambda: or_none(lambda: conn.xadd("ringrift:events", {
            "type": "CLUSTER_HEALTH_CHANGED", "alive_peers": "2"}), FAILING_OVER), timeout_s=60)
        wait_for(lambda: or_none(lambda: conn.hget("ringrift:cluster:health", "event_id"), FAILING_OVER) == probe_id,
                 timeout_s=60)
        recovered = time.time() - killed
        for key in configs:  # a second export per config, after the failover
            xadd_export(conn, key, npz, 50)

        def trained():
            return all(or_none(lambda k=k: conn.hget(f"ringrift:config:{k}", "data_version"), FAILING_OVER) ==
                       or_none(lambda k=k: conn.hget(f"ringrift:config:{k}", "trained_data_version"), FAILING_OVER)
                       for k in configs)

        wait_for(trained, timeout_s=120, interval_s=0.5)
        assert [w.poll() for w in workers] == [None, None]  # both workers rode out the failover
    finally:
        stop_workers(workers)
    print(f"\nfailover: first event handled on the new primary {recovered:.1f} s after the SIGKILL")
    completes = [(e.fields["job_id"], e.fields["attempt"]) for e in stream_events(conn, "TRAINING_COMPLETE")]
    assert len(completes) == len({job for job, _ in completes})  # no job completed twice
    assert all(v == b"2" for v in (conn.hget(f"ringrift:config:{k}", "trained_data_version") for k in configs))
