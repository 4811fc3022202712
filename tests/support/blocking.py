"""Who dequeues first, decided by the test instead of by chance: which `rq worker` process is blocked
in Redis on its queue (BLMOVE/BLPOP), pausing one (SIGSTOP, its block ended as a timeout with
CLIENT UNBLOCK) and resuming it (SIGCONT, until it blocks again).

Redis hands a pushed element to the client that has been blocked on the list the longest, so two
workers resumed one after the other, each waited for until it blocks, are served in that order:
the first gets a job pushed then, the second one pushed while the first is busy with it.
"""

from __future__ import annotations

import signal
import subprocess
import time

import psutil
import redis

from tests.support.polling import wait_for

BLOCKING_COMMANDS = frozenset({"blmove", "blpop"})  # RQ's dequeue: one queue, several
SETTLE_S = 0.2  # a command a process sent just before it stopped reaches the server well within this


def _ports(pid: int) -> set[int]:
    """The local TCP ports of the process's connections."""
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr}


def blocked_clients(conn: redis.Redis, pid: int) -> list[str]:
    """The Redis client ids of the process's connections blocked in a dequeue now."""
    ports = _ports(pid)
    return [c["id"] for c in conn.client_list()
            if "b" in c["flags"] and c["cmd"] in BLOCKING_COMMANDS and int(c["addr"].rsplit(":", 1)[1]) in ports]


def pause(conn: redis.Redis, proc: subprocess.Popen) -> None:
    """Stop the worker and end its dequeue's block (as a timeout: it reads "no job" once resumed):
    stopped, it takes no job and holds no place in any queue's line."""
    proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED, timeout_s=10)
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < SETTLE_S:
        for client in blocked_clients(conn, proc.pid):
            conn.client_unblock(int(client), error=False)
            quiet_since = time.monotonic()
        time.sleep(0.02)


def resume(conn: redis.Redis, proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Continue a paused worker and wait until it is blocked on its queues again."""
    proc.send_signal(signal.SIGCONT)
    wait_for(lambda: blocked_clients(conn, proc.pid), timeout_s=timeout_s, interval_s=0.01)
