"""The chaos run's trainer: `workers.stub_train` at the speed of the node that runs it.

A node's workers may set RINGRIFT_CHAOS_EPOCH_S (their trainers inherit it): its value replaces the
command's `--epoch-seconds`, as a slower GPU would (the ephemeral node's trainings last long enough
for a termination notice to reach them, as a real training's hours do). The process then becomes
the stub trainer itself (exec: same pid, same process group), so signals, the process-table watch
and the trainer's cmdline are those of `workers.stub_train`.

    python bench/chaos_trainer.py <stub_train's arguments>
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

EPOCH_ENV = "RINGRIFT_CHAOS_EPOCH_S"
SCRIPT = str(Path(__file__).resolve())  # what the cluster's trainer command runs


def stub_argv(argv: list[str], epoch_s: str | None) -> list[str]:
    """The stub trainer's command line: `argv` with `--epoch-seconds` set to `epoch_s` (when given)."""
    args = list(argv)
    if epoch_s:
        if "--epoch-seconds" in args:
            args[args.index("--epoch-seconds") + 1] = epoch_s
        else:
            args += ["--epoch-seconds", epoch_s]
    return [sys.executable, "-m", "workers.stub_train", *args]


if __name__ == "__main__":
    command = stub_argv(sys.argv[1:], os.environ.get(EPOCH_ENV))
    os.execv(command[0], command)
