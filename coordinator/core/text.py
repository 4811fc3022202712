"""The one codec between Python values and the text Redis stores: every field the coordinator writes
is UTF-8 text (floats as `repr`, so they read back exactly), and every reply is decoded here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text(value: Any) -> str:
    """A Redis reply (bytes, str or number) as text; invalid UTF-8 replaced, None as ""."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def optional_text(value: Any) -> str | None:
    """`text`, but None for a missing or empty value (a field not set)."""
    return text(value) or None


def decode_hash(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    """An HGETALL reply as text."""
    return {text(k): text(v) for k, v in raw.items()}


def strings(mapping: Mapping[str, Any]) -> dict[str, str]:
    """Field values as Redis stores them: floats by `repr` (exact), None left out."""
    return {k: (repr(v) if isinstance(v, float) else str(v)) for k, v in mapping.items() if v is not None}
