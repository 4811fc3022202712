"""A stub multi-GPU trainer for the gang tests (issue 27): it records what a torchrun-style
trainer is given and holds its rendezvous port while it trains, as torchrun's master does.

    python -m tests.support.gang_trainer --record-dir DIR --nproc N --devices D --master-port P \\
        <the reference trainer's arguments>

Before training it writes DIR/<config_key>.<pid>.json: CUDA_VISIBLE_DEVICES, the placeholders'
values, the port, and whether it could bind the port; it exits 1 (as torchrun does on
EADDRINUSE) when another training already holds it. Only a multi-GPU training (N > 1) binds its
port (a single-GPU one starts no rendezvous): the tests' "nodes" share one host's ports. Then it is
`tests.support.gated_train` over `workers.stub_train` (it holds between epochs while the test's
hold file says so), keeping the port bound to the end.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from tests.support import gated_train

PORT_IN_USE_EXIT = 1


def _take(argv: list[str], flag: str) -> tuple[str, list[str]]:
    i = argv.index(flag)
    return argv[i + 1], argv[:i] + argv[i + 2:]


def main(argv: list[str]) -> int:
    record_dir, argv = _take(argv, "--record-dir")
    nproc, argv = _take(argv, "--nproc")
    devices, argv = _take(argv, "--devices")
    port, argv = _take(argv, "--master-port")
    config_key = f"{argv[argv.index('--board-type') + 1]}_{argv[argv.index('--num-players') + 1]}p"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bound = int(nproc) == 1
    if not bound:
        try:
            listener.bind(("127.0.0.1", int(port)))
            listener.listen(1)
            bound = True
        except OSError:
            pass
    record = {"config_key": config_key, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "nproc_per_node": int(nproc), "devices": devices, "master_port": int(port), "port_bound": bound,
              "started": time.time()}
    path = Path(record_dir) / f"{config_key}.{os.getpid()}.json"
    path.write_text(json.dumps(record))
    if not bound:
        print(f"torch.distributed: address already in use (port {port})", file=sys.stderr)
        return PORT_IN_USE_EXIT
    try:
        code = gated_train.main(["workers.stub_train", *argv])
    finally:
        listener.close()
        record["ended"] = time.time()
        path.write_text(json.dumps(record))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
