"""`ringrift-train locks`: the held config leases and every node's slots, health and breaker."""

from __future__ import annotations

import json

import redis
from rich.table import Table

from coordinator.core.clock import RedisClock
from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from coordinator.ops.status import CLOSED_BREAKER
from coordinator.ops.status_view import breaker_cell, wide_console
from coordinator.stores.breakers import list_breakers
from coordinator.stores.leases import LeaseManager


def gather(conn: redis.Redis, settings: Settings) -> dict[str, list[dict]]:
    """The leases (`LeaseManager.held`), the nodes (`LeaseManager.nodes`) and the node breakers
    Redis holds (`list_breakers`: a node without one is closed)."""
    keys = Keys(settings.redis.prefix)
    leases = LeaseManager.from_settings(conn, keys, settings)
    breakers = [b for b in list_breakers(conn, keys, settings.breakers, RedisClock(conn)()) if b["kind"] == "node"]
    return {"leases": leases.held(), "nodes": leases.nodes(), "node_breakers": breakers}


def print_locks(conn: redis.Redis, settings: Settings, as_json: bool) -> None:
    found = gather(conn, settings)
    if as_json:
        print(json.dumps(found, indent=1))
        return
    console = wide_console()
    held = Table(title="config leases", title_justify="left", expand=False)
    for column in ("config", "node", "worker", "job", "fence", "ttl left"):
        held.add_column(column, no_wrap=True, justify="right" if column in ("fence", "ttl left") else "left")
    for h in found["leases"]:
        held.add_row(h["config_key"], h.get("node", "-"), h.get("worker", "-"), h.get("job_id", "-"),
                     h.get("fence", "-"), f"{int(h['ttl_left_ms']) / 1000:.1f}s")
    nodes = Table(title="nodes", title_justify="left", expand=False)
    for column in ("node", "status", "slots in use", "breaker"):
        nodes.add_column(column, no_wrap=True)
    breakers = {b["name"]: b for b in found["node_breakers"]}
    for n in found["nodes"]:
        breaker = breakers.get(n["node"], CLOSED_BREAKER)
        nodes.add_row(n["node"], n["status"], f"{n['in_use']}/{n['gpus']}",
                      breaker_cell(breaker["state"], breaker["trial_in_s"]))
    console.print(held)
    console.print()
    console.print(nodes)
