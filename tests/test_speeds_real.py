"""Issue 26, step 3, on a real redis-server: `ringrift-train run`, two real `rq worker training`
processes declaring an H100 and an RTX 4090, and a stub trainer whose epochs take 0.1 s on the
H100 and 0.5 s on the 4090 (tests/support/speed_trainer.py). The operator's prior claims the 4090
is 5x faster; the coordinator learns the opposite from the first two trainings' epoch times, and
the next job, which both free GPUs fit, goes to the H100, its record saying how much faster."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.core.keys import Keys
from coordinator.stores.speeds import SpeedStore
from coordinator.trainer.command import REFERENCE_ARGS
from tests.support.exports import xadd_export
from tests.support.polling import wait_for
from tests.support.trainers import write_npz

SPEED_TRAINER = ["{python}", "-m", "tests.support.speed_trainer", "--gpu-class", "{gpu_class}", *REFERENCE_ARGS]
HOSTS = {"node-0": {"gpus": 1, "gpu": "H100 80GB HBM3", "gpu_memory_gb": 80},
         "node-1": {"gpus": 1, "gpu": "RTX 4090", "gpu_memory_gb": 24}}
GPUS = {"classes": {"H100": {"models": ["H100"], "relative_speed": 1.0},
                    "24GB": {"models": ["RTX 4090"], "relative_speed": 5.0}}}  # a wrong prior


def record(conn, keys: Keys, config_key: str) -> dict[str, str]:
    for job_id in conn.zrange(keys.jobs, 0, -1):
        r = {k.decode(): v.decode() for k, v in conn.hgetall(keys.job(job_id.decode())).items()}
        if r.get("config_key") == config_key:
            return r
    return {}


@pytest.mark.slow
def test_a_job_both_free_gpus_fit_goes_to_the_one_learned_faster(redis_server, real_conn, keys, service,
                                                                   rq_workers, tmp_path: Path):
    rq_workers(1, extra_env={"RINGRIFT_GPU": "NVIDIA H100 80GB HBM3", "RINGRIFT_GPU_MEMORY_GB": "80"})  # node-0
    rq_workers(1, extra_env={"RINGRIFT_GPU": "NVIDIA GeForce RTX 4090", "RINGRIFT_GPU_MEMORY_GB": "24"})  # node-1
    service(SPEED_TRAINER, epochs=3, hosts=HOSTS, gpus=GPUS, scheduler={"prefetch": 0})
    wait_for(lambda: real_conn.scard(keys.gpu_nodes) == 2 and real_conn.zcard(keys.gpu_idle) == 2, timeout_s=60)
    # Two trainings at once: one on each GPU; their epochs teach the speeds.
    for players in (2, 3):
        xadd_export(real_conn, ("hex8", players), write_npz(tmp_path / f"hex8_{players}p.npz", "hex8", players), 1000)
    wait_for(lambda: all(record(real_conn, keys, f"hex8_{p}p").get("state") == "complete" for p in (2, 3)),
             timeout_s=60)
    assert {record(real_conn, keys, f"hex8_{p}p")["node"] for p in (2, 3)} == {"node-0", "node-1"}
    wait_for(lambda: len(SpeedStore(real_conn, keys).read()) == 2, timeout_s=30)
    learned = SpeedStore(real_conn, keys).read()
    assert learned[("hex8", "24GB")][0] > 3 * learned[("hex8", "H100")][0]  # ~0.5 ms against ~0.1 ms a sample
    wait_for(lambda: real_conn.zcard(keys.gpu_idle) == 2, timeout_s=30)  # both free again

    xadd_export(real_conn, ("hex8", 4), write_npz(tmp_path / "hex8_4p.npz", "hex8", 4), 1000)
    wait_for(lambda: record(real_conn, keys, "hex8_4p").get("state") == "complete", timeout_s=60)
    job = record(real_conn, keys, "hex8_4p")
    assert job["node"] == "node-0", job
    assert job["placement"].startswith("hex8_4p -> node-0 (H100 80GB HBM3, 80 GB): no GPU requirement: any GPU; ~")
    assert job["placement"].endswith("x the 24GB's epochs/h (learned on hex8)")
