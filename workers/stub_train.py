"""A stand-in trainer with the reference trainer's interface and no torch: for wiring checks,
benchmarks and tests of the worker (progress lines, metrics file, exit status, stderr tail).

    python -m workers.stub_train <the reference trainer's arguments> [--epoch-seconds S] [--fail-with CODE]

Each epoch sleeps `--epoch-seconds` (default 0) and prints the same JSON line as the real one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workers.stub_train")
    for name in ("--board-type", "--num-players", "--data", "--batch-size", "--learning-rate", "--patience"):
        p.add_argument(name)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--epoch-seconds", type=float, default=0.0)
    p.add_argument("--fail-with", type=int, default=0, help="exit with this status after the first epoch")
    args, _unknown = p.parse_known_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    history = []
    for epoch in range(1, args.epochs + 1):
        time.sleep(args.epoch_seconds)
        line = {"epoch": epoch, "total_epochs": args.epochs, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch}
        history.append(line)
        print(json.dumps(line), flush=True)
        if args.fail_with:
            print(f"stub trainer: failing on purpose with status {args.fail_with}", file=sys.stderr)
            return args.fail_with
    model = out / "model.pt"
    model.write_bytes(b"stub")
    metrics = {"model_path": str(model.resolve()), "epochs_completed": args.epochs,
               "final_loss": history[-1]["train_loss"], "history": history}
    (out / "metrics.json").write_text(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
