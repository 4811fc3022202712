"""Issue 26, item 6: memory-aware placement on a real redis-server, with `ringrift-train run`, three
real `rq worker training` processes (the README's worker class) declaring different GPUs, and a
stub trainer that dies of out-of-memory on a GPU with less memory than its board needs
(tests/support/memory_trainer.py). A hexagonal job (>= 40 GB) only ever starts on the 80 GB GPU;
hex8 jobs fill the 24 GB ones while a second hexagonal job waits; no training fails; `status --json`
shows each slot's GPU and `priorities` why the waiting job waits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.core.keys import Keys
from coordinator.ops import cli
from coordinator.trainer.command import REFERENCE_ARGS
from tests.support.exports import xadd_export
from tests.support.gated_train import hold, release
from tests.support.memory_trainer import OOM_EXIT
from tests.support.polling import wait_for
from tests.support.streams import stream_events
from tests.support.trainers import write_npz

MEMORY_TRAINER = ["{python}", "-m", "tests.support.memory_trainer", "--gpu-memory-gb", "{gpu_memory_gb}",
                  *REFERENCE_ARGS]
BIG = {"RINGRIFT_GPU": "NVIDIA H100 80GB HBM3", "RINGRIFT_GPU_MEMORY_GB": "80"}
SMALL = {"RINGRIFT_GPU": "NVIDIA GeForce RTX 4090", "RINGRIFT_GPU_MEMORY_GB": "24"}
HOSTS = {"node-0": {"gpus": 1, "gpu": "H100 80GB HBM3", "gpu_memory_gb": 80},
         "node-1": {"gpus": 1, "gpu": "RTX 4090", "gpu_memory_gb": 24},
         "node-2": {"gpus": 1, "gpu": "RTX 4090", "gpu_memory_gb": 24}}
GPUS = {"classes": {"H100": {"models": ["H100"], "batch_size": 1536}, "24GB": {"models": ["RTX 4090"],
                                                                             "batch_size": 256}},
        "boards": {"hexagonal": {"min_memory_gb": 40}}}
CONFIGS = [("hexagonal", 2), ("hexagonal", 3), ("hex8", 2), ("hex8", 3)]  # ranked in this order


def test_the_stub_trainer_dies_of_out_of_memory_on_a_gpu_too_small_for_its_board(tmp_path: Path):
    """The control: the trainer the real test runs would fail if it were placed on a 24 GB GPU."""
    argv = [sys.executable, "-m", "tests.support.memory_trainer", "--gpu-memory-gb", "24", "--board-type",
            "hexagonal", "--data", str(tmp_path / "x.npz"), "--output-dir", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == OOM_EXIT and "CUDA out of memory" in done.stderr


def records(conn, keys: Keys) -> list[dict[str, str]]:
    ids = [i.decode() for i in conn.zrange(keys.jobs, 0, -1)]
    return [{k.decode(): v.decode() for k, v in conn.hgetall(keys.job(i)).items()} for i in ids]


def by_config(conn, keys: Keys) -> dict[str, dict[str, str]]:
    return {r["config_key"]: r for r in records(conn, keys)}


@pytest.mark.slow
def test_big_board_jobs_start_only_on_the_big_gpu_and_small_jobs_fill_the_small_ones(
        redis_server, real_conn, keys, service, rq_workers, tmp_path: Path, capsys):
    rq_workers(1, extra_env=BIG)  # node-0
    rq_workers(2, extra_env=SMALL)  # node-1, node-2
    service(MEMORY_TRAINER, epochs=2, hosts=HOSTS, gpus=GPUS, scheduler={"prefetch": 0})
    wait_for(lambda: real_conn.scard(keys.gpu_nodes) == 3 and real_conn.exists(keys.node("node-2")), timeout_s=60)
    # The service registered the requirement's queue at its first dispatch; the big worker listens to it
    # (within workers.worker.PLACEMENT_REFRESH_S), the small ones do not.
    wait_for(lambda: real_conn.hget("rq:worker:test-worker-0", "queues") == b"training-ge40gb,training", timeout_s=30)
    npz = {}
    for board, players in CONFIGS:
        npz[(board, players)] = write_npz(tmp_path / f"{board}_{players}p.npz", board, players)
        hold(npz[(board, players)], 1)  # every training pauses after its first epoch
    weights = {f"{b}_{p}p": str(2.0 - 0.2 * i) for i, (b, p) in enumerate(CONFIGS)}
    real_conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", **weights})
    for (board, players), path in npz.items():
        xadd_export(real_conn, (board, players), path, 1000)

    # The big GPU trains hexagonal_2p; the two small ones train hex8_2p and hex8_3p meanwhile.
    running = {"hexagonal_2p": "node-0", "hex8_2p": None, "hex8_3p": None}
    wait_for(lambda: all(by_config(real_conn, keys).get(ck, {}).get("epoch") for ck in running), timeout_s=90)
    # Both small workers have dequeued by now (each refreshes its queues first): neither took the big queue.
    assert [real_conn.hget(f"rq:worker:test-worker-{i}", "queues") for i in (1, 2)] == [b"training"] * 2
    jobs = by_config(real_conn, keys)
    assert jobs["hexagonal_2p"]["node"] == "node-0"
    assert {jobs["hex8_2p"]["node"], jobs["hex8_3p"]["node"]} == {"node-1", "node-2"}
    assert jobs["hexagonal_2p"]["placement"] == ("hexagonal_2p -> node-0 (H100 80GB HBM3, 80 GB): needs >= 40 GB; "
                                                 "~3.0x the 24GB's epochs/h (prior)")
    assert "hexagonal_3p" not in jobs  # waits: no free GPU with >= 40 GB
    path = tmp_path / "coordinator.yaml"
    assert cli.main(["--config", str(path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    slots = {n["node"]: [s["gpu"] for s in n["gpu_slots"]] for n in status["nodes"]}
    assert slots == {"node-0": ["H100 80GB HBM3, 80 GB"], "node-1": ["GeForce RTX 4090, 24 GB"],
                     "node-2": ["GeForce RTX 4090, 24 GB"]}
    # `priorities` says why the waiting job waits.
    assert cli.main(["--config", str(path), "priorities", "--json"]) == 0
    why = {p["config_key"]: p["placement"] for p in json.loads(capsys.readouterr().out)}
    assert why["hexagonal_3p"] == "no free GPU with >= 40 GB"
    assert cli.main(["--config", str(path), "priorities"]) == 0
    assert "no free GPU with >= 40 GB" in capsys.readouterr().out

    # The small GPUs free up first: they stay idle rather than take hexagonal_3p, which goes to the
    # big GPU once hexagonal_2p is done.
    for config in (("hex8", 2), ("hex8", 3)):
        release(npz[config])
    wait_for(lambda: all(by_config(real_conn, keys)[ck]["state"] == "complete" for ck in ("hex8_2p", "hex8_3p")),
             timeout_s=60)
    release(npz[("hexagonal", 2)])
    release(npz[("hexagonal", 3)])
    wait_for(lambda: by_config(real_conn, keys).get("hexagonal_3p", {}).get("state") == "complete", timeout_s=90)
    for record in records(real_conn, keys):
        if record["board_type"] == "hexagonal":
            assert record["node"] == "node-0", record
    assert not [e.fields for e in stream_events(real_conn, "TRAINING_FAILED")]
