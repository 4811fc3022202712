"""Multi-GPU (gang) leases on fakeredis with Lua: k GPU slots of one node taken all at once or not
at all, under one fencing token; renewed, released and expired together; never a partial hold."""

from __future__ import annotations

import random
import threading

import pytest

from coordinator.core.errors import LeaseUnavailable
from coordinator.stores.leases import Lease, LeaseManager
from tests.support.gang import assert_no_partial_hold
from tests.support.jobs import take_job
from tests.support.polling import wait_for


@pytest.fixture
def leases(fake_conn, keys):
    manager = LeaseManager(fake_conn, keys, ttl_s=30, default_slots=1)
    manager.register_nodes({"n3": 3, "n2": 2})
    return manager


def slot_members(conn, keys, node: str) -> dict[str, float]:
    return {m.decode(): s for m, s in conn.zrange(keys.node_slots(node), 0, -1, withscores=True)}


def test_a_gang_lease_takes_its_gpus_at_once_under_one_fence(leases, fake_conn, keys):
    lease = leases.try_acquire("square19_2p", "n3", "w0", "job-1", gpus=2, devices=(0, 1, 2))
    assert (lease.devices, lease.fence, lease.gpus) == ((0, 1), 1, 2)
    members = slot_members(fake_conn, keys, "n3")
    assert set(members) == {lease.token, f"{lease.token}+2"}
    assert len(set(members.values())) == 1  # one expiry for all of its GPUs
    assert leases.held_devices("n3") == {0, 1}
    assert fake_conn.get(keys.lease("square19_2p")).decode().startswith(f"{lease.token}|1|n3|w0|job-1")
    assert leases.nodes()[1]["in_use"] == "2"  # status and metrics count GPUs, not leases


def test_the_taker_gets_its_own_device_first(leases):
    single = leases.try_acquire("hex8_2p", "n3", "w2", "j1", devices=(2, 0, 1))
    assert single.devices == (2,)
    leases.release(single)
    # Its own device and then the first free other one, named in index order (CUDA_VISIBLE_DEVICES).
    assert leases.try_acquire("hex8_3p", "n3", "w2", "j2", gpus=2, devices=(2, 0, 1)).devices == (0, 2)


def test_all_or_nothing_when_too_few_slots_are_free(leases, fake_conn, keys):
    single = leases.try_acquire("hex8_2p", "n3", "w0", "j1", devices=(0,))
    with pytest.raises(LeaseUnavailable) as info:
        leases.try_acquire("square19_2p", "n3", "w1", "j2", gpus=3)
    assert (info.value.reason, info.value.detail) == ("slots", "1/3, needs 3")
    # Nothing of the failed gang is held: no config lease, no fence spent, no slot, no device.
    assert not fake_conn.exists(keys.lease("square19_2p")) and leases.newest_fence("square19_2p") == 0
    assert set(slot_members(fake_conn, keys, "n3")) == {single.token}
    assert leases.held_devices("n3") == {0}
    gang = leases.try_acquire("square19_2p", "n3", "w1", "j2", gpus=2, devices=(1, 0, 2))
    assert gang.devices == (1, 2) and gang.fence == 1  # device 0 is the single job's


def test_a_gang_never_takes_a_device_it_was_not_offered(leases, fake_conn, keys):
    """Enough slots by count, but the fitting devices (the offered ones) are not all free."""
    leases.try_acquire("hex8_2p", "n3", "w0", "j1", devices=(0,))
    with pytest.raises(LeaseUnavailable) as info:
        leases.try_acquire("square19_2p", "n3", "w1", "j2", gpus=2, devices=(1, 0), only_listed=True)  # 2 does not fit
    assert info.value.reason == "slots" and "1 of 2 fitting devices free" in info.value.detail
    assert not fake_conn.exists(keys.lease("square19_2p")) and leases.held_devices("n3") == {0}


def test_renew_and_release_cover_every_gpu_of_the_lease(leases, fake_conn, keys):
    gang = leases.try_acquire("square19_2p", "n3", "w0", "j1", gpus=3)
    fake_conn.zadd(keys.node_slots("n3"), {f"{gang.token}+3": 1_000})  # pretend the third slot was stale
    fake_conn.zadd(keys.node_slots("n3"), {gang.token: 1_000})
    assert leases.renew(gang)
    scores = slot_members(fake_conn, keys, "n3").values()
    assert min(scores) > 1_000 and len(set(scores)) == 1  # all renewed to the same expiry
    assert leases.release(gang)
    assert slot_members(fake_conn, keys, "n3") == {} and leases.held_devices("n3") == set()
    assert fake_conn.hlen(keys.node_devices("n3")) == 0
    assert leases.try_acquire("hexagonal_2p", "n3", "w0", "j2", gpus=3).devices == (0, 1, 2)


def test_a_gang_that_lost_one_slot_is_lost_whole(leases, fake_conn, keys):
    """A slot of the lease that expired may be another's now: renewing never re-takes it."""
    gang = leases.try_acquire("square19_2p", "n3", "w0", "j1", gpus=2)
    fake_conn.zrem(keys.node_slots("n3"), f"{gang.token}+2")
    assert not leases.renew(gang)


def test_an_expired_gang_frees_all_its_gpus_at_once(fake_conn, keys):
    short = LeaseManager(fake_conn, keys, ttl_s=0.05, default_slots=2)
    short.register_nodes({"n2": 2})
    old = short.try_acquire("square19_2p", "n2", "w0", "j1", gpus=2)
    wait_for(lambda: short.held_devices("n2") == set(), timeout_s=10)
    assert short.nodes()[0]["in_use"] == "0"
    new = short.try_acquire("hexagonal_2p", "n2", "w1", "j2", gpus=2)
    assert new.devices == (0, 1)
    assert not short.renew(old) and not short.release(old)
    assert short.held_devices("n2") == {0, 1}  # the old holder's release took nothing of the new


def test_the_reaper_retries_an_expired_gang_and_its_gpus_are_free(make_orch, fake_conn, keys):
    orch = make_orch(hosts={"node-a": 2})
    job_id = orch.submit_training_sync("square19", 2, "/d/x.npz", samples=10)
    lease = orch.leases.try_acquire("square19_2p", "node-a", "test-worker", job_id, gpus=2)
    assert orch.jobs.start(job_id, "square19_2p", "node-a", "test-worker", fence=lease.fence) is not None
    assert orch.recovery.reap() == []  # held
    # The worker vanished: its config lease and both slots lapse (one expiry), its entry is past.
    fake_conn.delete(keys.lease("square19_2p"))
    fake_conn.zadd(keys.node_slots("node-a"), {lease.token: 1, f"{lease.token}+2": 1})
    fake_conn.zadd(keys.lease_expiry, {job_id: 1})
    assert orch.recovery.reap() == [job_id]
    assert orch.jobs.get(job_id)["state"] == "retrying"
    assert orch.leases.held_devices("node-a") == set()
    other = take_job(orch, orch.submit_training_sync("hex8", 2, "/d/y.npz", samples=10), "hex8_2p")
    assert other.devices == (0,)


def test_two_two_gpu_jobs_on_a_three_gpu_node_never_hold_anything_partial(leases, fake_conn, keys):
    """Two 2-GPU jobs race for a 3-GPU node from many threads: at every sample each holder has both
    of its GPUs or none, at most one holds at a time, and both train, one after the other."""
    done = {"a": 0, "b": 0}
    stop = threading.Event()

    def contend(config: str, name: str) -> None:
        rng = random.Random(name)
        while not stop.is_set() and done[name] < 30:
            try:
                lease = leases.try_acquire(config, "n3", name, f"job-{name}", gpus=2, devices=rng.sample(range(3), 3))
            except LeaseUnavailable:
                continue
            assert leases.renew(lease)
            done[name] += 1
            assert leases.release(lease)

    threads = [threading.Thread(target=contend, args=(c, n)) for c, n in (("square19_2p", "a"),
                                                                          ("hexagonal_2p", "b"))]
    for t in threads:
        t.start()
    try:
        samples = 0
        while any(t.is_alive() for t in threads):
            assert_no_partial_hold(fake_conn, keys, "n3", gpus=2, total=3)
            samples += 1
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert done == {"a": 30, "b": 30} and samples > 0


def test_a_lease_says_how_many_gpus_it_holds():
    assert Lease("c", "n", "t", 1, 10).gpus == 1
    assert Lease("c", "n", "t", 1, 10, (2, 3)).gpus == 2
