"""A stand-in trainer with the reference trainer's interface and no torch: for wiring checks,
benchmarks and tests of the worker (progress lines, checkpoints and resume, metrics, exit status).

    python -m workers.stub_train <the reference trainer's arguments> [--epoch-seconds S] [--fail-with CODE]

Each epoch sleeps `--epoch-seconds` (default 0), prints the same JSON line as the real one and
writes `checkpoint.json` ({"epoch": n}); `--resume PATH` continues after PATH's epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


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
    history = []
    for epoch in range(first, args.epochs + 1):
        time.sleep(args.epoch_seconds)
        line = {"epoch": epoch, "total_epochs": args.epochs, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch}
        history.append(line)
        (out / "checkpoint.pt").write_bytes(b"stub")
        (out / "checkpoint.json").write_text(json.dumps({"epoch": epoch}))
        print(json.dumps(line), flush=True)
        if args.fail_with:
            print(f"stub trainer: failing on purpose with status {args.fail_with}", file=sys.stderr)
            return args.fail_with
    model = out / "model.pt"
    model.write_bytes(b"stub")
    final = 1.0 / args.epochs
    metrics = {"model_path": str(model.resolve()), "epochs_completed": args.epochs, "first_epoch": first,
               "final_loss": final, "history": history or [{"epoch": args.epochs, "train_loss": final}]}
    (out / "metrics.json").write_text(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
