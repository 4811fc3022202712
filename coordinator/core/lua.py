"""The Lua scripts that sit beside the modules that run them (`job_start.lua`, `lease_acquire.lua`,
...), read when this module is imported: every RQ work horse builds a JobStore and a LeaseManager
per job, and a horse forked from a worker that imported this module reads no file."""

from __future__ import annotations

import re
from pathlib import Path

import redis
from redis.commands.core import Script

HERE = Path(__file__).parent
PACKAGE = HERE.parent
# Helpers a script may call, prepended to it; files named `_*.lua` are such helpers, not scripts:
# core/_stream.lua (xadd_trimmed, the stream-trimming rule), core/_job.lua (args: the JSON
# arguments; listed), stores/_config.lua (the config store's writes a job script makes). A script
# gets only the helper files it calls (Redis runs a script's helper definitions on every call: a
# lease renewal should not pay for the job scripts' helpers). Script names are unique across the
# package's layers.
HELPERS = {path: re.findall(r"^local function (\w+)", path.read_text(), re.M)
           for path in sorted(PACKAGE.rglob("_*.lua"), key=lambda p: p.name)}


def _with_helpers(body: str) -> str:
    needed = [path for path, names in HELPERS.items() if any(re.search(rf"\b{n}\(", body) for n in names)]
    # Helper files call no other file's helpers; a missing helper fails the script's first call.
    return "".join(path.read_text() for path in needed) + body


SOURCES = {path.name: _with_helpers(path.read_text())
           for path in PACKAGE.rglob("*.lua") if not path.name.startswith("_")}


def script(conn: redis.Redis, name: str) -> Script:
    """`conn.register_script` for the script `name`, wherever it sits under `coordinator/`."""
    return conn.register_script(SOURCES[name])
