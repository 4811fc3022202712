"""The chaos run's faults: what each does to the cluster, and when it counts as recovered (timed
from the moment in brackets).

- kill_node: SIGKILL a busy node: its worker(s), work horse and trainer; fresh workers replace them.
  Recovered: the job's retry starts (the kill).
- freeze_worker: SIGSTOP a busy node's processes past the lease TTL, then SIGCONT.
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
- spot_notice: the ephemeral node's provider gives notice while it trains: SIGTERM to its worker
  alone (systemd's KillMode=mixed, `docker stop`), then after NOTICE_GRACE_S SIGKILL to whatever of
  the node is left, and a fresh instance starts. Expected: the trainer checkpoints, the attempt ends
  TRAINING_PREEMPTED kind node_notice (its `lost_gpu_hours`: the work since the checkpoint) and the
  job is requeued at once. Recovered: the job's next attempt starts (the SIGTERM).
- vanish: the ephemeral node disappears without notice: SIGKILL to its worker, work horse and
  trainer at once; the lease expires and the reaper retries the job. The node's replacement starts
  once the job runs again (or WAIT_S passed). Recovered: the job's next attempt starts (the kill).
- gang_node_kill: SIGKILL the two-GPU node (both workers, the work horse, the trainer) while a
  two-GPU training runs there; both workers restart at once. The job must run again, once (the
  process-table and lease-state watches say it never ran twice nor held half its GPUs).
  Recovered: the job's next attempt starts (the kill).
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil
import redis

from bench.chaos_cluster import (
    EPHEMERAL_EPOCH_S,
    EPHEMERAL_NODE,
    GANG_GPUS,
    GANG_NODE,
    ORCHESTRATOR,
    PROXIED_NODES,
    wait_until,
)
from coordinator.bus.events import Event
from coordinator.core.keys import Keys

if TYPE_CHECKING:
    from bench.chaos import EventLog
    from bench.chaos_cluster import Cluster

FAULTS = ("kill_node", "kill_orchestrator", "restart_redis", "freeze_worker", "failover", "partition_before_ttl",
          "partition_at_ttl", "partition_after_ttl", "partition_orchestrator", "slow_link", "spot_notice", "vanish",
          "gang_node_kill")
KEYS = Keys("ringrift")
CONFIGS = ("hex8_2p", "square8_2p", "square19_2p", "hex8_3p", "square8_4p", "hexagonal_2p")
WAIT_S = 60.0
BUSY_WAIT_S = 30.0
HEAL_EARLY_S = 2.0
NOTICE_GRACE_S = 15.0  # the short end of a provider's notice (README, "Ephemeral nodes")
NOTICE_MARGIN_S = 0.5  # a notice aims at a training with at least TTL/3 + this left (renewals carry it)
FEED_S = 2.0  # aiming at some nodes of the six workers: an export this often until one trains there


@dataclass
class Outcome:
    fault: str
    recovery_s: float | None  # None: not recovered within WAIT_S
    note: str = ""
    skipped: bool = False  # no busy worker to aim at
    # spot_notice only: the notice's TRAINING_PREEMPTED (kind node_notice) seen, its lost_gpu_hours,
    # SIGTERM -> that event, and whether the node was still alive at the grace's end (SIGKILLed)
    checkpointed: bool = False
    lost_gpu_hours: float | None = None
    notice_s: float | None = None
    outlived_grace: bool = False


@dataclass
class Chaos:
    cluster: Cluster
    conn: redis.Redis  # follows the primary through the sentinels
    log: EventLog
    rng: random.Random
    ttl_s: float
    npz: str


Fits = Callable[[dict[str, str]], bool]  # which running job (its record's fields) a fault may aim at
RECORD_FIELDS = ("state", "node", "attempts", "config_key", "epoch", "resumed_epoch", "epochs")


def busy_node(conn: redis.Redis, nodes: tuple[str, ...], fits: Fits | None = None) -> tuple[str, str, str, str] | None:
    """A node among `nodes` running a training now (one `fits` accepts): (node, job id, attempt, config)."""
    for job_id in conn.hvals(KEYS.active):
        values = conn.hmget(KEYS.job(job_id.decode()), *RECORD_FIELDS)
        record = dict(zip(RECORD_FIELDS, (v.decode() if v else "" for v in values)))
        if record["state"] == "running" and record["node"] in nodes and (fits is None or fits(record)):
            return record["node"], job_id.decode(), record["attempts"], record["config_key"]
    return None



def find_busy(chaos: Chaos, nodes: tuple[str, ...], fits: Fits | None = None, config_key: str | None = None,
              feed_s: float | None = None) -> tuple[str, str, str, str] | None:
    """A training to aim at on one of `nodes`. Without one within BUSY_WAIT_S an export is sent (of
    `config_key`, else any) and it waits as long again; `feed_s`: an export every `feed_s` instead,
    from the start, for faults aimed at one node that any idle worker might beat to the job."""
    if feed_s is not None:
        deadline = time.monotonic() + 2 * BUSY_WAIT_S
        while time.monotonic() < deadline:
            target = wait_until(lambda: busy_node(chaos.conn, nodes, fits), feed_s)
            if target is not None:
                return target
            send_export(chaos, config_key)
        return None
    target = wait_until(lambda: busy_node(chaos.conn, nodes, fits), BUSY_WAIT_S)
    if target is None:  # nothing there to aim at: give it work, once
        send_export(chaos, config_key)
        target = wait_until(lambda: busy_node(chaos.conn, nodes, fits), BUSY_WAIT_S)
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
    tree = node_trees(chaos, node)
    began = time.time()
    if fault == "kill_node":
        kill_whole_node(chaos, node)
        chaos.cluster.start_node(node)
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
    target = find_busy(chaos, PROXIED_NODES, feed_s=FEED_S)
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
    target = find_busy(chaos, PROXIED_NODES, feed_s=FEED_S)
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


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def node_trees(chaos: Chaos, node: str) -> list[psutil.Process]:
    """Every process of the node now: its workers, their work horses and trainers."""
    out: list[psutil.Process] = []
    for proc in chaos.cluster.node_workers(node):
        try:
            out += process_tree(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def kill_whole_node(chaos: Chaos, node: str) -> None:
    """SIGKILL every process of the node at once (its power cut), and reap its workers."""
    signal_tree(node_trees(chaos, node), signal.SIGKILL)
    for proc in chaos.cluster.node_workers(node):
        proc.wait()


def notice_fits(chaos: Chaos) -> Fits:
    """A training with time left for the notice to reach it (the next renewal, TTL/3 away): its
    epochs not yet reported, less the one that may be about to end, at the ephemeral node's pace."""
    def fits(record: dict[str, str]) -> bool:
        done = max(int(record["epoch"] or 0), int(record["resumed_epoch"] or 0))
        left_s = (int(record["epochs"] or 0) - done - 1) * EPHEMERAL_EPOCH_S
        return left_s > chaos.ttl_s / 3 + NOTICE_MARGIN_S
    return fits


def spot_notice(chaos: Chaos, fault: str) -> Outcome:
    mark = chaos.log.mark()
    target = find_busy(chaos, (EPHEMERAL_NODE,), notice_fits(chaos), feed_s=FEED_S)
    if target is None:
        return Outcome(fault, None, "no training on the ephemeral node", skipped=True)
    node, job_id, attempt, _ = target
    workers = chaos.cluster.node_workers(node)
    tree = node_trees(chaos, node)  # the provider kills what is left of these at the grace's end
    began = time.time()
    for proc in workers:  # the worker alone: KillMode=mixed, docker stop
        proc.send_signal(signal.SIGTERM)
    wait_until(lambda: all(proc.poll() is not None for proc in workers), NOTICE_GRACE_S, 0.1)
    survivors = [p for p in tree if alive(p)]
    signal_tree(survivors, signal.SIGKILL)
    for proc in workers:
        proc.wait()
    chaos.cluster.start_node(node)  # a new instance in its place
    ended = job_moved(chaos, job_id, attempt, mark)  # the attempt's end, if it wrote one
    if ended is not None and ended.type == "TRAINING_COMPLETE" and not survivors:
        # It finished before the notice reached it (its renewal was a TTL/3 away): nothing to resume.
        return Outcome(fault, None, f"{node}: the training ended before the notice reached it", skipped=True)
    yielded = chaos.log.find(lambda e: e.type == "TRAINING_PREEMPTED" and e.fields.get("job_id") == job_id
                             and e.fields.get("attempt") == attempt, mark)
    recovered = retry_started(chaos, job_id, attempt, began)
    outcome = Outcome(fault, recovered, node, outlived_grace=bool(survivors))
    if yielded is not None and yielded.fields.get("kind") == "node_notice":
        outcome.checkpointed = True
        outcome.lost_gpu_hours = float(yielded.fields.get("lost_gpu_hours") or 0)
        outcome.notice_s = max(0.0, event_at(yielded) - began)
        outcome.note = (f"{node}: checkpointed at epoch {yielded.fields.get('epoch')} in {outcome.notice_s:.1f} s, "
                        f"lost {outcome.lost_gpu_hours * 3600:.2f} GPU-s")
    else:
        outcome.note = f"{node}: NO node_notice yield ({ended.type if ended else 'no event'})"
    if survivors:
        outcome.note += f"; {len(survivors)} process(es) SIGKILLed at the grace's end"
    return outcome


def vanish(chaos: Chaos, fault: str) -> Outcome:
    target = find_busy(chaos, (EPHEMERAL_NODE,), feed_s=FEED_S)
    if target is None:
        return Outcome(fault, None, "no training on the ephemeral node", skipped=True)
    node, job_id, attempt, _ = target
    began = time.time()
    kill_whole_node(chaos, node)
    recovered = retry_started(chaos, job_id, attempt, began)
    chaos.cluster.start_node(node)  # a replacement instance, once the job went on elsewhere
    return Outcome(fault, recovered, node)


def gang_node_kill(chaos: Chaos, fault: str) -> Outcome:
    gang_boards = set(GANG_GPUS["boards"])
    gang_config = next(c for c in CONFIGS if c.rsplit("_", 1)[0] in gang_boards)
    target = find_busy(chaos, (GANG_NODE,), lambda r: r["config_key"].rsplit("_", 1)[0] in gang_boards,
                       gang_config, feed_s=FEED_S)
    if target is None:
        return Outcome(fault, None, "no multi-GPU training on the two-GPU node", skipped=True)
    node, job_id, attempt, config = target
    held = chaos.conn.hget(KEYS.job(job_id), "gpu_devices")
    began = time.time()
    kill_whole_node(chaos, node)
    chaos.cluster.start_node(node)
    recovered = retry_started(chaos, job_id, attempt, began)

    def devices_again() -> str | None:  # the retry's devices, once its record has them
        attempts, devices = chaos.conn.hmget(KEYS.job(job_id), "attempts", "gpu_devices")
        return devices.decode() if attempts and int(attempts) > int(attempt) and devices else None

    again = wait_until(devices_again, 5.0, 0.2) if recovered is not None else None
    return Outcome(fault, recovered, f"{config} on {node} GPUs {held.decode() if held else '?'}, "
                                     f"again on GPUs {again or '?'}")


INJECT = {"kill_node": kill_node, "freeze_worker": kill_node, "kill_orchestrator": kill_orchestrator,
          "restart_redis": restart_redis, "failover": failover, "partition_before_ttl": partition_worker,
          "partition_at_ttl": partition_worker, "partition_after_ttl": partition_worker,
          "partition_orchestrator": partition_orchestrator, "slow_link": slow_link, "spot_notice": spot_notice,
          "vanish": vanish, "gang_node_kill": gang_node_kill}


def inject(chaos: Chaos, fault: str) -> Outcome:
    return INJECT[fault](chaos, fault)
