"""Waiting on state: poll a condition with a deadline, never sleep-then-assert."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

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
