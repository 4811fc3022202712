"""Text from outside becomes a name or a number here, and only here.

Identifiers (config keys, board types, node names, job ids, worker names) must match their
pattern in full (`re.fullmatch`, ASCII only: `hex8_2p\\n` and `hex８_2p` are refused), because
they become Redis keys, RQ job ids and file names. Events (schemas.py), start-up (orchestrator)
and the CLI/API call `check_identifier`. A config key's form comes from `coordinator/core/boards.py`,
which owns the config-key rule (boards, player range); `check_identifier("config_key", ...)` checks
only the form.

The number rule, for every numeric field of every event: ASCII digits with an optional sign,
an optional decimal part and an optional exponent (`5`, `-2`, `+3`, `5.0`, `1e3`, `2.5E-1`);
nothing else, so `nan`, `inf`, `٣`, `1_000`, ` 5`, `0x10` and overflowing values (`1e400`) are
refused, as is a text longer than 64 characters. An integer field accepts any such number whose
value is integral (`5.0` and `1e3` are 5 and 1000; `-0` is 0; `5.5` is refused).
"""

from __future__ import annotations

import json
import math
import re

from coordinator.core.boards import CONFIG_KEY
from coordinator.core.errors import EventError

PATTERNS: dict[str, re.Pattern[str]] = {
    "config_key": CONFIG_KEY,
    "board_type": re.compile(r"[a-z0-9]+", re.ASCII),
    # hostnames and dotted/underscored machine names
    "node": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII),
    # an RQ job id (RQ allows [A-Za-z0-9_-]+), also a directory name under models_root
    "job_id": re.compile(r"[A-Za-z0-9_-]{1,200}", re.ASCII),
    # `rq worker --name`: RQ's default is a uuid hex, operators use host names and pids
    "worker": re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,199}", re.ASCII),
}
MAX_NUMBER_CHARS = 64
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def check_identifier(kind: str, text: str, field: str | None = None) -> str:
    """`text` if it is a valid identifier of `kind` (a key of PATTERNS), else EventError naming
    the field (default: the kind)."""
    if not PATTERNS[kind].fullmatch(text):
        raise EventError(f"{field or kind} {text[:80]!r} is not a valid {kind.replace('_', ' ')} "
                         f"(pattern {PATTERNS[kind].pattern})")
    return text


def parse_number(text: str, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number in [lo, hi] by the number rule above."""
    if len(text) > MAX_NUMBER_CHARS:
        raise EventError(f"{name} is longer than {MAX_NUMBER_CHARS} characters")
    if not _NUMBER.fullmatch(text):
        raise EventError(f"{name} must be a number (ASCII digits, optional sign, decimals, exponent), "
                         f"got {text[:40]!r}")
    value = float(text)
    if not math.isfinite(value):
        raise EventError(f"{name} must be finite, got {text[:40]!r}")
    if not lo <= value <= hi:
        raise EventError(f"{name} must be in [{lo:g}, {hi:g}], got {text[:40]!r}")
    return value


def parse_int(text: str, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer by the number rule (an integral value in any accepted notation), in lo..hi when given."""
    if len(text) <= MAX_NUMBER_CHARS and _INTEGER.fullmatch(text):
        value = int(text)  # exact, whatever the size
    else:
        number = parse_number(text, name)
        if not number.is_integer():
            raise EventError(f"{name} must be an integer, got {text[:40]!r}")
        value = int(number)
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise EventError(f"{name} must be {lo}..{hi}, got {value}")
    return value


def parse_name_list(text: str, field: str, kind: str = "node") -> list[str]:
    """A list of names as producers write it: a JSON list (`["gpu-a", "gpu-b"]`, what
    `json.dumps` writes) or names separated by commas and/or spaces (`gpu-a, gpu-b`). Every name
    must be a valid identifier of `kind`; anything else is refused, never read as "no names"."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            names = json.loads(stripped)
        except ValueError:
            raise EventError(f"{field} is neither a JSON list nor a comma/space list: {text[:80]!r}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise EventError(f"{field} must be a JSON list of strings, got {text[:80]!r}")
    else:
        names = [n for n in re.split(r"[,\s]+", stripped) if n]
    for name in names:
        check_identifier(kind, name, f"a name in {field}")
    return names


def is_count(text: str) -> bool:
    """A bare count (ASCII digits, surrounding space allowed), not a list of names: how
    CLUSTER_HEALTH_CHANGED's `alive_peers` tells its two forms apart."""
    stripped = text.strip()
    return stripped.isascii() and stripped.isdigit()

