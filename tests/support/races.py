"""What the real-process tests share to wait on state instead of time: the gated trainer's command,
the orchestrator having handled every event so far, and a config made to starve by its record
(`waiting_since`) rather than by waiting. The hold files themselves: tests/support/gated_train.py."""

from __future__ import annotations

import time

import redis

from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from tests.support.polling import wait_for

GATED_STUB = ["{python}", "-m", "tests.support.gated_train", "workers.stub_train"]
GATED_REFERENCE = ["{python}", "-m", "tests.support.gated_train", "workers.train"]
EVENTS, GROUP = Keys("ringrift").events, Settings().events.group


def stream_id(entry_id: bytes | str) -> tuple[int, int]:
    ms, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")
    return int(ms), int(seq)


def wait_until_handled(conn: redis.Redis, timeout_s: float = 60) -> None:
    """Every event in the stream now has been delivered to the orchestrator's group and acked."""
    [(newest, _)] = conn.xrevrange(EVENTS, count=1)

    def handled() -> bool:
        [group] = [g for g in conn.xinfo_groups(EVENTS) if g["name"].decode() == GROUP]
        return stream_id(group["last-delivered-id"]) >= stream_id(newest) and group["pending"] == 0

    wait_for(handled, timeout_s=timeout_s)


def starve(conn: redis.Redis, config_key: str, max_wait_hours: float, timeout_s: float = 60) -> None:
    """Make `config_key` starving now: once its export is recorded (its wait began), move the start
    of its wait back twice the bound. Call it while no slot is free (nothing dispatches it meanwhile)."""
    config = Keys("ringrift").config(config_key)
    wait_for(lambda: conn.hget(config, "waiting_since"), timeout_s=timeout_s)
    conn.hset(config, "waiting_since", f"{time.time() - 2 * max_wait_hours * 3600:.3f}")
