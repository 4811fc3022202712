"""Event-to-start latency: XADD of NPZ_EXPORT_COMPLETE -> the job running on an idle worker.

Beside it, in the same run and on the same idle `rq worker training`, the floor under it: a
raw RQ enqueue -> that job's first line. Samples alternate between the two so both see the same
machine. The trainer is the stub (no torch), so what is measured is the coordination alone.

    python -m bench.event_to_start [--samples 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis
from rq import Queue
from rq.job import Job, JobStatus

from bench import common
from bench.floor_jobs import FLOOR_KEY, RECORD_START_JOB
from coordinator.bus.events import NPZ_EXPORT_COMPLETE, publish
from coordinator.core.keys import TRAINING_QUEUE, Keys
from coordinator.ops.workers_pool import start_worker, stop_workers
from coordinator.stores.jobs import JobStore

IDLE_PAUSE_S = 0.05
POLL_S = 0.002
FLOOR_PARTS: list[float] = []  # the floor's RQ work horse started -> its job's first line


def wait(predicate):
    """`common.wait_until` at a latency benchmark's pace: every 2 ms, for 30 s at most."""
    return common.wait_until(predicate, timeout_s=30.0, step_s=POLL_S)


def ours_once(conn: redis.Redis, keys: Keys, store: JobStore, npz: Path, i: int) -> tuple[float, ...]:
    """(total, XADD -> job created, created -> RQ work horse started, horse -> leases held), seconds."""
    sent = time.time()
    publish(conn, keys, NPZ_EXPORT_COMPLETE,
            {"board_type": "hex8", "num_players": 2, "npz_path": str(npz), "samples": 1000 + i},
            maxlen=store.stream_maxlen)
    job_id = wait(lambda: store.active_job("hex8_2p"))
    started = float(wait(lambda: conn.hget(keys.job(job_id), "started_at")))
    wait(lambda: conn.hget(keys.job(job_id), "state") in (b"complete", b"failed"))
    wait(lambda: store.active_job("hex8_2p") is None)
    wait_idle(conn, job_id)
    created = float(conn.hget(keys.job(job_id), "created_at"))
    horse = common.rq_time(conn.hget(Job.key_for(job_id), "started_at"))
    return started - sent, created - sent, horse - created, started - horse


def floor_once(conn: redis.Redis, queue: Queue) -> float:
    conn.delete(FLOOR_KEY)
    sent = time.time()
    job = queue.enqueue(RECORD_START_JOB)
    started = float(wait(lambda: conn.get(FLOOR_KEY)))
    wait_idle(conn, job.id)
    horse = common.rq_time(conn.hget(Job.key_for(job.id), "started_at"))
    FLOOR_PARTS.append(started - horse)
    return started - sent


def wait_idle(conn: redis.Redis, rq_job_id: str) -> None:
    """Until RQ has filed the job as ended and the worker is back waiting on the queue."""
    job = Job.fetch(rq_job_id, connection=conn)
    wait(lambda: job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED))
    time.sleep(IDLE_PAUSE_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, common.private_redis() as (url, conn):
        root = Path(tmp)
        npz = root / "hex8_2p.npz"
        npz.write_bytes(b"stub")  # the stub trainer does not read it
        config = common.write_config(root / "bench.yaml", url, {"default_epochs": 1, "command": common.STUB_TRAINER},
                                     events={"block_ms": 1000})
        service = common.start_orchestrator(config)
        worker = start_worker(url, "bench-worker", "bench-node", log_path=root / "worker.log")
        keys = Keys()
        store = JobStore(conn, keys)
        queue = Queue(TRAINING_QUEUE, connection=conn)
        try:
            floor_once(conn, queue)  # warm-up: worker connected, modules imported
            ours_once(conn, keys, store, npz, -1)
            parts, floor = [], []
            for i in range(args.samples):
                parts.append(ours_once(conn, keys, store, npz, i))
                floor.append(floor_once(conn, queue))
        finally:
            stop_workers([worker])
            common.stop(service)
    print_table([p[0] for p in parts], floor)
    steps = ("XADD -> job created (orchestrator)", "created -> work horse started (RQ)",
             "horse -> leases held (run_training)")
    print("\nours, median of each step: " + ", ".join(
        f"{name} {statistics.median(p[i + 1] for p in parts) * 1000:.1f} ms" for i, name in enumerate(steps))
        + f"; floor: work horse started -> job's first line {statistics.median(FLOOR_PARTS) * 1000:.1f} ms")
    return 0


def print_table(ours: list[float], floor: list[float]) -> None:
    ms = 1000.0
    p50o, p50f = statistics.median(ours) * ms, statistics.median(floor) * ms
    p99o, p99f = common.percentile(ours, 0.99) * ms, common.percentile(floor, 0.99) * ms
    print(f"event-to-start latency, {len(ours)} samples each, one idle `rq worker training`, stub trainer\n")
    print("| measure | ours: XADD export -> job running | floor: raw RQ enqueue -> job start | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| p50 | {p50o:.1f} ms | {p50f:.1f} ms | {p50o / p50f:.2f} | <= 1.3 |")
    print(f"| p99 | {p99o:.1f} ms | {p99f:.1f} ms | {p99o / p99f:.2f} | - |")


if __name__ == "__main__":
    sys.exit(main())
