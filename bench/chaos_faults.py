"""The chaos run's faults: what each does to the cluster, and when it counts as recovered (timed
from the moment in brackets).

- kill_node: SIGKILL a busy worker, its work horse and trainer; a fresh worker replaces it.
  Recovered: the job's retry starts (the kill).
- freeze_worker: SIGSTOP a busy worker's processes past the lease TTL, then SIGCONT.
  Recovered: the job's retry starts (the stop).
- kill_orchestrator: SIGKILL `ringrift-train run`, restarted at once. Recovered: a new event is
  handled (the kill).
- restart_redis: SIGTERM the primary (AOF synced), down 1 s, same port. Recovered: a new event is
  handled (the stop).
- failover: cut every proxy route, WAIT for the replica, SIGKILL the primary; Sentinel promotes the
  replica, the killed server comes back as its replica. Recovered: a new event is handled on the new
  primary (the kill).
- partition_before_ttl: cut a busy worker off Redis (its trainer runs on), heal 2 s before its lease
  expires. Recovered: the job's next event (the heal).
- partition_at_ttl: the same, healed when the lease expires. Recovered: as above.
- partition_after_ttl: the same, healed only once the job's retry started on another worker. The
  cut-off trainer (2 s) has finished meanwhile, well before its worker gives the lease up (a TTL
  after its last renewal), so the worker publishes under the old fencing token after the heal and
  must be refused (`fenced`). Recovered: the retry starts (the cut).
- partition_orchestrator: cut the orchestrator off for 3-12 s while the workers are not; an export
  is sent meanwhile. Recovered: a new event is handled (the heal).
- slow_link: 200-800 ms each way on a busy worker's link (lease renewals included) until its job's
  next event, a lease TTL at most. Recovered: the job's end (the fault).
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil
import redis

from bench.chaos_cluster import ORCHESTRATOR, PROXIED_NODES, wait_until
from coordinator.bus.events import Event
from coordinator.core.keys import Keys

if TYPE_CHECKING:
    from bench.chaos import EventLog
    from bench.chaos_cluster import Cluster

FAULTS = ("kill_node", "kill_orchestrator", "restart_redis", "freeze_worker", "failover", "partition_before_ttl",
          "partition_at_ttl", "partition_after_ttl", "partition_orchestrator", "slow_link")
KEYS = Keys("ringrift")
CONFIGS = ("hex8_2p", "square8_2p", "square19_2p", "hex8_3p", "square8_4p", "hexagonal_2p")
WAIT_S = 60.0
BUSY_WAIT_S = 30.0
HEAL_EARLY_S = 2.0


@dataclass
class Outcome:
    fault: str
    recovery_s: float | None  # None: not recovered within WAIT_S
    note: str = ""
    skipped: bool = False  # no busy worker to aim at


@dataclass
class Chaos:
    cluster: Cluster
    conn: redis.Redis  # follows the primary through the sentinels
    log: EventLog
    rng: random.Random
    ttl_s: float
    npz: str


def busy_node(conn: redis.Redis, nodes: tuple[str, ...]) -> tuple[str, str, str, str] | None:
    """A node among `nodes` running a training now: (node, job id, attempt, config)."""
    for job_id in conn.hvals(KEYS.active):
        state, node, attempt, config = conn.hmget(KEYS.job(job_id.decode()), "state", "node", "attempts",
                                                  "config_key")
        if state == b"running" and node and node.decode() in nodes:
            return node.decode(), job_id.decode(), attempt.decode(), config.decode()
    return None


def find_busy(chaos: Chaos, nodes: tuple[str, ...]) -> tuple[str, str, str, str] | None:
    target = wait_until(lambda: busy_node(chaos.conn, nodes), BUSY_WAIT_S)
    if target is None:  # nothing there to aim at: give it work, once
        send_export(chaos)
        target = wait_until(lambda: busy_node(chaos.conn, nodes), BUSY_WAIT_S)
    return target


def send_export(chaos: Chaos, config_key: str | None = None) -> None:
    key = config_key or chaos.rng.choice(CONFIGS)
    wait_until(lambda: chaos.conn.xadd(KEYS.events, {
        "type": "NPZ_EXPORT_COMPLETE", "config_key": key, "npz_path": chaos.npz,
        "samples": str(chaos.rng.randint(100, 1000))}), WAIT_S)


def probe(chaos: Chaos, since: float) -> float | None:
    """Send an event; the time from `since` until the orchestrator has handled it."""
    event_id = wait_until(lambda: chaos.conn.xadd(KEYS.events, {"type": "CLUSTER_HEALTH_CHANGED",
                                                                 "alive_peers": "3"}), WAIT_S)
    if not event_id:
        return None
    handled = wait_until(lambda: chaos.conn.hget(KEYS.cluster_health, "event_id") == event_id, WAIT_S)
    return time.time() - since if handled else None


def retry_started(chaos: Chaos, job_id: str, attempt: str, since: float) -> float | None:
    def started():
        return chaos.log.find(lambda e: e.type == "TRAINING_STARTED" and e.fields["job_id"] == job_id
                              and int(e.fields["attempt"]) > int(attempt))
    event = wait_until(started, WAIT_S, 0.2)
    return max(0.0, event_at(event) - since) if event else None


def job_moved(chaos: Chaos, job_id: str, attempt: str, after_index: int) -> Event | None:
    """The job's first end or retry start among the events logged after `after_index`."""
    return chaos.log.find(lambda e: e.fields.get("job_id") == job_id and (
        e.type in ("TRAINING_COMPLETE", "TRAINING_FAILED", "TRAINING_CANCELLED")
        or (e.type == "TRAINING_STARTED" and int(e.fields["attempt"]) > int(attempt))), after_index)


def next_job_event(chaos: Chaos, job_id: str, attempt: str, since: float, after_index: int) -> float | None:
    """Time from `since` to the job's next end or retry start (events logged after `after_index`)."""
    event = wait_until(lambda: job_moved(chaos, job_id, attempt, after_index), WAIT_S, 0.2)
    return max(0.0, event_at(event) - since) if event else None


def event_at(event: Event) -> float:
    """When the event was added (its stream id's milliseconds)."""
    return int(event.id.split("-")[0]) / 1000.0


def process_tree(pid: int) -> list[psutil.Process]:
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


def signal_tree(tree: list[psutil.Process], sig: int) -> None:
    """Send `sig` to each process of `tree` still there: a trainer may exit (and be reaped) between
    the look and the signal, or while its node is frozen."""
    for p in tree:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


# -- the faults ------------------------------------------------------------------------------------
def kill_node(chaos: Chaos, fault: str) -> Outcome:
    target = find_busy(chaos, chaos.cluster.nodes)
    if target is None:
        return Outcome(fault, None, "no busy worker", skipped=True)
    node, job_id, attempt, _ = target
    proc = chaos.cluster.workers[node]
    tree = process_tree(proc.pid)
    began = time.time()
    if fault == "kill_node":
        signal_tree(tree, signal.SIGKILL)
        proc.wait()
        chaos.cluster.start_worker(node)
    else:
        signal_tree(tree, signal.SIGSTOP)
        time.sleep(chaos.ttl_s + 2)
        signal_tree(tree, signal.SIGCONT)
    return Outcome(fault, retry_started(chaos, job_id, attempt, began), node)


def kill_orchestrator(chaos: Chaos, fault: str) -> Outcome:
    orchestrator = chaos.cluster.orchestrator
    assert orchestrator is not None
    began = time.time()
    orchestrator.kill()
    orchestrator.wait()
    chaos.cluster.start_orchestrator()
    return Outcome(fault, probe(chaos, began))


def restart_redis(chaos: Chaos, fault: str) -> Outcome:
    primary = chaos.cluster.ha.primary()
    if primary is None:
        return Outcome(fault, None, "no primary", skipped=True)
    began = time.time()
    primary.restart(down_s=1.0)
    return Outcome(fault, probe(chaos, began))


def failover(chaos: Chaos, fault: str) -> Outcome:
    ha, proxy = chaos.cluster.ha, chaos.cluster.proxy
    if not ha.wait_replica_ready(WAIT_S):
        return Outcome(fault, None, "replica not ready", skipped=True)
    primary = ha.primary()
    assert primary is not None and primary.proc is not None
    for name in proxy.routes:  # nothing in flight between the WAIT and the kill
        proxy.cut(name)
    try:
        redis.Redis(port=primary.port, socket_timeout=3).wait(1, 2000)
    except redis.RedisError:
        pass
    began = time.time()
    primary.proc.kill()
    primary.proc.wait()
    for name in proxy.routes:
        proxy.heal(name)
    recovered = probe(chaos, began)
    primary.start()  # back on its port and data; the sentinels make it the new primary's replica
    return Outcome(fault, recovered, f"primary now :{ha.primary_port()}")


def partition_worker(chaos: Chaos, fault: str) -> Outcome:
    mark = chaos.log.mark()  # before the job is seen running: its end may come before the cut
    target = find_busy(chaos, PROXIED_NODES)
    if target is None:
        return Outcome(fault, None, "no busy proxied worker", skipped=True)
    node, job_id, attempt, config = target
    ttl_left_s = max(0.0, (chaos.conn.pttl(KEYS.lease(config)) or 0) / 1000.0)
    cut_at = time.time()
    chaos.cluster.proxy.cut(node)
    try:
        if fault == "partition_before_ttl":
            time.sleep(max(0.5, ttl_left_s - HEAL_EARLY_S))
        elif fault == "partition_at_ttl":
            time.sleep(ttl_left_s)
        else:
            recovered = retry_started(chaos, job_id, attempt, cut_at)
    finally:
        chaos.cluster.proxy.heal(node)
    healed = time.time()
    if fault != "partition_after_ttl":
        return Outcome(fault, next_job_event(chaos, job_id, attempt, healed, mark),
                       f"{node}, lease had {ttl_left_s:.1f} s")
    # The cut-off attempt now reports: its publish must be refused (fenced), or it failed first.
    ended = wait_until(lambda: chaos.log.find(
        lambda e: e.fields.get("job_id") == job_id and e.fields.get("attempt") == attempt
        and e.fields.get("node") == node and e.fields.get("reason") != "worker_lost"  # not the reaper's
        and e.type in ("TRAINING_COMPLETE", "TRAINING_FAILED"), mark), WAIT_S, 0.2)
    note = f"{node}: old attempt {ended.type if ended else 'silent'} {ended.fields.get('reason', '') if ended else ''}"
    return Outcome(fault, recovered, note.strip())


def partition_orchestrator(chaos: Chaos, fault: str) -> Outcome:
    chaos.cluster.proxy.cut(ORCHESTRATOR)
    try:
        send_export(chaos)
        time.sleep(chaos.rng.uniform(3.0, 12.0))
    finally:
        chaos.cluster.proxy.heal(ORCHESTRATOR)
    return Outcome(fault, probe(chaos, time.time()))


def slow_link(chaos: Chaos, fault: str) -> Outcome:
    mark = chaos.log.mark()  # before the job is seen running: it may end before the latency is on
    target = find_busy(chaos, PROXIED_NODES)
    if target is None:
        return Outcome(fault, None, "no busy proxied worker", skipped=True)
    node, job_id, attempt, _ = target
    delay_s = chaos.rng.uniform(0.2, 0.8)
    began = time.time()
    chaos.cluster.proxy.latency(node, delay_s)
    try:  # slow for a lease TTL at most (three renewals), then the job's end is awaited at full speed
        wait_until(lambda: job_moved(chaos, job_id, attempt, mark), chaos.ttl_s, 0.2)
    finally:
        chaos.cluster.proxy.heal(node)
    return Outcome(fault, next_job_event(chaos, job_id, attempt, began, mark),
                   f"{node} +{delay_s * 1000:.0f} ms each way")


INJECT = {"kill_node": kill_node, "freeze_worker": kill_node, "kill_orchestrator": kill_orchestrator,
          "restart_redis": restart_redis, "failover": failover, "partition_before_ttl": partition_worker,
          "partition_at_ttl": partition_worker, "partition_after_ttl": partition_worker,
          "partition_orchestrator": partition_orchestrator, "slow_link": slow_link}


def inject(chaos: Chaos, fault: str) -> Outcome:
    return INJECT[fault](chaos, fault)
