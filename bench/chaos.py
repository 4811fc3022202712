"""Chaos: N rounds of random faults over a stream of exports, then the damage report.

Starts Redis HA (primary, replica, three sentinels), a fault proxy between the processes and Redis,
`ringrift-train run` and six `rq worker training` processes on five nodes, one of them ephemeral and
one with two GPUs for the multi-GPU config (stub trainer: four 0.5 s epochs, 1.5 s on the ephemeral
node; see bench/chaos_cluster.py). Each round sends exports and injects one fault drawn with the
seed (the kinds and their recovery rules: bench/chaos_faults.py): nodes and the orchestrator killed,
workers frozen, Redis restarted, Sentinel failover, a worker cut off from Redis while its trainer
runs (healed before, at or after the lease TTL), the orchestrator cut off, slow links, a spot
termination notice, an ephemeral node vanishing, the two-GPU node killed under a two-GPU training.
Then it waits for the pipeline to drain and checks, from the stream, the process table and the
lease state:

- lost: configs whose newest export was never trained (must be 0);
- run twice concurrently: moments (sampled every 50 ms) when two live trainer processes of the
  same config ran at once (must be 0);
- stale publishes accepted: TRAINING_COMPLETE under a fencing token older than one already
  issued for that config (must be 0); fenced and refused: publishes the fencing turned away
  (above 0 when partition_after_ttl ran: that fault is built to reach it);
- partial gang holds: lease-state samples (every 0.1 s, one MULTI each; bench/chaos_gang.py) in
  which a live lease held fewer GPU slots or devices than its config needs (must be 0), beside the
  samples that saw a two-GPU lease whole (the control) and nodes with more slots than GPUs (must be 0);
- termination notices: how many checkpointed (TRAINING_PREEMPTED kind node_notice: must be all),
  the GPU-hours each lost (the event's `lost_gpu_hours`) and SIGTERM to checkpoint;
- workers that quit by themselves (a Redis error not ridden out; they are restarted; must be 0);
- recovery per fault kind.

`--soak 60m` runs rounds for that long and samples Redis every minute (bench/chaos_soak.py): it
fails if memory, keys, stream length, pending entries or job records grow without bound.

    python -m bench.chaos [--rounds 20] [--seed 1] [--faults kill_node,failover,...]
    python -m bench.chaos --soak 60m
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from bench.chaos_cluster import GANG_GPUS, NODE_GPUS, Cluster, RedisHA
from bench.chaos_faults import CONFIGS, FAULTS, KEYS, Chaos, Outcome, inject, probe, send_export, wait_until
from bench.chaos_gang import GangWatch
from bench.chaos_soak import Sampler, growth, print_soak
from bench.chaos_trainer import SCRIPT as CHAOS_TRAINER
from coordinator.bus.events import Event, decode_entry
from coordinator.core.connection import connect

LEASE_TTL_S = 10.0
STREAM_MAXLEN = 5000  # trimmed as in production (the audit reads the stream as it goes)
SOAK_STREAM_MAXLEN = 1000  # reached within the soak's warm-up, so the growth check sees the bound
RETENTION_DAYS = 30.0
SOAK_RETENTION_DAYS = 5 / 1440  # job records pruned after 5 minutes in the soak (every 10 minutes)
DRAIN_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 120.0
RQ_WORKERS = "rq:workers"  # RQ's set of registered workers


def cluster_settings(root: Path, ttl_s: float, retention_days: float, stream_maxlen: int) -> dict:
    return {
        "training": {"default_epochs": 4, "command": ["{python}", CHAOS_TRAINER, "--epoch-seconds", "0.5"],
                     "models_root": str(root / "models"), "data_roots": [str(root)], "check_npz": False,
                     "kill_grace_s": 2,
                     "job_retention_days": retention_days},
        "events": {"stream_maxlen": stream_maxlen},
        "leases": {"ttl_s": ttl_s, "defer_s": 1.0},
        "retries": {"infrastructure": 20, "backoff_base_s": 0.5, "backoff_max_s": 5},
        "breakers": {"failures": 1000},
    }


class EventLog:
    """The stream as this run saw it: read incrementally (the stream is trimmed), audited as read."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn
        self.events: list[Event] = []
        self._last = "0-0"
        self._lock = threading.Lock()
        self.issued: dict[str, int] = defaultdict(int)
        self.stale = self.fenced = self.completed = 0

    def poll(self) -> None:
        with self._lock:
            while True:
                entries = self.conn.xrange(KEYS.events, min=f"({self._last}", count=1000)
                if not entries:
                    return
                for entry_id, fields in entries:
                    self._audit(decode_entry(entry_id, fields))
                self._last = entries[-1][0].decode()

    def _audit(self, e: Event) -> None:
        self.events.append(e)
        key = e.fields.get("config_key", "")
        if e.type == "TRAINING_STARTED" and e.fields.get("fence"):
            self.issued[key] = max(self.issued[key], int(e.fields["fence"]))
        elif e.type == "TRAINING_COMPLETE":
            self.completed += 1
            if int(e.fields.get("fence", 0)) < self.issued[key]:
                self.stale += 1
        elif e.type == "TRAINING_FAILED" and e.fields.get("reason") == "fenced":
            self.fenced += 1

    def mark(self) -> int:
        self.poll()
        return len(self.events)

    def find(self, predicate: Callable[[Event], bool], after: int = 0) -> Event | None:
        self.poll()
        return next((e for e in self.events[after:] if predicate(e)), None)


class ConcurrencyWatch(threading.Thread):
    """Samples the process table: two live (not stopped) trainers of one config at once?"""

    def __init__(self, models_root: Path) -> None:
        super().__init__(daemon=True)
        self.models_root = str(models_root)  # this run's trainers only, not other processes'
        self.overlaps = 0  # samples with two live trainers of one config
        self.samples = 0
        self.examples: list[str] = []  # the first sample of the first few incidents
        self.incidents: list[float] = []  # each run of consecutive overlapping samples: its length (s)
        self._open: dict[str, float] = {}
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
            now = time.monotonic()
            twice = {config for config, procs in live.items() if len(procs) > 1}
            self.overlaps += len(twice)
            for config in twice - set(self._open):
                self._open[config] = now
                if len(self.examples) < 5:
                    self.examples.append(f"{time.strftime('%H:%M:%S')} {' & '.join(live[config])}")
            for config in set(self._open) - twice:
                self.incidents.append(now - self._open.pop(config))


def lost_configs(conn: redis.Redis) -> int:
    lost = 0
    for config_key in CONFIGS:
        version, trained = conn.hmget(KEYS.config(config_key), "data_version", "trained_data_version")
        if version and int(version) != int(trained or 0):
            lost += 1
    return lost


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 60m, 2h)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


@dataclass
class Result:
    rounds: int = 0
    sent: int = 0
    report: dict[str, int] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    overlaps: int = 0
    samples: int = 0
    overlap_examples: list[str] = field(default_factory=list)
    overlap_incidents: list[float] = field(default_factory=list)
    quit_unasked: int = 0
    drained: bool = False
    gang_samples: int = 0
    gang_whole: int = 0  # samples x multi-GPU leases seen holding all their GPUs (the control)
    partial_holds: list[str] = field(default_factory=list)
    oversubscribed: list[str] = field(default_factory=list)
    soak: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing lost, nothing run twice, nothing stale published, no worker gave up."""
        return (self.report.get("lost", 1) == 0 and self.overlaps == 0 and self.report.get("stale", 1) == 0
                and self.quit_unasked == 0 and not self.partial_holds and not self.oversubscribed)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--faults", default=",".join(FAULTS), help="the kinds to draw from, comma-separated")
    p.add_argument("--every-kind", action="store_true",
                   help="each kind once, in the order given, before drawing at random")
    p.add_argument("--lease-ttl", type=float, default=LEASE_TTL_S, help="leases.ttl_s of the cluster")
    p.add_argument("--soak", type=parse_duration, default=None,
                   help="run rounds this long (90s, 60m, 1h) and check Redis for growth")
    p.add_argument("--sample-every", type=parse_duration, default=60.0, help="soak sampling interval")
    p.add_argument("--workdir", type=Path, default=None, help="keep logs and data here (default: a temp dir)")
    return p


def run(args: argparse.Namespace) -> Result:
    kinds = args.faults.split(",")
    unknown = set(kinds) - set(FAULTS)
    if unknown:
        raise SystemExit(f"unknown fault kinds: {sorted(unknown)}")
    rng = random.Random(args.seed)
    result = Result()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        ha = RedisHA(root).start()
        cluster = Cluster(root, ha, cluster_settings(root, args.lease_ttl, *(
            (SOAK_RETENTION_DAYS, SOAK_STREAM_MAXLEN) if args.soak else (RETENTION_DAYS, STREAM_MAXLEN))))
        conn = connect(ha.sentinel_url)
        log = EventLog(conn)
        chaos = Chaos(cluster, conn, log, rng, args.lease_ttl, str(root / "data.npz"))
        Path(chaos.npz).write_bytes(b"stub")
        watch = ConcurrencyWatch(root / "models")
        gangs = GangWatch(conn, KEYS, gpu_needs(), {n: NODE_GPUS.get(n, 1) for n in cluster.nodes})
        sampler = Sampler(conn, args.sample_every) if args.soak else None
        try:
            cluster.start_orchestrator()
            for node in cluster.nodes:
                cluster.start_node(node)
            if probe(chaos, time.time()) is None or wait_until(lambda: conn.scard(RQ_WORKERS) >= len(cluster.workers),
                                                                 READY_TIMEOUT_S) is None:
                tail = (root / "orchestrator.log").read_text()[-2000:]
                raise SystemExit(f"the cluster did not come up (orchestrator log: {tail})")
            watch.start()
            gangs.start()
            if sampler:
                sampler.start()
            deadline = time.monotonic() + args.soak if args.soak else None
            while time.monotonic() < deadline if deadline is not None else result.rounds < args.rounds:
                result.rounds += 1
                for _ in range(3):
                    send_export(chaos)
                    result.sent += 1
                time.sleep(rng.uniform(0.5, 1.5))
                fault = kinds[result.rounds - 1] if args.every_kind and result.rounds <= len(kinds) \
                    else rng.choice(kinds)
                outcome = inject(chaos, fault)
                result.outcomes.append(outcome)
                quit_nodes = cluster.replace_quit_workers()
                recovered = "skipped" if outcome.skipped else (
                    "-" if outcome.recovery_s is None else f"{outcome.recovery_s:.1f} s")
                print(f"{time.strftime('%H:%M:%S')} round {result.rounds:>3}: {fault:<22} recovered in "
                      f"{recovered:<8} {outcome.note}" + (f"  WORKER QUIT: {quit_nodes}" if quit_nodes else ""),
                      flush=True)
            result.drained = bool(wait_until(lambda: conn.hlen(KEYS.active) == 0 and lost_configs(conn) == 0,
                                             DRAIN_TIMEOUT_S, 0.5))
            if not result.drained:
                print_stuck(conn)
            cluster.replace_quit_workers()
        finally:
            watch.done.set()
            gangs.done.set()
            if sampler:
                sampler.done.set()
                sampler.join(timeout=120)
                result.soak = sampler.samples
            try:
                log.poll()
                result.report = {"lost": lost_configs(conn), "events": len(log.events),
                                 "completed": log.completed, "stale": log.stale, "fenced": log.fenced}
            except redis.RedisError:
                pass
            cluster.stop()
            conn.close()
            ha.stop()
    result.overlaps, result.samples, result.overlap_examples = watch.overlaps, watch.samples, watch.examples
    result.overlap_incidents = watch.incidents
    result.quit_unasked = cluster.quit_unasked
    gangs.join(timeout=5)
    result.gang_samples, result.gang_whole = gangs.samples, gangs.whole
    result.partial_holds, result.oversubscribed = gangs.partial, gangs.oversubscribed
    return result


def gpu_needs() -> dict[str, int]:
    """Each config's GPUs: the `gpus` section's boards (the others: 1)."""
    boards = GANG_GPUS["boards"]
    return {c: boards.get(c.rsplit("_", 1)[0], {}).get("gpus", 1) for c in CONFIGS}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    print_table(args, result)
    ok = result.clean
    if args.soak:
        verdicts = growth(result.soak)
        print_soak(result.soak, verdicts)
        ok = ok and all(g.bounded is not False for g in verdicts)
    return 0 if ok else 1


def print_table(args: argparse.Namespace, r: Result) -> None:
    done = [o for o in r.outcomes if not o.skipped]
    unrecovered = sum(o.recovery_s is None for o in done)
    what = f"soak {args.soak / 60:.0f} min, {r.rounds} rounds" if args.soak else f"{r.rounds} rounds"
    print(f"\nchaos: {what} (seed {args.seed}), 6 workers on 5 nodes (node-0/1 through the fault proxy with a "
          f"plain URL, node-2 on the Sentinel URL, node-3 ephemeral, node-4 two GPUs with a worker each, both "
          f"proxied), Redis primary + replica + 3 sentinels, lease TTL {args.lease_ttl:g} s, "
          f"pipeline drained afterwards: {'yes' if r.drained else 'NO'}\n")
    print("| measure | value | must be |")
    print("|---|---|---|")
    print(f"| exports sent | {r.sent} | |")
    print(f"| events seen on the stream | {r.report.get('events', '?')} | |")
    print(f"| trainings completed | {r.report.get('completed', '?')} | |")
    print(f"| exports lost (newest data never trained) | {r.report.get('lost', '?')} | 0 |")
    print(f"| run twice concurrently ({r.samples} process-table samples) | {r.overlaps} | 0 |")
    print(f"| stale publishes accepted | {r.report.get('stale', '?')} | 0 |")
    print(f"| fenced and refused (stale publishes turned away) | {r.report.get('fenced', '?')} | > 0 |")
    print(f"| partial gang holds ({r.gang_samples} lease-state samples) | {len(r.partial_holds)} | 0 |")
    print(f"| two-GPU leases seen whole (same samples; the control) | {r.gang_whole} | > 0 |")
    print(f"| nodes with more slots than GPUs (same samples) | {len(r.oversubscribed)} | 0 |")
    for example in (r.partial_holds + r.oversubscribed)[:5]:
        print(f"| lease state seen | {example} | |")
    notices = [o for o in done if o.fault == "spot_notice"]
    if notices:
        lost = [o.lost_gpu_hours for o in notices if o.lost_gpu_hours is not None]
        took = [o.notice_s for o in notices if o.notice_s is not None]
        print(f"| notices that checkpointed (TRAINING_PREEMPTED node_notice) | {sum(o.checkpointed for o in notices)} "
              f"of {len(notices)} | all |")
        if lost:
            print(f"| GPU-hours lost per notice: mean / max | {statistics.mean(lost):.6f} / {max(lost):.6f} "
                  f"({statistics.mean(lost) * 3600:.2f} / {max(lost) * 3600:.2f} GPU-s) | |")
        if took:
            print(f"| notice to checkpoint (SIGTERM -> TRAINING_PREEMPTED): median / max | "
                  f"{statistics.median(took):.1f} s / {max(took):.1f} s | |")
        print(f"| noticed nodes still alive at the grace's end (SIGKILLed) | "
              f"{sum(o.outlived_grace for o in notices)} | 0 |")
    print(f"| workers that quit by themselves | {r.quit_unasked} | 0 |")
    print(f"| faults not recovered within 60 s | {unrecovered} | 0 |")
    print(f"| faults skipped (no busy worker to aim at) | {len(r.outcomes) - len(done)} | |")
    if r.overlap_incidents:
        print(f"| overlap incidents: count / longest | {len(r.overlap_incidents)} / "
              f"{max(r.overlap_incidents):.2f} s | 0 |")
    for example in r.overlap_examples:
        print(f"| overlap seen | {example} | |")
    every = [o.recovery_s for o in done if o.recovery_s is not None]
    if every:
        print(f"| recovery, all faults: median / max | {statistics.median(every):.1f} s / {max(every):.1f} s | |")
    for fault in FAULTS:
        values = [o.recovery_s for o in done if o.fault == fault and o.recovery_s is not None]
        count = sum(o.fault == fault for o in r.outcomes)
        if count:
            shown = f"{statistics.median(values):.1f} s / {max(values):.1f} s" if values else "-"
            print(f"| recovery, {fault} ({count}x): median / max | {shown} | |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())


STUCK_FIELDS = ("state", "attempts", "node", "rq_job_id", "deferrals", "deferred_reason", "not_before", "updated_at",
                "reason", "error")


def print_stuck(conn: redis.Redis) -> None:
    """What kept the pipeline from draining: each active job's record, its delayed entry and RQ's
    status of its RQ job, beside Redis' clock (the run's logs say the rest)."""
    from rq.job import Job

    seconds, micros = conn.time()
    print(f"not drained; Redis time {seconds + micros / 1e6:.3f}", flush=True)
    for config_key, job_id in sorted(conn.hgetall(KEYS.active).items()):
        record = dict(zip(STUCK_FIELDS, (v.decode("utf-8", "replace") if v else "" for v in
                                        conn.hmget(KEYS.job(job_id.decode()), STUCK_FIELDS))))
        delayed = conn.zscore(KEYS.delayed_jobs, job_id)
        try:
            rq_status = Job.fetch(record["rq_job_id"] or job_id.decode(), connection=conn).get_status()
        except Exception as exc:  # noqa: BLE001 - a diagnostic: say what went wrong and go on
            rq_status = f"unreadable ({type(exc).__name__})"
        print(f"  {config_key.decode()}: job {job_id.decode()} {record}, delayed until {delayed}, RQ {rq_status}",
              flush=True)
