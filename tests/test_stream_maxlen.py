"""`events.stream_maxlen: 0` means the event stream is not trimmed by count: every script that
publishes an event (through `_stream.lua`'s xadd_trimmed) adds it without trimming."""

from __future__ import annotations

from coordinator.core.settings import BreakerSettings
from coordinator.stores.breakers import CircuitBreakers
from tests.conftest import end_job, take_job


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


def test_a_positive_stream_maxlen_still_trims(orch, fake_conn, keys):
    orch.jobs.stream_maxlen = 10
    for i in range(50):
        fake_conn.xadd(keys.events, {"type": "FILLER", "i": i})
    job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    take_job(orch, job_id, "hex8_2p")
    assert fake_conn.xlen(keys.events) <= 10 + 100  # about maxlen (Redis trims whole nodes)


def test_the_periodic_trim_with_maxlen_0_keeps_every_entry_under_the_byte_budget(orch, fake_conn, keys):
    for i in range(300):
        fake_conn.xadd(keys.events, {"type": "FILLER", "i": i})
    assert orch.consumer.trim(0, orch.settings.events.stream_max_bytes) == 0
    assert fake_conn.xlen(keys.events) == 300
    orch.consumer.trim(0, 2_000)  # the byte budget still applies with no count cap
    assert fake_conn.xlen(keys.events) < 300
