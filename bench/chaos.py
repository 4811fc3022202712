"""Chaos: N rounds of random faults over a stream of exports, then the damage report.

Runs a redis-server (AOF everysec), `ringrift-train run` and three `rq worker training` processes
(stub trainer: a few short epochs) and, each round, sends exports and injects one fault:
SIGKILL a busy worker with its work horse and trainer (a node lost; a fresh worker replaces it),
SIGKILL the orchestrator (restarted at once), restart Redis (SIGTERM: AOF synced; down 1 s),
or SIGSTOP a busy worker past its lease TTL (then SIGCONT). Then it waits for the pipeline to
drain and checks, from the stream and the process table:

- lost: configs whose newest export was never trained (must be 0);
- run twice concurrently: moments (sampled every 50 ms) when two live trainer processes of the
  same config ran at once (must be 0);
- stale publishes accepted: TRAINING_COMPLETE under a fencing token older than one already
  issued for that config (must be 0);
- recovery: from the fault to the next sign of progress it was waiting for (the killed or frozen
  job's retry starting; the orchestrator or Redis handling a new event).

    python -m bench.chaos [--rounds 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil
import redis
import yaml

from coordinator.events import decode_entry
from coordinator.keys import Keys
from coordinator.local_redis import LocalRedis
from coordinator.workers_pool import start_worker, stop_workers

CONFIGS = ["hex8_2p", "square8_2p", "square19_2p", "hex8_3p", "square8_4p", "hexagonal_2p"]
FAULTS = ("kill_node", "kill_orchestrator", "restart_redis", "freeze_worker")
KEYS = Keys("ringrift")
LEASE_TTL_S = 10.0


class Cluster:
    def __init__(self, root: Path, server: LocalRedis) -> None:
        self.root, self.server = root, server
        self.config = root / "chaos.yaml"
        self.config.write_text(yaml.safe_dump({
            "redis": {"url": server.url},
            "training": {"default_epochs": 4, "command": ["{python}", "-m", "workers.stub_train",
                                                          "--epoch-seconds", "0.5"],
                         "models_root": str(root / "models"), "check_npz": False, "kill_grace_s": 2},
            "leases": {"ttl_s": LEASE_TTL_S, "defer_s": 1.0},
            "retries": {"infrastructure": 20, "backoff_base_s": 0.5, "backoff_max_s": 5},
            "breakers": {"failures": 1000},
            "hosts": {f"node-{i}": 1 for i in range(3)},
        }))
        self.orchestrator: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.generation = 0

    def start_orchestrator(self) -> None:
        with open(self.root / "orchestrator.log", "ab") as log:
            self.orchestrator = subprocess.Popen(
                [sys.executable, "-m", "coordinator.cli", "--config", str(self.config), "run"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RINGRIFT_CONSUMER": "chaos"})

    def start_worker(self, node: str) -> None:
        self.generation += 1
        self.workers[node] = start_worker(self.server.url, f"chaos-{node}-{self.generation}", node,
                                          {"OMP_NUM_THREADS": "1"}, log_path=self.root / f"{node}.log")

    def stop(self) -> None:
        stop_workers(list(self.workers.values()))
        if self.orchestrator:
            self.orchestrator.terminate()
            self.orchestrator.wait(timeout=15)


def events(conn: redis.Redis) -> list:
    return [decode_entry(i, f) for i, f in conn.xrange(KEYS.events)]


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except redis.RedisError:
            value = None
        if value:
            return value
        time.sleep(interval_s)
    return None


def busy_node(conn: redis.Redis) -> tuple[str, str, str] | None:
    """A node running a training now: (node, job id, attempt)."""
    for job_id in conn.hvals(KEYS.active):
        state, node, attempt = conn.hmget(KEYS.job(job_id.decode()), "state", "node", "attempts")
        if state == b"running" and node:
            return node.decode(), job_id.decode(), attempt.decode()
    return None


def probe(conn: redis.Redis, timeout_s: float = 60.0) -> float | None:
    """Send an event and time how long until the orchestrator has handled it."""
    began = time.time()
    try:
        event_id = conn.xadd(KEYS.events, {"type": "CLUSTER_HEALTH_CHANGED", "alive_peers": "3"}).decode()
    except redis.RedisError:
        return None
    handled = wait_until(lambda: conn.hget(KEYS.cluster_health, "event_id") == event_id.encode(), timeout_s)
    return time.time() - began if handled else None


def retry_started(conn: redis.Redis, job_id: str, attempt: str, since: float, timeout_s: float) -> float | None:
    def started():
        for e in events(conn):
            f = e.fields
            if e.type == "TRAINING_STARTED" and f["job_id"] == job_id and int(f["attempt"]) > int(attempt):
                return int(e.id.split("-")[0]) / 1000.0
        return None
    at = wait_until(started, timeout_s, 0.2)
    return at - since if at else None


def inject(cluster: Cluster, conn: redis.Redis, fault: str, rng: random.Random) -> tuple[str, float | None]:
    if fault in ("kill_node", "freeze_worker"):
        target = wait_until(lambda: busy_node(conn), 20)
        if target is None:
            fault = "kill_orchestrator"  # nothing is training right now
        else:
            node, job_id, attempt = target
            proc = cluster.workers[node]
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            began = time.time()
            if fault == "kill_node":
                for p in tree:
                    p.send_signal(signal.SIGKILL)
                proc.wait()
                cluster.start_worker(node)
            else:
                for p in tree:
                    p.send_signal(signal.SIGSTOP)
                time.sleep(LEASE_TTL_S + 2)
                for p in tree:
                    p.send_signal(signal.SIGCONT)
            return fault, retry_started(conn, job_id, attempt, began, 60)
    if fault == "kill_orchestrator":
        assert cluster.orchestrator is not None
        began = time.time()
        cluster.orchestrator.kill()
        cluster.orchestrator.wait()
        cluster.start_orchestrator()
        handled = probe(conn)
        return fault, (time.time() - began) if handled is not None else None
    began = time.time()
    cluster.server.restart(down_s=1.0)
    handled = probe(conn)
    return fault, (time.time() - began) if handled is not None else None


class ConcurrencyWatch(threading.Thread):
    """Samples the process table: two live (not stopped) trainers of one config at once?"""

    def __init__(self, models_root: Path) -> None:
        super().__init__(daemon=True)
        self.models_root = str(models_root)  # this run's trainers only, not other processes'
        self.overlaps = 0
        self.samples = 0
        self.examples: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            live: dict[str, list[str]] = defaultdict(list)
            for proc in psutil.process_iter(["cmdline", "status", "pid"]):
                cmd = proc.info["cmdline"] or []
                if "workers.stub_train" in cmd and proc.info["status"] not in (psutil.STATUS_STOPPED,
                                                                               psutil.STATUS_ZOMBIE):
                    out = Path(cmd[cmd.index("--output-dir") + 1] if "--output-dir" in cmd else "")
                    if not str(out).startswith(self.models_root):
                        continue
                    live[out.parent.parent.name].append(f"{proc.info['pid']}:{out.parent.name}/{out.name}"
                                                        f":{proc.info['status']}")
            self.samples += 1
            for procs in live.values():
                if len(procs) > 1:
                    self.overlaps += 1
                    if len(self.examples) < 5:
                        self.examples.append(" & ".join(procs))


def audit(conn: redis.Redis) -> dict[str, int]:
    stream = events(conn)
    issued: dict[str, int] = defaultdict(int)
    stale = 0
    for e in stream:
        if e.type == "TRAINING_STARTED" and e.fields.get("fence"):
            issued[e.fields["config_key"]] = max(issued[e.fields["config_key"]], int(e.fields["fence"]))
        if e.type == "TRAINING_COMPLETE" and int(e.fields.get("fence", 0)) < issued[e.fields["config_key"]]:
            stale += 1
    lost = 0
    for config_key in CONFIGS:
        version, trained = conn.hmget(KEYS.config(config_key), "data_version", "trained_data_version")
        if version and int(version) != int(trained or 0):
            lost += 1
    return {"events": len(stream), "completed": sum(e.type == "TRAINING_COMPLETE" for e in stream),
            "stale": stale, "lost": lost, "fenced": sum(e.fields.get("reason") == "fenced" for e in stream)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default=",".join(FAULTS), help="the kinds to draw from, comma-separated")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    recoveries: dict[str, list[float]] = defaultdict(list)
    unrecovered = sent = 0
    with tempfile.TemporaryDirectory() as tmp, LocalRedis(appendonly=True) as server:
        root = Path(tmp)
        watch = ConcurrencyWatch(root / "models")
        npz = root / "data.npz"
        npz.write_bytes(b"stub")
        cluster = Cluster(root, server)
        cluster.start_orchestrator()
        for i in range(3):
            cluster.start_worker(f"node-{i}")
        conn = redis.Redis.from_url(server.url, socket_timeout=5)
        watch.start()
        try:
            for round_no in range(1, args.rounds + 1):
                for _ in range(3):
                    config_key = rng.choice(CONFIGS)
                    wait_until(lambda c=config_key: conn.xadd(KEYS.events, {
                        "type": "NPZ_EXPORT_COMPLETE", "config_key": c, "npz_path": str(npz),
                        "samples": str(rng.randint(100, 1000))}), 30)
                    sent += 1
                time.sleep(rng.uniform(0.5, 1.5))
                fault, recovered = inject(cluster, conn, rng.choice(args.faults.split(",")), rng)
                print(f"round {round_no:>2}: {fault:<17} recovered in "
                      f"{'-' if recovered is None else f'{recovered:.1f} s'}", flush=True)
                if recovered is None:
                    unrecovered += 1
                else:
                    recoveries[fault].append(recovered)
            drained = wait_until(lambda: conn.hlen(KEYS.active) == 0 and audit(conn)["lost"] == 0, 180, 0.5)
        finally:
            watch.done.set()
            watch.join()
            report = audit(conn) if conn.ping() else {}
            cluster.stop()
    print_table(args, sent, report, watch, recoveries, unrecovered, bool(drained))
    return 0 if report.get("lost", 1) == 0 and watch.overlaps == 0 and report.get("stale", 1) == 0 else 1


def print_table(args, sent: int, report: dict, watch: ConcurrencyWatch, recoveries: dict[str, list[float]],
                unrecovered: int, drained: bool) -> None:
    every = [r for values in recoveries.values() for r in values]
    print(f"\nchaos: {args.rounds} rounds (seed {args.seed}), 3 workers, lease TTL {LEASE_TTL_S:g} s, "
          f"pipeline drained afterwards: {'yes' if drained else 'NO'}\n")
    print("| measure | value | must be |")
    print("|---|---|---|")
    print(f"| exports sent | {sent} | |")
    print(f"| events on the stream | {report.get('events', '?')} | |")
    print(f"| trainings completed | {report.get('completed', '?')} | |")
    print(f"| exports lost (newest data never trained) | {report.get('lost', '?')} | 0 |")
    print(f"| run twice concurrently ({watch.samples} process-table samples) | {watch.overlaps} | 0 |")
    print(f"| stale publishes accepted | {report.get('stale', '?')} (fenced and refused: "
          f"{report.get('fenced', '?')}) | 0 |")
    print(f"| faults not recovered within 60 s | {unrecovered} | 0 |")
    for example in watch.examples:
        print(f"| overlap seen | {example} | |")
    if every:
        print(f"| recovery, all faults: median / max | {statistics.median(every):.1f} s / {max(every):.1f} s | |")
    for fault in FAULTS:
        values = recoveries.get(fault, [])
        if values:
            print(f"| recovery, {fault} ({len(values)}x): median / max | {statistics.median(values):.1f} s / "
                  f"{max(values):.1f} s | |")


if __name__ == "__main__":
    sys.exit(main())
