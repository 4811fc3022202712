"""Scheduler decision time: `get_next_training_config` at 12 / 1,000 / 10,000 configs.

Beside it, in the same run on the same data, the naive decision a from-scratch implementation
makes: read every config's hash and Elo window (pipelined: the naive version at its best) and
recompute every score in Python. Both must pick the same config.

    python -m bench.scheduler_decision [--repeat 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import redis

from bench.common import CONFIGS, private_redis
from coordinator.core.boards import BOARDS
from coordinator.core.keys import Keys
from coordinator.core.settings import SchedulerSettings
from coordinator.scheduling.scheduler import TrainingScheduler, compute_priority

SIZES = (12, 1_000, 10_000)
def config_keys(n: int) -> list[str]:
    # Beyond the 12 real configs, variants named like real ones (e.g. per-experiment suffixes).
    boards = list(BOARDS)
    return (CONFIGS + [f"{boards[i % len(boards)]}x{i}_{2 + i % 3}p" for i in range(n)])[:n]


def populate(conn: redis.Redis, scheduler: TrainingScheduler, keys: list[str], now: float) -> None:
    conn.flushall()
    with conn.pipeline(transaction=False) as pipe:
        for i, key in enumerate(keys):
            pipe.hset(scheduler.keys.config(key), mapping={
                "new_samples": 1000 + (i * 7919) % 100_000, "exported_at": now - (i % 50) * 600,
                "last_trained_at": now - (i % 20) * 3600, "curriculum_weight": 0.5 + (i % 4) * 0.5})
            for h in range(4):
                pipe.rpush(scheduler.keys.elo(key), f"{now - h * 3600:.3f} {1500 + (i % 9) * h:.3f}")
        pipe.execute()
    scheduler.configs.set_curriculum_weights({k: 0.5 + (i % 4) * 0.5 for i, k in enumerate(keys)})
    scheduler.rescore()


def naive_next(scheduler: TrainingScheduler, keys: list[str], now: float) -> str | None:
    priorities = [compute_priority(i, scheduler.settings, now) for i in scheduler.load_inputs(keys)]
    eligible = [(p.score, p.config_key) for p in priorities if p.eligible]
    return max(eligible)[1] if eligible else None


def timed(fn, repeat: int) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    rows = []
    with private_redis() as (_url, conn):
        now = time.time()
        scheduler = TrainingScheduler(conn, Keys("bench"), SchedulerSettings(), clock=lambda: now)
        for n in SIZES:
            keys = config_keys(n)
            populate(conn, scheduler, keys, now)
            ours, pick = timed(scheduler.get_next_training_config, args.repeat)
            naive, naive_pick = timed(lambda k=keys: naive_next(scheduler, k, now), max(3, args.repeat // 10))
            assert pick == naive_pick, (pick, naive_pick)
            rows.append((n, ours, naive))
    print(f"scheduler decision time, median of {args.repeat} calls (naive: of {max(3, args.repeat // 10)})\n")
    print("| configs | ours: get_next_training_config | naive: recompute all | speed-up | target |")
    print("|---|---|---|---|---|")
    for n, ours, naive in rows:
        target = ">= 100x, flat in N" if n == SIZES[-1] else "flat in N"
        print(f"| {n:,} | {ours * 1e3:.3f} ms | {naive * 1e3:.1f} ms | {naive / ours:,.0f}x | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
