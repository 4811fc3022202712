"""`ringrift-train locks`: the held config leases and every node's slots, GPUs, health and breaker."""

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
from coordinator.stores.gpus import GpuStore
from coordinator.stores.leases import LeaseManager


def gather(conn: redis.Redis, settings: Settings) -> dict[str, list[dict]]:
    """The leases (`LeaseManager.held`), the nodes (`LeaseManager.nodes`, each with its GPUs and
    slots from `GpuStore.inventory`) and the node breakers Redis holds (`list_breakers`: a node
    without one is closed)."""
    keys = Keys(settings.redis.prefix)
    leases = LeaseManager.from_settings(conn, keys, settings)
    breakers = [b for b in list_breakers(conn, keys, settings.breakers, RedisClock(conn)()) if b["kind"] == "node"]
    gpus = GpuStore(conn, keys).inventory()
    nodes = [{**n, "gpu": gpus.get(n["node"], {}).get("gpu", "unknown"),
              "gpu_slots": gpus.get(n["node"], {}).get("slots", [])} for n in leases.nodes()]
    return {"leases": leases.held(), "nodes": nodes, "node_breakers": breakers}


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
    for column in ("node", "status", "slots in use", "GPU", "slots' GPUs", "breaker"):
        nodes.add_column(column, no_wrap=True)
    breakers = {b["name"]: b for b in found["node_breakers"]}
    for n in found["nodes"]:
        breaker = breakers.get(n["node"], CLOSED_BREAKER)
        slots = "; ".join(f"{s['slot']}: {s['gpu']}" for s in n["gpu_slots"]) or "-"
        nodes.add_row(n["node"], n["status"], f"{n['in_use']}/{n['gpus']}", n["gpu"], slots,
                      breaker_cell(breaker["state"], breaker["trial_in_s"]))
    console.print(held)
    console.print()
    console.print(nodes)
