"""Steady-state Redis load: commands per second from the orchestrator and idle `rq worker training`
processes, then per running training (lease renewals, RQ heartbeats, progress), from
`INFO stats` and `INFO commandstats` over fixed windows. The scaling model in docs/benchmarks.md
multiplies these out to 1,000 nodes.

    python -m bench.redis_load [--workers 4] [--window-s 20]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis
from rq.job import Job

from bench import common
from bench.figures import print_figures
from coordinator.bus.events import TRAINING_STARTED
from coordinator.core.keys import Keys
from coordinator.ops.workers_pool import start_worker, stop_workers

EPOCH_SECONDS = 15.0


def rate(conn: redis.Redis, window_s: float) -> tuple[float, dict[str, int]]:
    """Commands per second over the window (minus the two INFO calls that measure it) and the
    per-command counts."""
    before, stats = common.total_commands(conn), common.command_counts(conn)
    time.sleep(window_s)
    after, stats_after = common.total_commands(conn), common.command_counts(conn)
    return (after - before - 2) / window_s, common.counts_since(stats, stats_after)


def record_sizes(conn: redis.Redis, keys: Keys) -> dict[str, float]:
    """Bytes per job (our record + RQ's job hash) and per stream entry, from MEMORY USAGE."""
    job_ids = [j.decode() for j in conn.zrange(keys.jobs, 0, -1)]
    ours = sum(conn.memory_usage(keys.job(j)) or 0 for j in job_ids) / len(job_ids)
    rq = sum(conn.memory_usage(Job.key_for(j)) or 0 for j in job_ids) / len(job_ids)
    per_entry = (conn.memory_usage(keys.events, samples=0) or 0) / max(1, conn.xlen(keys.events))
    return {"job record": ours, "RQ job hash": rq, "stream entry": per_entry}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--window-s", type=float, default=15.0)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    epochs = int((args.window_s + 15) / EPOCH_SECONDS) + 1  # outlasts the measuring window
    with tempfile.TemporaryDirectory() as tmp, common.private_redis() as (url, conn):
        root = Path(tmp)
        (root / "x.npz").write_bytes(b"stub")
        config = common.write_config(root / "load.yaml", url, {
            "default_epochs": epochs, "command": [*common.STUB_TRAINER, "--epoch-seconds", str(EPOCH_SECONDS)]},
            hosts={f"node-{i}": 1 for i in range(args.workers)}, scheduler={"prefetch": 0})
        keys = Keys()
        workers = [start_worker(url, f"load-{i}", f"node-{i}") for i in range(args.workers)]
        orch = None
        try:
            time.sleep(3)  # connected, registered, idle
            workers_idle, _ = rate(conn, args.window_s)
            orch = common.start_orchestrator(config)
            time.sleep(3)
            idle, _ = rate(conn, args.window_s)
            for key in common.CONFIGS[:args.workers]:
                common.xadd_export(conn, keys, key, root / "x.npz", 100)
            common.wait_for_count(conn, keys.events, TRAINING_STARTED, args.workers, timeout_s=60)
            time.sleep(2)
            busy, per_command = rate(conn, args.window_s)
            rss = [psutil.Process(w.pid).memory_info().rss for w in workers]
            sizes = record_sizes(conn, keys)
        finally:
            common.stop(orch)
            stop_workers(workers)
    per_job = (busy - idle) / args.workers
    top = sorted(per_command.items(), key=lambda kv: -kv[1])[:6]
    print(f"steady-state Redis load, {args.workers} `rq worker training` + 1 orchestrator, "
          f"{args.window_s:.0f}-s windows, stub trainer ({EPOCH_SECONDS:.0f}-s epochs)\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| per idle worker | {workers_idle / args.workers:.2f} commands/s |")
    print(f"| orchestrator idle (reaper, periodic jobs, XREADGROUP) | {idle - workers_idle:.1f} commands/s |")
    print(f"| with {args.workers} trainings running | {busy:.1f} commands/s |")
    print(f"| per running training | {per_job:.2f} commands/s |")
    print(f"| rq worker main process RSS (idle, mean) | {sum(rss) / len(rss) / 2**20:.0f} MiB |")
    for name, size in sizes.items():
        print(f"| Redis memory per {name} | {size:,.0f} bytes |")
    print(f"\nbusy window, most frequent: {', '.join(f'{k} {v / args.window_s:.1f}/s' for k, v in top)}")
    print_figures(per_running=per_job, orchestrator_idle=idle - workers_idle,
                  per_idle_worker=workers_idle / args.workers, worker_rss=sum(rss) / len(rss),
                  job_bytes=sizes["job record"], rq_job_bytes=sizes["RQ job hash"], entry_bytes=sizes["stream entry"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
