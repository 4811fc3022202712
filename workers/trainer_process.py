"""Running the trainer as a child process: progress lines, summary, stderr tail, timeout, stop.

Both streams are read line by line through an `OutputParser` (coordinator/trainer/output.py):
each progress line (a JSON object with `epoch`, or a configured pattern's match, on stdout or
stderr) is handed to `on_progress` and kept in the result's history; a summary line fills the
result's summary. The last STDERR_TAIL_LINES lines of stderr are kept for TRAINING_FAILED.
Exit status 0 without a model file where the command said (`model_path`) is `model_missing`.
The child gets its own session (so a stop reaches its whole process group) and is tied to its
parent with PR_SET_PDEATHSIG, so it does not outlive a killed worker. A trainer asked to stop
gets SIGTERM; a well-behaved one saves a checkpoint and exits with STOPPED_EXIT (see
coordinator/trainer/command.py).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from coordinator.trainer.output import OutputParser

STDERR_TAIL_LINES = 40
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class TrainerResult:
    returncode: int
    timed_out: bool
    stderr_tail: str
    stopped: bool = False  # stopped on request (lease lost, cancel) before it ended
    # Exit status 0, but no model file at the `model_path` run_trainer was given.
    model_missing: bool = False
    summary: dict[str, Any] = field(default_factory=dict)  # the summary line's figures
    history: tuple[dict[str, Any], ...] = ()  # every progress line's figures, in order


def run_trainer(
    argv: list[str],
    timeout_s: float,
    kill_grace_s: float,
    on_progress: Callable[[dict[str, Any]], None],
    stop: threading.Event | None = None,
    on_start: Callable[[], None] | None = None,
    parser: OutputParser | None = None,
    model_path: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stop_signal: Callable[[], int] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> TrainerResult:
    """Run the trainer to its end (or past `timeout_s`, or until `stop` is set, then stop it:
    SIGTERM, SIGKILL after `kill_grace_s`); never raises on the trainer's failure. `parser`:
    how to read its lines (default: JSON progress lines only); `model_path`: where a trainer
    that exits 0 must have written its model; `cwd`: the trainer's working directory (default:
    the worker's); `stop_signal`: asked when `stop` is set, the signal that asks the trainer to
    checkpoint and exit (default SIGTERM; preemption's setting); `extra_env`: set in the trainer's
    environment over the worker's (CUDA_VISIBLE_DEVICES: the devices its lease holds)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    parser = parser or OutputParser()
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    history: list[dict[str, Any]] = []
    progress_lock = threading.Lock()

    def read(stream: IO[str], keep: deque[str] | None) -> None:
        for line in stream:
            if keep is not None:
                keep.append(line)
            figures = parser.feed(line)
            if figures is not None:
                with progress_lock:  # one stream at a time: callers need not be thread-safe
                    history.append(figures)
                    on_progress(figures)

    timed_out, stopped = threading.Event(), threading.Event()
    stop = stop or threading.Event()
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
        start_new_session=True, preexec_fn=_die_with_parent, cwd=cwd,
    ) as proc:
        reader = threading.Thread(target=read, args=(proc.stderr, tail), daemon=True)
        reader.start()
        timer = threading.Timer(timeout_s, _stop, args=(proc, kill_grace_s, timed_out))
        timer.daemon = True
        timer.start()
        watcher = threading.Thread(target=_stop_when, args=(stop, proc, kill_grace_s, stopped, stop_signal),
                                   daemon=True)
        watcher.start()
        try:
            if on_start is not None:
                on_start()
            read(proc.stdout, None)
            returncode = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # we are being torn down: do not leave the trainer behind
                _stop(proc, kill_grace_s, None)
            stop.set()  # releases the watcher; `stopped` was only set if it fired while running
            reader.join(timeout=5)
            watcher.join(timeout=5)
    missing = returncode == 0 and model_path is not None and not os.path.isfile(model_path)
    return TrainerResult(returncode, timed_out.is_set(), "".join(tail), stopped.is_set(), missing,
                         dict(parser.summary), tuple(history))


def _stop_when(stop: threading.Event, proc: subprocess.Popen, grace_s: float, flag: threading.Event,
               stop_signal: Callable[[], int] | None) -> None:
    stop.wait()
    if proc.poll() is None:
        _stop(proc, grace_s, flag, stop_signal() if stop_signal else signal.SIGTERM)


def _stop(proc: subprocess.Popen, grace_s: float, flag: threading.Event | None,
          first: int = signal.SIGTERM) -> None:
    """Signal the trainer's process group (`first`, SIGTERM by default), then SIGKILL it after `grace_s`."""
    if flag is not None:
        flag.set()
    for sig, wait_s in ((first, grace_s), (signal.SIGKILL, 10.0)):
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
