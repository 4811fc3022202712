"""One schema per event type: required and optional fields, their types and ranges.

`validate(event)` raises EventError with the first problem found; the orchestrator then moves
the event to the dead-letter stream with that reason. Limits apply to every event: field count,
field name and value size (the message names the limit hit), valid UTF-8, no repeated meaningful
field (two `npz_path`: which one was meant?), and a msgpack `payload` or JSON `history` of bounded
size and depth (never pickle). Numbers follow the one rule of `coordinator/core/inputs.py`; names
(config keys, nodes, job ids, workers) match their pattern in full. The coordinator's own event
types are checked like the rest, since anyone allowed to XADD can send them: handlers and the
metrics observer only ever see valid values.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from coordinator.bus import events as ev
from coordinator.core.boards import MAX_PLAYERS, MIN_PLAYERS, check_board_type, parse_config_key
from coordinator.core.errors import EventError
from coordinator.core.inputs import (
    check_identifier,
    is_config_key_field,
    is_count,
    parse_int,
    parse_name_list,
    parse_number,
)

MAX_FIELDS = 64
MAX_FIELD_NAME_BYTES = 256
MAX_FIELD_BYTES = 4096
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_PAYLOAD_DEPTH = 8
# Fields allowed past MAX_FIELD_BYTES: the failure's stderr tail and the per-epoch history (JSON).
FIELD_LIMITS = {"stderr_tail": 16 * 1024, **{name: MAX_PAYLOAD_BYTES for name in ev.JSON_FIELDS}}

Check = Callable[[str, str], None]


def _number(lo: float = -math.inf, hi: float = math.inf) -> Check:
    def check(name: str, text: str) -> None:
        parse_number(text, name, lo, hi)
    return check


def _integer(lo: int, hi: int) -> Check:
    def check(name: str, text: str) -> None:
        parse_int(text, name, lo, hi)
    return check


def _identifier(kind: str) -> Check:
    def check(name: str, text: str) -> None:
        check_identifier(kind, text, name)
    return check


def _stream_id(name: str, text: str) -> None:
    """A stream entry id, `<ms>-<seq>` (both parts ASCII digits)."""
    ms, _, seq = text.partition("-")
    if not (ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit() and len(text) <= 41):
        raise EventError(f"{name} must be a stream id <ms>-<seq>, got {text[:40]!r}")


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


def _json_history(name: str, text: str) -> None:
    """A JSON list of per-epoch figures, nested at most MAX_PAYLOAD_DEPTH deep."""
    try:
        value = json.loads(text)
    except ValueError:
        raise EventError(f"{name} is not valid JSON") from None
    if not isinstance(value, list):
        raise EventError(f"{name} must be a JSON list, got {type(value).__name__}")
    if _depth(value) > MAX_PAYLOAD_DEPTH:
        raise EventError(f"{name} is nested deeper than {MAX_PAYLOAD_DEPTH}")


@dataclass(frozen=True)
class Schema:
    required: dict[str, Check] = field(default_factory=dict)
    optional: dict[str, Check] = field(default_factory=dict)
    # Alternatives: at least one of each group must be present (producer variants).
    one_of: tuple[tuple[str, ...], ...] = ()
    open_fields: bool = True  # extra fields are kept (exporters add their own metadata)

    config_key_fields: bool = False  # fields named like config keys carry values (curriculum weights)
    whole: Callable[[ev.Event], None] | None = None  # a check of the event as a whole, after the fields'

    @functools.cached_property
    def checks(self) -> dict[str, Check]:
        """Every field's check, required ones last (they win on a name in both)."""
        return {**self.optional, **self.required}

    def meaningful(self, name: str) -> bool:
        """A field this type reads (repeating it makes the event ambiguous)."""
        return (name in ("type", ev.PAYLOAD_FIELD) or name in self.checks
                or any(name in group for group in self.one_of)
                or (self.config_key_fields and is_config_key_field(name)))


def _curriculum(event: ev.Event) -> None:
    """Fields of the config-key form are weights (a malformed key or weight is refused, naming
    it); every other field is metadata and ignored."""
    weights = [name for name in event.fields if is_config_key_field(name)]
    for name in weights:
        parse_config_key(name)
        parse_number(event.fields[name], f"weight of {name}", 0)
    if not weights:
        raise EventError("no config weights in CURRICULUM_WEIGHTS_UPDATED")


# RingRift's CLUSTER_HEALTH_CHANGED forms: a node's status; the overall form (alive_peers, a list
# or a count); the circuit-breaker form (open_nodes); the overall/resilience scores naming no node.
HEALTH_FORMS = ("node", "alive_peers", "open_nodes", "overall_health", "overall_score", "score", "level",
                "new_state", "quorum_health")


def _cluster_health(event: ev.Event) -> None:
    f = event.fields
    if not any(f.get(name) for name in HEALTH_FORMS) and "open_nodes" not in f:
        raise EventError(f"missing field: one of {', '.join(HEALTH_FORMS)}")
    if f.get("node") and not f.get("status") and not any(f.get(n) for n in HEALTH_FORMS[1:]):
        raise EventError("missing field 'status' (a node's health)")
    peers = f.get("alive_peers", "")
    if peers.strip() and not is_count(peers):  # a count is recorded only
        parse_name_list(peers, "alive_peers")
    if "open_nodes" in f:
        parse_name_list(f["open_nodes"], "open_nodes")


def _intake_rejected(event: ev.Event) -> None:
    raise EventError(f"intake rejected the submission: {event.fields.get('intake_error', '')[:300]}")


BOOLEAN = _one_of("true", "false", "True", "False", "1", "0")
def BOARD(name: str, text: str) -> None:  # noqa: N802 - a check like the constants beside it
    check_board_type(text)
PLAYERS = _integer(MIN_PLAYERS, MAX_PLAYERS)
SAMPLES = _integer(0, 10**12)
JOB_ID = _identifier("job_id")
NODE = _identifier("node")
COMMON_CONFIG = {"board_type": BOARD, "num_players": PLAYERS, "config_key": _config_key, "config": _config_key}
EPOCH = _integer(0, 10**7)
SECONDS = _number(0, 1e9)
LOSS = _number()
# Every TRAINING_* event: the job, its config, where and which attempt.
TRAINING_COMMON = {**COMMON_CONFIG, "node": NODE, "worker": _identifier("worker"), "attempt": _integer(0, 10**6),
                   "fence": _integer(0, 10**18)}

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
        optional={"node": NODE, "status": _one_of("healthy", "degraded", "down"), "gpus": _integer(0, 1024),
                  "alive_peers": _text, "open_nodes": _text, "overall_score": _number(), "score": _number(),
                  "failure_ratio": _number(0, 1), "is_degraded": BOOLEAN, "is_critical": BOOLEAN,
                  "leader_id": NODE, "node_id": NODE},
        whole=_cluster_health),
    ev.EVALUATION_COMPLETED: Schema(
        required={"elo": _number(-10_000, 100_000)},
        optional={**COMMON_CONFIG, "timestamp": _number(0, 1e11), "model_path": _path},
        one_of=(("config_key", "config", "board_type"),)),
    ev.CURRICULUM_WEIGHTS_UPDATED: Schema(config_key_fields=True, whole=_curriculum),
    ev.TRAINING_STARTED: Schema(
        required={"job_id": JOB_ID, "config_key": _config_key},
        optional={**TRAINING_COMMON, "total_epochs": EPOCH, "resumed_epoch": EPOCH, "source_event": _stream_id,
                  "samples": SAMPLES, "init_weights": _path}),
    ev.TRAINING_PROGRESS: Schema(
        required={"job_id": JOB_ID, "config_key": _config_key},
        optional={**TRAINING_COMMON, "epoch": EPOCH, "total_epochs": EPOCH, "train_loss": LOSS, "val_loss": LOSS,
                  "epoch_time_s": SECONDS}),
    ev.TRAINING_COMPLETE: Schema(
        required={"job_id": JOB_ID, "config_key": _config_key},
        optional={**TRAINING_COMMON, "duration_s": SECONDS, "final_loss": LOSS, "first_loss": LOSS,
                  "epochs_completed": EPOCH, "model_path": _path, "samples": SAMPLES, "history": _json_history,
                  "parent_model": _path}),
    ev.TRAINING_FAILED: Schema(
        required={"job_id": JOB_ID, "config_key": _config_key},
        optional={**TRAINING_COMMON, "retry_in_s": SECONDS, "will_retry": _one_of("true", "false")}),
    ev.TRAINING_CANCELLED: Schema(required={"job_id": JOB_ID, "config_key": _config_key},
                                  optional=TRAINING_COMMON),
    ev.TRAINING_PREEMPTED: Schema(
        required={"job_id": JOB_ID, "config_key": _config_key},
        optional={**TRAINING_COMMON, "epoch": EPOCH, "preempted_for": _config_key, "kind": _one_of("wait", "value"),
                  "requested_at": _number(0, 1e11), "lost_gpu_hours": _number(0, 1e6), "preemptions": EPOCH,
                  "preempted_gpu_hours": _number(0, 1e6)}),
    ev.INTAKE_REJECTED: Schema(whole=_intake_rejected),
    ev.CIRCUIT_OPENED: Schema(required={"kind": _one_of("config", "node"), "name": _text}),
    ev.CIRCUIT_CLOSED: Schema(required={"kind": _one_of("config", "node"), "name": _text}),
}


def validate_entry(pairs: ev.Pairs) -> None:
    """Limits every entry must meet before it is decoded: size, count, UTF-8, payload shape."""
    if len(pairs) > MAX_FIELDS:
        raise EventError(f"too many fields: {len(pairs)} > {MAX_FIELDS}")
    for key, value in pairs:
        if len(key) > MAX_FIELD_NAME_BYTES:
            raise EventError(f"field name {key[:40]!r}... is longer than {MAX_FIELD_NAME_BYTES} bytes "
                             f"({len(key)})")
        if key == b"payload":
            _check_payload(value)
            continue
        try:
            name = key.decode("utf-8")
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise EventError(f"field {key[:40]!r} is not UTF-8 text") from None
        limit = FIELD_LIMITS.get(name, MAX_FIELD_BYTES)
        if len(value) > limit:
            raise EventError(f"field {name[:40]!r} is larger than {limit} bytes ({len(value)})")


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
    repeated = sorted(name for name in event.repeated() if schema.meaningful(name))
    if repeated:
        raise EventError(f"field {repeated[0][:40]!r} repeats (which value was meant?)")
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
    if schema.whole is not None:
        schema.whole(event)
