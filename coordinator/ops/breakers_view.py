"""`ringrift-train breakers`: every circuit breaker (config and node) and closing one by hand.

A breaker is named `<kind>:<name>` as in its Redis key (`<prefix>:breaker:node:gpu-node-1`):
`node:gpu-node-1`, `config:hex8_2p`. A bare name is accepted when only one breaker has it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import redis

from coordinator.core.clock import RedisClock
from coordinator.core.errors import EventError
from coordinator.core.inputs import check_identifier
from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from coordinator.ops.status_view import breaker_cell
from coordinator.stores.breakers import CLOSED, CircuitBreakers, list_breakers

KINDS = ("config", "node")


def show(conn: redis.Redis, settings: Settings, as_json: bool) -> int:
    rows = list_breakers(conn, Keys(settings.redis.prefix), settings.breakers, RedisClock(conn)())
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    b = settings.breakers
    print(f"breakers: {b.failures} failures within {b.window_s:g} s open one; a trial after {b.cooldown_s:g} s")
    print(f"{'breaker':32} {'state':28} {'failures':>8}")
    for r in rows:
        print(f"{r['kind'] + ':' + r['name']:32} {breaker_cell(r['state'], r['trial_in_s']):28} {r['failures']:>8}")
    if not rows:
        print("(none: no config or node has failed yet)")
    return 0


def reset(conn: redis.Redis, settings: Settings, name: str) -> int:
    """Close the breaker `name` (`kind:name`, or a bare name only one breaker has)."""
    keys = Keys(settings.redis.prefix)
    try:
        kind, bare = _resolve(conn, keys, settings, name)
    except ValueError as exc:
        print(f"breakers --reset: {exc}", file=sys.stderr)
        return 1
    before = CircuitBreakers.from_settings(conn, keys, settings).reset(kind, bare)
    if before == CLOSED:
        print(f"{kind}:{bare}: already closed, nothing to reset")
    else:
        print(f"{kind}:{bare}: was {before}, now closed (failures forgotten; CIRCUIT_CLOSED reason reset)")
    return 0


def _resolve(conn: redis.Redis, keys: Keys, settings: Settings, name: str) -> tuple[str, str]:
    kind, sep, bare = name.partition(":")
    if sep:
        if kind not in KINDS:
            raise ValueError(f"{name!r}: the kind must be config or node (config:hex8_2p, node:gpu-node-1)")
        _check(kind, bare)
        return kind, bare
    _check("node", name)
    found = [r["kind"] for r in list_breakers(conn, keys, settings.breakers, 0.0) if r["name"] == name]
    if len(found) != 1:
        raise ValueError(f"{name!r}: {'no breaker has this name' if not found else 'a config and a node'}"
                         f"; say which: config:{name} or node:{name}")
    return found[0], name


def _check(kind: str, name: str) -> None:
    try:
        check_identifier("config_key" if kind == "config" else "node", name)
    except EventError as exc:
        raise ValueError(str(exc)) from exc


def node_breakers(conn: redis.Redis, keys: Keys, settings: Settings, now: float) -> dict[str, dict[str, Any]]:
    """Node name -> its breaker described (nodes without one are closed)."""
    return {r["name"]: r for r in list_breakers(conn, keys, settings.breakers, now) if r["kind"] == "node"}
