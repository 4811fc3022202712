"""A stand-in trainer with the reference trainer's interface and no torch: for wiring checks,
benchmarks and tests of the worker (progress lines, checkpoints and resume, metrics, exit status).

    python -m workers.stub_train <the reference trainer's arguments> [--epoch-seconds S] [--fail-with CODE]

Each epoch sleeps `--epoch-seconds` (default 0), prints the same JSON line as the real one and
writes `checkpoint.json` ({"epoch": n}); `--resume PATH` continues after PATH's epoch.
`--init-weights PATH` is only recorded (stderr, metrics.json and the model file's text).
On SIGTERM or SIGINT it stops at once, even mid-epoch: it writes the checkpoint of the last
completed epoch and exits with STOPPED_EXIT (143), like the reference trainer.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from coordinator.trainer.command import STOPPED_EXIT

SLEEP_SLICE_S = 0.05  # how often a sleeping epoch looks for a stop request


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workers.stub_train")
    for name in ("--board-type", "--num-players", "--data", "--batch-size", "--learning-rate", "--patience",
                 "--init-weights"):
        p.add_argument(name)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--resume", help="a checkpoint.pt whose checkpoint.json says which epoch it ended")
    p.add_argument("--epoch-seconds", type=float, default=0.0)
    p.add_argument("--fail-with", type=int, default=0, help="exit with this status after the first epoch")
    args = p.parse_args(argv)
    if args.data and not os.path.exists(args.data):
        print(f"stub trainer: bad input: {args.data} does not exist", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = 1
    if args.resume:
        first = json.loads((Path(args.resume).parent / "checkpoint.json").read_text())["epoch"] + 1
    asked: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: asked.append(signum))
    if args.init_weights:
        print(f"stub trainer: init weights from {args.init_weights}", file=sys.stderr, flush=True)
    history = []
    for epoch in range(first, args.epochs + 1):
        deadline = time.monotonic() + args.epoch_seconds
        while not asked and time.monotonic() < deadline:
            time.sleep(min(SLEEP_SLICE_S, max(0.0, deadline - time.monotonic())))
        if asked:  # the checkpoint of epoch - 1 is already on disk
            print(f"stub trainer: stopped during epoch {epoch}; checkpoint of epoch {epoch - 1} kept",
                  file=sys.stderr, flush=True)
            return STOPPED_EXIT
        line = {"epoch": epoch, "total_epochs": args.epochs, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch}
        history.append(line)
        (out / "checkpoint.pt").write_bytes(b"stub")
        (out / "checkpoint.json").write_text(json.dumps({"epoch": epoch}))
        print(json.dumps(line), flush=True)
        if args.fail_with:
            print(f"stub trainer: failing on purpose with status {args.fail_with}", file=sys.stderr)
            return args.fail_with
    model = out / "model.pt"
    model.write_text(json.dumps({"stub": True, "init_weights": args.init_weights, "resume": args.resume}))
    final = 1.0 / args.epochs
    metrics = {"model_path": str(model.resolve()), "epochs_completed": args.epochs, "first_epoch": first,
               "init_weights": args.init_weights,
               "final_loss": final, "best_val_loss": 1.1 / args.epochs, "best_epoch": args.epochs,
               "early_stopped": False, "history": history or [{"epoch": args.epochs, "train_loss": final}]}
    (out / "metrics.json").write_text(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
