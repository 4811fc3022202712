"""Prometheus metrics of `ringrift-train run --metrics-port 9108` (prometheus-client).

Two kinds: what this orchestrator sees happen on the stream (events consumed and dead-lettered
by type, training durations, event-to-start latency, lease acquisitions, fenced publishes), kept
as counters and histograms in a registry of its own; and the cluster's state, read from Redis at
scrape time (queue depth, jobs by state, per-config priority and Elo/h, breakers of configs and
nodes, node slots, GPUs by node and model). Every known label of the labelled counters exists at 0 from the start: a
series Prometheus first sees at 1 never shows in `rate()`.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from coordinator.bus import events as ev
from coordinator.core.clock import RedisClock
from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from coordinator.core.text import decode_hash
from coordinator.scheduling.preemption_rule import VALUE, WAIT
from coordinator.stores.breakers import OPEN, breaker_state, node_breakers_open
from coordinator.stores.gpus import GpuStore
from coordinator.stores.job_records import NOTICE_STOP, pending_preemptions, training_queues
from coordinator.stores.leases import LeaseManager

JOBS_SCANNED = 2000
CONFIGS_EXPORTED = 2000
# Seconds (the demo's trainings) to a day (a long run on a big board).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 16 * 3600,
                    24 * 3600, float("inf"))
UNKNOWN_TYPE = "unknown"  # the label of events whose type is not in events.KNOWN_TYPES
# ringrift_node_slots' status when the node's circuit breaker is open: its GPUs take no jobs.
BREAKER_OPEN_STATUS = "breaker_open"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))


class Metrics:
    def __init__(self, conn: redis.Redis, keys: Keys, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("ringrift_events_consumed", "Events handled by this orchestrator", ["type"],
                                registry=r)
        self.dead = Counter("ringrift_events_dead_lettered", "Events moved to the dead-letter stream", ["type"],
                            registry=r)
        for kind in (*sorted(ev.KNOWN_TYPES), UNKNOWN_TYPE):  # at 0 before the first event of each type
            self.consumed.labels(kind)
            self.dead.labels(kind)
        self.duration = Histogram("ringrift_training_duration_seconds", "Duration of completed trainings",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.latency = Histogram("ringrift_event_to_start_seconds", "From the export event to the training start",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.acquired = Counter("ringrift_lease_acquisitions", "Training leases taken (trainings started)",
                                registry=r)
        self.fenced = Counter("ringrift_fenced_publishes", "Results refused because a newer lease existed",
                              registry=r)
        self.preemptions = Counter("ringrift_preemptions", "Trainings that yielded their GPU at a checkpoint, by "
                                   "kind (wait: the wait bound; value: outranked by the margin; node_notice: its "
                                   "ephemeral host announced its termination)", ["kind"], registry=r)
        for kind in (WAIT, VALUE, NOTICE_STOP):
            self.preemptions.labels(kind)
        self.preempted_hours = Counter("ringrift_preemption_lost_gpu_hours", "GPU-hours of work preempted "
                                       "trainings had done since their newest checkpoint", registry=r)
        r.register(_ClusterCollector(conn, keys, settings))

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def observe_exports(self, count: int) -> None:
        """`count` NPZ_EXPORT_COMPLETE events applied (one counter update per batch, not per event)."""
        self.consumed.labels(ev.NPZ_EXPORT_COMPLETE).inc(count)

    def observe(self, event: ev.Event, dead: bool) -> None:
        kind = event.type if event.type in ev.KNOWN_TYPES else UNKNOWN_TYPE
        if dead:
            self.dead.labels(kind).inc()
            return
        self.consumed.labels(kind).inc()
        f = event.fields
        if event.type == ev.TRAINING_STARTED:
            self.acquired.inc()
            if f.get("source_event"):
                started_ms, exported_ms = int(event.id.split("-")[0]), int(f["source_event"].split("-")[0])
                self.latency.observe(max(0, started_ms - exported_ms) / 1000.0)
        elif event.type == ev.TRAINING_COMPLETE and f.get("duration_s"):
            self.duration.observe(float(f["duration_s"]))
        elif event.type == ev.TRAINING_FAILED and f.get("reason") == "fenced":
            self.fenced.inc()
        elif event.type == ev.TRAINING_PREEMPTED:
            self.preemptions.labels(f.get("kind") or WAIT).inc()
            self.preempted_hours.inc(float(f.get("lost_gpu_hours") or 0))


class _ClusterCollector:
    """Read at scrape time: what every orchestrator and worker shares in Redis."""

    def __init__(self, conn: redis.Redis, keys: Keys, settings: Settings) -> None:
        self.conn, self.keys, self.settings = conn, keys, settings
        self.clock = RedisClock(conn)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        conn, keys = self.conn, self.keys
        yield GaugeMetricFamily("ringrift_queue_depth", "Jobs waiting on RQ's training queues (GPU requirements' too)",
                                value=sum(training_queues(conn, keys).values()))
        yield GaugeMetricFamily("ringrift_jobs_delayed", "Jobs deferred or retrying after backoff",
                                value=conn.zcard(keys.delayed_jobs))
        yield self._jobs_by_state()
        breaker = GaugeMetricFamily("ringrift_breaker_open", "1 while a circuit breaker is open",
                                    labels=["kind", "name"])
        yield from self._configs(breaker)
        yield from self._nodes(breaker)
        yield breaker
        yield GaugeMetricFamily("ringrift_preemptions_pending", "Running trainings asked to yield their GPU",
                                value=len(pending_preemptions(conn, keys)))
        stats = decode_hash(conn.hgetall(keys.stats))
        yield CounterMetricFamily("ringrift_lease_busy", "Jobs handed back because their leases were busy",
                                  value=float(stats.get("lease_busy", 0)))
        yield CounterMetricFamily("ringrift_reserved", "Jobs handed back because their node was reserved for a "
                                  "waiting multi-GPU training", value=float(stats.get("reserved", 0)))

    def _jobs_by_state(self) -> GaugeMetricFamily:
        ids = self.conn.zrevrange(self.keys.jobs, 0, JOBS_SCANNED - 1)
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for job_id in ids:
                pipe.hget(self.keys.job(job_id.decode()), "state")
            states = Tally(s.decode() for s in pipe.execute() if s)
        family = GaugeMetricFamily("ringrift_jobs", f"Jobs by state (newest {JOBS_SCANNED})", labels=["state"])
        for state, count in sorted(states.items()):
            family.add_metric([state], count)
        return family

    def _configs(self, breaker: GaugeMetricFamily) -> Iterator[GaugeMetricFamily]:
        names = [n.decode() for n in self.conn.zrevrange(self.keys.priority, 0, CONFIGS_EXPORTED - 1)]
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for name in names:
                pipe.hmget(self.keys.config(name), "score", "elo_per_hour")
                pipe.hgetall(self.keys.breaker("config", name))
            replies = pipe.execute()
        priority = GaugeMetricFamily("ringrift_config_priority", "Priority score (-1: not eligible)", labels=["config"])
        elo = GaugeMetricFamily("ringrift_config_elo_per_hour", "Elo velocity", labels=["config"])
        now = self.clock()
        for i, name in enumerate(names):
            score, velocity = replies[2 * i]
            priority.add_metric([name], float(score or -1))
            elo.add_metric([name], float(velocity or 0))
            state = breaker_state(decode_hash(replies[2 * i + 1]), self.settings.breakers, now)
            breaker.add_metric(["config", name], 1.0 if state == OPEN else 0.0)
        yield priority
        yield elo

    def _nodes(self, breaker: GaugeMetricFamily) -> Iterator[GaugeMetricFamily]:
        """Slots per node; a node whose breaker is open reports status `breaker_open` (its workers
        hand every job back, so its GPUs are not usable) and a `kind="node"` breaker series."""
        lease = self.settings.leases
        nodes = LeaseManager(self.conn, self.keys, lease.ttl_s, lease.default_node_slots).nodes()
        opened = node_breakers_open(self.conn, self.keys, self.settings.breakers, (n["node"] for n in nodes),
                                    self.clock())
        in_use = GaugeMetricFamily("ringrift_node_slots_in_use", "GPU slots leased", labels=["node"])
        total = GaugeMetricFamily("ringrift_node_slots", f"GPU slots by node status (healthy, degraded, down, "
                                  f"{BREAKER_OPEN_STATUS})", labels=["node", "status"])
        for n in nodes:
            is_open = opened[n["node"]]
            breaker.add_metric(["node", n["node"]], 1.0 if is_open else 0.0)
            in_use.add_metric([n["node"]], float(n["in_use"]))
            status = BREAKER_OPEN_STATUS if is_open and n["status"] != "down" else n["status"]
            total.add_metric([n["node"], status], float(n["gpus"]))
        yield in_use
        yield total
        yield self._gpus()

    def _gpus(self) -> GaugeMetricFamily:
        """GPUs per node by model (`GpuStore.inventory`: detected, or declared in `hosts`)."""
        family = GaugeMetricFamily("ringrift_node_gpus", "GPUs by node and GPU model (as its workers found them, "
                                   "else as hosts declares them)", labels=["node", "gpu_model", "memory_gb"])
        for node, inv in GpuStore(self.conn, self.keys).inventory().items():
            models = Tally((d["model"] or "unknown", f"{float(d['memory_gb']):g}") for d in inv["devices"])
            for (model, memory), count in sorted(models.items()):
                family.add_metric([node, model, memory], float(count))
        return family
