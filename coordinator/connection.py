"""Redis connections from one URL, plain or through Sentinel.

    redis://[user:password@]host:6379/0                      one server (rediss:// for TLS)
    redis+sentinel://[user:password@]h1:26379,h2:26379/mymaster/0   the primary Sentinel names

With Sentinel the client asks the sentinels for the current primary and asks again after a
connection error, so a process keeps working across a failover once its retry loop reconnects.
`rq worker` takes the same URL through `rq worker training -c workers.rq_settings` (RQ reads
Sentinel settings from a module, not from --url).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from coordinator.errors import CoordinatorError

SENTINEL_SCHEME = "redis+sentinel"
SOCKET_TIMEOUT_S = 5.0


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


def connect(url: str) -> redis.Redis:
    """A client for `url`; for Sentinel, one that follows the primary."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return redis.Redis.from_url(url)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(target.instances, socket_timeout=SOCKET_TIMEOUT_S)
    return sentinel.master_for(target.master_name, db=target.db, username=target.username,
                               password=target.password, socket_timeout=SOCKET_TIMEOUT_S)
