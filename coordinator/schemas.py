"""One schema per event type: required and optional fields, their types and ranges.

`validate(event)` raises EventError with the first problem found; the orchestrator then moves
the event to the dead-letter stream with that reason. Limits apply to every event: field count,
field size, valid UTF-8, and a msgpack `payload` of bounded size and depth (never pickle).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from coordinator import events as ev
from coordinator.boards import BOARDS, MAX_PLAYERS, MIN_PLAYERS, parse_config_key
from coordinator.errors import EventError

MAX_FIELDS = 64
MAX_FIELD_BYTES = 4096
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_PAYLOAD_DEPTH = 8

Check = Callable[[str, str], None]


def _number(lo: float = -math.inf, hi: float = math.inf) -> Check:
    def check(name: str, text: str) -> None:
        try:
            value = float(text)
        except ValueError:
            raise EventError(f"{name} must be a number, got {text[:40]!r}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise EventError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {text[:40]!r}")
    return check


def _integer(lo: int, hi: int) -> Check:
    def check(name: str, text: str) -> None:
        try:
            value = int(text)
        except ValueError:
            raise EventError(f"{name} must be an integer, got {text[:40]!r}") from None
        if not lo <= value <= hi:
            raise EventError(f"{name} must be {lo}..{hi}, got {value}")
    return check


def _one_of(*allowed: str) -> Check:
    def check(name: str, text: str) -> None:
        if text not in allowed:
            raise EventError(f"{name} must be one of {', '.join(allowed)}, got {text[:40]!r}")
    return check


def _path(name: str, text: str) -> None:
    if not text.startswith("/") or "\x00" in text:
        raise EventError(f"{name} must be an absolute path, got {text[:80]!r}")


def _config_key(name: str, text: str) -> None:
    parse_config_key(text)


def _text(name: str, text: str) -> None:
    """Any UTF-8 text within the size limit (checked for every field)."""


@dataclass(frozen=True)
class Schema:
    required: dict[str, Check] = field(default_factory=dict)
    optional: dict[str, Check] = field(default_factory=dict)
    # Alternatives: at least one of each group must be present (producer variants).
    one_of: tuple[tuple[str, ...], ...] = ()
    open_fields: bool = True  # extra fields are kept (exporters add their own metadata)

    @functools.cached_property
    def checks(self) -> dict[str, Check]:
        """Every field's check, required ones last (they win on a name in both)."""
        return {**self.optional, **self.required}


BOARD = _one_of(*BOARDS)
PLAYERS = _integer(MIN_PLAYERS, MAX_PLAYERS)
SAMPLES = _integer(0, 10**12)
JOB_ID = _text
COMMON_CONFIG = {"board_type": BOARD, "num_players": PLAYERS, "config_key": _config_key, "config": _config_key}

SCHEMAS: dict[str, Schema] = {
    ev.NPZ_EXPORT_COMPLETE: Schema(
        optional={**COMMON_CONFIG, "npz_path": _path, "output_path": _path, "samples": SAMPLES,
                  "samples_exported": SAMPLES},
        one_of=(("npz_path", "output_path"), ("config_key", "config", "board_type"))),
    ev.TRAINING_BLOCKED_BY_QUALITY: Schema(
        optional={**COMMON_CONFIG, "quality_score": _number(), "threshold": _number(),
                  "until": _number(0, 1e11), "reason": _text},
        one_of=(("config_key", "config", "board_type"),)),
    ev.CLUSTER_HEALTH_CHANGED: Schema(
        optional={"node": _text, "status": _one_of("healthy", "degraded", "down"), "gpus": _integer(0, 1024),
                  "alive_peers": _text},
        one_of=(("node", "alive_peers"),)),
    ev.EVALUATION_COMPLETED: Schema(
        required={"elo": _number(-10_000, 100_000)},
        optional={**COMMON_CONFIG, "timestamp": _number(0, 1e11)},
        one_of=(("config_key", "config", "board_type"),)),
    ev.CURRICULUM_WEIGHTS_UPDATED: Schema(),  # fields are config keys; checked by its handler
    ev.TRAINING_STARTED: Schema(required={"job_id": JOB_ID, "config_key": _config_key}),
    ev.TRAINING_PROGRESS: Schema(required={"job_id": JOB_ID, "config_key": _config_key},
                                 optional={"epoch": _integer(0, 10**7), "train_loss": _number(),
                                           "val_loss": _number()}),
    ev.TRAINING_COMPLETE: Schema(required={"job_id": JOB_ID, "config_key": _config_key}),
    ev.TRAINING_FAILED: Schema(required={"job_id": JOB_ID, "config_key": _config_key}),
    ev.TRAINING_CANCELLED: Schema(required={"job_id": JOB_ID, "config_key": _config_key}),
    ev.CIRCUIT_OPENED: Schema(required={"kind": _one_of("config", "node"), "name": _text}),
    ev.CIRCUIT_CLOSED: Schema(required={"kind": _one_of("config", "node"), "name": _text}),
}


def validate_entry(raw: dict[bytes, bytes]) -> None:
    """Limits every entry must meet before it is decoded: size, count, UTF-8, payload shape."""
    if len(raw) > MAX_FIELDS:
        raise EventError(f"too many fields: {len(raw)} > {MAX_FIELDS}")
    for key, value in raw.items():
        if key == b"payload":
            _check_payload(value)
            continue
        if len(key) > 256 or len(value) > MAX_FIELD_BYTES:
            raise EventError(f"field {key[:40]!r} is larger than {MAX_FIELD_BYTES} bytes")
        try:
            key.decode("utf-8")
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise EventError(f"field {key[:40]!r} is not UTF-8 text") from None


def _check_payload(value: bytes) -> None:
    if len(value) > MAX_PAYLOAD_BYTES:
        raise EventError(f"payload is larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        decoded = msgpack.unpackb(value, raw=False, strict_map_key=False, max_bin_len=MAX_PAYLOAD_BYTES)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types on junk
        raise EventError(f"payload is not valid msgpack ({type(exc).__name__})") from None
    if _depth(decoded) > MAX_PAYLOAD_DEPTH:
        raise EventError(f"payload is nested deeper than {MAX_PAYLOAD_DEPTH}")


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_PAYLOAD_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()] + [level])
    if isinstance(value, (list, tuple)):
        return max([_depth(v, level + 1) for v in value] + [level])
    return level


def validate(event: ev.Event) -> None:
    """The event's type is known and its fields meet that type's schema."""
    if not event.type:
        raise EventError("missing field 'type'")
    schema = SCHEMAS.get(event.type)
    if schema is None:
        raise EventError(f"unknown event type {event.type[:60]!r}")
    f = event.fields
    for name in schema.required:
        if not f.get(name):
            raise EventError(f"missing field {name!r}")
    for group in schema.one_of:
        if not any(f.get(name) for name in group):
            raise EventError(f"missing field: one of {', '.join(group)}")
    for name, check in schema.checks.items():
        if f.get(name):
            check(name, f[name])
