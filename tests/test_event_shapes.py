"""Issue 14 points 4-5 and issue 15 point 6: the coordinator's own event types checked like the
rest, the number rule, repeated fields, exact dead letters, byte caps, RingRift's event shapes."""

from __future__ import annotations

import hashlib
import json

import pytest

from coordinator import TrainingOrchestrator
from coordinator.bus.events import DEAD_VALUE_BYTES, EventConsumer, as_pairs
from coordinator.core.errors import EventError
from tests.support.exports import xadd_export
from tests.support.streams import dead_letters, dead_reasons


def _xadd_pairs(conn, key: str, *parts: str | bytes) -> bytes:
    return conn.execute_command("XADD", key, "*", *parts)


# -- issue 14.4: own event types -------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "reason"), [
    ({"type": "TRAINING_STARTED", "source_event": "junk"}, "source_event must be a stream id"),
    ({"type": "TRAINING_COMPLETE", "duration_s": "nan"}, "duration_s must be"),
    ({"type": "TRAINING_COMPLETE", "duration_s": "inf"}, "duration_s must be"),
    ({"type": "TRAINING_COMPLETE", "duration_s": "soon"}, "duration_s must be a number"),
    ({"type": "TRAINING_PROGRESS", "train_loss": "-inf"}, "train_loss must be"),
    ({"type": "TRAINING_FAILED", "attempt": "٣"}, "attempt must be a number"),
    ({"type": "TRAINING_CANCELLED", "node": "gpu-1\n"}, "is not a valid node"),
    ({"type": "TRAINING_STARTED", "job_id": "a/../b"}, "is not a valid job id"),
    ({"type": "TRAINING_STARTED", "worker": "w\n"}, "is not a valid worker"),
])
def test_own_event_types_with_junk_are_dead_lettered_at_once(orch, fake_conn, keys, fields, reason):
    fake_conn.xadd(keys.events, {"job_id": "hex8_2p-1", "config_key": "hex8_2p", **fields})
    orch.process_once(block_ms=None)  # the metrics observer never sees it: no exception, no retry
    [got] = dead_reasons(fake_conn)
    assert reason in got
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0


def test_valid_own_events_reach_the_metrics(orch, fake_conn, keys):
    source = xadd_export(fake_conn, "hex8_2p", "/d/x.npz", 1)
    fake_conn.xadd(keys.events, {"type": "TRAINING_STARTED", "job_id": "hex8_2p-1", "config_key": "hex8_2p",
                                 "source_event": source, "fence": "", "attempt": "1"})
    fake_conn.xadd(keys.events, {"type": "TRAINING_COMPLETE", "job_id": "hex8_2p-1", "config_key": "hex8_2p",
                                 "duration_s": "12.5", "history": json.dumps([{"epoch": 1, "train_loss": 1.0}])})
    orch.process_once(block_ms=None)
    assert dead_reasons(fake_conn) == []
    assert orch.metrics.duration._sum.get() == 12.5


# -- issue 14.5: limits, number rule, repeats ------------------------------------------------------
def test_a_long_field_name_is_refused_with_the_limit_it_hit(orch, fake_conn, keys):
    fake_conn.xadd(keys.events, {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": "1",
                                 "n" * 300: "1"})
    fake_conn.xadd(keys.events, {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": "1",
                                 "note": "v" * 5000})
    orch.process_once(block_ms=None)
    first, second = dead_reasons(fake_conn)
    assert "longer than 256 bytes (300)" in first and "4096" not in first
    assert "'note' is larger than 4096 bytes (5000)" in second


@pytest.mark.parametrize(("samples", "ok"), [("5.0", True), ("1e3", True), ("40000", True), ("٣", False),
                                             ("1_000", False), (" 5", False), ("5.5", False), ("nan", False)])
def test_samples_follow_the_number_rule(orch, fake_conn, keys, samples, ok):
    xadd_export(fake_conn, "hex8_2p", "/d/x.npz", samples)
    orch.process_once(block_ms=None)
    assert (orch.jobs.active_job("hex8_2p") is not None) == ok
    if not ok:
        assert "samples must be" in dead_reasons(fake_conn)[0]


def test_a_repeated_meaningful_field_is_refused_metadata_may_repeat(orch, fake_conn, keys):
    _xadd_pairs(fake_conn, keys.events, "type", "NPZ_EXPORT_COMPLETE", "config_key", "hex8_2p",
                "npz_path", "/d/a.npz", "npz_path", "/d/b.npz")
    _xadd_pairs(fake_conn, keys.events, "type", "NPZ_EXPORT_COMPLETE", "config_key", "hex8_2p",
                "npz_path", "/d/c.npz", "samples", "40000", "note", "x", "note", "y")
    orch.process_once(block_ms=None)
    assert dead_reasons(fake_conn) == ["field 'npz_path' repeats (which value was meant?)"]
    assert orch.jobs.get(orch.jobs.active_job("hex8_2p"))["npz_path"] == "/d/c.npz"


def test_dead_letters_keep_order_and_repeats_and_replay_exactly(redis_server, real_conn, make_settings):
    orch = TrainingOrchestrator(make_settings(redis_server.url), real_conn, consumer_name="t")
    orch.prepare()
    parts = ["note", "1", "type", "NPZ_EXPORT_COMPLETE", "board_type", "hex9", "note", "2", "num_players", "2",
             "npz_path", "/d/x.npz", "note", "3"]
    _xadd_pairs(real_conn, "ringrift:events", *parts)
    orch.process_once(block_ms=None)
    [(dead_id, _)] = real_conn.xrange("ringrift:events:dead")
    pairs = as_pairs(orch.consumer.raw.xrange("ringrift:events:dead", dead_id, dead_id)[0][1])
    original = [(k.decode(), v.decode()) for k, v in pairs if not k.startswith(b"dead_")]
    assert original == list(zip(parts[::2], parts[1::2]))
    new_id = orch.consumer.replay(dead_id.decode())
    replayed = as_pairs(orch.consumer.raw.xrange("ringrift:events", new_id, new_id)[0][1])
    assert [(k.decode(), v.decode()) for k, v in replayed] == original


def test_big_values_are_cut_in_the_dead_letter_with_size_and_hash(orch, fake_conn, keys):
    big = "x" * 4000
    fake_conn.xadd(keys.events, {"type": "NPZ_EXPORT_COMPLETE", "board_type": "hex9", "num_players": "2",
                                 "npz_path": "/d/x.npz", "note": big})
    orch.process_once(block_ms=None)
    [dead] = dead_letters(fake_conn)
    assert len(dead[b"note"]) == DEAD_VALUE_BYTES
    [cut] = json.loads(dead[b"dead_truncated"])
    assert (cut["field"], cut["bytes"], cut["sha256"]) == ("note", 4000, hashlib.sha256(big.encode()).hexdigest())
    assert fake_conn.xlen(keys.events) == 0  # the oversized original is gone from the event stream
    dead_id = fake_conn.xrange(keys.dead_letters)[0][0].decode()
    with pytest.raises(EventError, match="cannot be replayed exactly"):
        orch.consumer.replay(dead_id)


def test_a_dead_letter_stays_small_whatever_the_event(orch, fake_conn, keys):
    fake_conn.xadd(keys.events, {"type": "NOPE", **{f"f{i}": "v" * 4000 for i in range(60)}})
    orch.process_once(block_ms=None)
    [dead] = dead_letters(fake_conn)
    stored = sum(len(k) + len(v) for k, v in dead.items() if not k.startswith(b"dead_"))
    assert stored <= 4096


def test_the_stream_is_trimmed_by_bytes_too(fake_conn, keys):
    consumer = EventConsumer(fake_conn, keys, "g", "c")
    for i in range(200):
        fake_conn.xadd(keys.events, {"type": "X", "blob": "b" * 1000, "i": str(i)})
    consumer.trim(maxlen=10**6, max_bytes=50_000)
    assert 30 <= fake_conn.xlen(keys.events) <= 60
    consumer.trim(maxlen=10, max_bytes=10**9)
    assert fake_conn.xlen(keys.events) <= 12  # approximate, as Redis trims


# -- issue 15.6: RingRift's event shapes -----------------------------------------------------------
def _statuses(o) -> dict[str, str]:
    return {n["node"]: n["status"] for n in o.leases.nodes()}


@pytest.mark.parametrize("peers", ['["a", "c"]', "a, c", "a c", "a,c"])
def test_alive_peers_as_json_or_comma_space_list(cluster, fake_conn, keys, peers):
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "alive_peers": peers})
    cluster.process_once(block_ms=None)
    assert _statuses(cluster) == {"a": "healthy", "b": "down", "c": "healthy"}
    assert cluster.total_slots() == 5


@pytest.mark.parametrize("peers", ['["a", ', '[1, 2]', '{"a": 1}', "a; c", "a\nc\x00"])
def test_an_unparseable_peer_list_is_dead_lettered_not_taken_as_no_peers(cluster, fake_conn, keys, peers):
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "alive_peers": peers})
    cluster.process_once(block_ms=None)
    assert _statuses(cluster) == {"a": "healthy", "b": "healthy", "c": "healthy"}
    [reason] = dead_reasons(fake_conn)
    assert "alive_peers" in reason


def test_open_nodes_take_nodes_out_of_dispatch_until_a_later_event(cluster, fake_conn, keys):
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "old_state": "closed", "new_state": "open",
                                 "failure_ratio": "0.5", "open_nodes": '["b"]', "is_degraded": "True",
                                 "is_critical": "False"})
    cluster.process_once(block_ms=None)
    assert _statuses(cluster)["b"] == "down" and cluster.total_slots() == 5
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "new_state": "closed", "open_nodes": "c"})
    cluster.process_once(block_ms=None)
    assert _statuses(cluster) == {"a": "healthy", "b": "healthy", "c": "down"}
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "new_state": "closed", "open_nodes": "[]"})
    cluster.process_once(block_ms=None)
    assert _statuses(cluster) == {"a": "healthy", "b": "healthy", "c": "healthy"}
    assert dead_reasons(fake_conn) == []


def test_forms_naming_no_node_are_recorded_not_dead_lettered(cluster, fake_conn, keys):
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "overall_health": "degraded",
                                 "overall_score": "0.62", "quorum_health": "ok", "alive_peers": "3",
                                 "open_circuits": "1", "is_degraded": "true", "is_critical": "false",
                                 "leader_id": "a", "node_id": "c"})
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "score": "0.4", "level": "warning",
                                 "degraded_components": '["gpu"]', "recommended_actions": '["wait"]', "node_id": "a"})
    cluster.process_once(block_ms=None)
    assert dead_reasons(fake_conn) == []
    health = {k.decode(): v.decode() for k, v in fake_conn.hgetall(keys.cluster_health).items()}
    assert (health["overall_health"], health["overall_score"], health["score"], health["level"]) == (
        "degraded", "0.62", "0.4", "warning")
    assert set(_statuses(cluster).values()) == {"healthy"}


def test_curriculum_ignores_metadata_and_names_a_bad_key_or_weight(orch, fake_conn, keys):
    fake_conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", "hex8_2p": "2.0", "updated_at": "2026-12-01",
                                 "source": "curriculum", "generation": "7"})
    fake_conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", "hex8_2p": "1", "hex9_2p": "1"})
    fake_conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", "hex8_2p\n": "1"})
    fake_conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", "square8_2p": "-1"})
    fake_conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", "updated_at": "now"})
    orch.process_once(block_ms=None)
    assert fake_conn.hget(keys.config("hex8_2p"), "curriculum_weight") == b"2.0"
    reasons = dead_reasons(fake_conn)
    assert "unknown board_type 'hex9'" in reasons[0]
    assert "'hex8_2p\\n' is not of the form" in reasons[1]
    assert "weight of square8_2p must be in [0, inf]" in reasons[2]
    assert reasons[3] == "no config weights in CURRICULUM_WEIGHTS_UPDATED"
