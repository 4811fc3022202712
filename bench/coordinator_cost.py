"""Coordinator cost per completed job: the orchestrator's CPU seconds and the Redis commands the
whole system sends (orchestrator, worker, work horse), from `INFO stats`, beside the same
figures for raw RQ running the same number of no-op jobs on the same worker in the same run.

    python -m bench.coordinator_cost [--jobs 100]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis
import yaml
from rq import Queue

from bench.figures import print_figures
from coordinator.keys import TRAINING_QUEUE, Keys
from coordinator.local_redis import LocalRedis
from coordinator.workers_pool import start_worker, stop_workers

CONFIGS = [f"{b}_{p}p" for b in ("hex8", "square8", "square19", "hexagonal") for p in (2, 3, 4)]


def commands(conn: redis.Redis) -> int:
    return int(conn.info("stats")["total_commands_processed"])


def wait_for_count(conn: redis.Redis, key: str, event_type: bytes, count: int, timeout_s: float = 600) -> None:
    """Block on the stream (few commands) until `count` events of `event_type` were seen."""
    seen, last, deadline = 0, "0-0", time.monotonic() + timeout_s
    while seen < count and time.monotonic() < deadline:
        for _stream, entries in conn.xread({key: last}, count=500, block=1000) or []:
            for entry_id, fields in entries:
                last = entry_id
                seen += fields.get(b"type") == event_type
    if seen < count:
        raise TimeoutError(f"only {seen} of {count} {event_type!r} events")


def noop() -> None:
    """The raw-RQ job."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, LocalRedis() as server:
        root = Path(tmp)
        (root / "x.npz").write_bytes(b"stub")
        config = root / "cost.yaml"
        config.write_text(yaml.safe_dump({
            "redis": {"url": server.url},
            "training": {"default_epochs": 1, "command": ["{python}", "-m", "workers.stub_train"],
                         "models_root": str(root / "models"), "check_npz": False},
            "hosts": {"node-0": 1}, "scheduler": {"prefetch": 0},
        }))
        conn = redis.Redis.from_url(server.url)
        worker = start_worker(server.url, "cost-worker", "node-0", log_path=root / "worker.log")
        orch = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "--config", str(config), "run"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2)  # both connected and idle
            # Raw RQ: the same worker runs the same number of no-op jobs.
            before = commands(conn)
            queue = Queue(TRAINING_QUEUE, connection=conn)
            jobs = [queue.enqueue("bench.coordinator_cost.noop") for _ in range(args.jobs)]
            polls = 0
            while jobs[-1].get_status(refresh=True) not in ("finished", "failed"):
                polls += 1
                time.sleep(0.5)
            # Minus this script's own commands: the enqueues' and the status polls' (HGET each).
            raw_commands = (commands(conn) - before - polls - 1) / args.jobs
            # Ours: one export per job (a config gets a new one once its last job ended).
            cpu = psutil.Process(orch.pid)
            cpu_before, before = sum(cpu.cpu_times()[:2]), commands(conn)
            keys = Keys("ringrift")
            for i in range(args.jobs):
                conn.xadd(keys.events, {"type": "NPZ_EXPORT_COMPLETE", "config_key": CONFIGS[i % len(CONFIGS)],
                                        "npz_path": str(root / "x.npz"), "samples": "100"})
                wait_for_count(conn, keys.events, b"TRAINING_COMPLETE", i + 1)
            ours_commands = (commands(conn) - before) / args.jobs
            ours_cpu = (sum(cpu.cpu_times()[:2]) - cpu_before) / args.jobs
        finally:
            orch.terminate()
            orch.wait()
            stop_workers([worker])
    print(f"coordinator cost, {args.jobs} jobs one after another, one worker, stub trainer / no-op job\n")
    print("| per completed job | ours | raw RQ no-op job | ratio |")
    print("|---|---|---|---|")
    print(f"| Redis commands (all processes) | {ours_commands:,.0f} | {raw_commands:,.0f} | "
          f"{ours_commands / raw_commands:.1f}x |")
    print(f"| orchestrator CPU | {ours_cpu * 1000:.1f} ms | - | - |")
    print_figures(commands_per_job=ours_commands, cpu_per_job_s=ours_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
