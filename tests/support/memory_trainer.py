"""A stub trainer that dies of out-of-memory, as a real one does, when its GPU has less memory than
its board needs: for the placement tests (issue 26). Otherwise it is `tests.support.gated_train`
over `workers.stub_train` (it holds between epochs while the test's hold file says so).

    python -m tests.support.memory_trainer --gpu-memory-gb {gpu_memory_gb} <the reference trainer's arguments>

A GPU of unknown memory (the flag dropped) counts as 0 GB.
"""

from __future__ import annotations

import sys

from tests.support import gated_train

NEEDS_GB = {"hexagonal": 40.0, "square19": 40.0}  # what the test's `gpus.boards` says, and what this "uses"
OOM_EXIT = 1


def main(argv: list[str]) -> int:
    memory = 0.0
    if "--gpu-memory-gb" in argv:
        i = argv.index("--gpu-memory-gb")
        memory = float(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    board = argv[argv.index("--board-type") + 1]
    need = NEEDS_GB.get(board, 0.0)
    if memory < need:
        print(f"torch.OutOfMemoryError: CUDA out of memory: {board} needs {need:g} GB, this GPU has {memory:g} GB",
              file=sys.stderr)
        return OOM_EXIT
    return gated_train.main(["workers.stub_train", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
