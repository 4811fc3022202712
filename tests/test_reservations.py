"""Backfill with reservations (issue 27, step 2): which node a waiting multi-GPU job reserves and from
when (`scheduling/reservations.plan`), what a worker may still start there (`ReservationStore.admit`,
`workers.tasks.reservation_refusal`), the due reservation's preemptions (preemption rule 5), and the
preempter's tick that writes them."""

from __future__ import annotations

import json
from dataclasses import replace

import fakeredis
import pytest

from coordinator.core.gpu_requirements import Gpu
from coordinator.core.keys import Keys
from coordinator.core.settings import GpuRequirement, parse_settings
from coordinator.scheduling.preempter import ends_at
from coordinator.scheduling.preemption_rule import WAIT, Candidate, Fits, PreemptionSettings, RunningJob, decide
from coordinator.scheduling.reservations import Waiting, plan
from coordinator.stores.reservations import BACKFILL, HOLD, OFF, Reservation, ReservationStore
from coordinator.stores.speeds import SpeedStore
from workers import gpu_inventory
from workers.tasks import reservation_refusal

NOW = 1_800_000_000.0
HOUR = 3600.0
DUO = GpuRequirement(gpus=2)
BIG_DUO = GpuRequirement(gpus=2, min_memory_gb=40)
FITS = Fits({})


def gpu(node: str, index: int = 0, memory: float = 80.0) -> Gpu:
    return Gpu("NVIDIA H100 80GB HBM3" if memory >= 80 else "NVIDIA GeForce RTX 4090", memory, index, node)


def test_a_waiting_job_reserves_the_node_whose_nth_gpu_frees_first_and_counts_the_spare_ones():
    cluster = [(gpu("a", 0), NOW), (gpu("a", 1), NOW + 5 * HOUR), (gpu("a", 2), NOW + 6 * HOUR),
               (gpu("b", 0), NOW + 2 * HOUR), (gpu("b", 1), NOW + 3 * HOUR), (gpu("b", 2), NOW + 1 * HOUR)]
    (r,) = plan([Waiting("j1", "square19_2p", DUO)], cluster, FITS, NOW)
    # a's second GPU frees at +5 h, b's at +2 h: b, from +2 h; b's third GPU (free at +3 h) is later.
    assert (r.job_id, r.node, r.gpus, r.start_at, r.spare, r.mode) == ("j1", "b", 2, NOW + 2 * HOUR, 0, BACKFILL)
    # A second waiting job plans around the first's GPUs: a at +5 h, a's idle GPU spare for nobody.
    first, second = plan([Waiting("j1", "square19_2p", DUO), Waiting("j2", "hexagonal_2p", DUO)], cluster, FITS, NOW)
    assert (first.node, second.node, second.start_at, second.spare) == ("b", "a", NOW + 5 * HOUR, 0)
    # With b's GPUs all free by +3 h and a 2-GPU need, b's third GPU is spare if it frees by the start.
    early = [(gpu("b", 0), NOW + 2 * HOUR), (gpu("b", 1), NOW + 2 * HOUR), (gpu("b", 2), NOW + HOUR)]
    (r,) = plan([Waiting("j1", "square19_2p", DUO)], early, FITS, NOW)
    assert (r.start_at, r.spare) == (NOW + 2 * HOUR, 1)


def test_only_fitting_gpus_of_one_node_count_and_an_unknown_end_is_never_planned_on():
    cluster = [(gpu("small", 0, 24.0), NOW), (gpu("small", 1, 24.0), NOW),
               (gpu("big", 0), NOW + HOUR), (gpu("big", 1), float("inf"))]
    assert plan([Waiting("j", "hexagonal_2p", BIG_DUO)], cluster, FITS, NOW) == []  # small: too small; big: unknown
    cluster[3] = (gpu("big", 1), NOW + 4 * HOUR)
    (r,) = plan([Waiting("j", "hexagonal_2p", BIG_DUO)], cluster, FITS, NOW)
    assert (r.node, r.start_at, r.spare) == ("big", NOW + 4 * HOUR, 0)
    assert plan([Waiting("j", "hexagonal_2p", BIG_DUO)], cluster, FITS, NOW, OFF) == []
    assert plan([Waiting("j", "hexagonal_2p", BIG_DUO)], cluster, FITS, NOW, HOLD)[0].mode == HOLD


def test_a_job_that_keeps_its_node_keeps_the_promised_start_while_the_estimates_slip():
    late = [(gpu("a", 0), NOW + 3 * HOUR), (gpu("a", 1), NOW + 3 * HOUR), (gpu("b", 0), NOW + 9 * HOUR),
            (gpu("b", 1), NOW + 9 * HOUR)]
    promise = Reservation("j", "square19_2p", "a", 2, NOW + HOUR, 0)  # an hour ago a's GPUs were due now
    (r,) = plan([Waiting("j", "square19_2p", DUO)], late, FITS, NOW, before={"j": promise})
    assert (r.node, r.start_at, r.promised_at) == ("a", NOW + 3 * HOUR, NOW + HOUR)
    (r,) = plan([Waiting("j", "square19_2p", DUO)], late[2:], FITS, NOW, before={"j": promise})
    assert (r.node, r.promised_at) == ("b", NOW + 9 * HOUR)  # a is gone: another node, a new promise


def test_the_store_admits_the_reserved_job_short_jobs_with_backfill_and_one_job_per_spare_gpu():
    conn, keys = fakeredis.FakeRedis(), Keys("t")
    store = ReservationStore(conn, keys)
    store.replace([Reservation("gang", "square19_2p", "n", 2, NOW + HOUR, 1),
                   Reservation("g2", "square19_3p", "m", 2, NOW + HOUR, 0, HOLD)])
    assert json.loads(conn.hget(keys.reservations, "n"))["job_id"] == "gang"  # plain JSON for redis-cli
    assert store.admit("n", "gang", None) is None
    assert store.admit("n", "short", NOW + HOUR - 1) is None  # ends before the promised start: backfill
    assert store.admit("n", "long", NOW + 2 * HOUR) is None  # takes the one spare GPU
    assert store.admit("n", "long2", NOW + 2 * HOUR).job_id == "gang"  # none left
    assert store.admit("n", "unknown", None).job_id == "gang"
    assert store.admit("m", "short", NOW + 60).job_id == "g2"  # hold: no backfill
    store.replace([Reservation("gang", "square19_2p", "n", 2, NOW + HOUR, 1)])
    assert store.admit("n", "quad", NOW + 2 * HOUR, gpus=4).job_id == "gang"  # 4 GPUs: more than the one spare
    assert store.admit("n", "one", NOW + 2 * HOUR, gpus=1) is None
    assert store.admit("elsewhere", "long", None) is None
    store.replace([Reservation("gang", "square19_2p", "n", 2, NOW + HOUR, 1),
                   Reservation("g2", "square19_3p", "m", 2, NOW + HOUR, 0, HOLD)])
    assert not store.drop("someone-else") and store.drop("gang")
    assert set(store.all()) == {"m"}
    store.replace([])
    assert store.all() == {}


def _registered(conn: fakeredis.FakeRedis, node: str) -> None:
    inventory = gpu_inventory.NodeInventory(node, gpu_inventory.HOSTS, (gpu(node, 0),))
    gpu_inventory._current = gpu_inventory.Registered(inventory, gpu_inventory.slot_of(inventory, None, "w"), "t")


@pytest.fixture()
def registered_worker():
    before = gpu_inventory._current
    yield
    gpu_inventory._current = before


def test_the_worker_refuses_a_job_that_would_run_past_the_reservation_with_its_learned_speed(registered_worker):
    conn, keys = fakeredis.FakeRedis(), Keys("t")
    settings = parse_settings({"training": {"data_roots": ["/d"]}, "hosts": {"n": 2},
                               "gpus": {"classes": {"H100": {"models": ["H100"]}}}})
    _registered(conn, "n")
    SpeedStore(conn, keys).observe("hex8", "H100", 0.01, 0.3, NOW)  # 0.01 s per sample-epoch on an H100
    record = {"job_id": "j", "config_key": "hex8_2p", "board_type": "hex8", "samples": "100000", "epochs": "2",
              "epoch": "0", "command": "[]"}  # 2000 s of training
    ReservationStore(conn, keys).replace([Reservation("gang", "square19_2p", "n", 2, NOW + HOUR, 0)])
    assert reservation_refusal(conn, keys, settings, record, "n", "w", NOW) is None  # ends at +2000 s < +1 h
    why = reservation_refusal(conn, keys, settings, record, "n", "w", NOW + 1700)
    assert why.startswith("node n reserved for square19_2p (2 GPUs) from ") and "(0.6 h) ends later" in why
    assert reservation_refusal(conn, keys, settings, record, "other-node", "w", NOW + 1700) is None


def test_the_reserved_nodes_jobs_yield_once_the_reservation_is_past_due_and_only_those():
    s = PreemptionSettings(min_run_minutes=10, max_wait_hours=12)

    def running(name: str, node: str) -> RunningJob:
        return RunningJob(f"job-{name}", name, f"slot-{name}", NOW - 2 * HOUR, 1.0, gpu=gpu(node))

    jobs = [running("a1", "a"), running("a2", "a"), running("b1", "b"), running("b2", "b")]
    duo = Candidate("square19_2p", 1.0, waited_hours=2.0, queued=True, requirement=DUO, job_id="gang",
                    reserved_node="b")
    assert decide(jobs, [duo], [], s, NOW).preempt == ()  # not due: the node's jobs end by the estimate
    due = decide(jobs, [replace(duo, reservation_due=True)], [], s, NOW).preempt
    assert sorted(p.config_key for p in due) == ["b1", "b2"] and {p.kind for p in due} == {WAIT}
    assert "its reservation of b is due" in due[0].why


def test_a_running_attempts_end_is_its_pace_else_its_configs_expected_hours_over_its_gpus():
    at_pace = {"started_at": str(NOW - HOUR), "epoch": "1", "epochs": "4"}
    assert ends_at(at_pace, 10.0, NOW) == NOW + 3 * HOUR
    fresh = {"started_at": str(NOW - HOUR), "epoch": "0", "epochs": "4", "gpus_held": "2"}
    assert ends_at(fresh, 10.0, NOW) == NOW - HOUR + 5 * HOUR
    assert ends_at(fresh, 0.0, NOW) is None


def test_no_node_is_reserved_when_the_wait_bound_would_serve_the_job_first():
    cluster = [(gpu("a", 0), NOW + 20 * HOUR), (gpu("a", 1), NOW + 30 * HOUR)]
    assert plan([Waiting("j", "square19_2p", DUO, starves_at=NOW + 10 * HOUR)], cluster, FITS, NOW) == []
    (r,) = plan([Waiting("j", "square19_2p", DUO, starves_at=NOW + 31 * HOUR)], cluster, FITS, NOW)
    assert r.start_at == NOW + 30 * HOUR


def test_a_reservation_holds_its_node_when_the_estimates_slip_past_the_wait_bound():
    promise = Reservation("j", "square19_2p", "a", 2, NOW - HOUR, 0)  # due an hour ago
    slipped = [(gpu("a", 0), NOW + 20 * HOUR), (gpu("a", 1), NOW + 20 * HOUR), (gpu("b", 0), NOW + 5 * HOUR),
               (gpu("b", 1), NOW + 5 * HOUR)]
    (r,) = plan([Waiting("j", "square19_2p", DUO, starves_at=NOW + 2 * HOUR)], slipped, FITS, NOW,
                before={"j": promise})
    assert (r.node, r.promised_at) == ("a", NOW - HOUR)  # kept: rule 5 makes a's trainings yield to it
