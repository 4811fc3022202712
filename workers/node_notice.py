"""Termination notices on ephemeral hosts (spot / vast.ai / RunPod): how a worker learns its host is
going away, and how that reaches the training it runs.

A host is ephemeral when its `hosts` entry says `ephemeral: true` or its worker has
RINGRIFT_EPHEMERAL=1 (`workers/gpu_inventory.py`). There, two things are a notice:

- The worker (`rq worker`, the main process) gets SIGTERM. RQ still does its warm shutdown (no new
  job; the running one may end); `workers/worker.py` also writes `Keys.worker_notice(<worker>)`
  (`write_notice`, from a thread: never Redis inside the signal handler). The work horse's next
  lease renewal reads it (`lease_renew.lua`: stop reason `node_notice`, within TTL/3).
- The provider's notice, polled by the work horse every `nodes.notice_poll_s` while it trains
  (`Watcher`): `nodes.notice_file` exists, or `nodes.notice_url` answers 200 with a body other than
  empty / false / 0. The horse stops its training at once and sends its worker SIGTERM (the same
  warm shutdown: the worker takes nothing more on a host about to vanish).

Either way the trainer gets `preemption.signal` (it checkpoints and exits), the attempt ends as a
preemption of kind `node_notice` (`JobStore.preempted`: counted in `notice_yields`, not in the
preemption cap's `preemptions`; the config's fence advances), its lease is given back and the job
is queued again at once, to resume from that checkpoint on another worker. Elsewhere SIGTERM is
only RQ's warm shutdown; a host that vanishes without notice is found by its leases expiring.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from coordinator.core.keys import Keys
from coordinator.core.settings import NodeSettings

log = logging.getLogger(__name__)
NOTICE_TTL_S = 3600  # a notice key outlives any grace period; a restarted worker clears its own
URL_TIMEOUT_S = 2.0
NOT_A_NOTICE = ("", "false", "0", "no", "none")
_worker_pid: int | None = None  # the TrainingWorker's pid, in it and in its forked work horses


def remember_worker(pid: int) -> None:
    """Called by the worker class in its main process: the pid its work horses may signal."""
    global _worker_pid
    _worker_pid = pid


def write_notice(conn: redis.Redis, keys: Keys, worker: str, source: str, now: float | None = None) -> None:
    """Record that `worker`'s host announced its termination (`source`: sigterm, file, url)."""
    conn.set(keys.worker_notice(worker), f"{source}|{time.time() if now is None else now:.3f}", ex=NOTICE_TTL_S)


def clear_notice(conn: redis.Redis, keys: Keys, worker: str) -> None:
    """A worker starting under this name has no notice (an older one of the same name may have had)."""
    conn.delete(keys.worker_notice(worker))


def provider_notice(nodes: NodeSettings, opener: Callable[..., object] = urllib.request.urlopen) -> str | None:
    """The provider's notice, if it has given one: "file <path>" or "url <url>"; None otherwise (an
    unreachable URL is no notice)."""
    if nodes.notice_file and os.path.exists(nodes.notice_file):
        return f"file {nodes.notice_file}"
    if nodes.notice_url:
        try:
            with opener(nodes.notice_url, timeout=min(URL_TIMEOUT_S, nodes.notice_poll_s)) as reply:
                body = reply.read(4096).decode("utf-8", "replace").strip().lower()
                if reply.status == 200 and body not in NOT_A_NOTICE:
                    return f"url {nodes.notice_url}"
        except urllib.error.HTTPError as exc:  # 404 until a notice is given (AWS' spot/instance-action)
            exc.close()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.debug("notice URL %s: %s", nodes.notice_url, exc)
    return None


def signal_worker() -> bool:
    """From a work horse: send its worker SIGTERM (the notice's warm shutdown). Only a horse forked by
    the worker class does (a SimpleWorker's job runs in the worker itself: nothing is sent)."""
    pid = _worker_pid
    if pid is None or os.getpid() == pid or os.getppid() != pid:
        return False
    os.kill(pid, signal.SIGTERM)
    return True


class Watcher:
    """Polls `provider_notice` every `nodes.notice_poll_s` in a thread; on the first notice calls
    `on_notice(source)` once and stops."""

    def __init__(self, nodes: NodeSettings, on_notice: Callable[[str], None]) -> None:
        self.nodes = nodes
        self.on_notice = on_notice
        self.found: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-notice", daemon=True)

    def _run(self) -> None:
        while True:
            found = provider_notice(self.nodes)
            if found:
                self.found = found
                log.warning("termination notice (%s): the training checkpoints and moves elsewhere", found)
                self.on_notice(found)
                return
            if self._stop.wait(self.nodes.notice_poll_s):
                return

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=URL_TIMEOUT_S + 1)


@contextmanager
def watching(nodes: NodeSettings | None, on_notice: Callable[[str], None]) -> Iterator[Watcher | None]:
    """A `Watcher` while the block runs, where a provider notice is configured (`nodes` None: the host
    is not ephemeral, nothing is polled)."""
    if nodes is None or not (nodes.notice_file or nodes.notice_url):
        yield None
        return
    with Watcher(nodes, on_notice) as watcher:
        yield watcher
