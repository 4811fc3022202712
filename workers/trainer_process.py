"""Running the trainer as a child process: argument list, progress lines, stderr tail, timeout.

The trainer prints one JSON object per epoch on stdout; every such line is handed to
`on_progress`. The child gets its own session (so a stop reaches its whole process group) and
is tied to its parent with PR_SET_PDEATHSIG, so it does not outlive a killed worker.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

STDERR_TAIL_LINES = 40
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class TrainerResult:
    returncode: int
    timed_out: bool
    stderr_tail: str
    stopped: bool = False  # stopped on request (lease lost, cancel) before it ended


def build_argv(record: Mapping[str, str], output_dir: str, resume: str | None = None) -> list[str]:
    """The trainer's argument list from a job record; nothing passes through a shell."""
    command = [sys.executable if part == "{python}" else part for part in json.loads(record["command"])]
    return command + [
        "--board-type", record["board_type"],
        "--num-players", record["num_players"],
        "--data", record["npz_path"],
        "--epochs", record["epochs"],
        "--batch-size", record["batch_size"],
        "--learning-rate", record["learning_rate"],
        "--patience", record["early_stopping_patience"],
        "--output-dir", output_dir,
    ] + (["--resume", resume] if resume else [])


def run_trainer(
    argv: list[str],
    timeout_s: float,
    kill_grace_s: float,
    on_progress: Callable[[dict[str, Any]], None],
    stop: threading.Event | None = None,
    on_start: Callable[[], None] | None = None,
) -> TrainerResult:
    """Run the trainer to its end (or past `timeout_s`, or until `stop` is set, then stop it:
    SIGTERM, SIGKILL after `kill_grace_s`); never raises on the trainer's failure."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    timed_out, stopped = threading.Event(), threading.Event()
    stop = stop or threading.Event()
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
        start_new_session=True, preexec_fn=_die_with_parent,
    ) as proc:
        reader = threading.Thread(target=lambda: tail.extend(proc.stderr), daemon=True)
        reader.start()
        timer = threading.Timer(timeout_s, _stop, args=(proc, kill_grace_s, timed_out))
        timer.daemon = True
        timer.start()
        watcher = threading.Thread(target=_stop_when, args=(stop, proc, kill_grace_s, stopped), daemon=True)
        watcher.start()
        try:
            if on_start is not None:
                on_start()
            for line in proc.stdout:
                figures = _parse_progress(line)
                if figures is not None:
                    on_progress(figures)
            returncode = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # we are being torn down: do not leave the trainer behind
                _stop(proc, kill_grace_s, None)
            stop.set()  # releases the watcher; `stopped` was only set if it fired while running
            reader.join(timeout=5)
            watcher.join(timeout=5)
    return TrainerResult(returncode, timed_out.is_set(), "".join(tail)[-4000:], stopped.is_set())


def _stop_when(stop: threading.Event, proc: subprocess.Popen, grace_s: float, flag: threading.Event) -> None:
    stop.wait()
    if proc.poll() is None:
        _stop(proc, grace_s, flag)


def _parse_progress(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        figures = json.loads(line)
    except ValueError:
        return None
    return figures if isinstance(figures, dict) and "epoch" in figures else None


def _stop(proc: subprocess.Popen, grace_s: float, flag: threading.Event | None) -> None:
    """SIGTERM the trainer's process group, then SIGKILL it after `grace_s`."""
    if flag is not None:
        flag.set()
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent (the RQ work horse) dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the worker's own cleanup still applies
        pass
