"""What the benchmarks share: the 12 real configs, a private redis-server, polling, percentiles,
Redis command counts from INFO, an exporter's XADD, a YAML config and the `ringrift-train run`
subprocess, and RQ's timestamps. Keys come from `coordinator.core.keys.Keys` (and RQ's own key helpers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timezone
from pathlib import Path
from typing import IO, Any, TypeVar

import redis
import yaml
from rq.utils import utcparse

from coordinator.bus.events import NPZ_EXPORT_COMPLETE
from coordinator.core.boards import BOARDS, MAX_PLAYERS, MIN_PLAYERS
from coordinator.core.keys import Keys
from coordinator.ops.local_redis import LocalRedis

T = TypeVar("T")
CONFIGS = [f"{board}_{players}p" for board in BOARDS for players in range(MIN_PLAYERS, MAX_PLAYERS + 1)]
STUB_TRAINER = ["{python}", "-m", "workers.stub_train"]


@contextmanager
def private_redis() -> Iterator[tuple[str, redis.Redis]]:
    """A redis-server of the benchmark's own on a free port (never the machine's 6379): (url, connection)."""
    with LocalRedis() as server:
        conn = redis.Redis.from_url(server.url)
        try:
            yield server.url, conn
        finally:
            conn.close()


def wait_until(predicate: Callable[[], T], timeout_s: float = 60.0, step_s: float = 0.05) -> T:
    """Poll until `predicate()` is truthy and return it; TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise TimeoutError("benchmark step did not finish")


def wait_for_count(conn: redis.Redis, stream: str, event_type: str, count: int, timeout_s: float = 600) -> None:
    """Block on the stream (few commands) until `count` events of `event_type` were seen."""
    wanted, seen, last, deadline = event_type.encode(), 0, "0-0", time.monotonic() + timeout_s
    while seen < count and time.monotonic() < deadline:
        for _stream, entries in conn.xread({stream: last}, count=500, block=1000) or []:
            for entry_id, fields in entries:
                last = entry_id
                seen += fields.get(b"type") == wanted
    if seen < count:
        raise TimeoutError(f"only {seen} of {count} {event_type} events")


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0..1); NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def total_commands(conn: redis.Redis) -> int:
    """Commands the server processed so far (INFO stats; a script or MULTI counts once)."""
    return int(conn.info("stats")["total_commands_processed"])


def command_counts(conn: redis.Redis) -> dict[str, int]:
    """Calls per command so far, from INFO commandstats (commands run by scripts included)."""
    return {name.removeprefix("cmdstat_"): v["calls"] for name, v in conn.info("commandstats").items()}


def counts_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls per command between two `command_counts` readings (commands not called left out)."""
    return {name: calls - before.get(name, 0) for name, calls in after.items() if calls != before.get(name, 0)}


def xadd_export(conn: redis.Redis | redis.client.Pipeline, keys: Keys, config_key: str, npz_path: str | Path,
                samples: int) -> None:
    """XADD an NPZ_EXPORT_COMPLETE as an exporter does (on a pipeline: queued, not executed)."""
    conn.xadd(keys.events, {"type": NPZ_EXPORT_COMPLETE, "config_key": config_key, "npz_path": str(npz_path),
                            "samples": samples})


def write_config(path: Path, url: str, training: dict[str, Any], **sections: Any) -> Path:
    """A YAML config on `url` with models beside it, exports confined to its folder (where the
    benchmarks write their stand-in data files) and no NPZ check (the stub trainer does not read
    them); `training` adds to that section, `sections` are the others."""
    root = path.parent.resolve()
    path.write_text(yaml.safe_dump({
        "redis": {"url": url},
        "training": {"models_root": str(root / "models"), "data_roots": [str(root)], "check_npz": False,
                     **training},
        **sections,
    }))
    return path


def start_orchestrator(config: Path, log: IO[bytes] | None = None,
                       env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`ringrift-train --config CONFIG run` as a subprocess; output to `log` or nowhere; `env` added
    to this process's environment."""
    out = log or subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "coordinator.ops.cli", "--config", str(config), "run"],
                            stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                            env={**os.environ, **env} if env else None)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM and wait (the orchestrator stops between batches)."""
    if proc is not None:
        proc.terminate()
        proc.wait()


def rq_time(value: bytes | str | None) -> float | None:
    """An RQ timestamp field (UTC, e.g. a job's `started_at`) as epoch seconds."""
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    return utcparse(text).replace(tzinfo=timezone.utc).timestamp()
