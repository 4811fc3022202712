"""The exporters' way onto the event bus: an append-only intake list the coordinator moves from.

Exporters are the least trusted producers, so their ACL role (`exporter` in
`deploy/redis/users.acl.template`) gets one write command, `RPUSH`, on one key, `<prefix>:intake`.
A list push can only append: it has no id to choose (a stream entry with the maximal id blocks every
later `XADD *`), no `MAXLEN` (which empties a stream) and no trim or delete. The coordinator moves
the submissions onto `<prefix>:events` with `intake_move.lua`, each as one `XADD <stream> * ...`
with no trimming, so the worst an exporter can send is an event that the consumer dead-letters.
The trusted roles (coordinator, worker) keep writing the stream directly.

Why not a server-side function that the exporter may FCALL instead of XADD: Redis checks every
command a script or function runs against the ACL of the user who called it (Redis 7.0 answers
"The user executing the script can't run this command or subcommand"), so a function cannot give a
user an XADD that the user may not run directly, and a user who may run it can pass `MAXLEN 0`.

A submission is one JSON value per `RPUSH`: a flat array `["type", "NPZ_EXPORT_COMPLETE",
"board_type", "hex8", ...]` (field order and repeats kept), or an object (fields sorted, `type`
first); values are strings or integers. From a shell:

    redis-cli RPUSH ringrift:intake '["type","NPZ_EXPORT_COMPLETE","config_key","hex8_2p",...]'
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import redis

from coordinator.bus.events import INTAKE_REJECTED
from coordinator.bus.schemas import MAX_FIELD_BYTES, MAX_FIELD_NAME_BYTES, MAX_FIELDS, MAX_PAYLOAD_BYTES
from coordinator.core.keys import Keys
from coordinator.core.lua import script

log = logging.getLogger(__name__)

MOVE_BATCH = 500  # submissions moved per script call (one call holds Redis for well under 1 ms per 100)
MOVE_ROUNDS_MAX = 20  # script calls per `move`, so one call returns even while exporters flood the list
# Twice the largest entry the consumer accepts (JSON escapes can double it): bigger submissions never
# reach the stream, and their INTAKE_REJECTED event keeps REJECTED_HEAD_BYTES of them.
SUBMISSION_MAX_BYTES = 2 * (MAX_PAYLOAD_BYTES + MAX_FIELDS * (MAX_FIELD_NAME_BYTES + MAX_FIELD_BYTES))
REJECTED_HEAD_BYTES = 256  # bytes of a rejected submission kept in its INTAKE_REJECTED event
DEFAULT_KEYS = Keys()  # the default `redis.prefix`; pass the settings' Keys when the prefix differs

Fields = Mapping[str, str | int] | Iterable[tuple[str, str | int]]


class Moved(NamedTuple):
    moved: int  # submissions that became events
    rejected: int  # submissions that became INTAKE_REJECTED events


def encode(fields: Fields) -> str:
    """One submission: the fields as a flat JSON array (order and repeats kept)."""
    pairs = fields.items() if isinstance(fields, Mapping) else fields
    flat: list[str] = []
    for name, value in pairs:
        flat += [str(name), str(value)]
    if not flat:
        raise ValueError("a submission needs at least one field")
    return json.dumps(flat, ensure_ascii=False)


def submit(conn: redis.Redis, fields: Fields, keys: Keys = DEFAULT_KEYS) -> int:
    """RPUSH one submission (what the `exporter` role may do); returns the intake's length."""
    return int(conn.rpush(keys.intake, encode(fields)))


def publish_export(conn: redis.Redis, fields: Fields, keys: Keys = DEFAULT_KEYS) -> int:
    """Submit an `NPZ_EXPORT_COMPLETE` (`board_type`, `num_players` or `config_key`, `npz_path`,
    `samples`, and any metadata of the exporter's own); `type` is set here."""
    pairs = list(fields.items() if isinstance(fields, Mapping) else fields)
    if any(name == "type" for name, _ in pairs):
        raise ValueError("publish_export sets the type itself")
    return submit(conn, [("type", "NPZ_EXPORT_COMPLETE"), *pairs], keys)


def move(conn: redis.Redis, keys: Keys = DEFAULT_KEYS, batch: int = MOVE_BATCH) -> Moved:
    """Move waiting submissions onto the event stream (the coordinator's role); cheap when there are
    none (one LPOP of an empty list). Rejected submissions are logged here and dead-lettered by the
    consumer, with their reason in `intake_error`."""
    move_script = script(conn, "intake_move.lua")
    moved = rejected = 0
    for _ in range(MOVE_ROUNDS_MAX):
        done, bad = move_script(keys=[keys.intake, keys.events],
                                args=[batch, SUBMISSION_MAX_BYTES, REJECTED_HEAD_BYTES, MAX_FIELDS])
        moved, rejected = moved + int(done), rejected + int(bad)
        if done + bad < batch:
            break
    if rejected:
        log.warning("intake: %d submission(s) rejected (see %s events in the dead letters)", rejected, INTAKE_REJECTED)
    return Moved(moved, rejected)
