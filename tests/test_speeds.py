"""Issue 26, step 3: learned speeds per (workload, GPU class) from the trainings' epoch times, the
prior for classes never timed, ranking by expected finish (cost breaks ties), the decision to leave
a job to a better GPU, and the record's placement text."""

from __future__ import annotations

import json

import pytest

from coordinator.bus.events import Event
from coordinator.core.clock import ManualClock
from coordinator.core.gpu_requirements import Gpu
from coordinator.core.keys import Keys
from coordinator.core.settings import GpuClass, GpuRequirement, GpuSettings, Settings, SpeedPriors
from coordinator.scheduling.placement import SlotGpu, Workload, better_elsewhere, rank_gpus, speed_note
from coordinator.scheduling.speeds import Learned, SpeedTable, class_key, prior_speed, smoothed, table_from, workload_of
from coordinator.service.handlers import EventHandlers
from coordinator.stores.configs import ConfigStore
from coordinator.stores.leases import LeaseManager
from coordinator.stores.speeds import SpeedStore
from workers.tasks import placement_text

CLASSES = {"GH200": GpuClass(("GH200",)), "H100": GpuClass(("H100", "H200")),
           "A100-80": GpuClass(("A100",), min_memory_gb=70), "A100": GpuClass(("A100",)),
           "24GB": GpuClass(("A10", "RTX 4090", "RTX 3090"))}
H100 = Gpu("NVIDIA H100 80GB HBM3", 80, 0, "big")
A100 = Gpu("NVIDIA A100-SXM4-80GB", 80, 0, "mid")
RTX = Gpu("NVIDIA GeForce RTX 4090", 24, 0, "small")
BIG = GpuRequirement(min_memory_gb=40)


def test_the_estimate_is_a_mean_at_first_then_an_exponential_mean():
    est, n = None, 0
    for x in (10.0, 20.0, 30.0):  # alpha 0.3: weights 1, 1/2, 1/3 (> 0.3): the plain mean
        est, n = smoothed(est, n, x, 0.3), n + 1
    assert est == pytest.approx(20.0)
    assert smoothed(20.0, 3, 40.0, 0.3) == pytest.approx(20.0 + 0.3 * 20.0)  # 1/4 < 0.3


def test_the_store_learns_epoch_times_atomically_and_counts_a_redelivery_once(fake_conn, keys):
    store = SpeedStore(fake_conn, keys)
    assert store.observe("hexagonal", "H100", 2e-5, 0.3, 100.0, "5-0") == pytest.approx(2e-5)
    assert store.observe("hexagonal", "H100", 4e-5, 0.3, 101.0, "6-0") == pytest.approx(3e-5)
    assert store.observe("hexagonal", "H100", 9e-5, 0.3, 102.0, "6-0") is None  # redelivered
    assert store.read() == {("hexagonal", "H100"): (pytest.approx(3e-5), 2)}
    # The Lua and the pure function agree.
    table = SpeedTable({}, CLASSES).observe("hexagonal", "H100", 2e-5, 0.3).observe("hexagonal", "H100", 4e-5, 0.3)
    assert table.learned[("hexagonal", "H100")] == Learned(pytest.approx(3e-5), 2)


def test_priors_rank_ringrift_classes_and_apply_to_classes_never_timed():
    p = SpeedPriors()
    speeds = [prior_speed(c, CLASSES, p) for c in ("GH200", "H100", "A100-80", "A100", "24GB")]
    assert speeds == sorted(speeds, reverse=True) and len(set(speeds)) == 5
    assert prior_speed("24GB", CLASSES, p, RTX) == p.rtx_4090  # by the GPU's model when the class says nothing
    for gpu, want in ((Gpu("NVIDIA A100-SXM4-80GB", 80), p.a100_80gb), (Gpu("NVIDIA A100-PCIE-40GB", 40), p.a100),
                      (Gpu("NVIDIA A10", 24), p.a10)):  # unclassified: by model words (A10 is no A100) and memory
        assert prior_speed(class_key(gpu, {}), {}, p, gpu) == want
    assert prior_speed("X", {"X": GpuClass(("Foo",), relative_speed=7.0)}, p) == 7.0  # the class's own wins
    # Timed on the H100 only: the 4090's s/sample is the H100's scaled by the priors.
    table = SpeedTable({("hexagonal", "H100"): Learned(1e-5, 4)}, CLASSES)
    assert table.seconds_per_sample("hexagonal", "24GB", RTX) == pytest.approx(1e-5 * p.h100 / p.rtx_4090)
    assert table.seconds_per_sample("hex8", "24GB", RTX) is None  # nothing timed on hex8
    assert table.relative("hex8", "H100") == p.h100


def test_learned_speeds_override_the_prior():
    # The operator's prior says the 4090 is faster; the epochs say the H100 is 4x faster.
    classes = {**CLASSES, "24GB": GpuClass(("RTX 4090",), relative_speed=5.0)}
    table = SpeedTable({("hex8", "H100"): Learned(1e-5, 3), ("hex8", "24GB"): Learned(4e-5, 3)}, classes)
    assert table.relative("hex8", "H100") / table.relative("hex8", "24GB") == pytest.approx(4.0)
    slots = [SlotGpu(RTX, 0.4), SlotGpu(H100, 2.5)]
    assert rank_gpus(GpuRequirement(), slots, classes, table, Workload("hex8", 1000))[0].gpu == H100
    assert rank_gpus(GpuRequirement(), slots, classes)[0].gpu == RTX  # without speeds: the cheaper hour


def test_the_workload_is_the_board_or_the_model_the_command_names():
    assert workload_of("hexagonal", ["{python}", "-m", "workers.train"]) == "hexagonal"
    assert workload_of("hexagonal", ["train.py", "--model-version", "v5-heavy"]) == "hexagonal/v5-heavy"
    assert workload_of("hex8", ["train.py", "--model-version={model}"]) == "hex8"  # a placeholder names none
    assert class_key(Gpu("NVIDIA L4", 24), CLASSES) == "L4" and class_key(None, CLASSES) == "unknown"


def test_the_fastest_fitting_free_gpu_ranks_first_and_cost_breaks_ties():
    table = SpeedTable({}, CLASSES)  # priors only
    slots = [SlotGpu(RTX, 0.4), SlotGpu(A100, 1.8), SlotGpu(H100, 2.5)]
    assert [s.gpu for s in rank_gpus(GpuRequirement(), slots, CLASSES, table, Workload("hex8"))] == [H100, A100, RTX]
    assert [s.gpu for s in rank_gpus(BIG, slots, CLASSES, table, Workload("hexagonal"))] == [H100, A100]
    twin = Gpu("NVIDIA H100 80GB HBM3", 80, 0, "big2")
    ranked = rank_gpus(BIG, [SlotGpu(H100, 2.5), SlotGpu(twin, 2.0)], CLASSES, table, Workload("hexagonal"))
    assert ranked[0].gpu == twin  # same speed: the cheaper hour


def test_a_slower_free_gpu_leaves_a_job_to_a_faster_free_one_but_never_idles_for_an_equal_one():
    table = SpeedTable({}, CLASSES)
    job = Workload("hex8")
    # A prior never sends a job away (priors rank GPUs by large models); timed speeds do.
    assert better_elsewhere(SlotGpu(RTX), [SlotGpu(H100)], GpuRequirement(), CLASSES, table, job, 1.2) == []
    learned = SpeedTable({("hex8", "24GB"): Learned(4e-3, 5), ("hex8", "H100"): Learned(1e-3, 5)}, CLASSES)
    assert better_elsewhere(SlotGpu(RTX), [SlotGpu(H100)], GpuRequirement(), CLASSES, learned, job, 1.2) == [
        SlotGpu(H100)]
    assert better_elsewhere(SlotGpu(H100), [SlotGpu(RTX)], GpuRequirement(), CLASSES, learned, job, 1.2) == []
    only_h100 = SpeedTable({("hex8", "H100"): Learned(1e-3, 5)}, CLASSES)  # the 4090 only by prior
    assert better_elsewhere(SlotGpu(RTX), [SlotGpu(H100)], GpuRequirement(), CLASSES, only_h100, job, 1.2) == []
    other_rtx = Gpu("NVIDIA GeForce RTX 4090", 24, 1, "small")
    assert better_elsewhere(SlotGpu(RTX, 0.5), [SlotGpu(other_rtx, 0.5)], GpuRequirement(), CLASSES, table,
                            job, 1.2) == []  # same class, same cost: nobody waits for anybody
    assert better_elsewhere(SlotGpu(RTX, 0.5), [SlotGpu(other_rtx, 0.4)], GpuRequirement(), CLASSES, table,
                            job, 1.2) == [SlotGpu(other_rtx, 0.4)]  # a tie: the cheaper hour
    # A busy GPU never counts, however soon it frees (waiting for it broke the wait bound).
    timed = SpeedTable({("hex8", "24GB"): Learned(4e-3, 5), ("hex8", "H100"): Learned(1e-3, 5)}, CLASSES)
    work = Workload("hex8", 10 * 1000)  # 40 s on the 4090, 10 s on the H100
    soon, late = SlotGpu(H100, free_in_s=5.0), SlotGpu(H100, free_in_s=35.0)
    assert better_elsewhere(SlotGpu(RTX), [soon], GpuRequirement(), CLASSES, timed, work, 1.2) == []
    assert better_elsewhere(SlotGpu(RTX), [late], GpuRequirement(), CLASSES, timed, work, 1.2) == []
    assert better_elsewhere(SlotGpu(RTX), [SlotGpu(H100)], GpuRequirement(), CLASSES, timed, work, 1.2) == [
        SlotGpu(H100)]
    assert better_elsewhere(SlotGpu(RTX), [soon], GpuRequirement(), CLASSES, table, Workload("hex8"), 1.2) == []


def test_the_record_says_where_the_job_went_why_and_how_much_faster():
    table = SpeedTable({("hexagonal", "H100"): Learned(1e-5, 6), ("hexagonal", "24GB"): Learned(3.1e-5, 4)}, CLASSES)
    note = speed_note(table, "hexagonal", H100, [H100, RTX, Gpu("NVIDIA GeForce RTX 4090", 24, 1, "small")], CLASSES)
    assert note == "~3.1x the 24GB's epochs/h (learned on hexagonal)"
    text = placement_text("hexagonal_2p", "gpu-node-3", H100, BIG, note)
    assert text == ("hexagonal_2p -> gpu-node-3 (H100 80GB HBM3, 80 GB): needs >= 40 GB; "
                    "~3.1x the 24GB's epochs/h (learned on hexagonal)")
    prior = speed_note(SpeedTable({}, CLASSES), "hex8", H100, [H100, RTX], CLASSES)
    assert prior == "~3.0x the 24GB's epochs/h (prior)"
    assert speed_note(table, "hexagonal", H100, [H100], CLASSES) == ""  # one class: nothing to compare


def _handlers(conn, keys: Keys, settings: Settings) -> EventHandlers:
    return EventHandlers(settings, conn, keys, ConfigStore(conn, keys, settings.scheduler),
                         LeaseManager(conn, keys, 10.0, 1), ManualClock(1000.0), on_nodes_changed=lambda: None)


def test_the_coordinator_learns_from_training_progress_and_normalises_gpu_hours(fake_conn, keys):
    settings = Settings(gpus=GpuSettings(classes=CLASSES))
    fake_conn.hset(keys.job("j1"), mapping={"board_type": "hexagonal", "command": json.dumps(["{python}"]),
                                            "gpu_class": "H100", "samples": "1000", "config_key": "hexagonal_2p"})
    on = _handlers(fake_conn, keys, settings).by_type()
    progress = {"type": "TRAINING_PROGRESS", "job_id": "j1", "config_key": "hexagonal_2p", "epoch": "2"}
    on["TRAINING_PROGRESS"](Event("1-0", "TRAINING_PROGRESS", {**progress}))  # no epoch time: nothing learned
    for event_id, seconds in (("2-0", "3.0"), ("3-0", "5.0")):
        timed = {**progress, "epoch_time_s": seconds, "speed_class": "H100"}
        on["TRAINING_PROGRESS"](Event(event_id, "TRAINING_PROGRESS", timed))
    assert SpeedStore(fake_conn, keys).read() == {("hexagonal", "H100"): (pytest.approx(4.0 / 1000), 2)}
    # A completed hour on the H100 counts as prior(H100) reference (RTX 4090) hours.
    on["TRAINING_COMPLETE"](Event("4-0", "TRAINING_COMPLETE", {"type": "TRAINING_COMPLETE", "job_id": "j1",
                                          "config_key": "hexagonal_2p", "duration_s": "3600"}))
    assert [float(h) for h in fake_conn.lrange(keys.gpu_hours("hexagonal_2p"), 0, -1)] == [SpeedPriors().h100]


def test_table_from_the_store(fake_conn, keys):
    SpeedStore(fake_conn, keys).observe("hex8", "24GB", 1e-3, 0.3, 1.0)
    table = table_from(SpeedStore(fake_conn, keys).read(), CLASSES, SpeedPriors())
    assert table.seconds_per_sample("hex8", "24GB") == pytest.approx(1e-3)
