"""An NPZ_EXPORT_COMPLETE sent the two ways tests send one: with redis-py, or with `redis-cli XADD` as
an exporter does."""

from __future__ import annotations

import re
import shutil
import subprocess
from os import PathLike

import redis

from coordinator.ops.local_redis import LocalRedis
from tests.support.streams import KEYS
from tests.support.tools import unavailable

# How an export names its config: by key ("hex8_2p"), by board type and players (("hex8", 2)), or not at
# all (None: the test passes config_key= or config= itself among the extra fields).
Config = str | tuple[str, int] | None


def export_fields(named: Config, npz_path: str | PathLike[str], samples: int | str,
                  **extra: object) -> dict[str, str]:
    """An export's fields in the order exporters write them: type, the config, npz_path, samples, then
    `extra` (RingRift's metadata, or a field under test)."""
    if named is None:
        config = {}
    elif isinstance(named, str):
        config = {"config_key": named}
    else:
        config = {"board_type": named[0], "num_players": str(named[1])}
    rest = {"npz_path": str(npz_path), "samples": str(samples), **{k: str(v) for k, v in extra.items()}}
    return {"type": "NPZ_EXPORT_COMPLETE", **config, **rest}


def xadd_export(conn: redis.Redis, named: Config = ("hex8", 2), npz_path: str | PathLike[str] = "/data/hex8_2p.npz",
                samples: int | str = 40000, **extra: object) -> str:
    """XADD an export to the event stream with redis-py; returns the entry id."""
    return conn.xadd(KEYS.events, export_fields(named, npz_path, samples, **extra)).decode()


def cli_export(server: LocalRedis, named: Config, npz_path: str | PathLike[str], samples: int | str = 100) -> str:
    """The same entry sent with `redis-cli XADD`, as an exporter sends it; returns the entry id."""
    fields = export_fields(named, npz_path, samples)
    return xadd_like_an_exporter(server, *(part for pair in fields.items() for part in pair))


def xadd_like_an_exporter(server: LocalRedis, *fields: str) -> str:
    """`redis-cli XADD ringrift:events '*' field value ...`, as an exporter sends it (every field as
    given, a repeated name included); returns the entry id. No redis-py fallback: without redis-cli
    the test is `unavailable` (a failure in CI, which installs it)."""
    cli = shutil.which("redis-cli")
    if not cli:
        unavailable("redis-cli is not installed (apt-get install -y redis-tools; .ci/run does it)")
    done = subprocess.run([cli, "-p", str(server.port), "XADD", KEYS.events, "*", *fields],
                          check=True, capture_output=True, text=True, timeout=10)
    entry_id = done.stdout.strip()
    assert re.fullmatch(r"\d+-\d+", entry_id), f"redis-cli XADD answered {done.stdout!r} {done.stderr!r}"
    return entry_id
