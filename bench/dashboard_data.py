"""Dashboard page data: server time of `DashboardData.page()` at 1,000 configs and 10,000 job records.

Beside it, in the same run on the same data, the floor: one raw pipelined HGETALL of every job
record and every config hash (what any page showing them must at least read), no decoding. Rows
(each: gather the page and encode its JSON, as `/api/page` does): the first page of a fresh
dashboard (it reads the stream back BACKFILL_HOURS and every record), then the steady state a
browser's polls see (ended records kept in memory, only new stream entries read), as medians over
`--repeat` polls.

    python -m bench.dashboard_data [--configs 1000] [--jobs 10000] [--running 50] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import redis

from bench.common import percentile, private_redis
from bench.scheduler_decision import config_keys
from coordinator.bus.events import EVALUATION_COMPLETED, TRAINING_COMPLETE, TRAINING_PROGRESS, encode_fields
from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from coordinator.ops.dashboard.data import DashboardData
from coordinator.ops.dashboard.server import PageResponse
from coordinator.scheduling.scheduler import TrainingScheduler

EPOCHS = 20
NODES = 100


def seed(conn: redis.Redis, keys: Keys, n_configs: int, n_jobs: int, n_running: int) -> None:
    """`n_configs` configs with exports and Elo windows, `n_jobs` job records over the last day
    (`n_running` running with half their epochs on the stream), their events on the stream."""
    now = time.time()
    configs = config_keys(n_configs)
    with conn.pipeline(transaction=False) as pipe:
        for i, c in enumerate(configs):
            pipe.hset(keys.config(c), mapping={"curriculum_weight": 1 + i % 3, "new_samples": 1000 * (i % 50),
                                               "exported_at": now - 60 * i, "first_seen_at": now - 86400,
                                               "data_version": 3, "latest_model": f"/models/{c}/model.pt"})
            pipe.zadd(keys.priority, {c: 0})
            pipe.rpush(keys.elo(c), *(f"{now - 3600 * k:.3f} {1500 + k}" for k in range(5)))
        for j in range(n_jobs):
            c, job_id = configs[j % n_configs], f"job-{j:05d}"
            running = j >= n_jobs - n_running
            created = now - 86400 * (n_jobs - j) / n_jobs
            record = {"job_id": job_id, "config_key": c, "state": "running" if running else "complete",
                      "node": f"node-{j % NODES}", "attempts": 1, "epoch": EPOCHS // 2 if running else EPOCHS,
                      "epochs": EPOCHS, "created_at": created, "started_at": created + 5, "fence": j,
                      "train_loss": 0.5, "val_loss": 0.6, "data_version": 3}
            if not running:
                record.update(finished_at=created + 600, final_loss=0.3)
            else:
                pipe.hset(keys.active, c, job_id)
            pipe.hset(keys.job(job_id), mapping=record)
            pipe.zadd(keys.jobs, {job_id: created})
            epochs = range(1, EPOCHS // 2 + 1) if running else ()
            for e in epochs:
                pipe.xadd(keys.events, encode_fields(TRAINING_PROGRESS, {"job_id": job_id, "config_key": c, "epoch": e,
                                                                         "train_loss": 1 / e, "val_loss": 1.1 / e}))
            if not running and j >= n_jobs - 2000:  # the newest finished ones still on the stream
                pipe.xadd(keys.events, encode_fields(TRAINING_COMPLETE, {"job_id": job_id, "config_key": c},
                                                     {"history": [{"epoch": e, "train_loss": 1 / e}
                                                                  for e in range(1, EPOCHS + 1)]}))
            if j % 500 == 0:
                pipe.execute()
        for c in configs[:50]:
            pipe.xadd(keys.events, encode_fields(EVALUATION_COMPLETED, {"config_key": c, "elo": 1510}))
        pipe.execute()
    TrainingScheduler(conn, keys).rescore()  # the scores and explanations the orchestrator stores


def floor(conn: redis.Redis, keys: Keys) -> None:
    """The raw read: every job record and config hash, one pipeline, nothing decoded."""
    with conn.pipeline(transaction=False) as pipe:
        for job_id in conn.zrange(keys.jobs, 0, -1):
            pipe.hgetall(keys.job(job_id.decode()))
        for c in conn.zrange(keys.priority, 0, -1):
            pipe.hgetall(keys.config(c.decode()))
        pipe.execute()


def page_json(data: DashboardData) -> bytes:
    """What `/api/page` does: gather and encode."""
    return PageResponse(data.page()).body


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_data")
    parser.add_argument("--configs", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    settings = Settings()
    keys = Keys(settings.redis.prefix)
    with private_redis() as (_url, conn):
        seed(conn, keys, args.configs, args.jobs, args.running)
        data = DashboardData(conn, settings, cache_s=0)
        cold = timed(lambda: page_json(data))
        size_kb = len(page_json(data)) / 1024
        warm, floors = [], []
        for i in range(args.repeat):
            # A running job reports an epoch between polls, as a live cluster does.
            conn.xadd(keys.events, encode_fields(TRAINING_PROGRESS, {
                "job_id": f"job-{args.jobs - 1:05d}", "config_key": "x", "epoch": EPOCHS // 2 + 1 + i % 5,
                "train_loss": 0.1}))
            warm.append(timed(lambda: page_json(data)))
            floors.append(timed(lambda: floor(conn, keys)))
        stream = conn.xlen(keys.events)
    print(f"dashboard page data: {args.configs:,} configs, {args.jobs:,} job records ({args.running} running), "
          f"{stream:,} stream entries; page JSON {size_kb:.0f} kB")
    print(f"{'what':58} {'ms':>8}")
    print(f"{'page + JSON, first poll of a fresh dashboard (backfill)':58} {cold:8.1f}")
    print(f"{'page + JSON, steady state (median of ' + str(args.repeat) + ' polls)':58} {statistics.median(warm):8.1f}")
    print(f"{'page + JSON, steady state p90':58} {percentile(warm, 0.9):8.1f}")
    print(f"{'floor: raw HGETALL pipeline of every record and config':58} {statistics.median(floors):8.1f}")


if __name__ == "__main__":
    main()
