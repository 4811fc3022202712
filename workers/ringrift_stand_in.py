"""A stand-in with the command line and output of RingRift's own trainer, without torch or data.

RingRift (github.com/synaptent/RingRift, ai-service/app/training/train.py, CLI in train_cli.py)
is run as `python -m app.training.train --board-type B --num-players N --data-path X.npz
--save-path M.pth --epochs E ... [--init-weights M.pth] [--resume CKPT]`. This module takes the
same flags (the ones a coordinator passes; others are refused, as argparse would) and behaves
the way the coordinator sees that trainer:
- progress through Python logging on **stderr**, in RingRift's format:
  `<time> - app.training.train - INFO - Epoch [3/50], Train Loss: 1.2345, Val Loss: 1.3456, Policy Acc: 41.5%`;
- `TRAINING_SUMMARY: loss=%.4f samples=%d games=%d epochs=%d` on **stdout** at the end, where,
  as in RingRift, `loss` is the best validation loss and `epochs` the epochs asked for;
- RingRift's early stopping: after each improvement `  New best model saved (Val Loss: %.4f)`,
  and once `--early-stopping-patience` epochs pass without one,
  `Early stopping triggered at epoch N (best loss: %.4f)`, then it ends as a finished run;
- the model at `--save-path`; checkpoints in `--checkpoint-dir` named
  `checkpoint_epoch_<n>.pth` (every `--checkpoint-interval` epochs),
  `checkpoint_final_epoch_<n>.pth` (at the end) and, on SIGTERM/SIGINT,
  `checkpoint_emergency_epoch_<completed epochs>.pth`, after which it re-raises the signal
  and dies by it, as RingRift's GracefulShutdownHandler does;
- `--init-weights` is used only when `--save-path` does not exist yet (RingRift resumes from an
  existing save path instead) and only if the file exists; `--resume` continues after the
  checkpoint's epoch.
Files are JSON text, not torch pickles. The model file and every checkpoint record which
`--init-weights` and `--resume` the run got (`init_weights`, `resumed_from`), and the log says
so too, so tests can follow a model's lineage. Stand-in only: `--epoch-seconds S` (sleep per
epoch), `--samples N` (reported in the summary; default: the data file's size in bytes),
`--overfit-after K` (the validation loss rises after epoch K, so early stopping can trigger).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

LOGGER_NAME = "app.training.train"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
BOARDS = ("square8", "square19", "hex8", "hexagonal")
MODEL_VERSIONS = ("v2", "v2_lite", "v3", "v3_lite", "v3-flat", "v3-spatial", "v4", "v5", "v5-gnn",
                  "v5-heavy", "v5-heavy-large", "v5-heavy-xl", "v6", "v6-xl")
SLEEP_SLICE_S = 0.05  # how often a sleeping epoch looks for a stop request

# The `training.command` that runs this stand-in: RingRift's own command line (the README's
# example) with this module in place of `app.training.train`, checkpointing every epoch.
COMMAND: tuple[str, ...] = (
    "{python}", "-m", "workers.ringrift_stand_in", "--board-type", "{board_type}", "--num-players", "{num_players}",
    "--data-path", "{npz_path}", "--save-path", "{model_path}", "--epochs", "{epochs}",
    "--batch-size", "{batch_size}", "--learning-rate", "{learning_rate}", "--early-stopping-patience", "{patience}",
    "--checkpoint-dir", "{checkpoint_dir}", "--checkpoint-interval", "1",
    "--init-weights", "{init_weights}", "--resume", "{resume}",
    "--model-version", "v2", "--allow-stale-data", "--max-data-age-hours", "48",
)

log = logging.getLogger(LOGGER_NAME)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """RingRift's flags, with its types and defaults (train_cli.py), plus the stand-in's two."""
    p = argparse.ArgumentParser(prog="python -m workers.ringrift_stand_in")
    p.add_argument("--board-type", type=str, default=None, choices=BOARDS)
    p.add_argument("--num-players", type=int, default=2)
    p.add_argument("--data-path", type=str, default=None)
    p.add_argument("--save-path", type=str, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=0.0005)
    p.add_argument("--early-stopping-patience", type=int, default=None)
    p.add_argument("--checkpoint-dir", type=str, default="checkpoints")
    p.add_argument("--checkpoint-interval", type=int, default=5)
    p.add_argument("--resume", type=str, default=None)
    p.add_argument("--init-weights", type=str, default=None)
    p.add_argument("--model-version", type=str, default=None, choices=MODEL_VERSIONS)
    p.add_argument("--allow-stale-data", action="store_true")
    p.add_argument("--max-data-age-hours", type=float, default=2000.0)
    p.add_argument("--epoch-seconds", type=float, default=0.0, help="stand-in only: seconds per epoch")
    p.add_argument("--samples", type=int, default=None, help="stand-in only: samples to report")
    p.add_argument("--overfit-after", type=int, default=None,
                   help="stand-in only: the validation loss rises after this epoch")
    return p.parse_args(argv)


class _Run:
    """One training run's state; `checkpoint` writes it under a RingRift checkpoint name."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.completed = 0  # epochs completed (RingRift's training_state.epoch)
        self.init_weights: str | None = None
        self.resumed_from: str | None = None
        self.best_val = float("inf")
        self.bad_epochs = 0  # epochs since the validation loss last improved

    def val_loss(self, n: int) -> float:
        """Falls like the training loss, or rises again after `--overfit-after` epochs."""
        k = self.args.overfit_after
        return 2.1 / (n + 1) if k is None or n <= k else 2.1 / (k + 1) + 0.01 * (n - k)

    def improved(self, val_loss: float) -> bool:
        """Note an epoch's validation loss; True when it is the best so far."""
        better = val_loss < self.best_val
        self.best_val = min(self.best_val, val_loss)
        self.bad_epochs = 0 if better else self.bad_epochs + 1
        return better

    def should_stop_early(self) -> bool:
        patience = self.args.early_stopping_patience
        return bool(patience) and self.bad_epochs >= patience

    def record(self) -> dict[str, Any]:
        a = self.args
        return {"stand_in": "ringrift", "board_type": a.board_type, "num_players": a.num_players,
                "epoch": self.completed, "init_weights": self.init_weights, "resumed_from": self.resumed_from,
                "model_version": a.model_version, "data_path": a.data_path}

    def checkpoint(self, name: str) -> Path:
        path = Path(self.args.checkpoint_dir) / name
        _write_json(path, self.record())
        return path


def train(args: argparse.Namespace, asked: list[int]) -> int:
    if not args.data_path or not os.path.isfile(args.data_path):
        log.error(f"Training data not found: {args.data_path}")
        return 1
    if not args.save_path or not args.epochs:
        log.error("--save-path and --epochs are required")
        return 1
    Path(args.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    run = _Run(args)
    if args.init_weights:
        if os.path.exists(args.save_path):
            log.info(f"Skipping init_weights_path (save_path {args.save_path} exists, resuming instead)")
        elif os.path.exists(args.init_weights):
            run.init_weights = str(Path(args.init_weights).resolve())
            log.info(f"Loaded initial weights from {args.init_weights}")
        else:
            log.warning(f"Init weights not found: {args.init_weights}. Starting fresh.")
    if args.resume:
        run.completed = int(json.loads(Path(args.resume).read_text())["epoch"])
        run.resumed_from = str(Path(args.resume).resolve())
        log.info(f"Resumed from checkpoint {args.resume} at epoch {run.completed}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: asked.append(signum))
    while run.completed < args.epochs:
        deadline = time.monotonic() + args.epoch_seconds
        while not asked and time.monotonic() < deadline:
            time.sleep(min(SLEEP_SLICE_S, max(0.0, deadline - time.monotonic())))
        if asked:
            return _shut_down(run, asked[0])
        run.completed += 1
        n = run.completed
        train_loss, val_loss = 2.0 / (n + 1), run.val_loss(n)
        log.info(f"Epoch [{n}/{args.epochs}], Train Loss: {train_loss:.4f}, Val Loss: {val_loss:.4f}, "
                 f"Policy Acc: {min(0.99, 0.3 + 0.02 * n):.1%}")
        if run.improved(val_loss):
            log.info("  New best model saved (Val Loss: %.4f)", val_loss)
        if args.checkpoint_interval > 0 and n % args.checkpoint_interval == 0:
            run.checkpoint(f"checkpoint_epoch_{n}.pth")
        if run.should_stop_early():
            log.info(f"Early stopping triggered at epoch {n} (best loss: {run.best_val:.4f})")
            break
    run.checkpoint(f"checkpoint_final_epoch_{args.epochs}.pth")
    _write_json(Path(args.save_path), run.record())
    samples = args.samples if args.samples is not None else os.path.getsize(args.data_path)
    print(f"TRAINING_SUMMARY: loss={run.best_val:.4f} samples={samples} games=1 epochs={args.epochs}", flush=True)
    return 0


def _shut_down(run: _Run, signum: int) -> int:
    """RingRift's GracefulShutdownHandler: emergency checkpoint, then die by the same signal."""
    log.warning(f"Received {signal.Signals(signum).name}, initiating graceful shutdown...")
    run.checkpoint(f"checkpoint_emergency_epoch_{run.completed}.pth")
    log.info("Emergency checkpoint saved successfully")
    logging.shutdown()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum  # not reached unless the signal is blocked


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return train(parse_args(argv), [])


if __name__ == "__main__":
    sys.exit(main())
