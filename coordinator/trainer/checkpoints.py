"""Finding the checkpoint a retry resumes from: the newest one any earlier attempt of the job left.

Two ways, chosen by `training.checkpoint_pattern`:
- unset (the reference trainer): each attempt directory's `checkpoint.json` says the epoch of
  the `checkpoint.pt` beside it (what `workers.train` and `workers.stub_train` write);
- a pattern, for any other trainer: a file name relative to the attempt's checkpoint
  directory, with `*` (any characters but `/`), `?` (one such character) and exactly one
  `{epoch}` (the epoch number, digits). RingRift's trainer: `checkpoint_*epoch_{epoch}.pth`
  matches its `checkpoint_epoch_<n>.pth`, `checkpoint_final_epoch_<n>.pth`,
  `checkpoint_early_stop_epoch_<n>.pth` and `checkpoint_emergency_epoch_<n>.pth`. A directory
  part (`ckpt/checkpoint_{epoch}.pt`) is taken literally.
The highest epoch wins (epoch 0 is never resumed from); between equal epochs, the newest file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from coordinator.trainer.command import ATTEMPT_DIR_PREFIX, attempt_paths

CHECKPOINT_INFO = "checkpoint.json"
REFERENCE_CHECKPOINT = "checkpoint.pt"
EPOCH_FIELD = "{epoch}"
RINGRIFT_CHECKPOINT_PATTERN = "checkpoint_*epoch_{epoch}.pth"


def checkpoint_pattern_problems(pattern: str) -> list[str]:
    """What is wrong with a checkpoint pattern, one sentence each (empty: fine)."""
    problems = []
    if pattern.count(EPOCH_FIELD) != 1:
        problems.append(f"checkpoint pattern {pattern!r}: needs exactly one {EPOCH_FIELD}")
    if pattern.startswith("/") or ".." in pattern.split("/"):
        problems.append(f"checkpoint pattern {pattern!r}: must be relative to the checkpoint directory, without ..")
    if any(c in pattern.rsplit("/", 1)[0] for c in "*?") and "/" in pattern:
        problems.append(f"checkpoint pattern {pattern!r}: wildcards only in the file name")
    return problems


def newest_checkpoint(job_dir: str | Path, pattern: str | None = None) -> tuple[str | None, int]:
    """The newest checkpoint any earlier attempt of the job left: (path, epoch), or (None, 0)."""
    job_dir = Path(job_dir)
    try:  # listdir, not glob: a glob compiles its pattern in every work horse (~0.5 ms a job)
        attempts = [name for name in os.listdir(job_dir) if name.startswith(ATTEMPT_DIR_PREFIX)]
    except OSError:  # a first attempt: no directory yet
        return None, 0
    dirs = [attempt_paths(job_dir, int(name[len(ATTEMPT_DIR_PREFIX):])).checkpoint_dir
            for name in attempts if name[len(ATTEMPT_DIR_PREFIX):].isdigit()]
    found = _by_info_file(dirs) if pattern is None else _by_pattern(dirs, pattern)
    if not found:
        return None, 0
    epoch, _, path = max(found)
    return path, epoch


def _by_info_file(dirs: list[Path]) -> list[tuple[int, float, str]]:
    found = []
    for directory in dirs:
        try:
            epoch = int(json.loads((directory / CHECKPOINT_INFO).read_text())["epoch"])
            mtime = (directory / REFERENCE_CHECKPOINT).stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if epoch > 0:
            found.append((epoch, mtime, str(directory / REFERENCE_CHECKPOINT)))
    return found


def _by_pattern(dirs: list[Path], pattern: str) -> list[tuple[int, float, str]]:
    problems = checkpoint_pattern_problems(pattern)
    if problems:
        raise ValueError("; ".join(problems))
    subdir, _, name = pattern.rpartition("/")
    matcher = re.compile(_translate(name))
    found = []
    for directory in (d / subdir if subdir else d for d in dirs):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for candidate in names:
            match = matcher.fullmatch(candidate)
            if match is None:
                continue
            try:
                mtime = (directory / candidate).stat().st_mtime
            except OSError:
                continue
            epoch = int(match.group("epoch"))
            if epoch > 0:  # a checkpoint of no completed epoch holds nothing to resume
                found.append((epoch, mtime, str(directory / candidate)))
    return found


def _translate(name: str) -> str:
    """A file-name pattern as a regular expression: `*`, `?`, one `{epoch}`; all else literal."""
    head, _, tail = name.partition(EPOCH_FIELD)
    return _glob(head) + r"(?P<epoch>\d+)" + _glob(tail)


def _glob(text: str) -> str:
    return "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in text)
