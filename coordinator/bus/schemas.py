"""The one validator of the event stream: raw stream fields in, a checked event or a typed value out.

Two entry points, both raising EventError with the first problem found (the orchestrator then moves
the entry to the dead-letter stream with that text as its reason):
- `validate(event)`: every check an entry passes before anything acts on it;
- `parse_export(event, data_roots)`: the same, then the `Export` it carries, its `npz_path`
  confined to the data roots;
- `parse_evaluation(event)`: the same, then the `Evaluation` an EVALUATION_COMPLETED carries.

Paths: one the coordinator (or its workers) opens is absolute and, for an export's data, confined
to the data roots (`npz_path`/`output_path`, `init_weights`). One it only records and never opens
(an evaluation's `model_path`, a completed training's `model_path`/`parent_model` as lineage) may be
relative, as RingRift's evaluator sends it (`models/canonical_hexagonal_2p.pth`, relative to its
working directory): refusing it would lose the Elo it carries (`service/handlers.py` resolves it).

`validate` checks, in this order: the limits every entry meets before it is read (field count,
field name and value size, the message naming the limit hit; valid UTF-8; a msgpack `payload` or
JSON `history` of bounded size and depth, never pickle); then the type's schema: a known type, no
repeated meaningful field (two `npz_path`: which one was meant?), required fields, each field's
check, and a check of the event as a whole (a config named twice must agree). Numbers follow the
one rule of `coordinator/core/inputs.py`, config keys the one rule of `coordinator/core/boards.py`;
names (nodes, job ids, workers) match their pattern in full. The coordinator's own event types are
checked like the rest, since anyone allowed to XADD can send them: handlers and the metrics observer
only ever see valid values.

Validation flows one way: this module reads `events` (the decoded entry), `inputs` and `boards`;
none of them imports it.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgpack

from coordinator.bus import events as ev
from coordinator.core.boards import (
    MAX_PLAYERS,
    MIN_PLAYERS,
    check_board_type,
    is_config_key_field,
    make_config_key,
    parse_config_key,
)
from coordinator.core.errors import EventError
from coordinator.core.inputs import check_identifier, is_count, parse_int, parse_name_list, parse_number

MAX_FIELDS = 64
MAX_FIELD_NAME_BYTES = 256
MAX_FIELD_BYTES = 4096
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_PAYLOAD_DEPTH = 8
MAX_ERROR_CHARS = 500  # of an OS error's text quoted in a reason
# Nested data RingRift's EVALUATION_COMPLETED carries (JSON text once on the stream; recorded nowhere,
# but a gauntlet against many baselines outgrows MAX_FIELD_BYTES and must not cost the event its Elo).
RINGRIFT_NESTED_FIELDS = ("opponent_results", "harness_results", "composite_participant_ids", "win_rates")
# Fields allowed past MAX_FIELD_BYTES: the failure's stderr tail, the per-epoch history (JSON) and
# RingRift's nested evaluation results.
FIELD_LIMITS = {"stderr_tail": 16 * 1024, **{name: MAX_PAYLOAD_BYTES for name in ev.JSON_FIELDS},
                **{name: 64 * 1024 for name in RINGRIFT_NESTED_FIELDS}}

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
    """A path something opens: absolute."""
    if not text.startswith("/") or "\x00" in text:
        raise EventError(f"{name} must be an absolute path, got {text[:80]!r}")


def _recorded_path(name: str, text: str) -> None:
    """A path only recorded, never opened: absolute or relative to its producer's working directory."""
    if "\x00" in text:
        raise EventError(f"{name} must be a path, got {text[:80]!r}")


def _timestamp(name: str, text: str) -> None:
    """Seconds since the epoch, or ISO 8601 text (RingRift's `datetime.now().isoformat()`)."""
    parse_timestamp(text, name)


def parse_timestamp(text: str, name: str = "timestamp") -> float | None:
    """Epoch seconds from a number or ISO 8601 text; None for ISO text without a zone (the producer's
    local time, whose offset is unknown: the caller uses the arrival time instead)."""
    if not ("T" in text or ":" in text or text.count("-") >= 2):  # a number (a date has two dashes)
        return parse_number(text, name, 0, 1e11)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise EventError(f"{name} must be epoch seconds or ISO 8601, got {text[:40]!r}") from None
    if moment.tzinfo is None:
        return None
    return parse_number(repr(moment.timestamp()), name, 0, 1e11)


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


def config_of(fields: Mapping[str, str]) -> tuple[str, int, str]:
    """(board type, players, config key) from `board_type`+`num_players` or `config_key`/`config`,
    validated; the two forms must agree when both are given."""
    config = fields.get("config_key") or fields.get("config")
    if fields.get("board_type") and fields.get("num_players"):
        board_type = fields["board_type"]
        num_players = parse_int(fields["num_players"], "num_players")
        key = make_config_key(board_type, num_players)
        if config and config != key:
            raise EventError(f"config_key {config!r} disagrees with board_type/num_players ({key})")
        return board_type, num_players, key
    if config:
        board_type, num_players = parse_config_key(config)
        return board_type, num_players, config
    raise EventError("missing board_type+num_players (or config_key)")


def _one_config(event: ev.Event) -> None:
    """The event names one config, whichever of its forms it uses."""
    config_of(event.fields)


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
ELO = _number(-10_000, 100_000)
# An evaluation's Elo, by preference: RingRift sends `elo` (= its `best_elo` when it has one); some
# of its emitters send only `best_elo`/`estimated_elo`.
EVALUATION_ELO_FIELDS = ("elo", "best_elo", "estimated_elo")
# The Elo on the scale of RingRift's gauntlet (fixed-rating baselines), when the evaluation says so.
ANCHORED_ELO_FIELDS = ("estimated_elo", "best_elo")
# Every TRAINING_* event: the job, its config, where and which attempt.
TRAINING_COMMON = {**COMMON_CONFIG, "node": NODE, "worker": _identifier("worker"), "attempt": _integer(0, 10**6),
                   "fence": _integer(0, 10**18)}

SCHEMAS: dict[str, Schema] = {
    ev.NPZ_EXPORT_COMPLETE: Schema(
        optional={**COMMON_CONFIG, "npz_path": _path, "output_path": _path, "samples": SAMPLES,
                  "samples_exported": SAMPLES},
        one_of=(("npz_path", "output_path"), ("config_key", "config", "board_type")), whole=_one_config),
    ev.TRAINING_BLOCKED_BY_QUALITY: Schema(
        optional={**COMMON_CONFIG, "quality_score": _number(), "threshold": _number(),
                  "until": _number(0, 1e11), "reason": _text},
        one_of=(("config_key", "config", "board_type"),), whole=_one_config),
    ev.CLUSTER_HEALTH_CHANGED: Schema(
        optional={"node": NODE, "status": _one_of("healthy", "degraded", "down"), "gpus": _integer(0, 1024),
                  "alive_peers": _text, "open_nodes": _text, "overall_score": _number(), "score": _number(),
                  "failure_ratio": _number(0, 1), "is_degraded": BOOLEAN, "is_critical": BOOLEAN,
                  "leader_id": NODE, "node_id": NODE},
        whole=_cluster_health),
    ev.EVALUATION_COMPLETED: Schema(
        optional={**COMMON_CONFIG, "elo": ELO, "best_elo": ELO, "estimated_elo": ELO, "timestamp": _timestamp,
                  "model_path": _recorded_path},
        one_of=(EVALUATION_ELO_FIELDS, ("config_key", "config", "board_type")), whole=_one_config),
    ev.CURRICULUM_WEIGHTS_UPDATED: Schema(config_key_fields=True, whole=_curriculum),
    ev.TRAINING_STARTED: Schema(
        required={"job_id": JOB_ID, "config_key": _config_key},
        optional={**TRAINING_COMMON, "total_epochs": EPOCH, "resumed_epoch": EPOCH, "source_event": _stream_id,
                  "samples": SAMPLES, "init_weights": _path, "warm_start_dropped": _text}),
    ev.TRAINING_PROGRESS: Schema(
        required={"job_id": JOB_ID, "config_key": _config_key},
        optional={**TRAINING_COMMON, "epoch": EPOCH, "total_epochs": EPOCH, "train_loss": LOSS, "val_loss": LOSS,
                  "epoch_time_s": SECONDS}),
    ev.TRAINING_COMPLETE: Schema(
        required={"job_id": JOB_ID, "config_key": _config_key},
        optional={**TRAINING_COMMON, "duration_s": SECONDS, "final_loss": LOSS, "first_loss": LOSS,
                  "epochs_completed": EPOCH, "model_path": _recorded_path, "samples": SAMPLES,
                  "history": _json_history, "parent_model": _recorded_path, "best_val_loss": LOSS,
                  "best_epoch": EPOCH, "early_stopped": BOOLEAN}),
    ev.TRAINING_FAILED: Schema(
        required={"job_id": JOB_ID, "config_key": _config_key},
        optional={**TRAINING_COMMON, "retry_in_s": SECONDS, "will_retry": _one_of("true", "false")}),
    ev.TRAINING_CANCELLED: Schema(required={"job_id": JOB_ID, "config_key": _config_key},
                                  optional=TRAINING_COMMON),
    ev.TRAINING_PREEMPTED: Schema(
        required={"job_id": JOB_ID, "config_key": _config_key},
        optional={**TRAINING_COMMON, "epoch": EPOCH, "preempted_for": _config_key,
                  "kind": _one_of("wait", "value", "node_notice"),
                  "requested_at": _number(0, 1e11), "lost_gpu_hours": _number(0, 1e6), "preemptions": EPOCH,
                  "notice_yields": EPOCH,
                  "preempted_gpu_hours": _number(0, 1e6)}),
    ev.INTAKE_REJECTED: Schema(whole=_intake_rejected),
    ev.CIRCUIT_OPENED: Schema(required={"kind": _one_of("config", "node"), "name": _text}),
    ev.CIRCUIT_CLOSED: Schema(required={"kind": _one_of("config", "node"), "name": _text}),
}


def _check_limits(pairs: ev.Pairs) -> None:
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
    """Every check an entry passes before it is acted on: the limits, then its type's schema."""
    _check_limits(event.pairs)
    _check_schema(event)


def parse_export(event: ev.Event, data_roots: Sequence[str] = ()) -> ev.Export:
    """A valid NPZ_EXPORT_COMPLETE as an Export (accepting `config_key`/`config`, `output_path` and
    `samples_exported`), its `npz_path` inside `data_roots` (none given: anywhere)."""
    validate(event)
    if event.type != ev.NPZ_EXPORT_COMPLETE:
        raise EventError(f"not an export: {event.type[:60]!r}")
    f = event.fields
    board_type, num_players, key = config_of(f)
    npz_path = f.get("npz_path") or f.get("output_path") or ""
    samples = parse_int(f.get("samples") or f.get("samples_exported") or "0", "samples")
    _check_confined(npz_path, data_roots)
    return ev.Export(board_type, num_players, key, npz_path, samples)


def parse_evaluation(event: ev.Event) -> ev.Evaluation:
    """A valid EVALUATION_COMPLETED as an Evaluation: its config (either form), its Elo (`elo`, else
    `best_elo`, else `estimated_elo`), the Elo on the gauntlet's anchored scale when it carries
    `estimated_elo`/`best_elo`, its time when it has one with a zone, its `model_path` as sent."""
    validate(event)
    if event.type != ev.EVALUATION_COMPLETED:
        raise EventError(f"not an evaluation: {event.type[:60]!r}")
    f = event.fields
    elo = next(float(f[name]) for name in EVALUATION_ELO_FIELDS if f.get(name))
    anchored = next((float(f[name]) for name in ANCHORED_ELO_FIELDS if f.get(name)), None)
    at = parse_timestamp(f["timestamp"]) if f.get("timestamp") else None
    return ev.Evaluation(config_of(f)[2], elo, anchored, at, f.get("model_path") or None)


def _check_confined(npz_path: str, roots: Sequence[str]) -> None:
    """The path, with symlinks and `..` resolved, must lie inside a configured data root; any
    failure to resolve it (a symlink loop, permissions, a name too long) is the event's error."""
    if not roots:
        return
    try:
        resolved = Path(npz_path).resolve()
        inside = any(resolved.is_relative_to(Path(root).resolve()) for root in roots)
    except (OSError, RuntimeError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        raise EventError(f"npz_path {npz_path[:200]!r} cannot be resolved: {error}") from None
    if not inside:
        raise EventError(f"npz_path {npz_path!r} resolves to {str(resolved)!r}, outside the data roots "
                         f"({', '.join(roots)})")


def _check_schema(event: ev.Event) -> None:
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
