"""Every Redis key this system writes, built in one place.

Key layout (prefix `ringrift` by default; `redis-cli` recipes in the README):

| key                                  | type   | what it holds                                            |
|--------------------------------------|--------|----------------------------------------------------------|
| `<prefix>:events`                    | stream | the pipeline event bus (exports, training lifecycle)     |
| `<prefix>:events:dead`               | stream | events that could not be handled, with `dead_reason`     |
| `<prefix>:intake`                    | list   | exporters' JSON submissions (RPUSH only), moved onto events |
| `<prefix>:training:priority`         | zset   | config key -> priority score (highest trains first)      |
| `<prefix>:training:active`           | hash   | config key -> id of its one queued-or-running job        |
| `<prefix>:jobs`                      | zset   | job id -> creation time (unix seconds), for listing      |
| `<prefix>:job:<job_id>`              | hash   | one job's record: state, config, data, node, result      |
|                                      |        | (an ended job's is deleted after job_retention_days)     |
| `<prefix>:config:<config_key>`       | hash   | a config's data, training, model, score and its factors  |
| `<prefix>:elo:<config_key>`          | list   | recent evaluations, "unix_time elo", oldest first        |
| `<prefix>:config:<key>:gpu_hours`    | list   | GPU-hours of its recent trainings (cost factor), oldest first |
| `<prefix>:config:<key>:elo_gains`    | list   | Elo its recent trainings gained over their parents       |
| `<prefix>:config:<key>:models`       | list   | its published model paths, newest first (warm start), capped |
| `<prefix>:cluster:health`            | hash   | the last CLUSTER_HEALTH_CHANGED fields, as recorded      |
| `<prefix>:breaker:<kind>:<name>`     | hash   | a circuit breaker (kind config or node): state, failures |
| `<prefix>:stats`                     | hash   | counters shared by all processes (e.g. lease_busy)       |
| `<prefix>:speeds`                    | hash   | "<workload>|<GPU class>" -> learned s/epoch/sample (JSON) |

Leases share the hash tag `{lease}`, so the scripts that take a config lease and a node slot
together (and touch only the keys passed in) also run on Redis Cluster:

| `<prefix>:{lease}:train:<config_key>` | string | a config's lease: "token|fence|node|worker|job"; TTL |
| `<prefix>:{lease}:fence:<config_key>` | string | the config's fencing counter, one per acquisition |
| `<prefix>:{lease}:slots:<node>`      | zset   | a node's GPU slots in use: owner token (`token+2`.. for a       |
|                                      |        | multi-GPU lease's other GPUs) -> expiry (ms)                    |
| `<prefix>:{lease}:devices:<node>`    | hash   | device index -> owner token of the lease that took it (held     |
|                                      |        | while that token's slot is unexpired)                           |
| `<prefix>:{lease}:node:<node>`       | hash   | a node's `gpus` and health `status` (healthy, degraded, down)   |
| `<prefix>:{lease}:nodes`             | set    | every node name known                                           |
| `<prefix>:{lease}:expiry`            | zset   | job id -> lease expiry (ms): the reaper reads the expired |
| `<prefix>:{lease}:notice:<worker>`   | string | a termination notice an ephemeral worker got (SIGTERM): its source |
|                                      |        | and time; the lease renewal tells the training (TTL 1 h)        |
| `<prefix>:jobs:delayed`              | zset   | job id -> unix time it goes back to RQ (leases were busy)       |
| `<prefix>:{lease}:gpus:<node>`       | hash   | a node's GPUs: source (nvml, env, hosts), gpus, model, devices |
| `<prefix>:{lease}:gpu:<node>:<slot>` | hash   | a worker's slot ("0", "0,1"): model, memory_gb, worker |
| `<prefix>:{lease}:gpu_slots:<node>`  | set    | a node's slot names                                             |
| `<prefix>:{lease}:gpu_nodes`         | set    | every node with a GPU inventory                                 |
| `<prefix>:{lease}:gpu_idle`          | zset   | JSON of an idle worker's GPU -> when it last said so (placement) |
| `<prefix>:placement:queues`          | hash   | RQ queue name -> JSON of the GPU requirement its jobs have      |
|                                      |        | (`training-ge40gb`...): what a worker whose GPU meets it listens to |

RQ keeps its own keys (`rq:queue:training`, `rq:job:<rq_job_id>`, `rq:worker:<name>`, ...), named by
RQ itself (`rq_queue_key`, `rq_worker_key` here are RQ's own rules, so the code never spells
them). An RQ job's id is our job id, with a suffix for each later attempt (`<job_id>-a2`: a
retry; `-d1`: a deferral; `-p1`: a resume after a preemption; `-p0n1`: after a node's termination
notice), so RQ's record of an earlier attempt is never overwritten; the job record's `rq_job_id`
names the current one.
"""

from __future__ import annotations

from dataclasses import dataclass

from rq import Queue, Worker

from coordinator.core.settings import RedisSettings

TRAINING_QUEUE = "training"


def rq_queue_key(name: str = TRAINING_QUEUE) -> str:
    """RQ's list of a queue's waiting job ids (rq.Queue(name).key)."""
    return Queue.redis_queue_namespace_prefix + name


def rq_worker_key(name: str) -> str:
    """RQ's hash of a worker (heartbeat, state, death)."""
    return Worker.redis_worker_namespace_prefix + name
# Counter fields of `<prefix>:stats` that workers add to when a lease release or a move to running
# finds the lease or the job already taken from them (logged too).
STAT_RELEASE_LOST = "lease_release_lost"
STAT_MARK_RUNNING_LOST = "mark_running_lost"


@dataclass(frozen=True)
class Keys:
    prefix: str = RedisSettings.prefix  # `redis.prefix`, whose default the settings own

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:events:dead"

    @property
    def intake(self) -> str:
        return f"{self.prefix}:intake"

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

    def gpu_hours(self, config_key: str) -> str:
        """GPU-hours of the config's recent trainings (the cost factor's durations)."""
        return f"{self.prefix}:config:{config_key}:gpu_hours"

    def elo_gains(self, config_key: str) -> str:
        """Elo its recent trainings gained over their parent models (the cost factor's returns)."""
        return f"{self.prefix}:config:{config_key}:elo_gains"

    def models(self, config_key: str) -> str:
        """The config's published models, newest first, capped (warm start: the newest that exists)."""
        return f"{self.prefix}:config:{config_key}:models"

    @property
    def speeds(self) -> str:
        """Learned training speeds: "<workload>|<class>" -> JSON (coordinator/stores/speeds.py)."""
        return f"{self.prefix}:speeds"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    def breaker(self, kind: str, name: str) -> str:
        return f"{self.prefix}:breaker:{kind}:{name}"

    @property
    def delayed_jobs(self) -> str:
        return f"{self.prefix}:jobs:delayed"

    # -- leases: one hash tag for all, so a script may take a config lease and a node slot at once --
    def lease(self, config_key: str) -> str:
        return f"{self.prefix}:{{lease}}:train:{config_key}"

    def fence(self, config_key: str) -> str:
        return f"{self.prefix}:{{lease}}:fence:{config_key}"

    def node_slots(self, node: str) -> str:
        return f"{self.prefix}:{{lease}}:slots:{node}"

    def node_devices(self, node: str) -> str:
        """Device index -> the owner token of the lease holding it (`lease_acquire.lua`)."""
        return f"{self.prefix}:{{lease}}:devices:{node}"

    def node(self, node: str) -> str:
        return f"{self.prefix}:{{lease}}:node:{node}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:{{lease}}:nodes"

    @property
    def reservations(self) -> str:
        """Node -> JSON of the waiting multi-GPU job its GPUs are reserved for (the preempter writes
        them each tick; `coordinator/stores/reservations.py`)."""
        return f"{self.prefix}:{{lease}}:reservations"

    def worker_notice(self, worker: str) -> str:
        """An ephemeral worker's termination notice (`workers/node_notice.py`): read by its lease renewal."""
        return f"{self.prefix}:{{lease}}:notice:{worker}"

    @property
    def lease_expiry(self) -> str:
        """Job id -> its config lease's expiry (ms, Redis time): set by acquire and renew, removed by
        release; the reaper reads only the entries past their time."""
        return f"{self.prefix}:{{lease}}:expiry"

    # -- GPU inventory (coordinator/stores/gpus.py): beside the slots, under the same hash tag --
    def gpu_node(self, node: str) -> str:
        return f"{self.prefix}:{{lease}}:gpus:{node}"

    def gpu_slot(self, node: str, slot: str) -> str:
        return f"{self.prefix}:{{lease}}:gpu:{node}:{slot}"

    def gpu_slots(self, node: str) -> str:
        return f"{self.prefix}:{{lease}}:gpu_slots:{node}"

    @property
    def gpu_nodes(self) -> str:
        return f"{self.prefix}:{{lease}}:gpu_nodes"

    @property
    def ephemeral_lifetime(self) -> str:
        """Observed lifetimes of ephemeral hosts: mean_h (exponential mean), count, last_h."""
        return f"{self.prefix}:{{lease}}:ephemeral_lifetime"

    @property
    def gpu_idle(self) -> str:
        """Idle workers' GPUs (JSON member: node, slot, model, memory_gb, cost_per_hour, worker) ->
        unix time each last said it was idle (coordinator/stores/gpus.py)."""
        return f"{self.prefix}:{{lease}}:gpu_idle"

    @property
    def placement_queues(self) -> str:
        """RQ queue name -> the GPU requirement (JSON, `gpu_requirements.requirement_spec`) of the
        jobs on it: written with each enqueue, read by every worker before it dequeues."""
        return f"{self.prefix}:placement:queues"

    @property
    def lease_pattern(self) -> str:
        return f"{self.prefix}:{{lease}}:train:*"
