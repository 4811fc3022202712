"""Job functions for the raw-RQ floors, in a module that imports next to nothing: RQ imports a
job's module in every work horse, so a floor whose function lived beside the benchmark would pay
for the benchmark's (and the coordinator's) imports on every job and flatter the comparison."""

from __future__ import annotations

import time

from rq import get_current_job

FLOOR_KEY = "bench:floor:started_at"


def record_start() -> None:
    """The event-to-start floor's job: note when its first line ran."""
    get_current_job().connection.set(FLOOR_KEY, repr(time.time()))
