"""Waiting on state: poll a condition with a deadline, never sleep-then-assert."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from bench.common import wait_until

T = TypeVar("T")


def wait_for(predicate: Callable[[], object], timeout_s: float = 60.0, interval_s: float = 0.05) -> object:
    """Poll until `predicate()` is truthy; fail the test with a clear message on timeout."""
    try:
        return wait_until(predicate, timeout_s, interval_s)
    except TimeoutError:
        raise AssertionError(f"condition not met within {timeout_s} s") from None


def or_none(call: Callable[[], T], *errors: type[BaseException]) -> T | None:
    """`call()`, or None when it raises one of `errors` (a server not listening yet, a failover under
    way): a probe for wait_for. Only the errors named are read as "not yet"; any other one fails."""
    try:
        return call()
    except errors:
        return None


def get_json(address: str) -> Any:
    """The JSON an HTTP address serves, or None while it cannot be reached (a probe for wait_for)."""
    return or_none(lambda: json.loads(urllib.request.urlopen(address, timeout=10).read()), OSError)
