"""The shipped worker's placement steps as functions a caller passes its own state to, so the scheduling
simulator calls them instead of copying them: the keep-or-hand-back decision with its put-back
(`workers.worker.keep_or_hand_back`), and recording the attempt's GPU from a given registration
(`workers.tasks._record_gpu(made=...)`) rather than the process-global one; and whether a worker's
GPUs are held by others' leases (`workers.worker.slot_held`)."""

from __future__ import annotations

import fakeredis
import pytest
from rq.intermediate_queue import IntermediateQueue

from coordinator.core.gpu_requirements import Gpu
from coordinator.core.keys import Keys
from coordinator.core.settings import parse_settings, worker_settings_json
from coordinator.scheduling.placement import SlotGpu
from coordinator.stores.gpus import NVML, NodeInventory, slot_of
from coordinator.stores.jobs import JobStore
from coordinator.stores.leases import LeaseManager
from workers import gpu_inventory
from workers.tasks import _record_gpu
from workers.worker import KEEP, LEAVE_S, TO_BUSY, TO_IDLE, keep_or_hand_back, slot_held

QUEUE = "rq:queue:training"
H100 = Gpu("NVIDIA H100 80GB HBM3", 80.0, 0, "gpu-node-1")
RTX4090 = Gpu("NVIDIA GeForce RTX 4090", 24.0, 2, "gpu-node-3")
GPUS = {"classes": {"H100": {"models": ["H100"], "batch_size": 1536},
                    "24GB": {"models": ["RTX 4090"], "batch_size": 256}}}
IDLE_H100 = SlotGpu(H100)
BUSY_H100 = SlotGpu(H100, free_in_s=120.0)


@pytest.fixture
def conn() -> fakeredis.FakeRedis:
    c = fakeredis.FakeRedis()
    c.rpush(QUEUE, "rq-2")
    c.rpush(IntermediateQueue(QUEUE, c).key, "rq-1")  # RQ's blocking dequeue moved rq-1 there
    return c


def test_a_job_is_kept_when_no_more_better_gpus_than_jobs_waiting_behind_it(conn):
    left: dict[str, float] = {}
    assert keep_or_hand_back(conn, QUEUE, "rq-1", [], 0, left, 100.0) == KEEP
    assert keep_or_hand_back(conn, QUEUE, "rq-1", [IDLE_H100], 1, left, 100.0) == KEEP
    assert conn.lrange(QUEUE, 0, -1) == [b"rq-2"] and left == {}


def test_a_job_for_an_idle_better_gpu_goes_back_to_the_front_and_is_kept_if_it_comes_back_within_leave_s(conn):
    left = {"old": 50.0}
    assert keep_or_hand_back(conn, QUEUE, "rq-1", [IDLE_H100], 0, left, 100.0) == TO_IDLE
    assert conn.lrange(QUEUE, 0, -1) == [b"rq-1", b"rq-2"]
    assert conn.lrange(IntermediateQueue(QUEUE, conn).key, 0, -1) == []
    assert left == {"rq-1": 100.0 + LEAVE_S}  # the expired entry is gone
    conn.lpop(QUEUE)
    assert keep_or_hand_back(conn, QUEUE, "rq-1", [IDLE_H100], 0, left, 100.0 + LEAVE_S / 2) == KEEP
    assert keep_or_hand_back(conn, QUEUE, "rq-1", [IDLE_H100], 0, left, 101.0 + LEAVE_S) == TO_IDLE


def test_a_job_for_better_gpus_all_busy_goes_back_and_the_caller_leaves_the_queue(conn):
    left: dict[str, float] = {}
    assert keep_or_hand_back(conn, QUEUE, "rq-1", [BUSY_H100], 0, left, 100.0) == TO_BUSY
    assert conn.lrange(QUEUE, 0, -1) == [b"rq-1", b"rq-2"] and left == {}


def _registered(gpu: Gpu, prefix: str) -> gpu_inventory.Registered:
    inventory = NodeInventory(gpu.node, NVML, (gpu,))
    return gpu_inventory.Registered(inventory, slot_of(inventory, None, "w"), prefix)


def test_the_attempts_gpu_is_recorded_from_the_registration_given_else_the_processs(monkeypatch):
    conn, keys = fakeredis.FakeRedis(), Keys("t")
    s = parse_settings({"training": {"data_roots": ["/data"]}, "gpus": GPUS})
    store = JobStore.from_settings(conn, keys, s)
    record = {"job_id": "j", "config_key": "hexagonal_2p", "board_type": "hexagonal", "num_players": "2",
              "epochs": "3", "batch_size": str(s.training.batch_size), "command": "[]",
              "settings": worker_settings_json(s)}
    monkeypatch.setattr(gpu_inventory, "_current", _registered(RTX4090, "t"))
    _record_gpu(store, s, record, "w", resumes=False, made=_registered(H100, "t"))
    assert conn.hget(keys.job("j"), "gpu_class") == b"H100" and conn.hget(keys.job("j"), "batch_size_used") == b"1536"
    _record_gpu(store, s, record, "w", resumes=False)  # the real worker: its process's registration
    assert conn.hget(keys.job("j"), "gpu_class") == b"24GB"
    assert gpu_inventory.current().slot.gpus[0] == RTX4090  # nothing swapped the global


def test_a_worker_of_the_whole_node_waits_only_when_every_gpu_of_the_node_is_held():
    conn, keys = fakeredis.FakeRedis(), Keys("t")
    leases = LeaseManager(conn, keys, ttl_s=60, default_slots=1)
    leases.register_nodes({"n": 2})  # an integer hosts entry: 2 GPUs, model unknown
    unknown = NodeInventory("n", gpu_inventory.UNKNOWN, (Gpu("", 0.0, 0, "n"),))  # the worker could not count them
    whole = gpu_inventory.Registered(unknown, slot_of(unknown, None, "w1"), "t", whole_node=True)
    pinned = gpu_inventory.Registered(unknown, slot_of(unknown, (0,), "w2"), "t")  # CUDA_VISIBLE_DEVICES=0
    assert not slot_held(conn, whole) and not slot_held(conn, pinned)
    assert leases.try_acquire("hex8_2p", "n", "w0", "j1", devices=(0,)).devices == (0,)
    assert slot_held(conn, pinned)  # its one GPU is taken
    assert not slot_held(conn, whole)  # device 1 is still free: it must go on taking jobs
    assert leases.try_acquire("hex8_3p", "n", "w3", "j2", devices=(0,)).devices == (1,)
    assert slot_held(conn, whole)
