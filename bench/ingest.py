"""Event ingest: exports per second the orchestrator consumes and applies (validate, record,
rescore, dispatch, ack) in steady state over the 12 configs and over 1,000 configs, and the
dead-letter path, beside the raw pipelined XADD rate from redis-py measured in the same run against
the same server. RingRift has 12 config keys; the 1,000-config row registers synthetic board names
in this process (the orchestrator runs in-process), so each batch coalesces far less.

    python -m bench.ingest [--events 5000]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import replace

import redis

from bench.common import CONFIGS, private_redis
from bench.figures import print_figures
from coordinator.bus.events import NPZ_EXPORT_COMPLETE
from coordinator.core.boards import BOARDS, Board
from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from coordinator.service.orchestrator import TrainingOrchestrator

RAW_STREAM = Keys("bench").events  # the floor's stream, apart from ours


def synthetic_configs(n: int) -> list[str]:
    """`n` config keys over synthetic boards (b0000, b0001, ...) registered in this process."""
    boards = [f"b{i:04d}" for i in range((n + 2) // 3)]
    for name in boards:
        BOARDS.setdefault(name, Board(name, 8, 7_000))
    return [f"{b}_{p}p" for b in boards for p in (2, 3, 4)][:n]


def raw_xadd_rate(conn: redis.Redis, events: int, batch: int = 100) -> float:
    fields = {"type": NPZ_EXPORT_COMPLETE, "config_key": "hex8_2p", "npz_path": "/data/x.npz", "samples": "1000"}
    began = time.perf_counter()
    for start in range(0, events, batch):
        with conn.pipeline(transaction=False) as pipe:
            for _ in range(min(batch, events - start)):
                pipe.xadd(RAW_STREAM, fields)
            pipe.execute()
    rate = events / (time.perf_counter() - began)
    conn.delete(RAW_STREAM)
    return rate


def ingest_rate(url: str, events: int, configs: list[str], valid: bool = True) -> float:
    conn = redis.Redis.from_url(url)
    conn.flushall()
    base = Settings()
    # One GPU slot, held: the measure is ingest (validate, record, rescore, ack), not dispatch.
    settings = replace(base, redis=replace(base.redis, url=url), hosts={"node-0": 1},
                       scheduler=replace(base.scheduler, prefetch=0),
                       events=replace(base.events, read_count=500, block_ms=10))
    orch = TrainingOrchestrator(settings, conn, consumer_name="bench")
    orch.prepare()
    with conn.pipeline(transaction=False) as pipe:
        for i in range(events):
            key = configs[i % len(configs)]
            # Invalid: players outside 2..4, dead-lettered.
            target = {"config_key": key} if valid else {"board_type": key.rsplit("_", 1)[0], "num_players": "9"}
            pipe.xadd(Keys().events, {"type": NPZ_EXPORT_COMPLETE, **target, "npz_path": f"/data/{key}.npz",
                                      "samples": "1000"})
        pipe.execute()
    began = time.perf_counter()
    while orch.process_once(block_ms=10):
        pass
    rate = events / (time.perf_counter() - began)
    # Every letter ever added (the dead-letter stream itself is capped below `events`).
    dead = conn.xinfo_stream(Keys().dead_letters)["entries-added"] if conn.exists(Keys().dead_letters) else 0
    if dead != (0 if valid else events):
        raise RuntimeError(f"{dead} of {events} events dead-lettered; expected {0 if valid else events}")
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the dead-letter row would log every event
    with private_redis() as (url, conn):
        cases = [("valid exports, 12 configs", CONFIGS, True),
                 ("valid exports, 1,000 configs", synthetic_configs(1000), True),
                 ("invalid exports (dead-lettered)", CONFIGS, False)]
        floors, rows = [], []
        for what, configs, valid in cases:  # the floor beside each row: this machine's speed drifts
            floors.append(raw_xadd_rate(conn, args.events))
            rows.append((what, ingest_rate(url, args.events, configs, valid)))
        floor = statistics.median(floors)
    print(f"event ingest, {args.events:,} NPZ_EXPORT_COMPLETE events per row, one orchestrator, one connection; "
          f"floor: median of {len(floors)} raw XADD runs, one before each row\n")
    print("| events | ours: applied/s | floor: raw pipelined XADD/s | ratio | target |")
    print("|---|---|---|---|---|")
    for what, rate in rows:
        print(f"| {what} | {rate:,.0f} | {floor:,.0f} | {rate / floor:.1%} | >= 25% |")
    print_figures(ingest_12=rows[0][1], ingest_1000=rows[1][1], raw_xadd=floor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
