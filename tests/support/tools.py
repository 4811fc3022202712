"""Tools a test runs: this package's console scripts and the machine's binaries."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest


def console_script(name: str) -> str:
    """The path of one of this package's console scripts (beside the running Python, or on PATH)."""
    sibling = Path(sys.executable).parent / name
    found = str(sibling) if sibling.exists() else shutil.which(name)
    assert found, f"{name} is not installed (pip install -e '.[dev]')"
    return found


def unavailable(message: str) -> NoReturn:
    """A tool a test needs is missing: a failure in CI (.ci/run installs every one, CI=1), a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require(binary: str) -> str:
    """The binary's path, or `unavailable`."""
    found = shutil.which(binary)
    if not found:
        unavailable(f"{binary} is not installed (apt-get install -y {binary}; .ci/run does it)")
    return found
