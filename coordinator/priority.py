"""The priority sorted set `<prefix>:training:priority`: config key -> score, highest first.

For now the score is simply the size of the config's newest export in thousands of samples,
so `redis-cli ZREVRANGE ringrift:training:priority 0 -1 WITHSCORES` ranks the configs by how
much data they have waiting. The four-factor TrainingScheduler replaces `export_score`.
"""

from __future__ import annotations

import redis

from coordinator.keys import Keys


def export_score(samples: int) -> float:
    return round(samples / 1000.0, 3)


def set_score(conn: redis.Redis | redis.client.Pipeline, keys: Keys, config_key: str, score: float) -> None:
    """ZADD the config's score; on a pipeline it is only queued (the caller executes)."""
    conn.zadd(keys.priority, {config_key: score})


def ranked(conn: redis.Redis, keys: Keys) -> list[tuple[str, float]]:
    """All configs, highest score first."""
    return [(member.decode(), score) for member, score in conn.zrevrange(keys.priority, 0, -1, withscores=True)]
