"""Reading the event stream and the dead-letter stream of the tests' prefix (`ringrift`)."""

from __future__ import annotations

import redis

from coordinator.bus.events import Event, decode_entry
from coordinator.core.keys import Keys

KEYS = Keys("ringrift")  # the prefix of the test settings and of the service fixture's YAML


def stream_events(conn: redis.Redis, event_type: str | None = None) -> list[Event]:
    """Every event on the stream, oldest first; only those of `event_type` when given."""
    events = [decode_entry(i, f) for i, f in conn.xrange(KEYS.events)]
    return [e for e in events if event_type is None or e.type == event_type]


def dead_letters(conn: redis.Redis) -> list[dict[bytes, bytes]]:
    """Each dead letter's fields, oldest first."""
    return [fields for _, fields in conn.xrange(KEYS.dead_letters)]


def dead_reasons(conn: redis.Redis) -> list[str]:
    """Why each entry was dead-lettered, oldest first."""
    return [fields[b"dead_reason"].decode() for fields in dead_letters(conn)]


def raw_xrange(conn: redis.Redis) -> list[tuple[bytes, list[bytes]]]:
    """The event stream as Redis sends it: each entry's id and its fields and values in order, a
    repeated name kept (redis-py folds the pairs into a dict, which drops repeats)."""
    raw = redis.Redis(connection_pool=conn.connection_pool)
    raw.set_response_callback("XRANGE", lambda reply, **_options: reply)
    return [(entry_id, list(flat)) for entry_id, flat in raw.xrange(KEYS.events)]
