"""Reference trainer: a policy/value network trained on one RingRift NPZ file.

    python -m workers.train --board-type hex8 --num-players 2 --data hex8_2p.npz \
        --epochs 50 --batch-size 512 --learning-rate 0.001 --patience 5 --output-dir out/

Prints one JSON line per epoch on stdout. Writes into the output directory: `checkpoint.pt`
and `checkpoint.json` (its epoch) after every epoch (what `--resume` continues from),
`model.pt` (the best weights by validation loss, what `--init-weights` and `load_model` read)
and `metrics.json` at the end. Uses CUDA when present, the CPU otherwise.

`--init-weights PATH` (warm start) loads a model's weights first: every tensor whose name and
shape match this network's (so a model of another board or channel count still gives what
fits); the counts are printed on stderr and kept in metrics.json. `--resume` takes precedence
over it (a checkpoint already holds the weights).

On SIGTERM (or SIGINT) it stops within one batch, even mid-epoch: it saves `checkpoint.pt`
(the weights so far; `checkpoint.json` keeps the last completed epoch, which a resume redoes)
and exits with status 143 (STOPPED_EXIT), writing no metrics.json: a stopped training is never
a finished one. Exit status 2 for bad arguments or bad data, 66 (INIT_WEIGHTS_EXIT, see
coordinator/trainer/warm_start.py) when `--init-weights` cannot be read as a model (the worker then
retries from scratch), 1 for other failures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from coordinator.core.boards import BOARDS, MAX_PLAYERS
from coordinator.trainer.command import STOPPED_EXIT
from coordinator.trainer.npz_data import GLOBAL_FEATURES, BadTrainingData, TrainingData, load_training_data
from coordinator.trainer.warm_start import INIT_WEIGHTS_EXIT

CHECKPOINT, MODEL, METRICS = "checkpoint.pt", "model.pt", "metrics.json"
# Beside each checkpoint: {"epoch": n, "checkpoint": path}, so a retry can resume without torch.
CHECKPOINT_INFO = "checkpoint.json"
HIDDEN = 256


class Stopped(Exception):
    """Raised between batches once a stop was asked for (SIGTERM)."""


class InitWeightsError(Exception):
    """`--init-weights` names a file that is not a model this trainer can read."""


def _never() -> bool:
    return False


class PolicyValueNet(nn.Module):
    """Conv trunk; a shared head over the board's cells and the globals; policy and value outputs."""

    def __init__(self, in_channels: int, board_size: int, policy_size: int, width: int = 64, blocks: int = 2):
        super().__init__()
        self.config = {"in_channels": in_channels, "board_size": board_size, "policy_size": policy_size,
                       "width": width, "blocks": blocks}
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList(_ResidualBlock(width) for _ in range(blocks))
        self.reduce = nn.Conv2d(width, 4, 1)
        self.head = nn.Sequential(nn.Linear(4 * board_size * board_size + GLOBAL_FEATURES, HIDDEN), nn.ReLU())
        self.policy = nn.Linear(HIDDEN, policy_size)
        self.value = nn.Linear(HIDDEN, MAX_PLAYERS)

    def forward(self, features: torch.Tensor, globals_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(features)
        for block in self.blocks:
            x = block(x)
        hidden = self.head(torch.cat([self.reduce(x).flatten(1), globals_], dim=1))
        return self.policy(hidden), torch.tanh(self.value(hidden))


class _ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> PolicyValueNet:
    """Rebuild a network from `model.pt` or `checkpoint.pt`."""
    saved = torch.load(path, map_location=device, weights_only=False)
    model = PolicyValueNet(**saved["model_config"])
    model.load_state_dict(saved["model"])
    return model.to(device).eval()


def losses(model: PolicyValueNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample policy cross-entropy (sparse targets) and masked value MSE."""
    logits, values = model(batch["features"], batch["globals"])
    log_probs = F.log_softmax(logits, dim=1).gather(1, batch["policy_indices"])
    policy = -(log_probs * batch["policy_values"]).sum(dim=1)
    mask = batch["value_mask"]
    value = ((values - batch["values"]) ** 2 * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return policy, value


def load_init_weights(model: nn.Module, path: str | os.PathLike[str], device: torch.device | str) -> tuple[int, int]:
    """Copy into `model` every tensor of the saved model (a `model.pt`/`checkpoint.pt`, or a bare
    state dict) whose name and shape match. Returns (tensors loaded, tensors in the model).
    Raises InitWeightsError, naming the file, when it cannot be read (another trainer's model file,
    a truncated one): any error of the unpickler is that."""
    try:
        saved = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - pickle and torch raise many unrelated types on a bad file
        raise InitWeightsError(f"cannot load --init-weights {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(saved, dict):
        raise InitWeightsError(f"cannot load --init-weights {path}: not a model ({type(saved).__name__})")
    source = saved.get("model", saved)
    own = model.state_dict()
    fits = {k: v for k, v in source.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    model.load_state_dict({**own, **fits})
    return len(fits), len(own)


def run_epoch(model: PolicyValueNet, tensors: dict[str, torch.Tensor], rows: torch.Tensor, batch_size: int,
              optimizer: torch.optim.Optimizer | None, should_stop: Callable[[], bool] = _never) -> dict[str, float]:
    """One pass over `rows`; trains when an optimizer is given. Returns weighted mean losses.
    Raises Stopped before any batch once `should_stop()` is true."""
    model.train(optimizer is not None)
    totals = torch.zeros(3, device=rows.device)
    with torch.set_grad_enabled(optimizer is not None):
        for start in range(0, len(rows), batch_size):
            if should_stop():
                raise Stopped
            idx = rows[start:start + batch_size]
            batch = {k: v[idx] for k, v in tensors.items()}
            policy, value = losses(model, batch)
            w = batch["sample_weights"]
            loss = ((policy + value) * w).sum() / w.sum().clamp(min=1e-8)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            totals += torch.stack([(policy * w).sum(), (value * w).sum(), w.sum()]).detach()
    p, v, w = (totals / 1.0).tolist()
    return {"policy_loss": p / w, "value_loss": v / w, "loss": (p + v) / w}


def to_tensors(data: TrainingData, device: torch.device) -> dict[str, torch.Tensor]:
    fields = ("features", "globals", "values", "value_mask", "policy_indices", "policy_values", "sample_weights")
    return {name: torch.from_numpy(getattr(data, name)).to(device) for name in fields}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workers.train", description=__doc__.split("\n")[0])
    p.add_argument("--board-type", required=True, choices=sorted(BOARDS))
    p.add_argument("--num-players", required=True, type=int, choices=(2, 3, 4))
    p.add_argument("--data", required=True, help="the NPZ file to train on")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--learning-rate", type=float, default=0.001)
    p.add_argument("--patience", type=int, default=5, help="epochs without validation improvement before stopping")
    p.add_argument("--init-weights", help="start from the weights in this model.pt or checkpoint.pt")
    p.add_argument("--resume", nargs="?", const="auto",
                   help="continue from a checkpoint (default: the output directory's checkpoint.pt, if any)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.learning_rate <= 0 or args.patience < 1:
        p.error("epochs, batch size, learning rate and patience must be positive")
    return args


def train(args: argparse.Namespace, should_stop: Callable[[], bool] = _never) -> dict[str, Any]:
    """Train; the metrics (also written to metrics.json). When `should_stop()` turns true: save
    the checkpoint and return {"stopped": True, "epoch": last completed epoch, ...} instead."""
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_training_data(args.data, args.board_type)
    board = BOARDS[args.board_type]
    model = PolicyValueNet(data.channels, board.size, board.policy_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    state = {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": []}
    warm: dict[str, Any] = {"init_weights": None}
    resume = out / CHECKPOINT if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    if args.init_weights and not (resume is not None and resume.is_file()):
        loaded, total = load_init_weights(model, args.init_weights, device)
        warm = {"init_weights": str(Path(args.init_weights).resolve()), "init_tensors_loaded": loaded,
                "init_tensors_total": total}
        print(f"train.py: init weights: {loaded} of {total} tensors from {args.init_weights}", file=sys.stderr)
    if resume is not None and resume.is_file():
        saved = torch.load(resume, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = {"best_epoch": 0, **saved["state"]}  # a checkpoint from before best_epoch was kept
        _carry_best_model(resume, out)
    tensors = to_tensors(data, device)
    n_val = max(1, int(len(data) * args.val_fraction)) if len(data) > 1 else 0
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed)).to(device)
    val_rows, train_rows = order[:n_val], order[n_val:] if n_val < len(data) else order
    meta = {"board_type": args.board_type, "num_players": args.num_players, "model_config": model.config}

    def save_checkpoint() -> None:
        _save(out / CHECKPOINT, {**meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "state": state})
        _write_json(out / CHECKPOINT_INFO, {"epoch": state["epoch"], "checkpoint": str((out / CHECKPOINT).resolve())})

    while state["epoch"] < args.epochs and state["bad_epochs"] < args.patience:
        began = time.monotonic()
        shuffled = train_rows[torch.randperm(len(train_rows), device=device)]
        try:
            train_figs = run_epoch(model, tensors, shuffled, args.batch_size, optimizer, should_stop)
            val_figs = run_epoch(model, tensors, val_rows, args.batch_size, None, should_stop) if n_val else train_figs
        except Stopped:
            save_checkpoint()
            print(f"train.py: stopped during epoch {state['epoch'] + 1}; checkpoint saved", file=sys.stderr)
            return {"stopped": True, "epoch": state["epoch"], "checkpoint_path": str((out / CHECKPOINT).resolve())}
        state["epoch"] += 1
        improved = val_figs["loss"] < state["best_val"]
        if improved:
            state["best_val"], state["best_epoch"] = val_figs["loss"], state["epoch"]
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        line = {"epoch": state["epoch"], "total_epochs": args.epochs, "train_loss": round(train_figs["loss"], 6),
                "val_loss": round(val_figs["loss"], 6), "policy_loss": round(train_figs["policy_loss"], 6),
                "value_loss": round(train_figs["value_loss"], 6), "epoch_time_s": round(time.monotonic() - began, 3)}
        state["history"].append(line)
        if improved:
            _save(out / MODEL, {**meta, "model": model.state_dict(), "epoch": state["epoch"]})
        save_checkpoint()
        print(json.dumps(line), flush=True)
    history = state["history"]
    metrics = {
        "model_path": str((out / MODEL).resolve()), "checkpoint_path": str((out / CHECKPOINT).resolve()),
        "epochs_completed": state["epoch"], "final_loss": history[-1]["train_loss"] if history else None,
        # model.pt holds the weights of best_epoch (lowest validation loss), not of the last epoch.
        "best_val_loss": state["best_val"] if math.isfinite(state["best_val"]) else None,
        "best_epoch": state["best_epoch"] or None,
        "early_stopped": state["epoch"] < args.epochs,
        "device": str(device), "samples": len(data), "channels": data.channels, **warm, "history": history,
    }
    _write_json(out / METRICS, metrics)
    return metrics


def _carry_best_model(resume: Path, out: Path) -> None:
    """A resume into a new directory (a retry's or a preempted job's next attempt) brings the best
    model so far: without it, a run whose remaining epochs never beat it would end with no model."""
    best, target = resume.parent / MODEL, out / MODEL
    if best.is_file() and not target.is_file():
        shutil.copyfile(best, target)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _save(path: Path, obj: dict[str, Any]) -> None:
    """Write atomically: a reader (or a resume after a crash) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    asked: list[int] = []  # the handlers only note the request; training checks it between batches
    previous = {sig: signal.signal(sig, lambda signum, _frame: asked.append(signum)) for sig in STOP_SIGNALS}
    try:
        metrics = train(args, lambda: bool(asked))
    except InitWeightsError as exc:
        print(f"train.py: {exc}", file=sys.stderr)
        return INIT_WEIGHTS_EXIT
    except (BadTrainingData, FileNotFoundError) as exc:
        print(f"train.py: bad input: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return STOPPED_EXIT if metrics.get("stopped") else 0


if __name__ == "__main__":
    sys.exit(main())
