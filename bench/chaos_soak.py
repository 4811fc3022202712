"""The soak's growth check: samples of Redis memory, key count, stream length, pending entries and
job records, taken every minute while chaos rounds run, and whether any of them grows without bound.

Bounded means: after the warm-up (the first WARMUP_FRACTION of the samples), the largest value of
the last third is at most GROWTH_ALLOWED above the largest of the first third, or within the
metric's absolute slack (a few keys or entries come and go with the jobs in flight). A least-squares
slope per hour over the same samples is printed beside it.

Keys and memory are judged by the keys without a TTL (their count, and their bytes by MEMORY
USAGE): RQ keeps each job's own key for its result TTL (7 days, `training.rq_result_ttl_days`),
so the total count and Redis' used memory grow through any run shorter than that and are bounded by
the TTL, not by anything an hour can show; a key without a TTL that keeps coming, or keeps growing,
is a leak. The totals are printed (not judged).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import redis

from coordinator.core.keys import Keys

KEYS = Keys("ringrift")
WARMUP_FRACTION = 0.1
GROWTH_ALLOWED = 0.25
# name -> absolute slack below which a difference is noise (None: printed, not judged)
METRICS: dict[str, int | None] = {"used_memory_bytes": None, "memory_without_ttl_bytes": 1_000_000, "keys": None,
                                  "keys_without_ttl": 50, "stream_length": 200, "pending_entries": 20,
                                  "job_records": 50}


def sample(conn: redis.Redis) -> dict[str, int]:
    groups = conn.xinfo_groups(KEYS.events)
    names = list(conn.scan_iter(count=1000))
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for name in names:
            pipe.pttl(name)
        ttls = pipe.execute()
    lasting = [name for name, ttl in zip(names, ttls) if ttl == -1]
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for name in lasting:
            pipe.memory_usage(name)
        sizes = pipe.execute()
    return {"used_memory_bytes": int(conn.info("memory")["used_memory"]),
            "memory_without_ttl_bytes": sum(size or 0 for size in sizes), "keys": len(names),
            "keys_without_ttl": len(lasting), "stream_length": int(conn.xlen(KEYS.events)),
            "pending_entries": sum(int(g["pending"]) for g in groups),
            "job_records": int(conn.zcard(KEYS.jobs))}


class Sampler(threading.Thread):
    def __init__(self, conn: redis.Redis, every_s: float = 60.0) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.conn, self.every_s = conn, every_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.done = threading.Event()
        self.started_at = time.time()

    def run(self) -> None:
        while True:
            try:
                self.samples.append((time.time() - self.started_at, sample(self.conn)))
            except redis.RedisError:  # a failover or restart at this moment: the next minute counts
                pass
            if self.done.wait(self.every_s):
                return


@dataclass(frozen=True)
class Growth:
    metric: str
    first: int  # max of the first third after warm-up
    last: int  # max of the last third
    slope_per_h: float
    bounded: bool | None  # None: not judged


def growth(samples: list[tuple[float, dict[str, int]]]) -> list[Growth]:
    kept = samples[int(len(samples) * WARMUP_FRACTION):]
    if len(kept) < 3:
        return []
    third = len(kept) // 3
    out = []
    for metric, slack in METRICS.items():
        first = max(s[metric] for _, s in kept[:third])
        last = max(s[metric] for _, s in kept[-third:])
        bounded = None if slack is None else last <= first * (1 + GROWTH_ALLOWED) or last - first <= slack
        out.append(Growth(metric, first, last, _slope([(t, s[metric]) for t, s in kept]) * 3600, bounded))
    return out


def _slope(points: list[tuple[float, int]]) -> float:
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0


def print_soak(samples: list[tuple[float, dict[str, int]]], verdicts: list[Growth]) -> None:
    print(f"\nsoak samples ({len(samples)}, one a minute):\n")
    print("| minute | " + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for t, s in samples:
        print(f"| {t / 60:.0f} | " + " | ".join(str(s[m]) for m in METRICS) + " |")
    print(f"\ngrowth (after the first {WARMUP_FRACTION:.0%} of samples; bounded: last third's max within "
          f"{GROWTH_ALLOWED:.0%} or the slack of the first third's):\n")
    print("| metric | first third max | last third max | slope per hour | bounded |")
    print("|---|---|---|---|---|")
    for g in verdicts:
        print(f"| {g.metric} | {g.first} | {g.last} | {g.slope_per_h:+.0f} | {_verdict(g.bounded)} |")


def _verdict(bounded: bool | None) -> str:
    return "(not judged)" if bounded is None else "yes" if bounded else "NO"
