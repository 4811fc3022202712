"""What `ringrift-train status` shows, gathered from Redis as one plain dict (also its `--json`).

Configs with priority, rank and why (a pending preemption among the flags); running jobs with
epoch, loss, node, elapsed, ETA and a pending request to yield; the pending preemptions; the
queue; nodes with slots, health and circuit breaker (configs too: `breaker`, and while it is
open `breaker_trial_in_s`, when one attempt goes through again), each with the RQ workers that
run on it; RQ workers with their node and last heartbeat; recent failures.

A worker's node: the one its lease names while it trains (what it holds), else the node it
registered under (`WORKER_NODE_FIELD` on RQ's worker hash), else its host name (RQ's record).
Nodes: every node `hosts` or a health event registered, and every node a worker or a lease
names (`listed` False: its slots in use are shown against the default slot count). Each node
has its GPUs (`gpu`, `gpu_source`) and `gpu_slots`: each worker slot's GPU (`coordinator/stores/gpus.py`);
each worker its `gpu_slot` and `gpu`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import redis
from rq import Worker

from coordinator.bus.events import TRAINING_FAILED, decode_entry
from coordinator.core.clock import RedisClock
from coordinator.core.job_states import ACTIVE_ATTEMPT_STATES
from coordinator.core.keys import Keys
from coordinator.core.settings import BreakerSettings, Settings
from coordinator.core.text import decode_hash
from coordinator.scheduling.scheduler import TrainingScheduler
from coordinator.stores.breakers import describe, list_breakers
from coordinator.stores.gpus import GpuStore
from coordinator.stores.job_records import eta_s, pending_preemptions, training_queues
from coordinator.stores.leases import LeaseManager
from coordinator.stores.reservations import ReservationStore

RECENT_EVENTS_SCANNED = 2000
Breakers = dict[tuple[str, str], dict[str, Any]]  # (kind, name) -> the breaker `describe`d
CLOSED_BREAKER = describe({}, BreakerSettings(), 0.0)  # no hash: it never failed
# The field of RQ's worker hash that names the node a worker runs on (RINGRIFT_NODE), when its
# worker class writes one; RQ's own `hostname` otherwise.
WORKER_NODE_FIELD = "ringrift_node"
# The fields of RQ's worker hash that name its GPU slot and GPU (workers/gpu_inventory.py writes them).
WORKER_GPU_FIELDS = ("ringrift_gpu_slot", "ringrift_gpu")


def gather(conn: redis.Redis, settings: Settings, failures: int = 5) -> dict[str, Any]:
    keys = Keys(settings.redis.prefix)
    now = RedisClock(conn)()
    ranked = TrainingScheduler.from_settings(conn, keys, settings).ranked()
    leases = LeaseManager.from_settings(conn, keys, settings)
    held = leases.held()
    workers = _workers(conn, now, held)
    breakers = {(b["kind"], b["name"]): b for b in list_breakers(conn, keys, settings.breakers, now)}
    trained = last_trained(conn, keys, [p.config_key for p in ranked])
    queues = training_queues(conn, keys)
    return {
        "at": now,
        "configs": [_config_row(p, rank, breakers, trained) for rank, p in enumerate(ranked, 1)],
        "running": _running(conn, keys, now),
        "preemptions": [vars(p) for p in pending_preemptions(conn, keys)],
        "queue": {"depth": sum(queues.values()), "queues": queues,
                  "delayed": conn.zcard(keys.delayed_jobs), "active": conn.hlen(keys.active)},
        "nodes": _nodes(conn, keys, leases, held, workers, breakers, GpuStore(conn, keys).inventory()),
        "reservations": [asdict(r) for r in ReservationStore(conn, keys).all().values()],
        "workers": workers,
        "failures": _failures(conn, keys, failures),
    }


def last_trained(conn: redis.Redis, keys: Keys, config_keys: list[str]) -> dict[str, float | None]:
    """Config key -> when its last training ended (unix s), None if it never trained: one round
    trip. (A never-trained config's "hours since training" counts from when it was first seen.)"""
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for config_key in config_keys:
            pipe.hget(keys.config(config_key), "last_trained_at")
        return {k: float(v) if v else None for k, v in zip(config_keys, pipe.execute())}


def _config_row(p: Any, rank: int, breakers: Breakers, trained: dict[str, float | None]) -> dict[str, Any]:
    breaker = breakers.get(("config", p.config_key), CLOSED_BREAKER)
    return {
        "config_key": p.config_key, "rank": rank if p.eligible else None, "score": round(p.score, 3),
        "eligible": p.eligible, "why": p.why, "flags": p.flags + ([p.preemption] if p.preemption else []),
        "hours_waiting": round(p.hours_waiting, 2), "preemption": p.preemption,
        "hours_since_training": round(p.hours_since_training, 2), "last_trained_at": trained.get(p.config_key),
        "new_samples": p.new_samples,
        "elo_per_hour": round(p.elo_per_hour, 2), **breaker_fields(breaker),
    }


def breaker_fields(breaker: dict[str, Any]) -> dict[str, Any]:
    """A config's or node's breaker as status shows it: `breaker` (closed, open, half_open) and,
    while open, `breaker_trial_in_s` (then one attempt goes through; success closes it)."""
    return {"breaker": breaker["state"], "breaker_failures": breaker["failures"],
            "breaker_trial_at": breaker["trial_at"], "breaker_trial_in_s": breaker["trial_in_s"]}


def _running(conn: redis.Redis, keys: Keys, now: float) -> list[dict[str, Any]]:
    ids = [v.decode() for v in conn.hvals(keys.active)]
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for job_id in ids:
            pipe.hgetall(keys.job(job_id))
        records = [decode_hash(r) for r in pipe.execute()]
    rows = []
    for r in records:
        if r.get("state") not in ACTIVE_ATTEMPT_STATES:
            continue
        rows.append({"job_id": r["job_id"], "config_key": r["config_key"], "state": r["state"],
                     "node": r.get("node", ""), "attempt": int(r.get("attempts", 0)),
                     "epoch": int(r.get("epoch") or 0), "total_epochs": int(r.get("epochs") or 0),
                     "train_loss": r.get("train_loss"), "val_loss": r.get("val_loss"),
                     "elapsed_s": round(now - float(r.get("started_at") or now), 1), "eta_s": eta_s(r, now),
                     "preempt_for": r.get("preempt_for") if r.get("preempt_requested_at") else None,
                     "preempt_why": r.get("preempt_why") if r.get("preempt_requested_at") else None})
    return sorted(rows, key=lambda row: row["config_key"])


def _workers(conn: redis.Redis, now: float, held: list[dict[str, str]]) -> list[dict[str, Any]]:
    """RQ's workers, each with the node it runs on (see the module docstring)."""
    leased = {h["worker"]: h["node"] for h in held if h.get("worker") and h.get("node")}
    workers = Worker.all(connection=conn)
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for worker in workers:
            pipe.hmget(worker.key, WORKER_NODE_FIELD, *WORKER_GPU_FIELDS)
        registered = [[v.decode() if v else None for v in reply] for reply in pipe.execute()]
    rows = []
    for worker, (node, slot, gpu) in zip(workers, registered):
        beat = worker.last_heartbeat.timestamp() if worker.last_heartbeat else None
        rows.append({"name": worker.name, "state": worker.get_state(), "hostname": worker.hostname,
                     "node": leased.get(worker.name) or node or worker.hostname or "",
                     "gpu_slot": slot, "gpu": gpu,
                     "seconds_since_heartbeat": None if beat is None else round(now - beat, 1)})
    return sorted(rows, key=lambda row: row["name"])


def _nodes(conn: redis.Redis, keys: Keys, leases: LeaseManager, held: list[dict[str, str]],
           workers: list[dict[str, Any]], breakers: Breakers, gpus: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every node listed (hosts, health events) or named by a lease or a worker, with its workers."""
    rows = [{**n, "listed": True} for n in leases.nodes()]
    named = {h["node"] for h in held if h.get("node")} | {w["node"] for w in workers if w["node"]}
    unlisted = sorted(named - {n["node"] for n in rows})
    now_ms = RedisClock(conn)() * 1000  # one reading per view
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for name in unlisted:
            pipe.zcount(keys.node_slots(name), now_ms, "+inf")
        in_use = pipe.execute()
    rows += [{"node": name, "gpus": str(leases.default_slots), "status": "healthy", "in_use": str(used),
              "listed": False} for name, used in zip(unlisted, in_use)]
    for row in rows:
        row["workers"] = [w["name"] for w in workers if w["node"] == row["node"]]
        row.update(breaker_fields(breakers.get(("node", row["node"]), CLOSED_BREAKER)))
        inventory = gpus.get(row["node"], {})
        row.update({"gpu": inventory.get("gpu", "unknown"), "gpu_source": inventory.get("source", ""),
                    "gpu_slots": inventory.get("slots", [])})
    return sorted(rows, key=lambda row: row["node"])


def _failures(conn: redis.Redis, keys: Keys, count: int) -> list[dict[str, str]]:
    found = []
    for entry_id, raw in conn.xrevrange(keys.events, count=RECENT_EVENTS_SCANNED):
        event = decode_entry(entry_id, raw)
        if event.type == TRAINING_FAILED:
            f = event.fields
            found.append({"id": event.id, "job_id": f.get("job_id", ""), "config_key": f.get("config_key", ""),
                          "reason": f.get("reason", ""), "error": f.get("error", "")[:200],
                          "will_retry": f.get("will_retry", ""), "node": f.get("node", "")})
            if len(found) == count:
                break
    return found
