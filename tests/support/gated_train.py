"""A trainer that holds between epochs while a file tells it to, so that a test waits on state
instead of racing the trainer's speed.

    python -m tests.support.gated_train MODULE <MODULE's arguments>

MODULE is `workers.stub_train` or `workers.train` (the reference trainer); its `main()` runs in
this process, unchanged but for one thing: after each progress line (the epoch's checkpoint is on
disk by then), while `<--data>.hold` exists and holds a number <= the epochs this process has
completed, the trainer waits. It goes on when the file is removed or raised, or at once on
SIGTERM/SIGINT: the trainer's own handler then sees the request and stops the way it always does
(checkpoint of the last completed epoch kept, STOPPED_EXIT). The test writes and removes the file:

    hold(npz, 1)   # every training on npz pauses after its first epoch...
    release(npz)   # ...until this
"""

from __future__ import annotations

import builtins
import importlib
import signal
import sys
import time
from pathlib import Path
from types import FrameType

POLL_S = 0.02
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def hold_file(npz_path: str | Path) -> Path:
    return Path(f"{npz_path}.hold")


def hold(npz_path: str | Path, after_epochs: int) -> None:
    """Trainings on `npz_path` pause once they have completed `after_epochs` epochs."""
    tmp = hold_file(npz_path).with_suffix(".hold.tmp")
    tmp.write_text(str(after_epochs))
    tmp.replace(hold_file(npz_path))  # a trainer never reads half a number


def release(npz_path: str | Path) -> None:
    hold_file(npz_path).unlink(missing_ok=True)


def _held_after(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except FileNotFoundError:
        return None


class Gate:
    """Counts the progress lines the trainer prints and waits after each one the hold file asks for."""

    def __init__(self, hold: Path) -> None:
        self.hold = hold
        self.epochs = 0
        self.stop_asked = False

    def print(self, *args: object, **kwargs: object) -> None:
        builtins.print(*args, **kwargs)
        if kwargs.get("file") not in (None, sys.stdout):
            return  # a log line on stderr, not an epoch's progress line
        self.epochs += 1
        self.wait()

    def wait(self) -> None:
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

        def asked(signum: int, frame: FrameType | None) -> None:
            self.stop_asked = True
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)  # the trainer's own: it notes the request and stops after us

        for sig in STOP_SIGNALS:
            signal.signal(sig, asked)
        try:
            while not self.stop_asked and (after := _held_after(self.hold)) is not None and after <= self.epochs:
                time.sleep(POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: list[str]) -> int:
    module = importlib.import_module(argv[0])
    data = argv[argv.index("--data") + 1]
    module.print = Gate(hold_file(data)).print  # the module's global `print` shadows the builtin
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
