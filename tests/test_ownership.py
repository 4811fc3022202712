"""One owner for each record: a job's `state` is written only by the job store and its scripts, a
config's hash only by the config store and its scripts (and, inside a job script, only through the
config store's Lua helpers in `stores/_config.lua`); the scripts write no state name or event type
of their own (they come from the Python constants).

Python is read with `ast` (every `hset`-like call and its arguments); Lua by its header, which
names each key (`KEYS[4] config hash`), and its `redis.call` lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from coordinator.bus.events import KNOWN_TYPES
from coordinator.core.job_states import TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent
CODE = [p for package in ("coordinator", "workers") for p in (ROOT / package).rglob("*.py")]
SCRIPTS = sorted((ROOT / "coordinator").rglob("*.lua"))
WRITES = {"hset", "hsetnx", "hmset", "hdel", "hincrby", "hincrbyfloat", "delete"}
LUA_WRITES = r"'(?:HSET|HSETNX|HMSET|HDEL|HINCRBY|HINCRBYFLOAT|DEL)'"


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def write_calls(path: Path) -> list[ast.Call]:
    """Every hset-like call, with a name it passes resolved to the dict literal assigned to it in the
    same function (`record = {...}; pipe.hset(key, mapping=strings(record))`)."""
    calls = []
    for scope in ast.walk(ast.parse(path.read_text())):
        if not isinstance(scope, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        dicts = {target.id: node.value for node in ast.walk(scope) if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Dict) for target in node.targets if isinstance(target, ast.Name)}
        for node in ast.walk(scope):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES:
                node.resolved = [dicts[n.id] for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in dicts]
                calls.append(node)
    return calls


def writes_state(call: ast.Call) -> bool:
    """A write whose arguments name the field `state` (positionally, or as a key of a mapping)."""
    for node in [*ast.walk(call), *getattr(call, "resolved", [])]:
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "state" for k in node.keys):
            return True
    return any(isinstance(a, ast.Constant) and a.value == "state" for a in call.args[1:])


def writes_config_hash(call: ast.Call) -> bool:
    """A write whose key is built with `Keys.config(...)`."""
    return bool(call.args) and "keys.config(" in ast.unparse(call.args[0])


def python_writers(predicate) -> set[str]:
    return {rel(path) for path in CODE for call in write_calls(path) if predicate(call)}


def described_keys(source: str, what: str) -> set[str]:
    """The KEYS[n] a script's header describes as `what` (a regex: "config(?:'s)? hash", "job hash")."""
    return {f"KEYS[{n}]" for n, text in re.findall(r"KEYS\[(\d+)\]([^K\n]*)", source) if re.search(what, text)}


def config_hash_keys(source: str) -> set[str]:
    return described_keys(source, r"config(?:'s)? hash")


def code(path: Path) -> str:
    """A script without its comments (a header may quote a state name in prose)."""
    return re.sub(r"--[^\n]*", "", path.read_text())


def test_only_the_job_store_writes_a_job_state() -> None:
    assert python_writers(writes_state) == {"coordinator/stores/jobs.py"}  # found there: the check works
    lua = {rel(p) for p in SCRIPTS for key in described_keys(p.read_text(), r"job hash")
           if re.search(LUA_WRITES + r",\s*" + re.escape(key) + r",[^\n]*'state'", code(p))}
    assert lua and all(re.fullmatch(r"coordinator/stores/job_\w+\.lua", name) for name in lua), lua


def test_only_the_config_store_writes_a_config_hash() -> None:
    assert python_writers(writes_config_hash) == {"coordinator/stores/configs.py"}
    offenders = []
    for path in SCRIPTS:
        if path.name in ("_config.lua", "record_exports.lua"):  # the config store's helpers and script
            continue
        source = path.read_text()
        for key in config_hash_keys(source):
            if re.search(LUA_WRITES + r",\s*" + re.escape(key), code(path)):
                offenders.append(f"{rel(path)} writes {key}")
    assert offenders == []


def test_the_header_reader_finds_the_config_hashes() -> None:
    """Non-vacuous: the job scripts that touch a config's hash are found by their headers."""
    found = {p.name for p in SCRIPTS if config_hash_keys(p.read_text())}
    assert {"job_start.lua", "job_finish.lua", "job_cancel.lua", "job_preempted.lua"} <= found


def test_scripts_take_state_names_and_event_types_from_python() -> None:
    literals = {(rel(p), s) for p in SCRIPTS for s in re.findall(r"'([A-Za-z_]+)'", code(p))}
    states = sorted((f, s) for f, s in literals if s in TRANSITIONS)
    assert states == []  # every state a script writes or compares is passed in
    types = sorted((f, s) for f, s in literals if re.fullmatch(r"[A-Z]+(?:_[A-Z]+)+", s) and s not in KNOWN_TYPES)
    assert types == []  # an event type a script names itself is one the bus knows
