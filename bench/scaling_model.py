"""The scaling model in docs/benchmarks.md: the figures `bench/run_all` measured, multiplied out to
1,000 GPU nodes. Every input is either measured in the same run (named after its benchmark) or an
assumption stated in the table."""

from __future__ import annotations

from coordinator.core.settings import Settings, TrainingSettings

NODES, GPUS_PER_NODE = 1_000, 8
CONFIGS_TODAY = 12
TRAINING_HOURS = 3.0  # the seed's typical run
EVENTS_PER_JOB = 53  # TRAINING_STARTED + ~50 TRAINING_PROGRESS (one per epoch) + the end event
EXPORT_EVERY_S = 300.0  # each config's self-play export, assumed
CONNECTIONS_PER_WORKER = 2  # rq worker main + its pubsub; a work horse adds one while its job runs
REDIS_HEADROOM = 0.5  # plan for half the single-connection pipelined rate
NEEDED = ("per_running", "orchestrator_idle", "per_idle_worker", "worker_rss", "job_bytes", "rq_job_bytes",
          "entry_bytes", "commands_per_job", "cpu_per_job_s", "ingest_12", "ingest_1000", "raw_xadd")


def _load(f: dict[str, float], running: int, workers: int, configs: int,
          training: TrainingSettings) -> dict[str, float]:
    jobs_s = running / (TRAINING_HOURS * 3600)
    events_s = configs / EXPORT_EVERY_S + jobs_s * EVENTS_PER_JOB
    commands_s = (running * f["per_running"] + jobs_s * f["commands_per_job"] + f["orchestrator_idle"]
                  + (workers - running) * f["per_idle_worker"])
    return {"jobs_s": jobs_s, "events_s": events_s, "commands_s": commands_s,
            "connections": workers * CONNECTIONS_PER_WORKER + running + 2,  # + the orchestrator's
            "history_mb": jobs_s * (f["job_bytes"] * training.job_retention_days * 86_400
                                    + f["rq_job_bytes"] * training.rq_result_ttl_s) / 2**20,
            "cpu": jobs_s * f["cpu_per_job_s"]}


def render(f: dict[str, float]) -> str:
    missing = [k for k in NEEDED if k not in f]
    if missing:
        return f"## Scaling model\n\nNot computed: figures missing from this run ({', '.join(missing)}).\n"
    workers = NODES * GPUS_PER_NODE
    training = Settings().training
    today = _load(f, CONFIGS_TODAY, workers, CONFIGS_TODAY, training)
    full = _load(f, workers, workers, workers, training)
    ceiling = (f["raw_xadd"] * REDIS_HEADROOM - f["orchestrator_idle"]) / f["per_running"]
    rows = [
        ("running trainings", f"{CONFIGS_TODAY} (one per config)", f"{workers:,}", "min(GPU slots, configs)"),
        ("jobs/s", f"{today['jobs_s']:.4f}", f"{full['jobs_s']:.2f}", f"running / {TRAINING_HOURS:g} h"),
        ("events/s into the stream", f"{today['events_s']:.2f}", f"{full['events_s']:.1f}",
         f"configs / {EXPORT_EVERY_S:g} s + jobs/s x {EVENTS_PER_JOB}; ingest measured "
         f"{f['ingest_12']:,.0f}/s (12 configs), {f['ingest_1000']:,.0f}/s (1,000)"),
        ("Redis commands/s", f"{today['commands_s']:,.0f}", f"{full['commands_s']:,.0f}",
         f"running x {f['per_running']:.2f} + jobs/s x {f['commands_per_job']:.0f} + orchestrator "
         f"{f['orchestrator_idle']:.0f} + idle workers x {f['per_idle_worker']:.2f}"),
        ("Redis connections", f"{today['connections']:,}", f"{full['connections']:,}",
         f"{CONNECTIONS_PER_WORKER} per worker + 1 per running job: above Redis' default maxclients 10,000"),
        ("job history held", f"{today['history_mb']:,.0f} MB", f"{full['history_mb']:,.0f} MB",
         f"jobs/day x ({f['job_bytes']:,.0f} B record x {training.job_retention_days:g} days "
         "(`training.job_retention_days`) "
         f"+ {f['rq_job_bytes']:,.0f} B RQ hash x {training.rq_result_ttl_days:g} days "
         "(`training.rq_result_ttl_days`))"),
        ("event stream", f"{100_000 * f['entry_bytes'] / 2**20:.0f} MB", f"{100_000 * f['entry_bytes'] / 2**20:.0f} MB",
         f"stream_maxlen 100,000 x {f['entry_bytes']:.0f} B"),
        ("worker memory per node", f"{GPUS_PER_NODE * f['worker_rss'] / 2**20:.0f} MiB",
         f"{GPUS_PER_NODE * f['worker_rss'] / 2**20:.0f} MiB", f"{GPUS_PER_NODE} x rq worker RSS, before the trainer"),
        ("orchestrator CPU", f"{today['cpu'] * 100:.3f}% of a core", f"{full['cpu'] * 100:.2f}% of a core",
         f"jobs/s x {f['cpu_per_job_s'] * 1000:.1f} ms"),
    ]
    table = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
    return f"""## Scaling model: 1,000 GPU nodes x {GPUS_PER_NODE} GPUs

Inputs measured above in this run (bench.redis_load, bench.coordinator_cost, bench.ingest); the
rest are stated assumptions. "Today" is RingRift's 12 configs; "all slots busy" supposes
{workers:,} distinct training targets, which the one-trainer-per-config rule requires before
{workers:,} GPUs can train at once.

| quantity | today: 12 configs | all {workers:,} slots busy | arithmetic |
|---|---|---|---|
{table}

Where one Redis stops: planning for {REDIS_HEADROOM:.0%} of the single-connection pipelined rate
measured here ({f['raw_xadd']:,.0f} commands/s), one Redis carries about {ceiling:,.0f} running
trainings at {f['per_running']:.2f} commands/s each (lease renewal every TTL/3, which also carries
cancel and preemption requests; progress once an epoch; RQ heartbeats; the reaper reads only
expired leases, so it costs a running training nothing).
Before that, the connection count needs `maxclients` (and the file-descriptor limit) raised, and at
full scale the job history wants a shorter `training.job_retention_days` (Redis holds it in RAM).
Events are never the bottleneck: even with
every slot busy the stream carries {full['events_s']:.0f} events/s against an ingest of
{f['ingest_1000']:,.0f}/s. Beyond one Redis: raise `leases.ttl_s` (renewals are the largest
per-job term), then shard configs across coordinators, each with its own Redis or key prefix and
its own `training` queue, or move to Redis Cluster with hash-tagged keys per config.
"""
