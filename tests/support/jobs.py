"""Jobs moved the way a worker moves them (without a trainer), and a poll for "every export trained"."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from coordinator.stores.job_records import Outcome
from coordinator.stores.jobs import JobStore

Job = dict[str, str]


def take_job(orch, job_id: str, config_key: str, node: str = "node-a"):
    """Start a job the way a worker does: leases first (so the reaper sees a live holder), then
    queued -> leased -> running. Returns the lease (its `fence` is the fencing token)."""
    lease = orch.leases.try_acquire(config_key, node, "test-worker", job_id)
    assert orch.jobs.start(job_id, config_key, node, "test-worker", fence=lease.fence) is not None
    orch.jobs.mark_running(job_id, config_key)
    return lease


def end_job(store: JobStore, job_id: str, config_key: str, state: str = "complete", fence: int | None = None,
            **config_fields: object) -> str:
    """End a running job the way a worker does (no trainer): TRAINING_COMPLETE or TRAINING_FAILED."""
    event = "TRAINING_COMPLETE" if state == "complete" else "TRAINING_FAILED"
    outcome = Outcome(event, {"node": "n"}, job_fields={"final_loss": 1.0}, node="n", attempt=1, fence=fence,
                      config_fields=config_fields)
    return store.finish(job_id, config_key, state, outcome)


def newest_per_config(jobs: Iterable[Job]) -> dict[str, Job]:
    """Each config's most recently created job."""
    return {job["config_key"]: job for job in sorted(jobs, key=lambda j: float(j["created_at"]))}


def trained(store: JobStore, configs: Iterable[str], newest_is: Callable[[Job], bool],
            count: int = 200) -> list[Job] | bool:
    """A poll for wait_for: every job (the newest `count`) is complete, each of `configs` has one and
    nothing else has, and each config's newest job passes `newest_is` (it trained the last export).
    Returns the jobs then, else False."""
    jobs = store.list(count)
    newest = newest_per_config(jobs)
    done = set(newest) == set(configs) and all(job["state"] == "complete" for job in jobs)
    return done and all(newest_is(job) for job in newest.values()) and jobs
