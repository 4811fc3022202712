"""Failure classes and the retry policy: what is retried, how often, after how long.

| class          | reasons                                             | retried                 |
|----------------|-----------------------------------------------------|-------------------------|
| infrastructure | lease_lost, worker_lost, redis_error, worker_error  | up to `infrastructure`  |
| trainer        | trainer_error (non-zero exit), timeout, no_model    | up to `trainer` (fewer) |
|                | (exit 0 without a model file at `{model_path}`)     |                         |
| poison         | missing_input, bad_input (trainer exit 2), invalid  | never                   |

The wait before retry n of a class is min(backoff_max_s, backoff_base_s * 2^(n-1)), times a
random factor in [0.5, 1.5) so that many jobs failing together do not come back together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from coordinator.core.settings import RetrySettings

INFRASTRUCTURE, TRAINER, POISON = "infrastructure", "trainer", "poison"
REASON_CLASS = {
    "lease_lost": INFRASTRUCTURE, "worker_lost": INFRASTRUCTURE, "redis_error": INFRASTRUCTURE,
    "worker_error": INFRASTRUCTURE,
    "trainer_error": TRAINER, "timeout": TRAINER, "no_model": TRAINER,
    "missing_input": POISON, "bad_input": POISON, "invalid_config": POISON,
}
# The trainer's exit status for bad input or bad arguments (argparse uses 2 as well).
BAD_INPUT_EXIT = 2


@dataclass(frozen=True)
class RetryDecision:
    failure_class: str
    will_retry: bool
    delay_s: float
    failures_of_class: int  # including this one


def decide(reason: str, previous_failures: int, settings: RetrySettings,
           rng: random.Random | None = None) -> RetryDecision:
    """`previous_failures`: failures of the same class this job had before this one."""
    failure_class = REASON_CLASS.get(reason, INFRASTRUCTURE)
    limit = {INFRASTRUCTURE: settings.infrastructure, TRAINER: settings.trainer, POISON: 0}[failure_class]
    n = previous_failures + 1
    if n > limit:
        return RetryDecision(failure_class, False, 0.0, n)
    delay = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (n - 1))
    return RetryDecision(failure_class, True, delay * (rng or random).uniform(0.5, 1.5), n)
