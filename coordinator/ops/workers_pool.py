"""Starting and stopping real `rq worker training` processes (the demo, tests and benchmarks).

On a cluster each GPU node runs `rq worker training --url redis://...` itself; this module
starts exactly that command, so what the demo shows is what a node does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from coordinator.core.errors import CoordinatorError
from coordinator.core.keys import TRAINING_QUEUE

STOP_TIMEOUT_S = 15.0
COLD_AFTER_S = 1.2  # RQ ignores a second SIGTERM within 1 s of the first (a pool's duplicate)
# `rq worker` takes its worker class from this variable too: the node command itself is unchanged.
WORKER_CLASS = "workers.worker.TrainingWorker"


def rq_command() -> list[str]:
    """The `rq` script of this interpreter's environment, else the first on PATH, else the same
    CLI run as `python -m rq.cli` (a virtualenv sharing the system's packages has no script)."""
    sibling = Path(sys.executable).parent / "rq"
    found = str(sibling) if sibling.exists() else shutil.which("rq")
    if found:
        return [found]
    if importlib.util.find_spec("rq") is None:
        raise CoordinatorError("the `rq` command is not installed (pip install rq)")
    return [sys.executable, "-m", "rq.cli"]


def start_worker(
    redis_url: str, name: str, node: str, extra_env: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = (), log_path: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`rq worker training --url URL --name NAME` with RINGRIFT_NODE and RQ_WORKER_CLASS (the
    preloading worker class) set; output to `log_path`.
    A Sentinel URL goes through `-c workers.rq_settings` (RQ takes Sentinel only from settings)."""
    env = {**os.environ, "RQ_WORKER_CLASS": WORKER_CLASS, "RINGRIFT_NODE": node, **(extra_env or {})}
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    if redis_url.startswith("redis+sentinel://"):
        env["REDIS_URL"] = redis_url
        target = ["-c", "workers.rq_settings"]
    else:
        target = ["--url", redis_url]
    argv = [*rq_command(), "worker", TRAINING_QUEUE, *target, "--name", name, *extra_args]
    try:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log_path:
            out.close()


def stop_workers(procs: list[subprocess.Popen[bytes]], cold: bool = False) -> None:
    """Warm shutdown (SIGTERM: RQ starts nothing new and lets a running job finish), then SIGKILL
    what is left after STOP_TIMEOUT_S. `cold`: a second SIGTERM once RQ has taken the first (RQ's
    cold shutdown: it kills a running job's work horse, whose trainer gets its death signal), for
    callers that are done with the jobs (test teardown)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    if cold:
        deadline = time.monotonic() + COLD_AFTER_S  # idle workers are gone by then
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
