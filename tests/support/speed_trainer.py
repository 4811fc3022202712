"""A stub trainer whose epochs take as long as its GPU class makes them: for the learned-speeds
test (issue 26, step 3). `--gpu-class C` picks the seconds per epoch from EPOCH_SECONDS; the rest
is `workers.stub_train`'s.

    python -m tests.support.speed_trainer --gpu-class {gpu_class} <the reference trainer's arguments>
"""

from __future__ import annotations

import sys

from workers import stub_train

EPOCH_SECONDS = {"H100": 0.1, "24GB": 0.5}


def main(argv: list[str]) -> int:
    cls = ""
    if "--gpu-class" in argv:
        i = argv.index("--gpu-class")
        cls = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    return stub_train.main([*argv, "--epoch-seconds", str(EPOCH_SECONDS.get(cls, 1.0))])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
