"""Leases on fakeredis (with Lua): acquisition, slots, ownership, expiry, fencing at publish."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import pytest

from coordinator import TrainingOrchestrator
from coordinator.core.errors import LeaseUnavailable
from coordinator.stores import leases as leases_module
from coordinator.stores.leases import Lease, LeaseKeeper, LeaseManager, Renewal
from tests.support.jobs import end_job
from tests.support.polling import wait_for


@pytest.fixture
def leases(fake_conn, keys):
    return LeaseManager(fake_conn, keys, ttl_s=30, default_slots=2)


def test_fencing_tokens_only_grow(leases):
    first = leases.try_acquire("hex8_2p", "n1", "w1", "j1")
    assert leases.release(first)
    second = leases.try_acquire("hex8_2p", "n1", "w2", "j2")
    assert (first.fence, second.fence) == (1, 2)
    assert leases.newest_fence("hex8_2p") == 2
    other = leases.try_acquire("square8_2p", "n1", "w3", "j3")
    assert other.fence == 1  # one counter per config


def test_a_held_config_cannot_be_taken(leases):
    leases.try_acquire("hex8_2p", "n1", "w1", "job-a")
    with pytest.raises(LeaseUnavailable) as info:
        leases.try_acquire("hex8_2p", "n2", "w2", "job-b")
    assert (info.value.reason, info.value.detail) == ("config", "job-a")


def test_a_node_runs_at_most_its_gpus(leases, fake_conn, keys):
    leases.register_nodes({"n1": 2})
    held = [leases.try_acquire(f"hex8_{p}p", "n1", "w", "j") for p in (2, 3)]
    with pytest.raises(LeaseUnavailable) as info:
        leases.try_acquire("hex8_4p", "n1", "w", "j")
    assert (info.value.reason, info.value.detail) == ("slots", "2/2")
    other_node = leases.try_acquire("hex8_4p", "n2", "w", "j")  # another node has room
    assert (other_node.config_key, other_node.node, other_node.fence) == ("hex8_4p", "n2", 1)
    leases.release(held[0])
    assert leases.try_acquire("square8_2p", "n1", "w", "j").fence == 1  # the freed slot is usable
    assert fake_conn.zcard(keys.node_slots("n1")) == 2
    assert leases.nodes()[0] == {"node": "n1", "gpus": "2", "status": "healthy", "in_use": "2"}


def test_failed_acquisition_takes_nothing(leases, fake_conn, keys):
    leases.register_nodes({"n1": 1})
    leases.try_acquire("hex8_2p", "n1", "w", "j")
    with pytest.raises(LeaseUnavailable):
        leases.try_acquire("square8_2p", "n1", "w", "j")  # no slot: the config lease is not taken
    assert not fake_conn.exists(keys.lease("square8_2p"))
    assert leases.newest_fence("square8_2p") == 0


def test_a_down_node_gets_no_lease(leases):
    leases.set_node_health("n1", "down")
    with pytest.raises(LeaseUnavailable, match="node_down"):
        leases.acquire("hex8_2p", "n1", "w", "j", attempts=3, max_delay_s=0)


def test_only_the_owner_renews_or_releases(leases, fake_conn, keys):
    mine = leases.try_acquire("hex8_2p", "n1", "w1", "j1")
    forged = type(mine)(mine.config_key, mine.node, "not-my-token", mine.fence, mine.ttl_ms)
    assert not leases.renew(forged) and not leases.release(forged)
    assert fake_conn.exists(keys.lease("hex8_2p"))
    assert leases.renew(mine) and leases.release(mine)
    assert not fake_conn.exists(keys.lease("hex8_2p")) and fake_conn.zcard(keys.node_slots("n1")) == 0
    assert not leases.renew(mine)  # released: nothing to extend


def test_an_expired_lease_is_free_and_the_old_holder_cannot_renew(fake_conn, keys):
    short = LeaseManager(fake_conn, keys, ttl_s=0.05, default_slots=1)
    old = short.try_acquire("hex8_2p", "n1", "w1", "j1")
    wait_for(lambda: not fake_conn.exists(keys.lease("hex8_2p")), timeout_s=10)  # Redis expired it
    new = short.try_acquire("hex8_2p", "n1", "w2", "j1")  # config lease and the node's one slot
    assert new.fence == old.fence + 1
    assert not short.renew(old) and short.renew(new)


# The keeper's tests run on real time (its waits are not injectable): a TTL long enough that a
# thread held off the CPU for most of a second on a loaded machine does not lose the lease.
KEEPER_TTL_S = 1.0


def record_renewals(manager: LeaseManager) -> list[Renewal]:
    """Wrap `manager.renew`: the list fills with every reply a keeper got, in order."""
    replies: list[Renewal] = []
    renew = manager.renew

    def recording(lease: Lease, job_id: str | None = None) -> Renewal:
        reply = renew(lease, job_id)
        replies.append(reply)
        return reply

    manager.renew = recording
    return replies


def expiry_ms(conn, keys, job_id: str) -> float:
    """When the job's lease expires (ms, Redis' clock), as the lease scripts last set it."""
    return conn.zscore(keys.lease_expiry, job_id)


def test_keeper_renews_and_reports_a_lost_lease(fake_conn, keys):
    manager = LeaseManager(fake_conn, keys, ttl_s=KEEPER_TTL_S, default_slots=1)
    lease = manager.try_acquire("hex8_2p", "n1", "w1", "j1")
    first_expiry, replies = expiry_ms(fake_conn, keys, "j1"), record_renewals(manager)
    lost = threading.Event()
    with LeaseKeeper(manager, lease, on_lost=lambda reason: lost.set()) as keeper:
        # A renewal sent once the first TTL had run out (it set the expiry a TTL past the first)
        # found the lease still held: only the renewals before it kept the lease that long.
        wait_for(lambda: expiry_ms(fake_conn, keys, "j1") >= first_expiry + lease.ttl_ms, timeout_s=30)
        assert fake_conn.get(keys.lease("hex8_2p")).startswith(lease.token.encode() + b"|")
        assert replies and all(r.held and r.stop is None for r in replies) and not lost.is_set()
        fake_conn.delete(keys.lease("hex8_2p"))  # an operator (or expiry) takes it away
        assert lost.wait(30)
    assert keeper.lost_reason == "lease_lost: another holder took it over"


@pytest.mark.parametrize(("fields", "stop"), [
    ({}, None), ({"cancel_requested": "1"}, "cancelled"), ({"preempt_requested_at": "1.5"}, "preempted"),
    ({"preempt_requested_at": "1.5", "cancel_requested": "1"}, "cancelled"),  # cancel wins
])
def test_a_renewal_reply_says_whether_the_job_was_asked_to_stop(fake_conn, keys, fields, stop):
    manager = LeaseManager(fake_conn, keys, ttl_s=30, default_slots=1)
    lease = manager.try_acquire("hex8_2p", "n1", "w1", "j1")
    if fields:
        fake_conn.hset(keys.job("j1"), mapping=fields)
    renewal = manager.renew(lease, "j1")
    assert renewal.held and renewal.stop == stop
    assert manager.renew(lease).stop is None  # no job named: nothing read
    fake_conn.delete(keys.lease("hex8_2p"))
    assert not manager.renew(lease, "j1") and manager.renew(lease, "j1").stop is None


def test_keeper_stops_on_a_cancel_request_without_polling_and_keeps_renewing(fake_conn, keys):
    """The request arrives on a renewal's reply (nothing else is read), and the lease stays held
    while the trainer stops."""
    manager = LeaseManager(fake_conn, keys, ttl_s=KEEPER_TTL_S, default_slots=1)
    lease = manager.try_acquire("hex8_2p", "n1", "w1", "j1")
    reasons: list[str] = []
    with LeaseKeeper(manager, lease, on_lost=reasons.append, job_id="j1") as keeper:
        fake_conn.hset(keys.job("j1"), "cancel_requested", "1")
        wait_for(lambda: reasons, timeout_s=30)
        asked = expiry_ms(fake_conn, keys, "j1")
        # Renewals go on after the request, past the TTL the request's renewal had given the lease.
        wait_for(lambda: expiry_ms(fake_conn, keys, "j1") >= asked + lease.ttl_ms, timeout_s=30)
        assert fake_conn.get(keys.lease("hex8_2p")).startswith(lease.token.encode() + b"|")
    assert reasons == ["cancelled"] and keeper.lost_reason == "cancelled"


class ManualClock:
    """The keeper's clock: stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class DeadlinePool(ThreadPoolExecutor):
    """The keeper's call pool; records the deadline (s) the keeper gave each call's result."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="test-lease-call")
        self.deadlines: list[float | None] = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = super().submit(fn, *args, **kwargs)
        result = future.result

        def recorded(timeout: float | None = None):
            self.deadlines.append(timeout)
            return result(timeout)

        future.result = recorded
        return future


def test_keeper_gives_up_when_a_renewal_hangs_past_the_ttl(fake_conn, keys, monkeypatch):
    """A client retrying across a failover can block a renewal for 30 s: the trainer must still be
    stopped once the TTL has run out, since another worker may hold the lease by then."""
    manager = LeaseManager(fake_conn, keys, ttl_s=0.6, default_slots=1)
    lease = manager.try_acquire("hex8_2p", "n1", "w1", "j1")
    clock, pool, release, calls = ManualClock(), DeadlinePool(), threading.Event(), []
    monkeypatch.setattr(leases_module, "ThreadPoolExecutor", lambda **_: pool)

    def renew(_lease: Lease, _job_id: str | None = None) -> Renewal:
        calls.append(clock.now)
        if len(calls) == 1:
            clock.now = 0.3  # the first renewal (sent at 0) answers; the next is sent 0.3 s later
            return Renewal(True)
        release.wait()  # Redis never answers until the test is over
        return Renewal(True)

    manager.renew = renew
    lost = threading.Event()
    try:
        with LeaseKeeper(manager, lease, on_lost=lambda reason: lost.set(), clock=clock) as keeper:
            assert lost.wait(30)
    finally:
        release.set()
    assert keeper.lost_reason == "lease_lost: Redis did not answer within the lease's TTL"
    # The hung call was given until the give-up point counted from the last renewal sent (0),
    # not until it returns: give_up_s - 0.3 s of the keeper's clock.
    assert calls == [0.0, 0.3] and len(pool.deadlines) == 2
    assert pool.deadlines[1] == pytest.approx(keeper.give_up_s - 0.3)


def test_held_leases_are_listed_with_holder_fence_and_ttl(leases):
    leases.try_acquire("hex8_2p", "gpu-1", "worker-a", "job-1")
    [held] = leases.held()
    assert held["config_key"] == "hex8_2p" and held["node"] == "gpu-1" and held["job_id"] == "job-1"
    assert held["fence"] == "1" and 0 < int(held["ttl_left_ms"]) <= 30_000


# -- fencing at publish -------------------------------------------------------------------------

@pytest.fixture
def running_job(fake_conn, keys, make_settings):
    orch = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    return orch, job_id


def test_a_result_under_an_old_fence_is_not_published(running_job, fake_conn, keys, leases):
    orch, job_id = running_job
    old = leases.try_acquire("hex8_2p", "n1", "w1", job_id)
    orch.jobs.start(job_id, "hex8_2p", "n1", "w1", fence=old.fence)
    fake_conn.delete(keys.lease("hex8_2p"))  # the old holder's lease expired...
    leases.try_acquire("hex8_2p", "n2", "w2", "other")  # ...and someone newer holds it now
    assert end_job(orch.jobs, job_id, "hex8_2p", fence=old.fence, latest_model="/old/model.pt") == "fenced"
    record = orch.jobs.get(job_id)
    assert record["state"] == "stale" and record["reason"] == "fenced"
    assert fake_conn.hget(keys.config("hex8_2p"), "latest_model") is None
    last = fake_conn.xrevrange(keys.events, count=1)[0][1]
    assert last[b"type"] == b"TRAINING_FAILED" and last[b"reason"] == b"fenced"
    assert (last[b"board_type"], last[b"num_players"]) == (b"hex8", b"2")


def test_an_older_attempts_failure_leaves_the_newer_attempt_alone(running_job, fake_conn, keys, leases):
    orch, job_id = running_job
    orch.jobs.start(job_id, "hex8_2p", "n1", "w1", fence=1)
    fake_conn.hset(keys.job(job_id), "fence", 2)  # a retry took over the job with a newer lease
    fake_conn.set(keys.fence("hex8_2p"), 2)
    assert end_job(orch.jobs, job_id, "hex8_2p", state="failed", fence=1) == "fenced"
    assert orch.jobs.get(job_id)["state"] == "leased"  # untouched
    assert end_job(orch.jobs, job_id, "hex8_2p", fence=2, latest_model="/new/model.pt") == "recorded"
    assert fake_conn.hget(keys.config("hex8_2p"), "latest_model") == b"/new/model.pt"


def test_the_lease_scripts_keep_the_expiry_zset(fake_conn, keys):
    """Acquire and renew set the job's entry to the lease's expiry (ms); release by its holder
    removes it, a release by a former holder does not."""
    leases = LeaseManager(fake_conn, keys, ttl_s=30, default_slots=1)
    before_ms = int(time.time() * 1000)
    lease = leases.try_acquire("hex8_2p", "n1", "w1", "job-1")
    after_ms = int(time.time() * 1000)
    first = fake_conn.zscore(keys.lease_expiry, "job-1")
    # Redis' clock read during the acquisition, plus the TTL (1 ms for TIME's microsecond rounding).
    assert before_ms + 30_000 - 1 <= first <= after_ms + 30_000 + 1
    fake_conn.zadd(keys.lease_expiry, {"job-1": 1})
    assert leases.renew(lease)
    assert fake_conn.zscore(keys.lease_expiry, "job-1") >= first
    stranger = replace(lease, token="someone-else")
    assert not leases.release(stranger) and fake_conn.zscore(keys.lease_expiry, "job-1") is not None
    assert leases.release(lease) and fake_conn.zscore(keys.lease_expiry, "job-1") is None
