"""State machine, retry policy, circuit breakers, reaper and deferrals on fakeredis."""

from __future__ import annotations

import random
import time
from dataclasses import replace

from coordinator import TrainingOrchestrator
from coordinator.core.job_states import FINAL_STATES, TRANSITIONS, allowed_from
from coordinator.core.retry import decide
from coordinator.core.settings import BreakerSettings, RetrySettings
from coordinator.stores.breakers import CLOSED, HALF_OPEN, OPEN, CircuitBreakers
from tests.support.jobs import end_job, take_job


def test_the_state_table():
    assert FINAL_STATES == {"complete", "failed", "cancelled", "stale"}
    assert allowed_from("queued") == {"retrying", "preempted"}  # a preempted job resumes from the queue
    assert allowed_from("leased") == {"queued"}
    assert all(moves for state, moves in TRANSITIONS.items() if state not in FINAL_STATES)


def test_retry_policy_by_failure_class():
    s = RetrySettings(infrastructure=2, trainer=1, backoff_base_s=10, backoff_max_s=25)
    rng = random.Random(0)
    first, second, third = (decide("worker_lost", n, s, rng) for n in range(3))
    assert (first.will_retry, second.will_retry, third.will_retry) == (True, True, False)
    assert 5 <= first.delay_s < 15 and 10 <= second.delay_s < 30  # base x 2^(n-1), jittered, capped
    assert decide("trainer_error", 0, s).will_retry and not decide("trainer_error", 1, s).will_retry
    poison = decide("bad_input", 0, s)
    assert (poison.failure_class, poison.will_retry) == ("poison", False)


def test_breaker_opens_half_opens_and_closes(fake_conn, keys):
    now = [1000.0]
    breakers = CircuitBreakers(fake_conn, keys, BreakerSettings(failures=3, window_s=60, cooldown_s=100),
                               stream_maxlen=0, clock=lambda: now[0])
    assert breakers.record("config", "hex8_2p", False) == CLOSED
    assert breakers.record("config", "hex8_2p", False) == CLOSED
    assert breakers.record("config", "hex8_2p", False) == OPEN
    assert not breakers.allows("config", "hex8_2p")
    now[0] += 100
    assert breakers.state("config", "hex8_2p") == HALF_OPEN and breakers.allows("config", "hex8_2p")
    assert breakers.record("config", "hex8_2p", False) == OPEN  # the trial failed: another cooldown
    assert breakers.state("config", "hex8_2p") == OPEN
    now[0] += 100
    assert breakers.record("config", "hex8_2p", True) == CLOSED
    types = [f[b"type"] for _, f in fake_conn.xrange(keys.events)]
    assert types == [b"CIRCUIT_OPENED", b"CIRCUIT_CLOSED"]


def test_failures_outside_the_window_do_not_add_up(fake_conn, keys):
    now = [0.0]
    breakers = CircuitBreakers(fake_conn, keys, BreakerSettings(failures=2, window_s=60), stream_maxlen=0,
                               clock=lambda: now[0])
    breakers.record("node", "gpu-1", False)
    now[0] += 120
    assert breakers.record("node", "gpu-1", False) == CLOSED


def expire_lease(conn, keys, config_key: str, job_id: str) -> None:
    """What a lease not renewed past its TTL leaves: no lease, its expiry entry in the past."""
    conn.delete(keys.lease(config_key))
    conn.zadd(keys.lease_expiry, {job_id: 0})


def test_reaper_retries_an_attempt_whose_lease_is_gone(orch, fake_conn, keys):
    job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    lease = take_job(orch, job_id, "hex8_2p")
    assert orch.recovery.reap() == []  # its holder renews: alive
    expire_lease(fake_conn, keys, "hex8_2p", job_id)
    assert orch.recovery.reap() == [job_id]
    assert fake_conn.zscore(keys.lease_expiry, job_id) is None  # handled: the entry is gone
    failed = [f for _, f in fake_conn.xrange(keys.events) if f[b"type"] == b"TRAINING_FAILED"][-1]
    assert (failed[b"reason"], failed[b"board_type"], failed[b"num_players"]) == (b"worker_lost", b"hex8", b"2")
    record = orch.jobs.get(job_id)
    assert (record["state"], record["reason"], record["failures_infrastructure"]) == ("retrying", "worker_lost", "1")
    assert orch.recovery.requeue_due() == [job_id]
    assert orch.jobs.get(job_id)["state"] == "queued" and orch.jobs.get(job_id)["rq_job_id"] == f"{job_id}-a2"
    assert lease.fence == 1


def test_a_reaper_tick_reads_only_the_expired_leases(orch, fake_conn, keys, monkeypatch):
    """Running trainings whose leases are renewed cost a tick one command in all (ZRANGEBYSCORE; the
    clock read Redis' TIME at its first use), however many run; only an expired entry's job is read."""
    jobs = [orch.submit_training_sync("hex8", players, "/d/x.npz", samples=10) for players in (2, 3, 4)]
    for job_id, players in zip(jobs, (2, 3, 4)):
        take_job(orch, job_id, f"hex8_{players}p", node=f"node-{players}")
    assert orch.recovery.reap() == []  # the first tick checks every active job
    real, sent = fake_conn.execute_command, []
    monkeypatch.setattr(fake_conn, "execute_command", lambda *a, **o: sent.append(a[0]) or real(*a, **o))
    assert orch.recovery.reap() == []
    assert sent == ["ZRANGEBYSCORE"]
    monkeypatch.setattr(fake_conn, "execute_command", real)
    expire_lease(fake_conn, keys, "hex8_3p", jobs[1])
    assert orch.recovery.reap() == [jobs[1]]
    assert orch.jobs.get(jobs[0])["state"] == "running" and orch.jobs.get(jobs[2])["state"] == "running"


def test_looking_for_lost_jobs_reads_no_running_job(orch, fake_conn, monkeypatch):
    """requeue_lost (every 5 s) skips jobs whose lease is live: two commands however many run."""
    jobs = [orch.submit_training_sync("hex8", players, "/d/x.npz", samples=10) for players in (2, 3)]
    for job_id, players in zip(jobs, (2, 3)):
        take_job(orch, job_id, f"hex8_{players}p", node=f"node-{players}")
    real, sent = fake_conn.execute_command, []
    monkeypatch.setattr(fake_conn, "execute_command", lambda *a, **o: sent.append(a[0]) or real(*a, **o))
    assert orch.recovery.requeue_lost() == []
    assert sent == ["HGETALL", "ZRANGEBYSCORE"]


def test_the_reaper_forgets_ended_jobs_and_keeps_a_new_attempts_entry(orch, fake_conn, keys):
    done = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    lease = take_job(orch, done, "hex8_2p")
    end_job(orch.jobs, done, "hex8_2p", fence=lease.fence)
    fake_conn.zadd(keys.lease_expiry, {done: 0})  # ended, its lease expired before the release
    assert orch.recovery.reap() == [] and fake_conn.zscore(keys.lease_expiry, done) is None
    # An entry renewed between the reaper's read and its clean-up stays (the script compares times).
    fake_conn.zadd(keys.lease_expiry, {"renewed-meanwhile": 2**50})
    orch.recovery._forget_expired(keys=[keys.lease_expiry], args=["renewed-meanwhile"])
    assert fake_conn.zscore(keys.lease_expiry, "renewed-meanwhile") == 2**50


def test_the_first_tick_checks_every_active_job_even_without_an_entry(make_settings, fake_conn, keys):
    """A running job the expiry zset does not know (a record older than it) is still reaped."""
    from coordinator import TrainingOrchestrator

    first = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="a")
    job_id = first.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    take_job(first, job_id, "hex8_2p")
    fake_conn.delete(keys.lease("hex8_2p"), keys.lease_expiry)
    restarted = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="b")
    assert restarted.recovery.reap() == [job_id]


def test_cancel_a_queued_job_frees_its_config(orch, fake_conn, keys):
    job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    assert orch.jobs.cancel(job_id) == "cancelled"
    assert orch.jobs.get(job_id)["state"] == "cancelled" and orch.jobs.active_job("hex8_2p") is None
    assert orch.jobs.cancel(job_id) == "ended"
    assert not orch.jobs.transition(job_id, "hex8_2p", "queued")  # cancelled is final


def test_cancel_a_running_job_asks_its_worker(orch):
    job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    take_job(orch, job_id, "hex8_2p")
    assert orch.jobs.cancel(job_id) == "requested"
    assert orch.jobs.get(job_id)["cancel_requested"] == "1"


def test_cancel_is_one_step_a_crash_after_the_first_write_splits_nothing(orch, fake_conn, keys, monkeypatch):
    """Redis goes away right after cancel's first write: the config must not be left waiting for a
    newer export (cancelled_at) while its job is still queued, with RQ's copy still to run."""
    import pytest
    import redis

    job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    fake_conn.xadd(keys.events, {"type": "FILLER"})
    real = fake_conn.execute_command
    wrote = []

    def crash_after_first_write(*args, **options):
        if wrote:
            raise redis.ConnectionError("the process died here")
        reply = real(*args, **options)
        if str(args[0]).upper() in ("HSET", "EVALSHA", "EVAL", "XADD", "LREM", "HDEL", "ZREM"):
            wrote.append(args[0])
        return reply

    monkeypatch.setattr(fake_conn, "execute_command", crash_after_first_write)
    try:
        orch.jobs.cancel(job_id)
    except redis.ConnectionError:
        pass
    monkeypatch.setattr(fake_conn, "execute_command", real)
    cancelled_at = fake_conn.hget(keys.config("hex8_2p"), "cancelled_at")
    state = orch.jobs.get(job_id)["state"]
    assert (state, cancelled_at is not None) in (("queued", False), ("cancelled", True)), (state, cancelled_at)
    if state == "cancelled":  # all of it: the config freed, RQ's copy gone, the event published
        assert orch.jobs.active_job("hex8_2p") is None and job_id.encode() not in fake_conn.lrange(
            "rq:queue:training", 0, -1)
        assert fake_conn.xrange(keys.events)[-1][1][b"type"] == b"TRAINING_CANCELLED"
    with pytest.raises(Exception, match="no such job"):
        orch.jobs.cancel("hex8_2p-nope")


def test_quality_block_until_and_a_new_export_lifts_it(orch, fake_conn, keys):
    fake_conn.xadd(keys.events, {"type": "TRAINING_BLOCKED_BY_QUALITY", "config_key": "hex8_2p",
                                 "quality_score": "0.4", "threshold": "0.6", "reason": "low quality",
                                 "until": "4102444800"})
    orch.process_once(block_ms=None)
    cfg = fake_conn.hgetall(keys.config("hex8_2p"))
    assert cfg[b"quality_blocked_until"] == b"4102444800.000" and cfg[b"quality_threshold"] == b"0.6"
    fake_conn.xadd(keys.events, {"type": "NPZ_EXPORT_COMPLETE", "config_key": "hex8_2p", "npz_path": "/x",
                                 "samples": "10"})
    orch.process_once(block_ms=None)
    assert orch.jobs.active_job("hex8_2p") is not None  # the newer export lifted the block


def test_a_job_taken_from_rq_by_a_worker_that_died_is_requeued(orch, fake_conn):
    from datetime import datetime, timedelta, timezone

    from rq.job import Job, JobStatus

    job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    assert orch.recovery.requeue_lost() == []  # queued in RQ: fine
    rq_job = Job.fetch(job_id, connection=fake_conn)
    fake_conn.lrem("rq:queue:training", 0, job_id)  # a worker took it...
    rq_job.set_status(JobStatus.STARTED)
    rq_job.started_at = datetime.now(timezone.utc) - timedelta(seconds=5)
    rq_job.save()
    assert orch.recovery.requeue_lost() == []  # ...a moment ago: it is taking its leases
    rq_job.started_at = datetime.now(timezone.utc) - timedelta(seconds=60)
    rq_job.save()
    assert orch.recovery.requeue_lost() == [job_id]  # ...and died before our record moved on
    assert orch.recovery.requeue_due() == [job_id]
    assert orch.jobs.get(job_id)["rq_job_id"] == f"{job_id}-d1"


def test_periodic_work_is_registered_once_and_run_once(fake_conn, make_settings):
    first = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="a")
    second = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="b")
    assert len(first.periodic.register()) == 6
    assert second.periodic.register() == []  # a restart or a second coordinator adds nothing
    began = time.monotonic()
    ran = first.periodic.run_due() + second.periodic.run_due()
    assert set(ran) == {"prune", "reap", "requeue_due", "requeue_lost", "tick", "trim"}
    # Each once, by one of the two; a task runs a second time only if its interval passed meanwhile
    # (a loaded machine can take over a second for the first round: the 1-s tasks are due again).
    twice = [task for task in set(ran) if ran.count(task) > 1]
    assert all(first.periodic.intervals()[task] <= time.monotonic() - began + 1 for task in twice), twice
    assert all(ran.count(task) <= 2 for task in ran)
    again = first.periodic.run_due() + second.periodic.run_due()
    # Only what was due again: on a loaded machine the 1-s tasks may be (whole seconds, rounded up).
    assert all(first.periodic.intervals()[task] <= time.monotonic() - began + 1 for task in again), again
    slower = replace(make_settings(), leases=replace(make_settings().leases, reaper_interval_s=7))
    assert TrainingOrchestrator(slower, fake_conn, consumer_name="c").periodic.register() == [
        "ringrift-periodic-reap"]  # a changed interval replaces its entry


def test_old_job_records_are_pruned_once_ended_and_running_ones_kept(orch, fake_conn, keys):
    old, kept = time.time() - 40 * 86_400, time.time() - 86_400
    for job_id, state, created in (("a-old-done", "complete", old), ("b-old-failed", "failed", old),
                                   ("c-old-running", "running", old), ("d-recent-done", "complete", kept)):
        fake_conn.hset(keys.job(job_id), mapping={"state": state, "job_id": job_id})
        fake_conn.zadd(keys.jobs, {job_id: created})
    assert orch.settings.training.job_retention_days == 30
    assert orch.prune_job_history() == 2
    assert sorted(j.decode() for j in fake_conn.zrange(keys.jobs, 0, -1)) == ["c-old-running", "d-recent-done"]
    assert not fake_conn.exists(keys.job("a-old-done")) and fake_conn.exists(keys.job("c-old-running"))
    assert orch.prune_job_history() == 0


def test_a_redis_error_is_not_taken_for_a_missing_rq_job(orch, monkeypatch):
    import pytest
    import redis
    from rq.job import Job

    job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)

    def unreachable(*_args, **_kwargs):
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(Job, "fetch", unreachable)
    with pytest.raises(redis.ConnectionError):
        orch.recovery.requeue_lost()
    assert orch.jobs.get(job_id)["state"] == "queued" and "deferred_reason" not in orch.jobs.get(job_id)
