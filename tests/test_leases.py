"""Leases on fakeredis (with Lua): acquisition, slots, ownership, expiry, fencing at publish."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from coordinator import TrainingOrchestrator
from coordinator.core.errors import LeaseUnavailable
from coordinator.stores.leases import LeaseKeeper, LeaseManager
from tests.conftest import end_job


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
    assert leases.try_acquire("hex8_4p", "n2", "w", "j")  # another node has room
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
    time.sleep(0.1)
    new = short.try_acquire("hex8_2p", "n1", "w2", "j1")  # config lease and the node's one slot
    assert new.fence == old.fence + 1
    assert not short.renew(old) and short.renew(new)


def test_keeper_renews_and_reports_a_lost_lease(fake_conn, keys):
    manager = LeaseManager(fake_conn, keys, ttl_s=0.3, default_slots=1)
    lease = manager.try_acquire("hex8_2p", "n1", "w1", "j1")
    lost = threading.Event()
    with LeaseKeeper(manager, lease, on_lost=lambda reason: lost.set()) as keeper:
        time.sleep(0.7)  # past two TTLs: only renewals keep it
        assert fake_conn.get(keys.lease("hex8_2p")).startswith(lease.token.encode() + b"|")
        fake_conn.delete(keys.lease("hex8_2p"))  # an operator (or expiry) takes it away
        assert lost.wait(2)
    assert keeper.lost_reason.startswith("lease_lost")


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
    manager = LeaseManager(fake_conn, keys, ttl_s=0.3, default_slots=1)
    lease = manager.try_acquire("hex8_2p", "n1", "w1", "j1")
    reasons: list[str] = []
    with LeaseKeeper(manager, lease, on_lost=reasons.append, job_id="j1") as keeper:
        fake_conn.hset(keys.job("j1"), "cancel_requested", "1")
        time.sleep(0.8)  # past two TTLs after the request: renewals go on
        assert fake_conn.get(keys.lease("hex8_2p")).startswith(lease.token.encode() + b"|")
    assert reasons == ["cancelled"] and keeper.lost_reason == "cancelled"


def test_keeper_gives_up_when_a_renewal_hangs_past_the_ttl(fake_conn, keys):
    """A client retrying across a failover can block a renewal for 30 s: the trainer must still be
    stopped once the TTL has run out, since another worker may hold the lease by then."""
    manager = LeaseManager(fake_conn, keys, ttl_s=0.6, default_slots=1)
    lease = manager.try_acquire("hex8_2p", "n1", "w1", "j1")
    release = threading.Event()
    manager.renew = lambda _lease, _job_id=None: release.wait(10) or True  # Redis does not answer
    lost, began = threading.Event(), time.monotonic()
    with LeaseKeeper(manager, lease, on_lost=lambda reason: lost.set()) as keeper:
        assert lost.wait(3)
        took = time.monotonic() - began
        release.set()
    assert keeper.lost_reason == "lease_lost: Redis did not answer within the lease's TTL"
    assert 0.5 < took < 1.5  # about one TTL after the last renewal, not when the call gives up


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
    lease = leases.try_acquire("hex8_2p", "n1", "w1", "job-1")
    first = fake_conn.zscore(keys.lease_expiry, "job-1")
    assert abs(first - (time.time() * 1000 + 30_000)) < 5_000
    fake_conn.zadd(keys.lease_expiry, {"job-1": 1})
    assert leases.renew(lease)
    assert fake_conn.zscore(keys.lease_expiry, "job-1") >= first
    stranger = replace(lease, token="someone-else")
    assert not leases.release(stranger) and fake_conn.zscore(keys.lease_expiry, "job-1") is not None
    assert leases.release(lease) and fake_conn.zscore(keys.lease_expiry, "job-1") is None
