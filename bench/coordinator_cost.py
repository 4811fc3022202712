"""Coordinator cost per completed job: the orchestrator's CPU seconds and the Redis commands the
whole system sends (orchestrator, worker, work horse), from `INFO stats`, beside the same
figures for raw RQ running the same number of no-op jobs on the same worker in the same run.

    python -m bench.coordinator_cost [--jobs 100]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import psutil
from rq import Queue

from bench import common
from bench.figures import print_figures
from bench.floor_jobs import NOOP_JOB
from coordinator.bus.events import TRAINING_COMPLETE
from coordinator.core.keys import TRAINING_QUEUE, Keys
from coordinator.ops.workers_pool import start_worker, stop_workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, common.private_redis() as (url, conn):
        root = Path(tmp)
        (root / "x.npz").write_bytes(b"stub")
        config = common.write_config(root / "cost.yaml", url, {"default_epochs": 1, "command": common.STUB_TRAINER},
                                     hosts={"node-0": 1}, scheduler={"prefetch": 0})
        worker = start_worker(url, "cost-worker", "node-0", log_path=root / "worker.log")
        orch = common.start_orchestrator(config)
        try:
            time.sleep(2)  # both connected and idle
            # Raw RQ: the same worker runs the same number of no-op jobs.
            before = common.total_commands(conn)
            queue = Queue(TRAINING_QUEUE, connection=conn)
            jobs = [queue.enqueue(NOOP_JOB) for _ in range(args.jobs)]
            polls = 0
            while jobs[-1].get_status(refresh=True) not in ("finished", "failed"):
                polls += 1
                time.sleep(0.5)
            # Minus this script's own commands: the enqueues' and the status polls' (HGET each).
            raw_commands = (common.total_commands(conn) - before - polls - 1) / args.jobs
            # Ours: one export per job (a config gets a new one once its last job ended).
            cpu = psutil.Process(orch.pid)
            cpu_before, before = sum(cpu.cpu_times()[:2]), common.total_commands(conn)
            keys = Keys()
            for i in range(args.jobs):
                common.xadd_export(conn, keys, common.CONFIGS[i % len(common.CONFIGS)], root / "x.npz", 100)
                common.wait_for_count(conn, keys.events, TRAINING_COMPLETE, i + 1)
            ours_commands = (common.total_commands(conn) - before) / args.jobs
            ours_cpu = (sum(cpu.cpu_times()[:2]) - cpu_before) / args.jobs
        finally:
            common.stop(orch)
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
