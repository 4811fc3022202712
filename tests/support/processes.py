"""Processes a test started or kills: is one still there, and a whole node's loss at once."""

from __future__ import annotations

import signal

import psutil


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody has waited for yet)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and everything under it, at once (a node losing power); returns their pids."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in procs]
