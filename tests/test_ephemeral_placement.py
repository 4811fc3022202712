"""Ephemeral hosts in placement (issue 27, step 3): a long training prefers an idle stable GPU to an
ephemeral one and a short one the other way round (`placement.better_node_class`, what the worker's
`better_gpus` adds), ephemeral hosts' lifetimes learned from their notices (`GpuStore.end_of_life`),
and the checkpoint interval per node class (`{checkpoint_interval}`)."""

from __future__ import annotations

import fakeredis
import pytest

from coordinator.core.gpu_requirements import Gpu
from coordinator.core.keys import Keys
from coordinator.core.settings import GpuRequirement, NodeSettings, parse_settings, worker_settings_json
from coordinator.scheduling.placement import SlotGpu, Workload, better_node_class
from coordinator.scheduling.speeds import table_from
from coordinator.stores.gpus import HOSTS, GpuStore, NodeInventory, slot_of
from coordinator.stores.speeds import SpeedStore
from workers.worker import better_gpus

HOUR = 3600.0
GPUS = {"classes": {"24GB": {"models": ["RTX 4090"]}, "H100": {"models": ["H100"]}}}
CLASSES = parse_settings({"training": {"data_roots": ["/d"]}, "gpus": GPUS}).gpus.classes


def rtx(node: str, ephemeral: bool, index: int = 0) -> SlotGpu:
    return SlotGpu(Gpu("NVIDIA GeForce RTX 4090", 24.0, index, node), ephemeral=ephemeral)


def table(seconds_per_sample: float | None):
    stored = {} if seconds_per_sample is None else {("hex8", "24GB"): (seconds_per_sample, 3)}
    return table_from(stored, CLASSES, parse_settings({"training": {"data_roots": ["/d"]}}).gpus.speed_priors)


def prefer(me: SlotGpu, others: list[SlotGpu], run_h: float | None, lifetime_h: float = 8.0) -> list[str]:
    job = Workload("hex8", 1000.0)
    speeds = table(None if run_h is None else run_h * HOUR / 1000.0)
    return [o.gpu.node for o in better_node_class(me, others, GpuRequirement(), CLASSES, speeds, job, 1.2,
                                                  lifetime_h * HOUR, 0.5)]


def test_a_long_training_leaves_an_ephemeral_gpu_for_an_idle_stable_one_and_a_short_one_the_reverse():
    vast, stable = rtx("vast-1", True), rtx("lambda-1", False)
    assert prefer(vast, [stable], run_h=6.0) == ["lambda-1"]  # 6 h > half of an 8 h life
    assert prefer(vast, [stable], run_h=2.0) == []  # short: fine where it is
    assert prefer(stable, [vast], run_h=2.0) == ["vast-1"]  # short: keep the stable GPU for long ones
    assert prefer(stable, [vast], run_h=6.0) == []
    assert prefer(vast, [stable], run_h=6.0, lifetime_h=20.0) == []  # hosts observed to live long
    assert prefer(vast, [stable], run_h=None) == []  # no move on a guess


def test_only_an_idle_fitting_gpu_not_slower_counts():
    vast = rtx("vast-1", True)
    busy = SlotGpu(Gpu("NVIDIA GeForce RTX 4090", 24.0, 0, "lambda-1"), free_in_s=60.0)
    other_class = SlotGpu(Gpu("NVIDIA H100 80GB HBM3", 80.0, 0, "nebius-1"))  # its speed on hex8 never timed
    assert prefer(vast, [busy, other_class], run_h=6.0) == []


def test_an_ephemeral_hosts_notice_ends_its_life_once_and_the_mean_is_learned():
    conn, keys = fakeredis.FakeRedis(), Keys("t")
    store = GpuStore(conn, keys)
    inventory = NodeInventory("vast-1", HOSTS, (Gpu("RTX 4090", 24.0, 0, "vast-1"),), ephemeral=True)
    store.register_worker(inventory, slot_of(inventory, None, "w1"), 1000.0)
    store.register_worker(inventory, slot_of(inventory, None, "w2"), 1000.0 + HOUR)  # a second worker: same life
    assert store.lifetime_hours(8.0) == 8.0  # none observed: the prior
    assert store.end_of_life("vast-1", 1000.0 + 4 * HOUR) == pytest.approx(4.0)
    assert store.end_of_life("vast-1", 1000.0 + 4 * HOUR) is None  # the second worker's notice: counted already
    store.register_worker(inventory, slot_of(inventory, None, "w1"), 1000.0 + 10 * HOUR)  # a fresh instance
    assert store.end_of_life("vast-1", 1000.0 + 20 * HOUR) == pytest.approx(10.0)
    assert store.lifetime_hours(8.0) == pytest.approx(0.3 * 10.0 + 0.7 * 4.0)


def test_the_worker_hands_a_long_job_on_an_ephemeral_gpu_to_an_idle_stable_one():
    conn, keys = fakeredis.FakeRedis(), Keys("t")
    settings = parse_settings({"training": {"data_roots": ["/d"]},
                               "nodes": {"ephemeral_lifetime_hours": 8.0, "long_training_share": 0.5},
                               "gpus": {"classes": {"24GB": {"models": ["RTX 4090"]}}}})
    store = GpuStore(conn, keys)
    for node, ephemeral in (("vast-1", True), ("lambda-1", False)):
        inventory = NodeInventory(node, HOSTS, (Gpu("NVIDIA GeForce RTX 4090", 24.0, 0, node),), ephemeral=ephemeral)
        store.register_worker(inventory, slot_of(inventory, None, f"{node}-w"), 1000.0)
    store.mark_idle(Gpu("NVIDIA GeForce RTX 4090", 24.0, 0, "lambda-1"), None, "lambda-1-w", 1000.0, 60.0)
    SpeedStore(conn, keys).observe("hex8", "24GB", 0.01, 0.3, 1000.0)

    def job(samples: int) -> None:
        conn.hset(keys.job("j"), mapping={"job_id": "j", "config_key": "hex8_2p", "board_type": "hex8",
                                          "command": "[]", "samples": str(samples), "epochs": "1", "epoch": "0",
                                          "settings": worker_settings_json(settings)})

    me = rtx("vast-1", False)  # the worker does not know its class: better_gpus looks it up
    job(samples=2_000_000)  # 20 000 s = 5.6 h > 4 h
    assert [g.gpu.node for g in better_gpus(conn, "t", "j", me, "vast-1-w", 1001.0)] == ["lambda-1"]
    job(samples=500_000)  # 1.4 h
    assert better_gpus(conn, "t", "j", me, "vast-1-w", 1001.0) == []
    # An idle GPU kept for a waiting multi-GPU job is no place to hand a job to: it would refuse it.
    from coordinator.stores.reservations import Reservation, ReservationStore
    ReservationStore(conn, keys).replace([Reservation("gang", "hexagonal_2p", "lambda-1", 2, 2000.0, 0)])
    job(samples=2_000_000)
    assert better_gpus(conn, "t", "j", me, "vast-1-w", 1001.0) == []


def test_the_checkpoint_interval_is_the_hosts_class():
    nodes = NodeSettings(checkpoint_interval_stable=4, checkpoint_interval_ephemeral=1)
    assert (nodes.checkpoint_interval(False), nodes.checkpoint_interval(True)) == (4, 1)
    with pytest.raises(ValueError, match="checkpoint"):
        NodeSettings(checkpoint_interval_ephemeral=0)


def test_an_attempt_on_an_ephemeral_host_gets_that_classs_checkpoint_interval_in_its_command():
    from coordinator.stores.jobs import JobStore
    from coordinator.trainer.command import AttemptPaths, build_argv, record_values
    from workers import gpu_inventory
    from workers.tasks import _record_gpu

    conn, keys = fakeredis.FakeRedis(), Keys("t")
    s = parse_settings({"training": {"data_roots": ["/data"]},
                        "nodes": {"checkpoint_interval_stable": 5, "checkpoint_interval_ephemeral": 1}})
    store = JobStore.from_settings(conn, keys, s)
    for ephemeral, expected in ((True, "1"), (False, "5")):
        inventory = NodeInventory("n", HOSTS, (Gpu("NVIDIA GeForce RTX 4090", 24.0, 0, "n"),), ephemeral=ephemeral)
        made = gpu_inventory.Registered(inventory, slot_of(inventory, None, "w"), "t")
        record = {"job_id": "j", "config_key": "hex8_2p", "board_type": "hex8", "num_players": "2", "epochs": "3",
                  "batch_size": "64", "command": "[]", "settings": worker_settings_json(s)}
        _record_gpu(store, s, record, "w", resumes=False, made=made)
        stored = {k.decode(): v.decode() for k, v in conn.hgetall(keys.job("j")).items()}
        assert stored["checkpoint_interval"] == expected
        full = {**record, **stored, "npz_path": "/data/x.npz", "learning_rate": "0.001",
                "early_stopping_patience": "3"}
        paths = AttemptPaths(*(f"/out/{name}" for name in AttemptPaths.__dataclass_fields__))
        argv = build_argv(["train", "--checkpoint-interval", "{checkpoint_interval}"], record_values(full, paths, 1))
        assert argv == ["train", "--checkpoint-interval", expected]
