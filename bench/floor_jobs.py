"""Job functions for the raw-RQ floors, in a module that imports next to nothing: RQ imports a
job's module in every work horse, so a floor whose function lived beside the benchmark would pay
for the benchmark's (and the coordinator's) imports on every job and flatter the comparison."""

from __future__ import annotations

import subprocess
import time

from rq import Queue, get_current_job

FLOOR_KEY = "bench:floor:started_at"  # not from coordinator.core.keys: importing `coordinator` is the cost avoided
RECORD_START_JOB = "bench.floor_jobs.record_start"
CHAIN_JOB = "bench.floor_jobs.chain_job"
NOOP_JOB = "bench.floor_jobs.noop"


def noop() -> None:
    """The coordinator-cost floor's job: nothing."""


def record_start() -> None:
    """The event-to-start floor's job: note when its first line ran."""
    get_current_job().connection.set(FLOOR_KEY, repr(time.time()))


def chain_job(chain: str, argv: list[str], log_path: str, deadline: float) -> None:
    """The utilisation floor's job: run the trainer, note start and end (in a file, no Redis
    command), enqueue the chain's next job (until the deadline)."""
    job = get_current_job()
    started = time.time()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    ended = time.time()
    with open(log_path, "a") as log:
        log.write(f"{job.worker_name} {chain} {started:.6f} {ended:.6f} {job.id}\n")
    if ended < deadline:
        Queue(job.origin, connection=job.connection).enqueue(CHAIN_JOB, chain, argv, log_path, deadline)
