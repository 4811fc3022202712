"""The Lua scripts that sit beside the modules that run them (`job_start.lua`, `lease_acquire.lua`,
...), read when this module is imported: every RQ work horse builds a JobStore and a LeaseManager
per job, and a horse forked from a worker that imported this module reads no file."""

from __future__ import annotations

from pathlib import Path

import redis
from redis.commands.core import Script

HERE = Path(__file__).parent
# Helpers every script may call (`_stream.lua`: xadd_trimmed, the stream-trimming rule; `_job.lua`:
# listed, time_s, pairs_from), prepended to each script; files named `_*.lua` are such helpers,
# not scripts.
PRELUDE = "".join(path.read_text() for path in sorted(HERE.glob("_*.lua")))
SOURCES = {path.name: PRELUDE + path.read_text() for path in HERE.glob("*.lua") if not path.name.startswith("_")}


def script(conn: redis.Redis, name: str) -> Script:
    """`conn.register_script` for the file `coordinator/<name>`."""
    return conn.register_script(SOURCES[name])
