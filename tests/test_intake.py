"""The exporters' intake list and its move onto the event stream (coordinator/bus/intake.py), on a real
redis-server (the script decodes JSON with Redis's own cjson)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from coordinator.bus import intake
from coordinator.bus.events import INTAKE_REJECTED
from coordinator.core.keys import Keys
from tests.support.streams import raw_xrange, stream_events
from tests.support.tools import require

KEYS = Keys("ringrift")
MAX_ID = "18446744073709551615-18446744073709551615"


def raw_fields(conn) -> list[list[str]]:
    """Each entry's fields and values in order, repeats kept (XRANGE's raw reply, not a dict)."""
    return [[x.decode() for x in flat] for _id, flat in raw_xrange(conn)]


def test_a_submission_becomes_one_event_with_its_fields_in_order(real_conn):
    intake.publish_export(real_conn, [("board_type", "hex8"), ("num_players", 2), ("npz_path", "/d/a.npz"),
                                      ("samples", "40000"), ("note", "a"), ("note", "b")])
    assert intake.move(real_conn, KEYS) == intake.Moved(1, 0)
    assert raw_fields(real_conn) == [["type", "NPZ_EXPORT_COMPLETE", "board_type", "hex8", "num_players", "2",
                                      "npz_path", "/d/a.npz", "samples", "40000", "note", "a", "note", "b"]]
    assert real_conn.llen(KEYS.intake) == 0
    assert intake.move(real_conn, KEYS) == intake.Moved(0, 0)  # nothing waiting: one empty LPOP


def test_an_object_submission_is_sorted_with_type_first_and_integers_written_plainly(real_conn):
    real_conn.rpush(KEYS.intake, json.dumps({"samples": 40000, "type": "NPZ_EXPORT_COMPLETE",
                                             "config_key": "hex8_2p", "npz_path": "/d/a.npz"}))
    intake.move(real_conn, KEYS)
    assert raw_fields(real_conn) == [["type", "NPZ_EXPORT_COMPLETE", "config_key", "hex8_2p",
                                      "npz_path", "/d/a.npz", "samples", "40000"]]


def test_ids_and_trimming_cannot_be_smuggled_through_a_submission(real_conn):
    """Whatever a submission holds is field/value pairs of an XADD with `*`: MAXLEN, an id or `*`
    in it are just strings, the stream keeps its entries and later auto ids still work."""
    real_conn.xadd(KEYS.events, {"type": "EARLIER", "n": "1"})
    for smuggled in (["MAXLEN", "0", "*", "x"], [MAX_ID, "x"], ["*", "MAXLEN", "0", "y"],
                     ["NOMKSTREAM", "MINID", "99999999999999-0", "z"]):
        intake.submit(real_conn, [(smuggled[i], smuggled[i + 1]) for i in range(0, len(smuggled), 2)], KEYS)
    assert intake.move(real_conn, KEYS) == intake.Moved(4, 0)
    fields = raw_fields(real_conn)
    assert len(fields) == 5 and fields[0] == ["type", "EARLIER", "n", "1"]
    assert fields[1:] == [["MAXLEN", "0", "*", "x"], [MAX_ID, "x"], ["*", "MAXLEN", "0", "y"],
                          ["NOMKSTREAM", "MINID", "99999999999999-0", "z"]]
    assert real_conn.xadd(KEYS.events, {"type": "LATER"})  # an auto id still fits after them


JUNK = {
    b"not json": "not a JSON array or object",
    b'"a string"': "not a JSON array or object",
    b"[]": "no fields",
    b"{}": "no fields",
    b'["type"]': "an odd number of items (1): fields and values go in pairs",
    b'["type", ["nested"]]': "item 2 is not a string or an integer",
    b'["type", null]': "item 2 is not a string or an integer",
    b'["type", 1.5]': "item 2 is not a string or an integer",
    b'{"type": {"a": 1}}': "field type is not a string or an integer",
    json.dumps(["f", "v"] * (intake.MAX_FIELDS + 1)).encode(): f"more than {intake.MAX_FIELDS} fields",
    b'["x", "' + b"y" * intake.SUBMISSION_MAX_BYTES + b'"]': f"larger than {intake.SUBMISSION_MAX_BYTES} bytes",
}


def test_junk_becomes_one_rejected_event_with_its_reason_size_and_hash(real_conn):
    real_conn.rpush(KEYS.intake, *JUNK)
    intake.publish_export(real_conn, {"config_key": "hex8_2p"})  # a good one after the junk still moves
    assert intake.move(real_conn, KEYS) == intake.Moved(1, len(JUNK))
    rejected = stream_events(real_conn, INTAKE_REJECTED)
    assert [e.fields["intake_error"] for e in rejected] == list(JUNK.values())
    for event, payload in zip(rejected, JUNK):
        assert event.fields["intake_bytes"] == str(len(payload))
        assert event.fields["intake_sha1"] == hashlib.sha1(payload).hexdigest()
        assert event.fields["intake_head"].encode() == payload[:intake.REJECTED_HEAD_BYTES]
    assert [e.fields["config_key"] for e in stream_events(real_conn, "NPZ_EXPORT_COMPLETE")] == ["hex8_2p"]


def test_one_move_drains_more_than_a_batch(real_conn):
    real_conn.rpush(KEYS.intake, *(intake.encode({"type": "X", "n": n}) for n in range(1205)))
    assert intake.move(real_conn, KEYS, batch=500) == intake.Moved(1205, 0)
    assert [e.fields["n"] for e in stream_events(real_conn)] == [str(n) for n in range(1205)]


def test_the_consumer_dead_letters_a_rejected_submission_with_its_reason(real_conn, make_settings):
    from coordinator import TrainingOrchestrator

    orch = TrainingOrchestrator(make_settings(), real_conn, consumer_name="t")
    orch.prepare()
    real_conn.rpush(KEYS.intake, b'["type"]')
    intake.move(real_conn, KEYS)
    orch.process_once(block_ms=10)
    [letter] = [(i, f) for i, f in real_conn.xrange(KEYS.dead_letters)]
    assert letter[1][b"type"] == INTAKE_REJECTED.encode()
    assert letter[1][b"intake_error"].startswith(b"an odd number of items")


def test_encode_refuses_an_empty_submission_and_publish_export_sets_the_type():
    with pytest.raises(ValueError):
        intake.encode({})
    with pytest.raises(ValueError):
        intake.publish_export(None, {"type": "OTHER"})  # type: ignore[arg-type]
    assert json.loads(intake.encode({"a": 1, "b": "ü"})) == ["a", "1", "b", "ü"]


def test_the_readmes_shell_command_submits_an_export(real_conn, redis_server):
    """The exporter step of the README, run with redis-cli as written (its JSON spans two lines)."""
    cli = require("redis-cli")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    [payload] = re.findall(r"redis-cli RPUSH ringrift:intake '(.*?)'", readme, re.DOTALL)
    subprocess.run([cli, "-p", str(redis_server.port), "RPUSH", "ringrift:intake", payload], check=True,
                   capture_output=True, timeout=10)
    assert intake.move(real_conn, KEYS) == intake.Moved(1, 0)
    [event] = stream_events(real_conn, "NPZ_EXPORT_COMPLETE")
    assert event.fields == {"type": "NPZ_EXPORT_COMPLETE", "board_type": "hex8", "num_players": "2",
                            "npz_path": "/data/hex8_2p.npz", "samples": "40000"}
