import msgpack
import pytest

from coordinator.bus.events import (
    NPZ_EXPORT_COMPLETE,
    TRAINING_COMPLETE,
    EventConsumer,
    decode_entry,
    publish,
)
from coordinator.bus.schemas import parse_export
from coordinator.core.errors import EventError
from tests.support.streams import dead_letters


def _event(**fields):
    return decode_entry(b"1-0", {k.encode(): str(v).encode() for k, v in fields.items()})


def test_plain_export_fields_are_parsed():
    export = parse_export(_event(type=NPZ_EXPORT_COMPLETE, board_type="hex8", num_players=2,
                                 npz_path="/data/hex8_2p.npz", samples=40000))
    assert (export.config_key, export.board_type, export.num_players) == ("hex8_2p", "hex8", 2)
    assert (export.npz_path, export.samples) == ("/data/hex8_2p.npz", 40000)


@pytest.mark.parametrize("config_field", ["config_key", "config"])
def test_ringrift_producer_variants_are_accepted(config_field):
    export = parse_export(_event(type=NPZ_EXPORT_COMPLETE, **{config_field: "square19_4p"},
                                 output_path="/d/sq.npz", samples_exported=123))
    assert (export.board_type, export.num_players, export.npz_path, export.samples) == ("square19", 4, "/d/sq.npz", 123)


def test_training_completed_alias_maps_to_one_type():
    assert _event(type="TRAINING_COMPLETED").type == TRAINING_COMPLETE


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"board_type": "hex9", "num_players": 2, "npz_path": "/x"}, "unknown board_type"),
        ({"board_type": "hex8", "num_players": 5, "npz_path": "/x"}, "num_players must be 2..4"),
        ({"board_type": "hex8", "num_players": "two", "npz_path": "/x"}, "num_players must be a number"),
        ({"board_type": "hex8", "num_players": 2}, "missing field: one of npz_path, output_path"),
        ({"npz_path": "/x"}, "missing field: one of config_key, config, board_type"),
        ({"board_type": "hex8", "npz_path": "/x"}, r"missing board_type\+num_players \(or config_key\)"),
        ({"config_key": "hex8-2p", "npz_path": "/x"}, "not of the form"),
        ({"config_key": "hex8_3p", "board_type": "hex8", "num_players": 2, "npz_path": "/x"}, "disagrees"),
        ({"board_type": "hex8; rm -rf /", "num_players": 2, "npz_path": "/x"}, "unknown board_type"),
    ],
)
def test_bad_exports_raise_with_the_reason(fields, reason):
    with pytest.raises(EventError, match=reason):
        parse_export(_event(type=NPZ_EXPORT_COMPLETE, **fields))


def test_publish_writes_text_fields_and_nested_data_as_json(fake_conn, keys):
    publish(fake_conn, keys, TRAINING_COMPLETE, {"job_id": "j1", "final_loss": 0.5, "skip": None,
                                                 "first_loss": float("nan")},
            payload={"history": [{"epoch": 1, "val_loss": float("inf")}, {"epoch": 2}]}, maxlen=0)
    [(entry_id, raw)] = fake_conn.xrange(keys.events)
    assert raw[b"type"] == b"TRAINING_COMPLETE" and raw[b"job_id"] == b"j1" and raw[b"final_loss"] == b"0.5"
    assert b"skip" not in raw and b"first_loss" not in raw and b"payload" not in raw
    assert raw[b"history"] == b'[{"epoch":1,"val_loss":null},{"epoch":2}]'
    assert decode_entry(entry_id, raw).payload == {"history": [{"epoch": 1, "val_loss": None}, {"epoch": 2}]}


def test_a_producers_msgpack_payload_is_still_read(fake_conn, keys):
    entry_id = fake_conn.xadd(keys.events, {"type": "TRAINING_COMPLETE", "payload": msgpack.packb({"history": [1]})})
    [(_, raw)] = fake_conn.xrange(keys.events)
    assert decode_entry(entry_id, raw).payload == {"history": [1]}


def test_dead_letter_keeps_fields_and_reason_and_acks(fake_conn, keys):
    consumer = EventConsumer(fake_conn, keys, "g", "c1")
    consumer.ensure_group()
    consumer.ensure_group()  # idempotent
    fake_conn.xadd(keys.events, {"type": "NPZ_EXPORT_COMPLETE", "board_type": "hex9"})
    [event] = consumer.read(10, None)
    consumer.dead_letter(event, "unknown board_type 'hex9'")
    [dead] = dead_letters(fake_conn)
    assert dead[b"board_type"] == b"hex9"
    assert dead[b"dead_reason"] == b"unknown board_type 'hex9'"
    assert dead[b"dead_original_id"] == event.id.encode()
    assert fake_conn.xpending(keys.events, "g")["pending"] == 0


def test_reclaim_takes_over_entries_of_a_dead_consumer(fake_conn, keys):
    dead = EventConsumer(fake_conn, keys, "g", "dead")
    dead.ensure_group()
    fake_conn.xadd(keys.events, {"type": "NPZ_EXPORT_COMPLETE"})
    assert len(dead.read(10, None)) == 1  # delivered, never acked
    alive = EventConsumer(fake_conn, keys, "g", "alive")
    assert alive.read(10, None) == []
    [event] = alive.reclaim(min_idle_ms=0, count=10)
    assert event.type == NPZ_EXPORT_COMPLETE
    alive.ack([event.id])
    assert fake_conn.xpending(keys.events, "g")["pending"] == 0


def test_events_view_shows_the_json_history_once_and_a_msgpack_payload():
    from coordinator.ops.event_tail import line

    text = line(decode_entry(b"1700000000000-0", {b"type": b"TRAINING_COMPLETE", b"history": b'[{"epoch":1}]'}))
    assert text.count("epoch") == 1 and "payload=" not in text
    text = line(decode_entry(b"1700000000000-0", {b"type": b"X", b"payload": msgpack.packb({"history": [1]})}))
    assert 'payload={"history": [1]}' in text
