"""A stub trainer whose epochs take as long as its GPU class makes them: for the learned-speeds
tests (issue 26, step 3). `--gpu-class C` picks the seconds per epoch from EPOCH_SECONDS; the rest
is `workers.stub_train`'s, and it holds between epochs like `tests/support/gated_train.py` while
`<--data>.hold` says so (`gated_train.hold`, `release`).

    python -m tests.support.speed_trainer --gpu-class {gpu_class} <the reference trainer's arguments>
"""

from __future__ import annotations

import sys

from tests.support.gated_train import Gate, hold_file
from workers import stub_train

EPOCH_SECONDS = {"H100": 0.1, "24GB": 0.5}


def main(argv: list[str]) -> int:
    cls = ""
    if "--gpu-class" in argv:
        i = argv.index("--gpu-class")
        cls = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if "--data" in argv:
        stub_train.print = Gate(hold_file(argv[argv.index("--data") + 1])).print  # type: ignore[attr-defined]
    return stub_train.main([*argv, "--epoch-seconds", str(EPOCH_SECONDS.get(cls, 1.0))])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
