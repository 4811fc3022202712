"""TRAINING_FAILED's stderr_tail is capped in bytes of UTF-8 (the schema's limit), not characters."""

from __future__ import annotations

import pytest

from coordinator.bus.schemas import FIELD_LIMITS
from workers.tasks import STDERR_TAIL_BYTES, utf8_tail


def test_the_cap_is_the_schemas_limit():
    assert STDERR_TAIL_BYTES == FIELD_LIMITS["stderr_tail"]


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_a_long_tail_keeps_its_end_within_the_byte_limit(char):
    text = "start " + char * STDERR_TAIL_BYTES + " the last line\n"
    tail = utf8_tail(text)
    size = len(tail.encode("utf-8"))
    assert size <= STDERR_TAIL_BYTES and size > STDERR_TAIL_BYTES - 4  # at most one character short
    assert text.endswith(tail) and tail.endswith(" the last line\n")


def test_a_short_tail_is_kept_whole():
    assert utf8_tail("Traceback: ошибка\n") == "Traceback: ошибка\n"
