"""`events.stream_maxlen`: every script that publishes an event (through `_stream.lua`'s
xadd_trimmed) trims the stream to it, and 0 means not trimmed by count. The positive case runs on a
real redis-server: fakeredis ignores `MAXLEN ~`, so there a wrong or ignored maxlen looks the same."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from coordinator.core.settings import BreakerSettings
from coordinator.service.orchestrator import TrainingOrchestrator
from coordinator.stores.breakers import CircuitBreakers
from tests.support.jobs import end_job, take_job

MAXLEN = 10
NODE_ENTRIES = "stream-node-max-entries"


def test_stream_maxlen_0_trims_nothing_in_any_script(orch, fake_conn, keys):
    orch.jobs.stream_maxlen = 0
    for i in range(50):
        fake_conn.xadd(keys.events, {"type": "FILLER", "i": i})
    first = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    second = orch.submit_training_sync("hex8", 3, "/d/x.npz", samples=10)
    before = fake_conn.xlen(keys.events)
    lease = take_job(orch, first, "hex8_2p")  # job_start.lua: TRAINING_STARTED
    end_job(orch.jobs, first, "hex8_2p", fence=lease.fence)  # job_finish.lua: TRAINING_COMPLETE
    assert orch.jobs.cancel(second) == "cancelled"  # job_cancel.lua: TRAINING_CANCELLED
    CircuitBreakers(fake_conn, keys, BreakerSettings(failures=1), stream_maxlen=0).record(
        "node", "gpu-1", False)  # breaker_record.lua: CIRCUIT_OPENED
    assert fake_conn.xlen(keys.events) == before + 4
    types = [f[b"type"] for _, f in fake_conn.xrange(keys.events)]
    assert types.count(b"FILLER") == 50
    assert types[-4:] == [b"TRAINING_STARTED", b"TRAINING_COMPLETE", b"TRAINING_CANCELLED", b"CIRCUIT_OPENED"]


@pytest.fixture
def one_entry_nodes(real_conn) -> Iterator[None]:
    """Stream nodes of one entry on the real server: `MAXLEN ~ n` then trims to exactly n (Redis
    trims whole nodes only; at its default 100 entries a node, any maxlen under ~100 trims nothing
    here). The server is the session's: its setting is put back."""
    before = real_conn.config_get(NODE_ENTRIES)[NODE_ENTRIES]
    real_conn.config_set(NODE_ENTRIES, 1)
    yield
    real_conn.config_set(NODE_ENTRIES, before)


def test_a_positive_stream_maxlen_trims_in_every_script(redis_server, real_conn, one_entry_nodes, make_settings, keys):
    base = make_settings(redis_server.url)
    settings = replace(base, events=replace(base.events, stream_maxlen=MAXLEN),
                       breakers=replace(base.breakers, failures=1))
    orch = TrainingOrchestrator(settings, real_conn, consumer_name="t")  # the setting, as the service reads it
    orch.prepare()
    for i in range(50):
        real_conn.xadd(keys.events, {"type": "FILLER", "i": i})
    first = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    second = orch.submit_training_sync("hex8", 3, "/d/x.npz", samples=10)
    assert _types(real_conn) == ["FILLER"] * 50  # queueing publishes nothing: the next script trims
    lease = take_job(orch, first, "hex8_2p")
    assert _newest_and_length(real_conn) == ("TRAINING_STARTED", MAXLEN)
    end_job(orch.jobs, first, "hex8_2p", fence=lease.fence)
    assert _newest_and_length(real_conn) == ("TRAINING_COMPLETE", MAXLEN)
    assert orch.jobs.cancel(second) == "cancelled"
    assert _newest_and_length(real_conn) == ("TRAINING_CANCELLED", MAXLEN)
    CircuitBreakers.from_settings(real_conn, keys, settings).record("node", "gpu-1", False)  # as the worker does
    assert _newest_and_length(real_conn) == ("CIRCUIT_OPENED", MAXLEN)


def _types(conn) -> list[str]:
    return [f[b"type"].decode() for _, f in conn.xrange("ringrift:events")]


def _newest_and_length(conn) -> tuple[str, int]:
    return _types(conn)[-1], conn.xlen("ringrift:events")


def test_the_periodic_trim_with_maxlen_0_keeps_every_entry_under_the_byte_budget(orch, fake_conn, keys):
    for i in range(300):
        fake_conn.xadd(keys.events, {"type": "FILLER", "i": i})
    assert orch.consumer.trim(0, orch.settings.events.stream_max_bytes) == 0
    assert fake_conn.xlen(keys.events) == 300
    orch.consumer.trim(0, 2_000)  # the byte budget still applies with no count cap
    assert fake_conn.xlen(keys.events) < 300
