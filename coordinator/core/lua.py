"""The Lua scripts that sit beside the modules that run them (`job_start.lua`, `lease_acquire.lua`,
...), read when this module is imported: every RQ work horse builds a JobStore and a LeaseManager
per job, and a horse forked from a worker that imported this module reads no file."""

from __future__ import annotations

from pathlib import Path

import redis
from redis.commands.core import Script

HERE = Path(__file__).parent
PACKAGE = HERE.parent
# Helpers every script may call, prepended to each script; files named `_*.lua` are such helpers,
# not scripts: core/_stream.lua (xadd_trimmed, the stream-trimming rule), core/_job.lua (args: the
# JSON arguments; listed), stores/_config.lua (the config store's writes a job script makes).
# Script names are unique across the package's layers.
PRELUDE = "".join(path.read_text() for path in sorted(PACKAGE.rglob("_*.lua"), key=lambda p: p.name))
SOURCES = {path.name: PRELUDE + path.read_text() for path in PACKAGE.rglob("*.lua") if not path.name.startswith("_")}


def script(conn: redis.Redis, name: str) -> Script:
    """`conn.register_script` for the script `name`, wherever it sits under `coordinator/`."""
    return conn.register_script(SOURCES[name])
