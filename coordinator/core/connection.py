"""Redis connections from one URL, plain or through Sentinel.

    redis://[user:password@]host:6379/0                      one server (rediss:// for TLS)
    redis+sentinel://[user:password@]h1:26379,h2:26379/mymaster/0   the primary Sentinel names

With Sentinel the client asks the sentinels for the current primary and asks again after a
connection error, retrying each command for up to about FAILOVER_RETRY_S: a failover (a few
seconds) is a pause, not an error. That matters most for `rq worker`, whose main loop quits on a
Redis error while a job runs.
`rq worker` takes the same URL through `rq worker training -c workers.rq_settings` (RQ reads
Sentinel settings from a module, not from --url).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from coordinator.core.errors import CoordinatorError

SENTINEL_SCHEME = "redis+sentinel"
SOCKET_TIMEOUT_S = 5.0
FAILOVER_RETRY_S = 30.0
_RETRY_STEP_CAP_S = 1.0


@dataclass(frozen=True)
class SentinelTarget:
    instances: list[tuple[str, int]]
    master_name: str
    db: int
    username: str | None
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget:
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise CoordinatorError(f"not a {SENTINEL_SCHEME}:// URL")
    hosts = parts.netloc.rsplit("@", 1)[-1]
    instances = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        instances.append((host or item, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise CoordinatorError(f"{SENTINEL_SCHEME} URL needs the master name: .../<master>/<db>")
    return SentinelTarget(instances, path[0], int(path[1]) if len(path) > 1 else 0,
                          unquote(parts.username) if parts.username else None,
                          unquote(parts.password) if parts.password else None)


class PrimaryFollowingConnection(SentinelManagedConnection):
    """Asks the sentinels for the primary on every reconnect. redis-py 8 reconnects a dropped
    connection through `connect_check_health`, which reuses the old address: every retry of a
    command in flight when the primary died went to the dead host (redis/redis-py#3874)."""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if not self._sock and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)


def failover_retry() -> dict[str, object]:
    """Connection kwargs for a Sentinel-managed primary: retry a command on connection errors and
    timeouts for about FAILOVER_RETRY_S, each reconnect asking the sentinels for the primary."""
    retries = int(FAILOVER_RETRY_S / _RETRY_STEP_CAP_S) + 4  # the first steps are shorter than the cap
    return {"retry": Retry(ExponentialBackoff(cap=_RETRY_STEP_CAP_S, base=0.1), retries),
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
            "connection_class": PrimaryFollowingConnection}


def connect(url: str) -> redis.Redis:
    """A client for `url`; for Sentinel, one that follows the primary."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return redis.Redis.from_url(url)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(target.instances, socket_timeout=SOCKET_TIMEOUT_S)
    return sentinel.master_for(target.master_name, db=target.db, username=target.username,
                               password=target.password, socket_timeout=SOCKET_TIMEOUT_S, **failover_retry())
