"""Issue 15 point 5: every field of every event the coordinator and its workers write is UTF-8
text, so the usual `decode_responses=True` client reads the whole stream."""

from __future__ import annotations

import json

import redis

from coordinator import TrainingOrchestrator
from tests.support.burst import work
from tests.support.jobs import end_job, take_job
from tests.support.trainers import STUB_TRAINER


def test_the_whole_stream_reads_with_decode_responses(redis_server, real_conn, make_settings, npz):
    orch = TrainingOrchestrator(make_settings(redis_server.url, command=STUB_TRAINER), real_conn, consumer_name="t")
    orch.prepare()
    done = orch.submit_training_sync("hex8", 2, str(npz), samples=10)  # a real run: STARTED, PROGRESS, COMPLETE
    work(real_conn)
    assert orch.jobs.get(done)["state"] == "complete"
    failed = orch.submit_training_sync("square8", 2, str(npz), samples=10)
    lease = take_job(orch, failed, "square8_2p")
    end_job(orch.jobs, failed, "square8_2p", state="failed", fence=lease.fence)
    cancelled = orch.submit_training_sync("hex8", 3, str(npz), samples=10)
    orch.jobs.cancel(cancelled)
    for fields in ({"type": "CLUSTER_HEALTH_CHANGED", "node": "node-a", "status": "down"},
                   {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": "1500"}):
        real_conn.xadd(orch.keys.events, fields)
    orch.process_once(block_ms=None)

    text = redis.Redis.from_url(redis_server.url, decode_responses=True)
    entries = text.xrange(orch.keys.events)  # raises UnicodeDecodeError on any binary field
    types = {fields["type"] for _, fields in entries}
    assert {"TRAINING_STARTED", "TRAINING_PROGRESS", "TRAINING_COMPLETE", "TRAINING_FAILED",
            "TRAINING_CANCELLED"} <= types
    [complete] = [f for _, f in entries if f["type"] == "TRAINING_COMPLETE" and f["job_id"] == done]
    assert [h["epoch"] for h in json.loads(complete["history"])] == [1, 2, 3]
    assert "payload" not in complete
    assert real_conn.xlen(orch.keys.dead_letters) == 0  # the coordinator's own events pass its schemas
