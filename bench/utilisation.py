"""Cluster utilisation: real `rq worker training` processes as GPU slots, kept supplied with
exports for all 12 configs, each beside raw RQ on the same workers in the same run.

Two cases, each on its own redis-server and its own workers:

- wide: 64 slots (8 nodes x 8 workers). Only one trainer per config may run at a time, so 12
  configs can keep at most 12 of the 64 slots training (18.75%): the slot-time fraction is
  reported, but the bound that applies is the config's: the fraction of the time each config
  trains while it has new data waiting, and the idle gap between a config's jobs.
- matched: 12 slots (3 nodes x 4 workers) for the 12 configs: the slot-time fraction and the
  idle gap between a slot's jobs, where the plain targets apply.

Ours: `ringrift-train run` (a subprocess) consumes NPZ_EXPORT_COMPLETE events that this script
XADDs for every config every `--feed-interval` s (first exports staggered over one job's length,
so the configs do not finish in lockstep), and dispatches `workers.tasks.run_training` jobs that
run the stub trainer (`workers.stub_train`, `--epochs` x `--epoch-seconds`). A job's training
time is what the system records: `started_at` (leases held, TRAINING_STARTED) to `finished_at`
(trainer exited, result published) on its job record (`Keys.job`); its slot is the RQ worker that ran it.
The idle gap is one job's `finished_at` to the next job's `started_at` on the same slot (or, for
the config gap, the same config).

Floor: raw RQ with the same workers, the same trainer subprocess with the same arguments, and
one job in flight per config ("chain"): each job records its start and end (in a file, no Redis
command) and enqueues its chain's next job as its last step.

Redis commands per job: the sum of INFO commandstats (commands inside Lua scripts and MULTI
included) over the measured window, less this script's own XADDs and INFO calls, divided by the
jobs that finished in the window. Memory: psutil RSS and USS of every `rq worker` process and of
the work horses it forked, sampled once mid-window.

    python -m bench.utilisation [--window 20] [--cases wide,matched]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
from rq import Queue, Worker
from rq.job import Job

from bench import common
from bench.floor_jobs import CHAIN_JOB
from coordinator.core.keys import TRAINING_QUEUE, Keys
from coordinator.core.text import decode_hash
from coordinator.ops.workers_pool import start_worker, stop_workers

MB = 2**20
ENDED_BADLY = ("failed", "retrying", "stale", "cancelled")
GAP_PARTS = ("orchestrator", "rq", "horse")  # ours' config gap, in order (see gap_parts)


# -- measurement records ----------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One job as measured: which slot (worker) and stream (config or chain), start and end."""

    slot: str
    stream: str
    start: float
    end: float
    job_id: str = ""


@dataclass
class Phase:
    """What one side (ours or the floor) did in one case."""

    runs: list[Run]
    t0: float
    t1: float
    slots: int
    streams: int
    commands: dict[str, int]
    work_s: float  # trainer work per job: epochs x epoch seconds
    failed: int = 0
    horses: list[tuple[int, int]] = field(default_factory=list)  # RSS, USS of horses mid-window
    workers: list[tuple[int, int]] = field(default_factory=list)  # of idle workers after the side ran
    parts: dict[str, list[float]] = field(default_factory=dict)  # idle-gap decomposition (ours)
    exports: int = 0

    @property
    def window(self) -> float:
        return self.t1 - self.t0

    def overlap(self, run: Run) -> float:
        return max(0.0, min(run.end, self.t1) - max(run.start, self.t0))

    def completed(self) -> int:
        return sum(self.t0 <= r.end <= self.t1 for r in self.runs)

    def commands_per_job(self) -> float:
        return sum(self.commands.values()) / max(1, self.completed())

    def top_commands(self, n: int = 6) -> str:
        top = sorted(self.commands.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name} {calls / max(1, self.completed()):.0f}" for name, calls in top)

    def busy_fraction(self, per: int) -> float:
        return sum(self.overlap(r) for r in self.runs) / (per * self.window)

    def work_fraction(self) -> float:
        """Trainer work (epochs x epoch seconds) within the window over the slots' time, pro rata."""
        work = sum(self.overlap(r) * min(1.0, self.work_s / (r.end - r.start)) for r in self.runs if r.end > r.start)
        return work / (self.slots * self.window)

    def gaps(self, by: str) -> list[float]:
        """End of a job -> start of the next one on the same slot/stream, for ends inside the window."""
        groups: dict[str, list[Run]] = {}
        for r in self.runs:
            groups.setdefault(getattr(r, by), []).append(r)
        out = []
        for runs in groups.values():
            runs.sort(key=lambda r: r.start)
            out += [b.start - a.end for a, b in zip(runs, runs[1:]) if self.t0 <= a.end <= self.t1]
        return out


def sample_memory(workers: list[subprocess.Popen], role: str) -> list[tuple[int, int]]:
    """RSS and USS of each `rq worker` process (role "worker", sampled while idle: a forked horse
    would share its pages and hide them from the worker's USS) or of each work horse running now."""
    pids = {proc.pid for proc in workers}
    chosen = pids if role == "worker" else {p.pid for p in psutil.process_iter(["ppid"]) if p.info["ppid"] in pids}
    out = []
    for pid in chosen:
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:  # a horse that just ended
            continue
        out.append((info.rss, info.uss))
    return out


class Feeder(threading.Thread):
    """XADDs an export for every config every `interval` s; config i starts at i x `stagger` s."""

    def __init__(self, url: str, configs: list[str], npz: Path, interval: float, stagger: float) -> None:
        super().__init__(daemon=True)
        self.conn, self.keys = redis.Redis.from_url(url), Keys()
        self.configs, self.npz, self.interval, self.stagger = configs, npz, interval, stagger
        self.sent = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        now = time.monotonic()
        due = [now + i * self.stagger for i in range(len(self.configs))]
        samples = 1000
        while not self.stopping.is_set():
            now = time.monotonic()
            ready = [i for i, at in enumerate(due) if at <= now]
            if ready:
                with self.conn.pipeline(transaction=False) as pipe:
                    for i in ready:
                        common.xadd_export(pipe, self.keys, self.configs[i], self.npz, samples)
                        due[i] += self.interval
                    pipe.execute()
                self.sent += len(ready)
                samples += 1
            self.stopping.wait(max(0.0, min(due) - time.monotonic()))


def wait_idle(conn: redis.Redis, worker_count: int) -> None:
    """Until RQ's queue is empty and every worker waits for work."""
    queue = Queue(TRAINING_QUEUE, connection=conn)

    def idle() -> bool:
        workers = Worker.all(connection=conn)
        return queue.count == 0 and len(workers) == worker_count and all(w.get_state() != "busy" for w in workers)

    common.wait_until(idle, timeout_s=120, step_s=0.1)


# -- the two sides ----------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    nodes: int
    slots_per_node: int
    url: str
    conn: redis.Redis
    root: Path
    workers: list[subprocess.Popen]
    configs: list[str]
    args: argparse.Namespace

    @property
    def slots(self) -> int:
        return self.nodes * self.slots_per_node

    @property
    def work_s(self) -> float:
        return self.args.epochs * self.args.epoch_seconds

    def stagger(self) -> float:
        return (self.work_s + 0.3) / len(self.configs)

    def measure(self, feeder: Feeder | None = None) -> tuple[float, float, dict[str, int], dict]:
        """Sleep through the warm-up and the window; commands and memory inside the window."""
        args = self.args
        t0 = time.time() + args.warmup
        time.sleep(max(0.0, t0 - time.time()))
        before = common.command_counts(self.conn)
        sent_before = feeder.sent if feeder else 0
        time.sleep(args.window / 2)
        horses = sample_memory(self.workers, "horse")
        time.sleep(max(0.0, t0 + args.window - time.time()))
        t1 = time.time()
        after = common.command_counts(self.conn)
        sent = (feeder.sent - sent_before) if feeder else 0
        commands = common.counts_since(before, after)
        # Less this script's own commands: its XADDs and its INFO calls.
        commands["xadd"] = commands.get("xadd", 0) - sent
        commands.pop("info", None)
        return t0, t1, commands, {"horses": horses, "exports": sent}


def run_ours(case: Case) -> Phase:
    args, root = case.args, case.root / "ours"
    root.mkdir()
    npz = root / "export.npz"
    npz.write_bytes(b"stub")  # the stub trainer checks only that it exists
    config = common.write_config(root / "utilisation.yaml", case.url, {
        "default_epochs": args.epochs, "command": [*common.STUB_TRAINER, "--epoch-seconds", str(args.epoch_seconds)]},
        hosts={f"node-{n}": case.slots_per_node for n in range(case.nodes)})
    keys = Keys()
    log = open(root / "orchestrator.log", "wb")  # noqa: SIM115 - closed below
    orch = common.start_orchestrator(config, log)
    feeder = Feeder(case.url, case.configs, npz, args.feed_interval, case.stagger())
    try:
        common.wait_until(lambda: any(g["name"] == b"orchestrator" for g in _groups(case.conn, keys.events)), 30)
        feeder.start()
        t0, t1, commands, extra = case.measure(feeder)
    finally:
        feeder.stopping.set()
        feeder.join()
        common.stop(orch)
        log.close()
    case.conn.delete(Queue(TRAINING_QUEUE, connection=case.conn).key)  # jobs queued after the window never run
    wait_idle(case.conn, len(case.workers))
    ids = [i.decode() for i in case.conn.zrange(keys.jobs, 0, -1)]
    with case.conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hgetall(keys.job(job_id))
            pipe.hget(Job.key_for(job_id), "started_at")
        replies = pipe.execute()
    records = [(decode_hash(replies[2 * i]), common.rq_time(replies[2 * i + 1])) for i in range(len(ids))]
    runs, failed, meta = [], 0, {}
    for rec, rq_started in records:
        if rec.get("state") == "complete":
            run = Run(rec["worker"], rec["config_key"], float(rec["started_at"]), float(rec["finished_at"]),
                      rec["job_id"])
            runs.append(run)
            meta[rec["job_id"]] = (float(rec["created_at"]), rq_started)
        elif rec.get("state") in ENDED_BADLY and t0 <= float(rec.get("updated_at", 0)) <= t1:
            failed += 1
    phase = Phase(runs, t0, t1, case.slots, len(case.configs), commands, case.work_s, failed, extra["horses"],
                  sample_memory(case.workers, "worker"), exports=extra["exports"])
    phase.parts = gap_parts(phase, meta)
    return phase


def gap_parts(phase: Phase, meta: dict[str, tuple[float, float | None]]) -> dict[str, list[float]]:
    """Ours' config gap in three parts: job end -> next job queued (orchestrator), queued -> RQ
    work horse started (RQ dequeue + fork), horse started -> TRAINING_STARTED (imports, leases)."""
    parts: dict[str, list[float]] = {part: [] for part in GAP_PARTS}
    by_config: dict[str, list[Run]] = {}
    for r in phase.runs:
        by_config.setdefault(r.stream, []).append(r)
    for runs in by_config.values():
        runs.sort(key=lambda r: r.start)
        for a, b in zip(runs, runs[1:]):
            created, rq_started = meta[b.job_id]
            if not phase.t0 <= a.end <= phase.t1 or rq_started is None:
                continue
            parts["orchestrator"].append(created - a.end)
            parts["rq"].append(rq_started - created)
            parts["horse"].append(b.start - rq_started)
    return parts


def _groups(conn: redis.Redis, stream: str) -> list[dict]:
    try:
        return conn.xinfo_groups(stream)
    except redis.ResponseError:  # no stream yet
        return []


def run_floor(case: Case) -> Phase:
    args, root = case.args, case.root / "floor"
    root.mkdir()
    (root / "export.npz").write_bytes(b"stub")
    log_path = root / "runs.log"
    log_path.touch()
    queue = Queue(TRAINING_QUEUE, connection=case.conn)
    deadline = time.time() + args.warmup + args.window
    stagger = case.stagger()

    def start_chains() -> None:
        for key in case.configs:
            board, players = key.rsplit("_", 1)
            # The same argument list as ours' trainer gets (see workers/trainer_process.build_argv).
            argv = [sys.executable, "-m", "workers.stub_train", "--epoch-seconds", str(args.epoch_seconds),
                    "--board-type", board, "--num-players", players[:-1], "--data", str(root / "export.npz"),
                    "--epochs", str(args.epochs), "--batch-size", "512", "--learning-rate", "0.001",
                    "--patience", "5", "--output-dir", str(root / "models" / key)]
            queue.enqueue(CHAIN_JOB, key, argv, str(log_path), deadline)
            time.sleep(stagger)

    starter = threading.Thread(target=start_chains, daemon=True)
    starter.start()
    t0, t1, commands, extra = case.measure()
    starter.join()
    wait_idle(case.conn, len(case.workers))
    runs = []
    for line in log_path.read_text().splitlines():
        worker, chain, started, ended, job_id = line.split()
        runs.append(Run(worker, chain, float(started), float(ended), job_id))
    return Phase(runs, t0, t1, case.slots, len(case.configs), commands, case.work_s, 0, extra["horses"],
                 sample_memory(case.workers, "worker"))


def run_case(name: str, nodes: int, per_node: int, configs: list[str], args: argparse.Namespace,
             tmp: Path) -> tuple[Phase, Phase, float]:
    """Start a redis-server and nodes x per_node workers; ours, then the floor; (ours, floor, start-up s)."""
    root = tmp / name
    root.mkdir()
    with common.private_redis() as (url, conn):
        began = time.monotonic()
        workers = [start_worker(url, f"{name}-n{n}-w{w}", f"node-{n}", extra_env={"RINGRIFT_GPUS":
                                str(per_node)}, log_path=root / f"worker-n{n}-w{w}.log")
                   for n in range(nodes) for w in range(per_node)]
        try:
            wait_idle(conn, len(workers))
            startup = time.monotonic() - began
            case = Case(name, nodes, per_node, url, conn, root, workers, configs, args)
            ours = run_ours(case)
            floor = run_floor(case)
        finally:
            stop_workers(workers)
    return ours, floor, startup


# -- report -----------------------------------------------------------------------------------
def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def gap_cell(gaps: list[float]) -> str:
    if not gaps:
        return "-"
    return f"{common.percentile(gaps, 0.99) * 1000:.0f} ms (p50 {statistics.median(gaps) * 1000:.0f})"


def mem_cell(samples: list[tuple[int, int]]) -> str:
    if not samples:
        return "-"
    return (f"{statistics.median(s[0] for s in samples) / MB:.0f} / "
            f"{statistics.median(s[1] for s in samples) / MB:.0f} MB")


def print_report(results: dict[str, tuple[Phase, Phase, float]], args: argparse.Namespace, configs: list[str],
                 wall: float) -> None:
    print(f"cluster utilisation: real `rq worker training` processes as GPU slots, {len(configs)} configs with an "
          f"export each every {args.feed_interval:g} s, stub trainer {args.epochs} epochs x {args.epoch_seconds:g} s; "
          f"floor: raw RQ on the same workers running the same trainer subprocess, one job in flight per config "
          f"(each job enqueues its config's next one as its last step); {args.window:g} s measured per side after "
          f"{args.warmup:g} s warm-up\n")
    print("| measure | ours | floor (raw RQ, same run) | target |")
    print("|---|---|---|---|")
    n = len(configs)
    for name, (ours, floor, _startup) in results.items():
        s = f"{ours.slots} slots"
        if name == "wide":
            print(f"| {s}: slot-time training | {pct(ours.busy_fraction(ours.slots))} | "
                  f"{pct(floor.busy_fraction(floor.slots))} | >= 97% (not attainable: {n} configs, one trainer "
                  f"each, bound {pct(n / ours.slots)}) |")
            print(f"| {s}: config-time training (each config, backlog always waiting) | "
                  f"{pct(ours.busy_fraction(n))} | {pct(floor.busy_fraction(n))} | >= 97% |")
            print(f"| {s}: p99 idle gap between a config's jobs | {gap_cell(ours.gaps('stream'))} | "
                  f"{gap_cell(floor.gaps('stream'))} | <= 200 ms |")
            print(f"| {s}: p99 idle gap between a slot's jobs (slots wait for a config) | "
                  f"{gap_cell(ours.gaps('slot'))} | {gap_cell(floor.gaps('slot'))} | - |")
        else:
            print(f"| {s}: slot-time training | {pct(ours.busy_fraction(ours.slots))} | "
                  f"{pct(floor.busy_fraction(floor.slots))} | >= 97% |")
            print(f"| {s}: p99 idle gap between a slot's jobs | {gap_cell(ours.gaps('slot'))} | "
                  f"{gap_cell(floor.gaps('slot'))} | <= 200 ms |")
            print(f"| {s}: p99 idle gap between a config's jobs | {gap_cell(ours.gaps('stream'))} | "
                  f"{gap_cell(floor.gaps('stream'))} | - |")
        print(f"| {s}: trainer work (epochs x epoch s) / slot-time | {pct(ours.work_fraction())} | "
              f"{pct(floor.work_fraction())} | - |")
        print(f"| {s}: Redis commands per completed job | {ours.commands_per_job():,.0f} | "
              f"{floor.commands_per_job():,.0f} | - |")
    for ours, floor, _startup in results.values():
        print(f"| memory per idle `rq worker` process ({ours.slots} slots), RSS / USS (median) | "
              f"{mem_cell(ours.workers)} | {mem_cell(floor.workers)} | - |")
    horses_ours = [m for o, _f, _s in results.values() for m in o.horses]
    horses_floor = [m for _o, f, _s in results.values() for m in f.horses]
    print(f"| memory per work horse while its job runs, RSS / USS (median) | {mem_cell(horses_ours)} | "
          f"{mem_cell(horses_floor)} | - |")
    print()
    parts = []
    for ours, floor, startup in results.values():
        p = ours.parts
        parts.append(
            f"{ours.slots} slots: ours {len(ours.runs)} jobs ({ours.completed()} ended in the window, "
            f"{ours.failed} failed), {len(ours.gaps('stream'))} config gaps, {len(ours.gaps('slot'))} slot gaps, "
            f"{ours.exports} exports; floor {len(floor.runs)} jobs ({floor.completed()} ended in the window), "
            f"{len(floor.gaps('stream'))} chain gaps, {len(floor.gaps('slot'))} slot gaps; memory of "
            f"{len(ours.workers)} idle workers after each side, {len(ours.horses)}+{len(floor.horses)} horses; "
            f"{ours.slots} workers started in {startup:.1f} s; Redis commands per job, most frequent: ours "
            f"{ours.top_commands()}; floor {floor.top_commands()}")
        if p.get("orchestrator"):
            parts[-1] += (f". Ours' config gap, median parts: job end -> next job queued "
                          f"{statistics.median(p['orchestrator']) * 1000:.0f} ms (orchestrator), queued -> RQ "
                          f"horse started {statistics.median(p['rq']) * 1000:.0f} ms, horse -> TRAINING_STARTED "
                          f"{statistics.median(p['horse']) * 1000:.0f} ms (p99 "
                          + " / ".join(f"{common.percentile(p[k], .99) * 1000:.0f}" for k in GAP_PARTS) + " ms)")
    print("Samples: " + ". ".join(parts) + ".")
    print(f"Training time = a job's started_at (leases held) -> finished_at (trainer exited, result published); "
          f"floor: the job function's first line -> after its trainer exited. Wall time {wall:.0f} s.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=8, help="wide case: nodes")
    parser.add_argument("--slots-per-node", type=int, default=8, help="wide case: workers (GPU slots) per node")
    parser.add_argument("--matched-nodes", type=int, default=3)
    parser.add_argument("--matched-slots-per-node", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--epoch-seconds", type=float, default=1.0)
    parser.add_argument("--feed-interval", type=float, default=0.5, help="seconds between exports of a config")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds per side and case")
    parser.add_argument("--cases", default="wide,matched")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    configs = common.CONFIGS
    began = time.monotonic()
    shapes = {"wide": (args.nodes, args.slots_per_node), "matched": (args.matched_nodes, args.matched_slots_per_node)}
    results = {}
    with tempfile.TemporaryDirectory(prefix="ringrift-util-") as tmp:
        for name in args.cases.split(","):
            nodes, per_node = shapes[name]
            results[name] = run_case(name, nodes, per_node, configs, args, Path(tmp))
    print_report(results, args, configs, time.monotonic() - began)
    # Figures over failed jobs (or none at all) are not a measurement of this system.
    return 1 if any(ours.failed or not ours.completed() for ours, _f, _s in results.values()) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
