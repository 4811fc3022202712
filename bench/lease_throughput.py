"""Lease acquire+release pairs per second, ours vs redis-py's `Lock`, in the same run.

Ours takes a config lease and a node GPU slot and issues a fencing token in one script, and
releases both in one script; redis-py's Lock is SET NX PX plus a release script. Both run one
connection, one round trip per operation, against a redis-server started here.

    python -m bench.lease_throughput [--pairs 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import redis

from bench.common import private_redis
from coordinator.core.keys import Keys
from coordinator.stores.leases import LeaseManager


def ours(conn: redis.Redis, pairs: int) -> float:
    leases = LeaseManager(conn, Keys("bench"), ttl_s=30, default_slots=8)
    began = time.perf_counter()
    for _ in range(pairs):
        leases.release(leases.try_acquire("hex8_2p", "gpu-node-1", "w", "j"))
    return pairs / (time.perf_counter() - began)


def redis_py_lock(conn: redis.Redis, pairs: int) -> float:
    lock = conn.lock(Keys("bench").lease("hex8_2p"), timeout=30, blocking=False)
    began = time.perf_counter()
    for _ in range(pairs):
        assert lock.acquire()
        lock.release()
    return pairs / (time.perf_counter() - began)


def costs(conn: redis.Redis, run, pairs: int) -> tuple[float, float, float]:
    """(pairs/s, redis-server CPU µs per pair from INFO cpu, client CPU µs per pair) of one run.
    (Not commandstats: a script's inner commands are counted there as well as the script.)"""
    def server_cpu() -> float:
        info = conn.info("cpu")
        return info["used_cpu_user"] + info["used_cpu_sys"]

    before, cpu = server_cpu(), time.process_time()
    rate = run(conn, pairs)
    cpu_us = (time.process_time() - cpu) * 1e6 / pairs
    return rate, (server_cpu() - before) * 1e6 / pairs, cpu_us


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args(argv)
    with private_redis() as (_url, conn):
        ours(conn, 500), redis_py_lock(conn, 500)  # warm-up: scripts loaded, connection open
        ours_runs, lock_runs = [], []
        for _ in range(args.runs):  # interleaved, so both see the same machine
            ours_runs.append(costs(conn, ours, args.pairs))
            lock_runs.append(costs(conn, redis_py_lock, args.pairs))
    ours_rates, lock_rates = [r[0] for r in ours_runs], [r[0] for r in lock_runs]
    a, b = statistics.median(ours_rates), statistics.median(lock_rates)
    ratio = statistics.median(x / y for x, y in zip(ours_rates, lock_rates))
    print(f"lease acquire+release, {args.pairs:,} pairs x {args.runs} interleaved runs, one connection\n")
    print("| measure | ours: config lease + GPU slot + fencing token | redis-py Lock | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| pairs/s, median run | {a:,.0f} | {b:,.0f} | {ratio:.2f}x (median of per-run ratios) | >= 1.0x |")
    print(f"| pairs/s, best run | {max(ours_rates):,.0f} | {max(lock_rates):,.0f} | "
          f"{max(ours_rates) / max(lock_rates):.2f}x | - |")
    for i, what in ((1, "redis-server CPU per pair (INFO cpu)"), (2, "client CPU per pair")):
        a, b = statistics.median(r[i] for r in ours_runs), statistics.median(r[i] for r in lock_runs)
        print(f"| {what}, median | {a:.1f} µs | {b:.1f} µs | {a / b:.2f}x | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
