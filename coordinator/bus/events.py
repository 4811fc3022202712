"""The event bus: one Redis stream of pipeline events, read through consumer groups.

Every field people or exporters need is a plain string field, so
`redis-cli XADD ringrift:events '*' type NPZ_EXPORT_COMPLETE board_type hex8 num_players 2
npz_path /data/hex8_2p.npz samples 40000` is a valid event. Every field the coordinator and its
workers write is UTF-8 text; nested data (the per-epoch history) is JSON text in a named field
(`history`). A msgpack `payload` field from other producers is still read.

Delivery is at-least-once: a consumer acknowledges an entry only after its effects are stored,
takes over entries left pending by a dead consumer (XAUTOCLAIM), and moves an entry it cannot
handle to the dead-letter stream with the reason and the original fields, then acknowledges it.

Entries are read as Redis sent them (field order and repeated names kept in `Event.pairs`), so a
dead letter holds the event exactly and `replay` puts back the same event. A dead letter keeps at
most DEAD_VALUE_BYTES of each value and DEAD_ENTRY_BYTES in all; what it cut is listed in its
`dead_truncated` field (JSON: field index, name, size, sha256), and such a letter cannot be
replayed; the oversized original is deleted from the event stream (no consumer can take it). Both
streams are capped by count, the event stream also by an approximate byte budget (`trim`).

This module only moves entries; it checks nothing. Whether an entry is a valid event, and the typed
value it carries (an `Export`), is decided in one place, `coordinator/bus/schemas.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
import redis

from coordinator.core.errors import EventError
from coordinator.core.keys import Keys
from coordinator.core.text import text as _text

NPZ_EXPORT_COMPLETE = "NPZ_EXPORT_COMPLETE"
TRAINING_BLOCKED_BY_QUALITY = "TRAINING_BLOCKED_BY_QUALITY"
CLUSTER_HEALTH_CHANGED = "CLUSTER_HEALTH_CHANGED"
TRAINING_STARTED = "TRAINING_STARTED"
TRAINING_PROGRESS = "TRAINING_PROGRESS"
TRAINING_COMPLETE = "TRAINING_COMPLETE"
TRAINING_FAILED = "TRAINING_FAILED"
TRAINING_CANCELLED = "TRAINING_CANCELLED"
# A running training yielded its GPU at a checkpoint for a more urgent config (coordinator/scheduling/preempter.py).
TRAINING_PREEMPTED = "TRAINING_PREEMPTED"
CIRCUIT_OPENED = "CIRCUIT_OPENED"
CIRCUIT_CLOSED = "CIRCUIT_CLOSED"
# Produced by other parts of the pipeline; valid on the bus, consumed by later features.
EVALUATION_COMPLETED = "EVALUATION_COMPLETED"
CURRICULUM_WEIGHTS_UPDATED = "CURRICULUM_WEIGHTS_UPDATED"
# What intake_move.lua puts on the stream for an exporter's submission it could not read: always
# dead-lettered, with its `intake_error` as the reason.
INTAKE_REJECTED = "INTAKE_REJECTED"

KNOWN_TYPES = frozenset({
    NPZ_EXPORT_COMPLETE, TRAINING_BLOCKED_BY_QUALITY, CLUSTER_HEALTH_CHANGED, TRAINING_STARTED,
    TRAINING_PROGRESS, TRAINING_COMPLETE, TRAINING_FAILED, TRAINING_CANCELLED, TRAINING_PREEMPTED,
    EVALUATION_COMPLETED,
    CURRICULUM_WEIGHTS_UPDATED, CIRCUIT_OPENED, CIRCUIT_CLOSED, INTAKE_REJECTED,
})
# Names RingRift's own producers use for the same things.
TYPE_ALIASES = {"TRAINING_COMPLETED": TRAINING_COMPLETE}
PAYLOAD_FIELD = "payload"
JSON_FIELDS = ("history",)  # nested data the coordinator writes, as JSON text; read into Event.payload
DEAD_PREFIX = b"dead_"
DEAD_VALUE_BYTES = 512  # of each value kept in a dead letter
DEAD_ENTRY_BYTES = 4096  # of names and values kept in a dead letter, its own fields aside
DEAD_LETTERS_MAXLEN = 10_000  # entries; with DEAD_ENTRY_BYTES, at most ~45 MiB of dead letters
TRIM_SAMPLE = 200  # newest entries whose size estimates the average entry
Pairs = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    fields: dict[str, str]
    payload: Any = None
    raw: dict[bytes, bytes] = field(default_factory=dict, repr=False)  # the last value of each name
    deliveries: int = 1  # how often the group delivered it (known for reclaimed entries)
    pairs: Pairs = field(default=(), repr=False)  # every field as sent, in order, repeats included

    def repeated(self) -> set[str]:
        """Field names that occur more than once."""
        counts = Counter(name for name, _ in self.pairs)
        return {_text(name) for name, n in counts.items() if n > 1}


@dataclass(frozen=True)
class Export:
    """An NPZ_EXPORT_COMPLETE event, normalised across producer variants (`schemas.parse_export`)."""

    board_type: str
    num_players: int
    config_key: str
    npz_path: str
    samples: int


@dataclass(frozen=True)
class Evaluation:
    """An EVALUATION_COMPLETED, normalised across RingRift's emitters (`schemas.parse_evaluation`)."""

    config_key: str
    elo: float  # recorded in the config's Elo window
    anchored_elo: float | None  # `estimated_elo`/`best_elo`: the Elo against fixed-rating baselines
    at: float | None  # epoch seconds; None: not given, or local time of unknown zone
    model_path: str | None  # as sent: absolute, or relative to the evaluator's working directory


def as_pairs(raw: Mapping[bytes, bytes] | list[bytes] | Pairs) -> Pairs:
    """An entry's fields as (name, value) pairs, from redis-py's dict or Redis's flat list."""
    if isinstance(raw, Mapping):
        return tuple((_bytes(k), _bytes(v)) for k, v in raw.items())
    if raw and not isinstance(raw[0], (tuple, list)):
        return tuple((_bytes(raw[i]), _bytes(raw[i + 1])) for i in range(0, len(raw) - 1, 2))
    return tuple((_bytes(k), _bytes(v)) for k, v in raw)


def _bytes(value: bytes | str | int) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def decode_entry(entry_id: bytes | str, raw: Mapping[bytes, bytes] | list[bytes] | Pairs) -> Event:
    """Turn one stream entry into an Event; the type's known aliases are mapped to one name."""
    pairs = as_pairs(raw)
    last = dict(pairs)
    fields: dict[str, str] = {}
    payload: Any = None
    for key, value in last.items():
        name = _text(key)
        if name == PAYLOAD_FIELD:
            try:
                payload = msgpack.unpackb(value, raw=False)
            except Exception:  # noqa: BLE001 - msgpack raises several types on junk; schemas reject it
                fields[name] = _text(value)  # a producer sent plain text: keep it readable
        else:
            fields[name] = _text(value)
    if payload is None:
        payload = _json_fields(fields)
    event_type = fields.get("type", "")
    event_type = TYPE_ALIASES.get(event_type, event_type)
    return Event(id=_text(entry_id), type=event_type, fields=fields, payload=payload, raw=last, pairs=pairs)


def _json_fields(fields: Mapping[str, str]) -> dict[str, Any] | None:
    """The JSON_FIELDS present, decoded (a field that is not JSON is left out: schemas refuse it)."""
    nested = {}
    for name in JSON_FIELDS:
        if name in fields:
            try:
                nested[name] = json.loads(fields[name])
            except ValueError:
                continue
    return nested or None


def encode_fields(event_type: str, fields: Mapping[str, Any], payload: Mapping[str, Any] | None = None
                  ) -> dict[str, str]:
    """Stream fields for an event, every one UTF-8 text (readable with `decode_responses=True` and
    redis-cli): numbers and strings as text, lists and mappings as JSON text. `payload` is nested
    data: each of its entries becomes a field of its own name (`{"history": [...]}` -> a JSON
    `history` field). A non-finite number is left out: it is no figure (schemas.py refuses it)."""
    encoded: dict[str, str] = {"type": event_type}
    for key, value in {**fields, **(payload or {})}.items():
        text = _format(value)
        if text is not None:
            encoded[key] = text
    return encoded


def _format(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_finite_only(value), separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _finite_only(value: Any) -> Any:
    """JSON has no NaN or Infinity: such numbers become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_only(v) for v in value]
    return value


def publish(
    conn: redis.Redis | redis.client.Pipeline,
    keys: Keys,
    event_type: str,
    fields: Mapping[str, Any],
    payload: Mapping[str, Any] | None = None,
    *,
    maxlen: int,
) -> Any:
    """XADD one event (trimmed approximately to `maxlen`, the settings' `events.stream_maxlen`; 0:
    untrimmed); on a pipeline it is only queued."""
    kwargs = {"maxlen": maxlen, "approximate": True} if maxlen else {}
    return conn.xadd(keys.events, encode_fields(event_type, fields, payload), **kwargs)


class EventConsumer:
    """One member of a consumer group on the event stream."""

    def __init__(self, conn: redis.Redis, keys: Keys, group: str, consumer: str) -> None:
        self.conn = conn
        self.keys = keys
        self.group = group
        self.consumer = consumer
        # The same connections, replies left as Redis sent them (redis-py folds fields into a dict).
        self.raw = redis.Redis(connection_pool=conn.connection_pool)
        for command in ("XREADGROUP", "XAUTOCLAIM", "XRANGE", "XREVRANGE"):
            self.raw.set_response_callback(command, _unparsed)

    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; a new group starts at the stream's start."""
        try:
            self.conn.xgroup_create(self.keys.events, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int, block_ms: int | None) -> list[Event]:
        """New entries for this group, waiting up to `block_ms` when there are none."""
        reply = self.raw.xreadgroup(self.group, self.consumer, {self.keys.events: ">"}, count=count, block=block_ms)
        return self._decode(reply)

    def read_own_pending(self, count: int) -> list[Event]:
        """Entries delivered to this consumer name earlier and never acknowledged (e.g. before a crash)."""
        reply = self.raw.xreadgroup(self.group, self.consumer, {self.keys.events: "0"}, count=count)
        return self._decode(reply)

    def reclaim(self, min_idle_ms: int, count: int) -> list[Event]:
        """Take over entries other consumers left pending for at least `min_idle_ms`."""
        reply = self.raw.xautoclaim(
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
        return [decode_entry(i, raw) for i, raw in self.raw.xrevrange(self.keys.dead_letters, count=count)]

    def replay(self, dead_id: str) -> str:
        """Put a dead letter's original fields back on the event stream (after a fix), in their
        order with their repeats; returns the new entry's id. The dead letter is removed, in the
        same transaction. A letter whose values were cut cannot be replayed."""
        entries = self.raw.xrange(self.keys.dead_letters, dead_id, dead_id)
        if not entries:
            raise EventError(f"no dead letter {dead_id}")
        pairs = as_pairs(entries[0][1])
        truncated = dict(pairs).get(DEAD_PREFIX + b"truncated")
        if truncated:
            raise EventError(f"dead letter {dead_id} was cut to fit (see dead_truncated: {_text(truncated)[:200]}); "
                             f"it cannot be replayed exactly")
        original = [part for k, v in pairs if not k.startswith(DEAD_PREFIX) for part in (k, v)]
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.execute_command("XADD", self.keys.events, "*", *original)
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
                kept, cut = _fit(event.pairs or as_pairs(event.raw))
                own: list[bytes | str] = ["dead_reason", reason, "dead_original_id", event.id,
                                          "dead_group", self.group, "dead_at", now]
                if cut:
                    own += ["dead_truncated", json.dumps(cut)]
                    # Over the limits: no consumer can take it, and its copy says what it held.
                    pipe.xdel(self.keys.events, event.id)
                pipe.execute_command("XADD", self.keys.dead_letters, "MAXLEN", "~", DEAD_LETTERS_MAXLEN, "*",
                                     *(part for pair in kept for part in pair), *own)
            pipe.xack(self.keys.events, self.group, *(event.id for event, _ in letters))
            pipe.execute()

    def trim(self, maxlen: int, max_bytes: int) -> int:
        """Cap the event stream at `maxlen` entries (0: no count cap) and about `max_bytes` (the
        newest TRIM_SAMPLE entries' average size times the count); returns the entries removed."""
        sample = self.raw.xrevrange(self.keys.events, count=TRIM_SAMPLE)
        if sample:
            size = sum(len(k) + len(v) + 16 for _i, raw in sample for k, v in as_pairs(raw)) / len(sample)
            cap = max(1, int(max_bytes / size))
            maxlen = cap if maxlen == 0 else min(maxlen, cap)
        if maxlen == 0:  # no count cap and nothing to measure: nothing to trim
            return 0
        return self.conn.xtrim(self.keys.events, maxlen=maxlen, approximate=True)

    @staticmethod
    def _decode(reply: Any) -> list[Event]:
        """XREADGROUP's reply, RESP2 (a list of [stream, entries]) or RESP3 (a map) alike."""
        events: list[Event] = []
        for _stream, entries in (reply.items() if isinstance(reply, dict) else reply or []):
            events.extend(decode_entry(entry_id, raw) for entry_id, raw in entries if raw is not None)
        return events


def _unparsed(response: Any, **_options: Any) -> Any:
    return response


def _fit(pairs: Pairs) -> tuple[list[tuple[bytes, bytes]], list[dict[str, Any]]]:
    """A dead letter's copy of the fields: each name and value cut to DEAD_VALUE_BYTES, and all of
    them to DEAD_ENTRY_BYTES; what was cut is described (index, name, bytes, sha256)."""
    kept: list[tuple[bytes, bytes]] = []
    cut: list[dict[str, Any]] = []
    budget = DEAD_ENTRY_BYTES
    for index, (name, value) in enumerate(pairs):
        short_name = name[:min(DEAD_VALUE_BYTES, max(budget, 0))]
        budget -= len(short_name)
        short_value = value[:min(DEAD_VALUE_BYTES, max(budget, 0))]
        budget -= len(short_value)
        if short_name != name or short_value != value:
            cut.append({"index": index, "field": _text(short_name[:64]), "name_bytes": len(name),
                        "bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()})
        kept.append((short_name, short_value))
    return kept, cut
