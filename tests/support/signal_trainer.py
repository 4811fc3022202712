"""A trainer for tests of how the worker stops one: it records every signal it is sent and waits.

    python -m tests.support.signal_trainer OUTPUT_DIR [--exit-on SIGNAL --exit-with STATUS]

In OUTPUT_DIR it writes `pid`, then `started` once its handlers are in place (a test waits for
that file before asking the worker to stop it), and appends the name of each SIGTERM, SIGINT,
SIGUSR1 or SIGUSR2 it gets to `signals`. It ignores them all (only SIGKILL ends it) unless
`--exit-on` names one: that one makes it exit with `--exit-with`. It never sleeps a fixed time:
it waits for a signal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

CAUGHT = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
STARTED_FILE, SIGNALS_FILE, PID_FILE = "started", "signals", "pid"


def received(output_dir: str | os.PathLike[str]) -> list[str]:
    """The names of the signals the trainer writing into `output_dir` got, in order."""
    path = Path(output_dir) / SIGNALS_FILE
    return path.read_text().split() if path.exists() else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.signal_trainer")
    p.add_argument("output_dir")
    p.add_argument("--exit-on", choices=[s.name for s in CAUGHT])
    p.add_argument("--exit-with", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    def record(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        with open(out / SIGNALS_FILE, "a") as f:
            f.write(name + "\n")
        if name == args.exit_on:
            os._exit(args.exit_with)  # at once: no model, no checkpoint, whatever status was asked

    for sig in CAUGHT:
        signal.signal(sig, record)
    (out / PID_FILE).write_text(str(os.getpid()))
    (out / STARTED_FILE).write_text("")
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
