"""The event bus: one Redis stream of pipeline events, read through consumer groups.

Every field people or exporters need is a plain string field, so
`redis-cli XADD ringrift:events '*' type NPZ_EXPORT_COMPLETE board_type hex8 num_players 2
npz_path /data/hex8_2p.npz samples 40000` is a valid event. Nested data (metrics, history) may
travel msgpack-encoded in one `payload` field.

Delivery is at-least-once: a consumer acknowledges an entry only after its effects are stored,
takes over entries left pending by a dead consumer (XAUTOCLAIM), and moves an entry it cannot
handle to the dead-letter stream with the reason and the original fields, then acknowledges it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
import redis

from coordinator.boards import make_config_key, parse_config_key
from coordinator.errors import EventError
from coordinator.keys import Keys

NPZ_EXPORT_COMPLETE = "NPZ_EXPORT_COMPLETE"
TRAINING_BLOCKED_BY_QUALITY = "TRAINING_BLOCKED_BY_QUALITY"
CLUSTER_HEALTH_CHANGED = "CLUSTER_HEALTH_CHANGED"
TRAINING_STARTED = "TRAINING_STARTED"
TRAINING_PROGRESS = "TRAINING_PROGRESS"
TRAINING_COMPLETE = "TRAINING_COMPLETE"
TRAINING_FAILED = "TRAINING_FAILED"
TRAINING_CANCELLED = "TRAINING_CANCELLED"
CIRCUIT_OPENED = "CIRCUIT_OPENED"
CIRCUIT_CLOSED = "CIRCUIT_CLOSED"
# Produced by other parts of the pipeline; valid on the bus, consumed by later features.
EVALUATION_COMPLETED = "EVALUATION_COMPLETED"
CURRICULUM_WEIGHTS_UPDATED = "CURRICULUM_WEIGHTS_UPDATED"

KNOWN_TYPES = frozenset({
    NPZ_EXPORT_COMPLETE, TRAINING_BLOCKED_BY_QUALITY, CLUSTER_HEALTH_CHANGED, TRAINING_STARTED,
    TRAINING_PROGRESS, TRAINING_COMPLETE, TRAINING_FAILED, TRAINING_CANCELLED, EVALUATION_COMPLETED,
    CURRICULUM_WEIGHTS_UPDATED, CIRCUIT_OPENED, CIRCUIT_CLOSED,
})
# Names RingRift's own producers use for the same things.
TYPE_ALIASES = {"TRAINING_COMPLETED": TRAINING_COMPLETE}
PAYLOAD_FIELD = "payload"


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    fields: dict[str, str]
    payload: Any = None
    raw: dict[bytes, bytes] = field(default_factory=dict, repr=False)
    deliveries: int = 1  # how often the group delivered it (known for reclaimed entries)


@dataclass(frozen=True)
class Export:
    """An NPZ_EXPORT_COMPLETE event, normalised across producer variants."""

    board_type: str
    num_players: int
    config_key: str
    npz_path: str
    samples: int


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def decode_entry(entry_id: bytes | str, raw: Mapping[bytes, bytes]) -> Event:
    """Turn one stream entry into an Event; the type's known aliases are mapped to one name."""
    fields: dict[str, str] = {}
    payload: Any = None
    for key, value in raw.items():
        name = _text(key)
        if name == PAYLOAD_FIELD:
            try:
                payload = msgpack.unpackb(value, raw=False)
            except Exception:  # noqa: BLE001 - msgpack raises several types on junk; schemas reject it
                fields[name] = _text(value)  # a producer sent plain text: keep it readable
        else:
            fields[name] = _text(value)
    event_type = fields.get("type", "")
    event_type = TYPE_ALIASES.get(event_type, event_type)
    return Event(id=_text(entry_id), type=event_type, fields=fields, payload=payload, raw=dict(raw))


def encode_fields(event_type: str, fields: Mapping[str, Any], payload: Any = None) -> dict[str, str | bytes]:
    """Stream fields for an event: plain strings, plus msgpack `payload` when given."""
    encoded: dict[str, str | bytes] = {"type": event_type}
    for key, value in fields.items():
        if value is not None:
            encoded[key] = _format(value)
    if payload is not None:
        encoded[PAYLOAD_FIELD] = msgpack.packb(payload, use_bin_type=True)
    return encoded


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(round(value, 6)) if math.isfinite(value) else str(value)
    return str(value)


def publish(
    conn: redis.Redis | redis.client.Pipeline,
    keys: Keys,
    event_type: str,
    fields: Mapping[str, Any],
    payload: Any = None,
    maxlen: int = 100_000,
) -> Any:
    """XADD one event (trimmed approximately to `maxlen`); on a pipeline it is only queued."""
    kwargs = {"maxlen": maxlen, "approximate": True} if maxlen else {}
    return conn.xadd(keys.events, encode_fields(event_type, fields, payload), **kwargs)


def config_of(fields: Mapping[str, str]) -> tuple[str, int, str]:
    """(board type, players, config key) from `board_type`+`num_players` or `config_key`/`config`,
    validated; the two forms must agree when both are given."""
    config = fields.get("config_key") or fields.get("config")
    if fields.get("board_type") and fields.get("num_players"):
        board_type = fields["board_type"]
        num_players = _parse_int(fields["num_players"], "num_players")
        key = make_config_key(board_type, num_players)
        if config and config != key:
            raise EventError(f"config_key {config!r} disagrees with board_type/num_players ({key})")
        return board_type, num_players, key
    if config:
        board_type, num_players = parse_config_key(config)
        return board_type, num_players, config
    raise EventError("missing board_type+num_players (or config_key)")


def parse_export(event: Event) -> Export:
    """Read an export event, accepting `config_key`/`config`, `output_path` and `samples_exported`."""
    f = event.fields
    board_type, num_players, key = config_of(f)
    npz_path = f.get("npz_path") or f.get("output_path")
    if not npz_path:
        raise EventError("missing npz_path (or output_path)")
    samples = _parse_int(f.get("samples") or f.get("samples_exported") or "0", "samples")
    if samples < 0:
        raise EventError(f"samples must be >= 0, got {samples}")
    return Export(board_type, num_players, key, npz_path, samples)


def _parse_int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise EventError(f"{name} must be an integer, got {text!r}") from None


class EventConsumer:
    """One member of a consumer group on the event stream."""

    def __init__(self, conn: redis.Redis, keys: Keys, group: str, consumer: str) -> None:
        self.conn = conn
        self.keys = keys
        self.group = group
        self.consumer = consumer

    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; a new group starts at the stream's start."""
        try:
            self.conn.xgroup_create(self.keys.events, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int, block_ms: int | None) -> list[Event]:
        """New entries for this group, waiting up to `block_ms` when there are none."""
        reply = self.conn.xreadgroup(self.group, self.consumer, {self.keys.events: ">"}, count=count, block=block_ms)
        return self._decode(reply)

    def read_own_pending(self, count: int) -> list[Event]:
        """Entries delivered to this consumer name earlier and never acknowledged (e.g. before a crash)."""
        reply = self.conn.xreadgroup(self.group, self.consumer, {self.keys.events: "0"}, count=count)
        return self._decode(reply)

    def reclaim(self, min_idle_ms: int, count: int) -> list[Event]:
        """Take over entries other consumers left pending for at least `min_idle_ms`."""
        reply = self.conn.xautoclaim(
            self.keys.events, self.group, self.consumer, min_idle_ms, start_id="0-0", count=count
        )
        # Redis 7 adds a third element (ids trimmed away); 6.2 replies with two.
        events = [decode_entry(entry_id, raw) for entry_id, raw in reply[1] if raw is not None]
        if not events:
            return []
        pending = self.conn.xpending_range(self.keys.events, self.group, min=events[0].id, max=events[-1].id,
                                           count=len(events) * 2, consumername=self.consumer)
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [replace(e, deliveries=counts.get(e.id, 1)) for e in events]

    def ack(self, ids: list[str], pipeline: redis.client.Pipeline | None = None) -> None:
        if ids:
            (pipeline or self.conn).xack(self.keys.events, self.group, *ids)

    def dead_letters(self, count: int = 100) -> list[Event]:
        """The newest dead letters, newest first."""
        return [decode_entry(i, raw) for i, raw in self.conn.xrevrange(self.keys.dead_letters, count=count)]

    def replay(self, dead_id: str) -> str:
        """Put a dead letter's original fields back on the event stream (after a fix); returns the
        new entry's id. The dead letter is removed, in the same transaction."""
        entries = self.conn.xrange(self.keys.dead_letters, dead_id, dead_id)
        if not entries:
            raise EventError(f"no dead letter {dead_id}")
        original = {k: v for k, v in entries[0][1].items() if not k.startswith(b"dead_")}
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.events, original)
            pipe.xdel(self.keys.dead_letters, dead_id)
            new_id, _ = pipe.execute()
        return _text(new_id)

    def dead_letter(self, event: Event, reason: str) -> None:
        """Copy the event with its reason to the dead-letter stream and acknowledge it, atomically."""
        self.dead_letter_many([(event, reason)])

    def dead_letter_many(self, letters: list[tuple[Event, str]]) -> None:
        """`dead_letter` for several events in one transaction."""
        if not letters:
            return
        now = f"{time.time():.3f}"
        with self.conn.pipeline(transaction=True) as pipe:
            for event, reason in letters:
                fields: dict[bytes | str, bytes | str] = dict(event.raw)
                fields.update({"dead_reason": reason, "dead_original_id": event.id, "dead_group": self.group,
                               "dead_at": now})
                pipe.xadd(self.keys.dead_letters, fields, maxlen=100_000, approximate=True)
            pipe.xack(self.keys.events, self.group, *(event.id for event, _ in letters))
            pipe.execute()

    def trim(self, maxlen: int) -> int:
        return self.conn.xtrim(self.keys.events, maxlen=maxlen, approximate=True)

    @staticmethod
    def _decode(reply: Any) -> list[Event]:
        events: list[Event] = []
        for _stream, entries in reply or []:
            events.extend(decode_entry(entry_id, raw) for entry_id, raw in entries if raw is not None)
        return events
