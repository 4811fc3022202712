"""`ringrift-train events`: the event stream, one line per event, filtered, followed, coloured."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import redis
from rich.markup import escape

from coordinator.bus.events import Event, decode_entry
from coordinator.core.keys import Keys
from coordinator.ops.status_view import PipeConsole

COLOURS = {"NPZ_EXPORT_COMPLETE": "cyan", "TRAINING_STARTED": "blue", "TRAINING_PROGRESS": "dim",
           "TRAINING_COMPLETE": "green", "TRAINING_FAILED": "red", "TRAINING_CANCELLED": "yellow",
           "CIRCUIT_OPENED": "bold red", "CIRCUIT_CLOSED": "green", "TRAINING_BLOCKED_BY_QUALITY": "magenta"}
SHOWN_FIRST = ("config_key", "job_id", "attempt", "node", "epoch", "train_loss", "reason", "error")


def matches(event: Event, types: set[str], config: str | None) -> bool:
    if types and event.type not in types:
        return False
    if config:
        key = event.fields.get("config_key") or event.fields.get("config") or (
            f"{event.fields.get('board_type')}_{event.fields.get('num_players')}p")
        return key == config
    return True


def read(conn: redis.Redis, keys: Keys, count: int, follow: bool, block_ms: int = 1000) -> Iterator[Event]:
    """The last `count` events, then (with `follow`) every new one as it arrives."""
    last = "0-0"
    for entry_id, raw in reversed(conn.xrevrange(keys.events, count=count)):
        event = decode_entry(entry_id, raw)
        last = event.id
        yield event
    while follow:
        reply = conn.xread({keys.events: last}, count=100, block=block_ms) or []
        for _stream, entries in reply:
            for entry_id, raw in entries:
                event = decode_entry(entry_id, raw)
                last = event.id
                yield event


def line(event: Event) -> str:
    """One readable line: time, type, the fields people look for first, then the rest."""
    at = time.strftime("%H:%M:%S", time.localtime(int(event.id.split("-")[0]) / 1000))
    rest = {k: v for k, v in event.fields.items() if k != "type"}
    ordered = [k for k in SHOWN_FIRST if k in rest] + sorted(k for k in rest if k not in SHOWN_FIRST)
    text = " ".join(f"{k}={rest[k][:120]}" for k in ordered)
    payload = _msgpack_payload(event)
    if payload is not None:
        text += f" payload={json.dumps(payload, default=str)[:120]}"
    return f"{at} {event.id} {event.type:<27} {text}"


def _msgpack_payload(event: Event) -> object:
    """A producer's msgpack `payload` (nested data in JSON fields is shown with the fields)."""
    return event.payload if event.payload is not None and event.raw.get(b"payload") is not None else None


def print_events(conn: redis.Redis, keys: Keys, types: set[str], config: str | None, count: int, follow: bool,
                 as_json: bool) -> None:
    # soft_wrap: a line is never cut or wrapped by rich (on a pipe it would wrap at 80 columns, or
    # at $COLUMNS): one event, one line; a terminal wraps a long one itself.
    console = PipeConsole(highlight=False, soft_wrap=True)
    for event in read(conn, keys, count, follow):
        if not matches(event, types, config):
            continue
        if as_json:
            payload = _msgpack_payload(event)
            print(json.dumps({"id": event.id, "type": event.type, **event.fields,
                              **({"payload": payload} if payload is not None else {})},
                             default=str), flush=True)
        else:
            console.print(f"[{COLOURS.get(event.type, 'white')}]{escape(line(event))}[/]")
