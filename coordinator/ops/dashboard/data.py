"""What the dashboard page shows, gathered from Redis with read commands only (the `viewer` role).

`DashboardData.page()` is one JSON-ready dict with the five panels: configs ranked with each
factor's contribution (as the scheduler stored them at its last rescore: on every input change and
every `rescore_interval_s`, what dispatch acts on; `ringrift-train priorities` recomputes), running
jobs with their loss curves, Elo over time with trainings marked, the GPU timeline from job
records, and trouble (failures, dead letters, open breakers, nodes down, consumer lag).

Speed at 1,000 configs and 10,000 job records (bench/dashboard_data.py): records of ended jobs
never change, so they are read once and kept (bounded by the timeline's window); every poll reads
only the records of jobs still queued or running, the configs and the stream's new entries. Polls
closer together than PAGE_CACHE_S share one answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from coordinator.bus.events import decode_entry
from coordinator.core.clock import Clock, RedisClock
from coordinator.core.job_states import ACTIVE_ATTEMPT_STATES, COMPLETE, FINAL_STATES
from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from coordinator.core.text import decode_hash
from coordinator.core.text import text as _text
from coordinator.ops.dashboard.stream_tail import StreamTail
from coordinator.scheduling.scheduler import FACTORS
from coordinator.stores.breakers import node_breakers_open
from coordinator.stores.configs import INELIGIBLE
from coordinator.stores.gpus import GpuStore
from coordinator.stores.job_records import eta_s, training_queues
from coordinator.stores.leases import LeaseManager

TIMELINE_HOURS = 24.0
TIMELINE_MIN_S = 120.0  # the narrowest time span the timeline draws
TIMELINE_MAX_JOBS = 3000  # newest job records drawn on the timeline (more would not fit its width)
RECENT_JOBS = 50  # the job list under the running jobs (finished jobs' curves open from it)
ELO_CONFIGS = 8  # configs drawn on the Elo panel: the best ranked that have evaluations
DEAD_LETTERS = 20
PAGE_CACHE_S = 1.0
JOB_FIELDS = ("job_id", "config_key", "state", "node", "attempts", "epoch", "epochs", "train_loss", "val_loss",
              "created_at", "started_at", "finished_at", "resumed_epoch", "fence", "reason", "error",
              "final_loss", "data_version", "model_path", "duration_s", "best_val_loss", "best_epoch", "early_stopped")
CONFIG_FIELDS = ("latest_model", "latest_job", "data_version", "trained_data_version")
# What a config's row shows of its hash (the scheduler's stored explanation and the model), by the
# hash field's name in bytes: only these are decoded.
ROW_FIELDS = {name: name.encode() for name in (
    "score", "eligible", "starving", "why", "flags", "new_samples", "hours_since_training", "elo_per_hour",
    "scored_at", *(f"c_{f}" for f in FACTORS), *CONFIG_FIELDS)}
BREAKER_WHY = "circuit breaker open"  # how scheduler._blockers words an open config breaker


class DashboardData:
    def __init__(self, conn: redis.Redis, settings: Settings, clock: Clock | None = None,
                 cache_s: float = PAGE_CACHE_S) -> None:
        self.conn, self.settings, self.clock, self.cache_s = conn, settings, clock or RedisClock(conn), cache_s
        self.keys = Keys(settings.redis.prefix)
        self.leases = LeaseManager(conn, self.keys, settings.leases.ttl_s, settings.leases.default_node_slots)
        self.tail = StreamTail(conn, self.keys, self.clock)
        self._ended: dict[str, dict[str, str]] = {}  # records in a final state: they never change
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    # -- the page ---------------------------------------------------------------------------------
    def page(self) -> dict[str, Any]:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.cache_s:
                return self._cached[1]
            page = self._gather()
            self._cached = (time.monotonic(), page)
            return page

    def _gather(self) -> dict[str, Any]:
        self.tail.catch_up()
        now = self.clock()
        configs = self._configs()
        records = self._records(now)
        nodes = self.leases.nodes()
        breakers = node_breakers_open(self.conn, self.keys, self.settings.breakers, (n["node"] for n in nodes), now)
        return {
            "at": now,
            "factors": list(FACTORS),
            "configs": configs,
            "running": [self._running_row(r, now) for r in records if r.get("state") in ACTIVE_ATTEMPT_STATES],
            "jobs": [_job_row(r) for r in records[:RECENT_JOBS]],
            "elo": self._elo(configs, records),
            "timeline": self._timeline(records, nodes, now),
            "trouble": self._trouble(configs, nodes, breakers),
            "queue": {"depth": sum(training_queues(self.conn, self.keys).values()),
                      "delayed": self.conn.zcard(self.keys.delayed_jobs)},
        }

    @contextmanager
    def _caught_up(self) -> Iterator[None]:
        """Under the lock (the server's threads share the tail and the kept records), the tail read to now."""
        with self._lock:
            self.tail.catch_up()
            yield

    def job(self, job_id: str) -> dict[str, Any] | None:
        """One job's record and loss curve (finished jobs too, while the stream still has them)."""
        record = decode_hash(self.conn.hgetall(self.keys.job(job_id)))
        if not record:
            return None
        with self._caught_up():
            curve = self.tail.curve(job_id)
        return {**_job_row(record), "record": record, "curve": curve or _record_history(record)}

    def config(self, config_key: str) -> dict[str, Any] | None:
        """One config's history: its Elo points, its jobs in the timeline window, its stored explanation."""
        stored = decode_hash(self.conn.hgetall(self.keys.config(config_key)))
        if not stored:
            return None
        with self._caught_up():
            records = [r for r in self._records(self.clock()) if r.get("config_key") == config_key]
            elo = self._elo_points([config_key])[config_key]
        return {"config_key": config_key, "stored": stored, "elo": elo,
                "trainings": _trainings(records), "jobs": [_job_row(r) for r in records]}

    # -- panels -----------------------------------------------------------------------------------
    def _configs(self) -> list[dict[str, Any]]:
        """Every config in the priority set's order (score, then key, both descending: the order
        `ranked()` sorts in), with the explanation the scheduler stored: two round trips."""
        names = [n.decode() for n in self.conn.zrevrange(self.keys.priority, 0, -1)]
        fields = list(ROW_FIELDS)
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for name in names:  # only the fields a row shows: the hash holds several times more
                pipe.hmget(self.keys.config(name), fields)
            stored = pipe.execute()
        rows = []
        rank = 0
        for name, values in zip(names, stored):
            f = {k: v.decode() for k, v in zip(fields, values) if v is not None}
            eligible = f.get("eligible") == "1"
            rank += eligible
            rows.append({"config_key": name, "rank": rank if eligible else None,
                         "score": float(f.get("score") or INELIGIBLE), "eligible": eligible,
                         "starving": f.get("starving") == "1",
                         "contributions": {k: float(f.get(f"c_{k}") or 0) for k in FACTORS},
                         "why": f["why"].split("; ") if f.get("why") else [],
                         "flags": f["flags"].split(",") if f.get("flags") else [],
                         "new_samples": int(float(f.get("new_samples") or 0)),
                         "hours_since_training": float(f.get("hours_since_training") or 0),
                         "elo_per_hour": float(f.get("elo_per_hour") or 0), "scored_at": f.get("scored_at"),
                         **{k: f.get(k) for k in CONFIG_FIELDS}})
        return rows

    def _running_row(self, r: dict[str, str], now: float) -> dict[str, Any]:
        return {**_job_row(r), "eta_s": eta_s(r, now), "elapsed_s": round(now - float(r.get("started_at") or now), 1),
                "curve": self.tail.curve(r["job_id"])}

    def _elo(self, configs: list[dict[str, Any]], records: list[dict[str, str]]) -> dict[str, Any]:
        candidates = [c["config_key"] for c in configs]
        points = self._elo_points(candidates[:ELO_CONFIGS * 4])
        shown = [c for c in candidates if points.get(c)][:ELO_CONFIGS]
        return {"configs": shown, "points": {c: points[c] for c in shown},
                "trainings": {c: _trainings([r for r in records if r.get("config_key") == c]) for c in shown}}

    def _elo_points(self, config_keys: list[str]) -> dict[str, list[tuple[float, float]]]:
        """The scheduler's window (the config's Elo list) joined with the evaluations on the stream."""
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for c in config_keys:
                pipe.lrange(self.keys.elo(c), 0, -1)
            lists = pipe.execute()
        out = {}
        for c, raw in zip(config_keys, lists):
            window = [_elo_point(p) for p in raw]
            # The list holds the newest points (timed as recorded); the stream adds older ones only.
            first = window[0][0] if window else float("inf")
            out[c] = sorted([p for p in self.tail.elo_points(c) if p[0] < first] + window)
        return out

    def _timeline(self, records: list[dict[str, str]], nodes: list[dict[str, str]], now: float) -> dict[str, Any]:
        since = now - TIMELINE_HOURS * 3600
        gpus = GpuStore(self.conn, self.keys).inventory()
        bars = []
        for r in records:
            if not r.get("started_at") or not r.get("node"):
                continue
            end = float(r["finished_at"]) if r.get("finished_at") else now
            if end < since:
                continue
            bars.append([r["job_id"], r["config_key"], r["node"], float(r["started_at"]), end, r.get("state", ""),
                         int(r.get("attempts") or 0), r.get("reason", "")])
        retried = [[a["job_id"], a["config_key"], a["node"], a["start"], a["end"], "retried", 0, a["reason"]]
                   for a in self.tail.attempts if a["end"] >= since]
        bars += retried
        # From the first bar (a demo's minutes fill the width), at least TIMELINE_MIN_S, at most the window.
        first = min((b[3] for b in bars), default=now)
        since = max(since, min(now - TIMELINE_MIN_S, first - 0.05 * (now - first)))
        return {"since": since, "until": now, "fields": ["job_id", "config_key", "node", "start", "end", "state",
                                                         "attempts", "reason"],
                "nodes": [{"node": n["node"], "gpus": int(n["gpus"]), "status": n["status"],
                           **_gpu_lanes(gpus.get(n["node"], {}))} for n in nodes],
                "bars": bars}

    def _trouble(self, configs: list[dict[str, Any]], nodes: list[dict[str, str]],
                 breakers: dict[str, bool]) -> dict[str, Any]:
        dead = [decode_entry(i, raw) for i, raw in self.conn.xrevrange(self.keys.dead_letters, count=DEAD_LETTERS)]
        try:
            groups = self.conn.xinfo_groups(self.keys.events)
        except redis.ResponseError:  # no stream yet
            groups = []
        return {
            "failures": list(self.tail.failures),
            "dead_letters": [{"id": e.id, "type": e.type, "reason": e.fields.get("dead_reason", ""),
                              "original_id": e.fields.get("dead_original_id", "")} for e in dead],
            "breakers": [{"kind": "config", "name": c["config_key"], "why": w}
                         for c in configs for w in c["why"] if w.startswith(BREAKER_WHY)]
            + [{"kind": "node", "name": name, "why": "open: its workers hand jobs back"}
               for name, is_open in breakers.items() if is_open],
            "nodes_down": [n["node"] for n in nodes if n["status"] == "down"],
            "consumer_groups": [{"name": _text(g.get("name")), "consumers": g.get("consumers"),
                                 "pending": g.get("pending"), "lag": g.get("lag")} for g in groups],
        }

    # -- job records ------------------------------------------------------------------------------
    def _records(self, now: float) -> list[dict[str, str]]:
        """Records of the newest TIMELINE_MAX_JOBS jobs created in the window plus every active job,
        newest first. Ended records come from memory; the rest are read in one round trip."""
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            pipe.zrevrangebyscore(self.keys.jobs, "+inf", now - TIMELINE_HOURS * 3600, start=0,
                                  num=TIMELINE_MAX_JOBS)
            pipe.hvals(self.keys.active)
            recent, active = pipe.execute()
        ids = list(dict.fromkeys(v.decode() for v in [*recent, *active]))
        unread = [i for i in ids if i not in self._ended]
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for job_id in unread:
                pipe.hmget(self.keys.job(job_id), JOB_FIELDS)
            fresh = {i: {k: v.decode() for k, v in zip(JOB_FIELDS, values) if v is not None}
                     for i, values in zip(unread, pipe.execute())}
        self._ended = {i: self._ended.get(i) or fresh[i] for i in ids
                       if i in self._ended or fresh[i].get("state") in FINAL_STATES}
        records = [self._ended.get(i) or fresh[i] for i in ids]
        return sorted((r for r in records if r), key=lambda r: float(r.get("created_at") or 0), reverse=True)


def _gpu_lanes(inventory: dict[str, Any]) -> dict[str, Any]:
    """A node's GPU (`gpu`) and each worker slot's (`slot_gpus`, by slot), for the timeline's lane labels."""
    return {"gpu": inventory.get("gpu", "unknown"),
            "slot_gpus": [[s["slot"], s["gpu"]] for s in inventory.get("slots", [])]}


def _job_row(r: dict[str, str]) -> dict[str, Any]:
    return {"job_id": r.get("job_id", ""), "config_key": r.get("config_key", ""), "state": r.get("state", ""),
            "node": r.get("node", ""), "attempt": int(r.get("attempts") or 0), "epoch": int(r.get("epoch") or 0),
            "epochs": int(r.get("epochs") or 0), "resumed_epoch": int(r.get("resumed_epoch") or 0),
            "fence": r.get("fence", ""), "train_loss": r.get("train_loss"), "val_loss": r.get("val_loss"),
            "final_loss": r.get("final_loss"), "reason": r.get("reason", ""), "error": r.get("error", "")[:300],
            # The published model's figures (an early-stopped run keeps its best epoch, not its last).
            "best_val_loss": r.get("best_val_loss"), "best_epoch": r.get("best_epoch"),
            "early_stopped": {"true": True, "false": False}.get(r.get("early_stopped", "")),
            "started_at": r.get("started_at"), "finished_at": r.get("finished_at")}


def _record_history(record: dict[str, str]) -> list[tuple[int, float | None, float | None]]:
    """The per-epoch history a finished job's record carries in `history` (JSON), if its worker
    stored one: the curve outlives the stream's trimming then."""
    try:
        rows = json.loads(record.get("history") or "[]")
    except ValueError:
        return []
    return [(int(r["epoch"]), r.get("train_loss"), r.get("val_loss")) for r in rows
            if isinstance(r, dict) and isinstance(r.get("epoch"), int)]


def _trainings(records: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Completed trainings as marks on the Elo chart: when the model was published."""
    return sorted(({"at": float(r["finished_at"]), "job_id": r["job_id"], "data_version": r.get("data_version")}
                   for r in records if r.get("state") == COMPLETE and r.get("finished_at")), key=lambda t: t["at"])


def _elo_point(raw: bytes) -> tuple[float, float]:
    at, elo = raw.split()
    return float(at), float(elo)

