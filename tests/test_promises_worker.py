"""README promises that need a real redis-server (and a real `rq worker` process) to check (issue 23):
a worker paused past its lease TTL, and the dead-letter stream's cap (fakeredis ignores an approximate
MAXLEN). The other promises' tests are in test_promises.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from coordinator import TrainingOrchestrator
from coordinator.bus.events import EventConsumer, decode_entry
from coordinator.core.keys import Keys
from tests.support.polling import wait_for
from tests.support.processes import alive
from tests.support.signal_trainer import PID_FILE, STARTED_FILE, received
from tests.support.streams import stream_events
from tests.support.trainers import SIGNAL_TRAINER

pytestmark = pytest.mark.integration


def test_a_worker_paused_past_its_ttl_sigkills_its_trainer_and_reports_lease_lost(
        redis_server, real_conn, rq_workers, make_settings, npz):
    """README "Training slots": "If renewal fails (... no renewal for 90% of the TTL: ... the worker
    paused) the worker kills the trainer at once (SIGKILL ...) and reports TRAINING_FAILED with reason
    lease_lost". The work horse is SIGSTOPped until its lease has expired in Redis, then continued.
    No orchestrator runs, so no reaper gets there first. The trainer ignores SIGTERM and the grace is
    a minute: only a SIGKILL ends it within the test's wait."""
    settings = make_settings(redis_url=redis_server.url, command=SIGNAL_TRAINER)
    settings = replace(settings, leases=replace(settings.leases, ttl_s=1.5),
                       training=replace(settings.training, kill_grace_s=60.0))
    orch = TrainingOrchestrator(settings, real_conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=10)
    rq_workers(1)
    out = Path(orch.jobs.get(job_id)["output_dir"]) / "attempt-1"
    wait_for(lambda: (out / STARTED_FILE).exists(), timeout_s=30)
    trainer = psutil.Process(int((out / PID_FILE).read_text()))
    horse = trainer.parent()  # the work horse runs the trainer and renews the lease
    horse.suspend()  # SIGSTOP
    try:
        wait_for(lambda: not real_conn.exists(orch.keys.lease("hex8_2p")), timeout_s=10)  # past its TTL
        assert trainer.is_running() and received(out) == []  # nothing stopped the trainer meanwhile
    finally:
        horse.resume()  # SIGCONT
    [failed] = wait_for(lambda: stream_events(real_conn, "TRAINING_FAILED"), timeout_s=15)
    assert failed.fields["reason"] == "lease_lost"
    assert (failed.fields["failure_class"], failed.fields["will_retry"]) == ("infrastructure", "true")
    assert received(out) == []  # no SIGTERM first: killed at once
    wait_for(lambda: not alive(trainer.pid), timeout_s=5)
    assert orch.jobs.get(job_id)["state"] == "retrying"


def test_the_dead_letter_stream_is_capped_at_ten_thousand_entries(real_conn):
    """README "Stream sizes": "the dead-letter stream keeps 10,000 letters": the newest, trimmed with
    `MAXLEN ~` (Redis drops whole nodes of `stream-node-max-entries`: never fewer than 10,000, fewer
    than one node more)."""
    keys = Keys("ringrift")
    consumer = EventConsumer(real_conn, keys, "orchestrator", "t")
    consumer.ensure_group()
    node_entries = int(real_conn.config_get("stream-node-max-entries")["stream-node-max-entries"])
    sent = 10_000 + 5 * node_entries
    for start in range(0, sent, 1000):  # in batches, as the consumer writes them
        consumer.dead_letter_many([(decode_entry(f"1-{n}", {b"type": b"BOGUS", b"n": str(n).encode()}), "bad")
                                   for n in range(start, min(start + 1000, sent))])
    length = real_conn.xlen(keys.dead_letters)
    assert 10_000 <= length < 10_000 + node_entries
    [(_, newest)] = real_conn.xrevrange(keys.dead_letters, count=1)
    assert newest[b"dead_original_id"] == f"1-{sent - 1}".encode()  # the oldest went first
