"""Memory-aware placement (issue 26, step 2) on fakeredis: the queue a job goes on, the queues a
worker listens to, dispatch's count by matching (no head-of-line blocking), why a job waits, and
that the preempter, cancel and recovery find a job on its requirement's queue."""

from __future__ import annotations

import json

import fakeredis
import pytest
from rq import Queue

from coordinator import TrainingOrchestrator
from coordinator.core.gpu_requirements import Gpu, from_spec, queue_name, requirement_spec
from coordinator.core.keys import TRAINING_QUEUE, Keys
from coordinator.core.settings import GpuRequirement, parse_settings
from coordinator.ops.priorities_view import priorities_table
from coordinator.scheduling import placement
from coordinator.scheduling.placement import Placement, SlotGpu, max_matching, rank_gpus
from coordinator.service.recovery import Recovery
from coordinator.stores.gpus import GpuStore
from tests.support.exports import xadd_export
from tests.support.jobs import take_job
from workers import gpu_inventory
from workers.worker import TrainingWorker, fitting_queues

H100 = Gpu("NVIDIA H100 80GB HBM3", 80.0, 0, "big")
RTX4090 = Gpu("NVIDIA GeForce RTX 4090", 24.0, 0, "small-a")
UNKNOWN = Gpu("", 0.0, 0, "dark")
CLASSES = {"H100": {"models": ["H100"], "batch_size": 1536}, "24GB": {"models": ["RTX 4090"], "batch_size": 256}}
HOSTS = {"big": {"gpus": 1, "gpu": "H100 80GB HBM3", "gpu_memory_gb": 80, "cost_per_hour": 2.5},
         "small-a": {"gpus": 1, "gpu": "RTX 4090", "gpu_memory_gb": 24, "cost_per_hour": 0.45},
         "small-b": {"gpus": 1, "gpu": "RTX 4090", "gpu_memory_gb": 24, "cost_per_hour": 0.45}}
NEEDS_40 = GpuRequirement(40)


def settings_for(prefetch: int = 0, **gpus: object):
    return parse_settings({"training": {"data_roots": ["/data"]}, "hosts": HOSTS,
                           "scheduler": {"prefetch": prefetch},
                           "gpus": {"classes": CLASSES, "boards": {"hexagonal": {"min_memory_gb": 40}}, **gpus}})


def orchestrator(conn: fakeredis.FakeRedis, settings) -> TrainingOrchestrator:
    orch = TrainingOrchestrator(settings, conn, consumer_name="t")
    GpuStore(conn, orch.keys).declare_hosts(settings.hosts, 0.0)  # what `ringrift-train run` writes
    orch.prepare()
    return orch


def export_ranked(conn, keys: Keys, configs: list[tuple[str, int]]) -> None:
    """Exports for `configs`, ranked in this order by their curriculum weights."""
    weights = {f"{b}_{p}p": 2.0 - 0.2 * i for i, (b, p) in enumerate(configs)}
    conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", **{k: str(v) for k, v in weights.items()}})
    for board, players in configs:
        xadd_export(conn, (board, players), f"/data/{board}_{players}p.npz", 1000)


def queued_on(conn, name: str) -> list[str]:
    return Queue(name, connection=conn).job_ids


# -- the rule, pure ------------------------------------------------------------------------------------
def test_a_job_goes_on_the_queue_its_requirement_names_and_the_spec_round_trips():
    assert queue_name(GpuRequirement()) == queue_name(GpuRequirement(preferred=("H100",))) == TRAINING_QUEUE
    assert queue_name(NEEDS_40) == "training-ge40gb"
    assert queue_name(GpuRequirement(80, ("H100", "GH200"))) == "training-ge80gb-only-GH200-H100"
    settings = settings_for()
    requirement = GpuRequirement(80, ("H100",))
    assert from_spec(json.loads(json.dumps(requirement_spec(requirement, settings.gpus.classes))))[0] == requirement


def test_a_worker_listens_to_the_queues_its_gpu_meets_most_demanding_first():
    classes = settings_for().gpus.classes
    registered = {queue_name(r): json.dumps(requirement_spec(r, classes))
                  for r in (NEEDS_40, GpuRequirement(80), GpuRequirement(None, ("24GB",)), GpuRequirement(96))}
    assert fitting_queues(registered, H100) == ["training-ge80gb", "training-ge40gb"]
    assert fitting_queues(registered, RTX4090) == ["training-only-24GB"]
    assert fitting_queues(registered, UNKNOWN) == []  # unknown GPU: only jobs without a requirement


def test_a_waiting_big_job_does_not_block_small_jobs_from_free_small_gpus():
    """The head-of-line property: the big GPU is busy and a big job waits for it; both free small
    GPUs still get a small job each, with no prefetch at all."""
    small = [SlotGpu(RTX4090), SlotGpu(Gpu(RTX4090.model, 24.0, 0, "small-b"))]
    p = Placement([SlotGpu(H100), *small], list(small), {}, waiting=[NEEDS_40])
    assert p.admits(GpuRequirement(), prefetch=0)
    p.add(GpuRequirement())
    assert p.admits(GpuRequirement(), prefetch=0)
    p.add(GpuRequirement())
    assert not p.admits(GpuRequirement(), prefetch=0)  # both small GPUs have their job
    assert not p.admits(NEEDS_40, prefetch=0)  # nor a second big one: its GPU is busy
    assert p.why_waiting(NEEDS_40) == "no free GPU with >= 40 GB"
    assert not p.admits(GpuRequirement(120), prefetch=5)  # no GPU of the cluster has it: never queued
    assert p.why_waiting(GpuRequirement(120)).startswith("no GPU in the cluster with >= 120 GB")


def test_without_requirements_the_count_is_free_gpus_plus_prefetch():
    free = [SlotGpu(Gpu("", 0.0, i, "n")) for i in range(2)]
    p = Placement(list(free), free, {})
    for _ in range(3):
        assert p.admits(GpuRequirement(), prefetch=1)
        p.add(GpuRequirement())
    assert not p.admits(GpuRequirement(), prefetch=1)


def test_matching_places_the_constrained_job_first_whatever_the_order():
    slots = [SlotGpu(RTX4090), SlotGpu(H100)]
    fits = lambda r, s: s.gpu.memory_gb >= (r.min_memory_gb or 0)  # noqa: E731
    assert max_matching([GpuRequirement(), NEEDS_40], slots, fits) == 2
    assert max_matching([NEEDS_40, NEEDS_40], slots, fits) == 1


def test_the_seam_ranks_fitting_gpus_by_preferred_class_then_cost():
    cheap_big = SlotGpu(Gpu("H100", 80.0, 0, "cheap"), 1.0)
    dear_big = SlotGpu(Gpu("H100", 80.0, 0, "dear"), 3.0)
    classes = settings_for().gpus.classes
    assert rank_gpus(NEEDS_40, [SlotGpu(RTX4090, 0.1), dear_big, cheap_big], classes) == [cheap_big, dear_big]
    prefers_24 = GpuRequirement(None, None, ("24GB",))
    assert rank_gpus(prefers_24, [cheap_big, SlotGpu(RTX4090, 0.45)], classes)[0].gpu == RTX4090


# -- dispatch, the stores and the views on fakeredis -------------------------------------------------------
def test_dispatch_fills_small_gpus_past_a_big_job_that_waits(fake_conn, keys):
    """hexagonal_2p and hexagonal_3p (>= 40 GB) rank above hex8_2p and hex8_3p; one 80 GB GPU and two
    24 GB ones, no prefetch. Counting GPUs, dispatch would queue both hexagonal jobs and one hex8 job,
    and a 24 GB GPU would idle; by placement it queues one hexagonal job and both hex8 ones."""
    orch = orchestrator(fake_conn, settings_for())
    export_ranked(fake_conn, keys, [("hexagonal", 2), ("hexagonal", 3), ("hex8", 2), ("hex8", 3)])
    orch.process_once()
    active = {ck.decode(): v.decode() for ck, v in fake_conn.hgetall(keys.active).items()}
    assert set(active) == {"hexagonal_2p", "hex8_2p", "hex8_3p"}
    assert queued_on(fake_conn, "training-ge40gb") == [active["hexagonal_2p"]]
    assert sorted(queued_on(fake_conn, TRAINING_QUEUE)) == sorted([active["hex8_2p"], active["hex8_3p"]])
    assert orch.jobs.get(active["hexagonal_2p"])["rq_queue"] == "training-ge40gb"
    spec = json.loads(fake_conn.hget(keys.placement_queues, "training-ge40gb"))
    assert spec["min_memory_gb"] == 40
    notes = placement.notes(fake_conn, keys, orch.leases, orch.settings.gpus,
                            ["hexagonal_2p", "hexagonal_3p", "hex8_4p"])
    assert notes == {"hexagonal_2p": "needs >= 40 GB: big (H100 80GB HBM3, 80 GB) is free",
                     "hexagonal_3p": "no free GPU with >= 40 GB (queued jobs take the free ones)"}
    table = priorities_table(orch.scheduler.ranked(), orch.settings.scheduler, placement=notes)
    assert any("no free GPU with >= 40 GB" in cell for cell in table.columns[-1]._cells)


def test_a_config_no_gpu_of_the_cluster_fits_is_not_queued_and_says_why(fake_conn, keys):
    """The only 80 GB node is down: hexagonal_2p fits no usable GPU. Dispatch passes over it (no
    job that nothing would run, no loop) and queues hex8_2p; priorities says why."""
    orch = orchestrator(fake_conn, settings_for())
    orch.leases.set_node_health("big", "down")
    export_ranked(fake_conn, keys, [("hexagonal", 2), ("hex8", 2)])
    orch.process_once()
    assert orch.jobs.active_job("hexagonal_2p") is None and orch.jobs.active_job("hex8_2p") is not None
    orch.tick()  # and again: nothing loops
    assert orch.jobs.active_job("hexagonal_2p") is None
    why = placement.notes(fake_conn, keys, orch.leases, orch.settings.gpus, ["hexagonal_2p"])["hexagonal_2p"]
    assert why == "no GPU in the cluster with >= 40 GB: it waits for one to join"
    orch.leases.set_node_health("big", "healthy")
    orch._forget_slots()
    orch.tick()
    assert orch.jobs.active_job("hexagonal_2p") is not None


def test_queue_first_cancel_and_recovery_act_on_the_queue_the_job_is_on(fake_conn, keys):
    orch = orchestrator(fake_conn, settings_for(prefetch=3))
    export_ranked(fake_conn, keys, [("hexagonal", 2), ("hexagonal", 3)])
    orch.process_once()
    first, second = (orch.jobs.active_job(ck) for ck in ("hexagonal_2p", "hexagonal_3p"))
    assert queued_on(fake_conn, "training-ge40gb") == [first, second]
    assert orch.jobs.queue_first([second]) == 1
    assert queued_on(fake_conn, "training-ge40gb") == [second, first]
    assert Recovery(orch.jobs, orch.settings).requeue_lost() == []  # queued on its own queue: not lost
    from coordinator.service.metrics import Metrics
    from coordinator.stores.job_records import training_queues

    assert training_queues(fake_conn, keys) == {"training": 0, "training-ge40gb": 2}  # status' queue depth
    from prometheus_client import generate_latest

    assert "ringrift_queue_depth 2.0" in generate_latest(Metrics(fake_conn, keys, orch.settings).registry).decode()
    assert orch.jobs.cancel(second) == "cancelled"
    assert queued_on(fake_conn, "training-ge40gb") == [first]


def test_a_training_worker_adds_the_queues_its_gpu_meets(fake_conn, keys, monkeypatch):
    orch = orchestrator(fake_conn, settings_for(prefetch=3))
    export_ranked(fake_conn, keys, [("hexagonal", 2), ("hex8", 2)])
    orch.process_once()
    for gpu, expected in ((RTX4090, [TRAINING_QUEUE]), (H100, ["training-ge40gb", TRAINING_QUEUE]),
                          (UNKNOWN, [TRAINING_QUEUE])):
        registered = gpu_inventory.Registered(
            None, gpu_inventory.Slot(gpu.node, (0,), "w", (gpu,)), "ringrift")  # type: ignore[arg-type]
        monkeypatch.setattr(gpu_inventory, "_current", registered)
        worker = TrainingWorker([Queue(TRAINING_QUEUE, connection=fake_conn)], connection=fake_conn, name="w")
        assert worker.listen_for_placement() == expected


@pytest.mark.parametrize("with_requirement", [False, True])
def test_without_requirements_dispatch_is_unchanged(fake_conn, keys, with_requirement):
    """No board or config needs anything of a GPU: the GPU count as before (3 GPUs, 3 jobs)."""
    gpus = {} if with_requirement else {"boards": {}}
    orch = orchestrator(fake_conn, settings_for(**gpus))
    export_ranked(fake_conn, keys, [("hex8", 2), ("hex8", 3), ("hex8", 4), ("square8", 2)])
    orch.process_once()
    assert fake_conn.hlen(keys.active) == 3


def test_a_starving_big_config_has_a_small_job_moved_off_the_big_gpu_not_one_stopped_on_a_small_gpu(
        fake_conn, keys):
    """Issue 26, item 4: the wait bound for a job only some GPUs can run. All three GPUs busy with
    hex8 jobs; hexagonal_2p starves: the job on the H100 yields (it can move to a 4090 later), not
    a cheaper one on a 4090 that the hexagonal job could not use."""
    import time

    from coordinator.scheduling.preempter import Preempter

    orch = orchestrator(fake_conn, settings_for(prefetch=0))
    now = time.time()
    jobs = {}
    for node, players in (("big", 2), ("small-a", 3), ("small-b", 4)):
        job_id = orch.submit_training_sync("hex8", players, f"/data/hex8_{players}p.npz", samples=100)
        lease = take_job(orch, job_id, f"hex8_{players}p", node=node)
        gpu = {"big": ("H100 80GB HBM3", "80"), "small-a": ("RTX 4090", "24"), "small-b": ("RTX 4090", "24")}[node]
        fake_conn.hset(keys.job(job_id), mapping={"started_at": f"{now - 3 * 3600:.3f}", "gpu_model": gpu[0],
                                                  "gpu_memory_gb": gpu[1]})
        jobs[node] = (job_id, lease)
    # The job on the H100 has the most valuable config: value alone would never pick it.
    fake_conn.hset(keys.config("hex8_2p"), "curriculum_weight", 2.0)
    xadd_export(fake_conn, ("hexagonal", 2), "/data/hexagonal_2p.npz", 1000)
    orch.process_once(block_ms=None)
    fake_conn.hset(keys.config("hexagonal_2p"), "waiting_since", f"{now - 20 * 3600:.3f}")
    orch.scheduler.rescore()
    preempter = Preempter(orch.jobs, orch.scheduler, orch.settings, leases=orch.leases)
    assert preempter.tick(free_slots=0) == [jobs["big"][0]]
    assert fake_conn.hget(keys.job(jobs["big"][0]), "preempt_for") == b"hexagonal_2p"
