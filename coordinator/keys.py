"""Every Redis key this system writes, built in one place.

Key layout (prefix `ringrift` by default; `redis-cli` recipes in the README):

| key                                  | type   | what it holds                                            |
|--------------------------------------|--------|----------------------------------------------------------|
| `<prefix>:events`                    | stream | the pipeline event bus (exports, training lifecycle)     |
| `<prefix>:events:dead`               | stream | events that could not be handled, with `dead_reason`     |
| `<prefix>:training:priority`         | zset   | config key -> priority score (highest trains first)      |
| `<prefix>:training:active`           | hash   | config key -> id of its one queued-or-running job        |
| `<prefix>:jobs`                      | zset   | job id -> creation time (unix seconds), for listing      |
| `<prefix>:job:<job_id>`              | hash   | one job's record: state, config, data, node, result      |
| `<prefix>:config:<config_key>`       | hash   | a config's data, training, model, score and its factors  |
| `<prefix>:elo:<config_key>`          | list   | recent evaluations, "unix_time elo", oldest first        |
| `<prefix>:cluster:health`            | hash   | the last CLUSTER_HEALTH_CHANGED fields, as recorded      |

RQ keeps its own keys (`rq:queue:training`, `rq:job:<job_id>`, ...); an RQ job's id is our job id.
"""

from __future__ import annotations

from dataclasses import dataclass

TRAINING_QUEUE = "training"


@dataclass(frozen=True)
class Keys:
    prefix: str = "ringrift"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:events:dead"

    @property
    def priority(self) -> str:
        return f"{self.prefix}:training:priority"

    @property
    def active(self) -> str:
        return f"{self.prefix}:training:active"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def cluster_health(self) -> str:
        return f"{self.prefix}:cluster:health"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def config(self, config_key: str) -> str:
        return f"{self.prefix}:config:{config_key}"

    def elo(self, config_key: str) -> str:
        return f"{self.prefix}:elo:{config_key}"
