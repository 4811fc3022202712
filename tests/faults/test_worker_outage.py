"""The README's node command, `rq worker training --url redis://...` (plain URL, no Sentinel), rides
out a Redis outage during a job that is shorter than the configured retry time
(`coordinator.core.connection.FAILOVER_RETRY_S`): the worker does not quit and the job ends once, trained.

RQ's main loop quits on a Redis error while a job runs (its heartbeats every
`--job-monitoring-interval`); redis-py's default retry gives up after three tries (at most ~14 s).
"""

from __future__ import annotations

import redis

from coordinator.ops.workers_pool import start_worker, stop_workers
from tests.support.exports import xadd_export
from tests.support.polling import wait_for
from tests.support.streams import stream_events
from tests.support.trainers import stub_trainer

OUTAGE_S = 16.0  # past redis-py's default retries, inside FAILOVER_RETRY_S


def test_plain_url_worker_rides_out_a_redis_outage_during_a_job(redis_server, service, tmp_path, npz):
    service(stub_trainer("--epoch-seconds", "1"), epochs=6,
            leases={"ttl_s": 90})  # the lease outlives the outage: the trainer is not stopped
    worker = start_worker(redis_server.url, "outage-worker", "node-0", {"OMP_NUM_THREADS": "1"},
                          extra_args=("--job-monitoring-interval", "1"), log_path=tmp_path / "worker.log")
    conn = redis.Redis.from_url(redis_server.url)
    try:
        xadd_export(conn, "hex8_2p", npz, 100)
        wait_for(lambda: stream_events(conn, "TRAINING_PROGRESS"), timeout_s=60)  # the trainer runs
        redis_server.restart(down_s=OUTAGE_S)
        wait_for(lambda: conn.hget("ringrift:config:hex8_2p", "trained_data_version") == b"1", timeout_s=120,
                 interval_s=0.5)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        completes = stream_events(conn, "TRAINING_COMPLETE")
    finally:
        stop_workers([worker])
        conn.close()
    assert [e.fields["attempt"] for e in completes] == ["1"]  # trained once, by the first attempt
