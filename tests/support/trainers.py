"""The trainers tests run, as `training.command` templates, and the data file an export names."""

from __future__ import annotations

from pathlib import Path

from bench import common
from coordinator.trainer.npz_data import write_synthetic_npz

# workers/stub_train.py: the reference trainer's command line, a JSON "model", no torch. The one
# constant the benchmarks use too (bench/common.py), as a tuple, as Settings hold a command.
STUB_TRAINER: tuple[str, ...] = tuple(common.STUB_TRAINER)
# tests/support/signal_trainer.py: records the signals it gets in its output directory.
SIGNAL_TRAINER: tuple[str, ...] = ("{python}", "-m", "tests.support.signal_trainer", "{output_dir}")
NPZ_SAMPLES = 16  # enough rows for a valid file; the stub trainers never read them


def stub_trainer(*args: str) -> tuple[str, ...]:
    """The stub trainer's command with its own options (`--epoch-seconds 1`, `--fail-with 3`)."""
    return (*STUB_TRAINER, *args)


def write_npz(path: Path, board_type: str = "hex8", num_players: int = 2) -> Path:
    """A valid NPZ (the real trainer's format, small) at `path`: what an exporter's file looks like."""
    return write_synthetic_npz(path, board_type, num_players, samples=NPZ_SAMPLES)
