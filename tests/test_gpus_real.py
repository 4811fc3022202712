"""Issue 26, step 1 on a real redis-server: a real `rq worker training` process (the README's
worker class) with a declared GPU stores its node's inventory and its slot when it starts, and
`ringrift-train status --json` shows each slot's GPU; a node declared only in `hosts` shows its
declaration once `run` has recorded it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import yaml

from coordinator.core.settings import HostGpus
from coordinator.ops import cli
from coordinator.stores.gpus import GpuStore
from coordinator.stores.leases import LeaseManager
from tests.support.polling import wait_for


def test_a_worker_with_a_declared_gpu_stores_it_and_status_shows_each_slot(
        redis_server, real_conn, keys, rq_workers, tmp_path: Path, capsys):
    env = {"RINGRIFT_GPU": "NVIDIA GeForce RTX 4090", "RINGRIFT_GPU_MEMORY_GB": "24", "RINGRIFT_GPUS": "2",
           "CUDA_VISIBLE_DEVICES": "1"}
    rq_workers(1, extra_env=env)  # node-0, no NVML here: the environment declares its GPUs
    store = GpuStore(real_conn, keys)
    wait_for(lambda: store.inventory().get("node-0", {}).get("slots"), timeout_s=30)
    node = store.inventory()["node-0"]
    assert (node["source"], node["gpus"], node["gpu"]) == ("env", 2, "GeForce RTX 4090, 24 GB")
    assert real_conn.hget("ringrift:{lease}:gpu:node-0:1", "model") == b"NVIDIA GeForce RTX 4090"
    hosts = {"node-0": 2, "gpu-node-9": HostGpus(1, "NVIDIA H100 80GB HBM3", 80.0)}
    LeaseManager(real_conn, keys, 10, 1).register_nodes(dict(hosts))  # what `run` does: the orchestrator,
    store.declare_hosts(hosts, 0.0)  # then the GPUs hosts declares

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"redis": {"url": redis_server.url}, "training": {"data_roots": [str(tmp_path)]},
                                    "hosts": {"node-0": 2}}))
    assert cli.main(["--config", str(path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    nodes = {n["node"]: n for n in status["nodes"]}
    assert [(s["slot"], s["gpu"], s["worker"]) for s in nodes["node-0"]["gpu_slots"]] == [
        ("1", "GeForce RTX 4090, 24 GB", "test-worker-0")]
    worker = next(w for w in status["workers"] if w["name"] == "test-worker-0")
    assert (worker["gpu_slot"], worker["gpu"]) == ("1", "GeForce RTX 4090, 24 GB")
    assert cli.main(["--config", str(path), "status"]) == 0
    assert "GeForce RTX 4090, 24 GB" in capsys.readouterr().out
    assert cli.main(["--config", str(path), "locks", "--json"]) == 0
    locks = {n["node"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert locks["node-0"]["gpu"] == "GeForce RTX 4090, 24 GB"
    assert (locks["gpu-node-9"]["gpu"], nodes["gpu-node-9"]["gpu_source"]) == ("H100 80GB HBM3, 80 GB", "hosts")


def test_run_records_what_hosts_declares(redis_server, real_conn, keys, make_settings):
    """`ringrift-train run` (its `_declare_gpus` step) writes the declared GPUs; a node without a
    declaration is left out."""
    settings = make_settings(redis_server.url)
    declared = {"vast-4090": HostGpus(8, "RTX 4090", 24.0, 0.45, True), "plain": 2}
    cli._declare_gpus(replace(settings, hosts=declared))
    found = GpuStore(real_conn, keys).inventory()
    assert list(found) == ["vast-4090"]
    assert (found["vast-4090"]["gpus"], found["vast-4090"]["gpu"], found["vast-4090"]["ephemeral"]) == (
        8, "RTX 4090, 24 GB", True)
