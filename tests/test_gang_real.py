"""Issue 27, step 1, on a real redis-server with `ringrift-train run` and real `rq worker training`
processes, one per GPU (the README's node set-up), running a stub torchrun-style trainer that
records what it was given and holds its master port (tests/support/gang_trainer.py):

- a 2-GPU job on a node that declares 2 GPUs gets CUDA_VISIBLE_DEVICES=0,1, nproc 2 and a free
  master port, while 1-GPU jobs run on the other node (the 2-GPU node's second worker stays idle
  while the gang holds its GPU);
- two 2-GPU jobs on a 3-GPU node never deadlock: both complete, one after the other, and no
  partial hold is ever sampled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coordinator.core.keys import Keys
from coordinator.ops.workers_pool import start_worker, stop_workers
from coordinator.trainer.command import REFERENCE_ARGS
from tests.support.exports import xadd_export
from tests.support.gang import assert_no_partial_hold
from tests.support.gated_train import hold, release
from tests.support.polling import wait_for
from tests.support.races import GATED_STUB
from tests.support.streams import stream_events
from tests.support.trainers import write_npz

GANG = {"boards": {"square19": {"gpus": 2}}}
LEASES = {"defer_s": 1.0, "acquire_max_delay_s": 0.1}


def gang_trainer(record_dir: Path) -> list[str]:
    return ["{python}", "-m", "tests.support.gang_trainer", "--record-dir", str(record_dir),
            "--nproc", "{nproc_per_node}", "--devices", "{devices}", "--master-port", "{master_port}",
            *REFERENCE_ARGS]


@pytest.fixture
def node_workers(redis_server, tmp_path: Path) -> Iterator[Callable[[str, int], None]]:
    """Start one real `rq worker training` per GPU of a node (CUDA_VISIBLE_DEVICES=i, RINGRIFT_GPUS)."""
    procs: list = []

    def start(node: str, gpus: int) -> None:
        for i in range(gpus):
            env = {"OMP_NUM_THREADS": "1", "RINGRIFT_GPUS": str(gpus), "CUDA_VISIBLE_DEVICES": str(i)}
            procs.append(start_worker(redis_server.url, f"{node}-gpu{i}", node, env,
                                      log_path=tmp_path / f"{node}-gpu{i}.log"))

    yield start
    stop_workers(procs, cold=True)


def by_config(conn, keys: Keys) -> dict[str, dict[str, str]]:
    ids = [i.decode() for i in conn.zrange(keys.jobs, 0, -1)]
    out = {}
    for job_id in ids:
        record = {k.decode(): v.decode() for k, v in conn.hgetall(keys.job(job_id)).items()}
        out[record["config_key"]] = record
    return out


def trainer_records(record_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(record_dir.glob("*.json"))]


def test_a_two_gpu_job_gets_both_gpus_of_its_node_while_one_gpu_jobs_run_on_the_other(
        redis_server, real_conn, keys, service, node_workers, tmp_path: Path):
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    node_workers("duo", 2)
    node_workers("solo", 1)
    service(gang_trainer(record_dir), epochs=2, hosts={"duo": 2, "solo": 1}, gpus=GANG, leases=LEASES)
    wait_for(lambda: real_conn.hget("rq:worker:duo-gpu0", "queues") == b"training-x2gpus,training", timeout_s=30)
    assert real_conn.hget("rq:worker:solo-gpu0", "queues") == b"training"  # one GPU: never the gang's queue
    big = write_npz(tmp_path / "square19_2p.npz", "square19", 2)
    hold(big, 1)
    xadd_export(real_conn, ("square19", 2), big, 1000)
    wait_for(lambda: by_config(real_conn, keys).get("square19_2p", {}).get("epoch"), timeout_s=30)
    gang = by_config(real_conn, keys)["square19_2p"]
    assert (gang["node"], gang["gpu_devices"], gang["gpus_held"], gang["master_port"]) == ("duo", "0,1", "2", "29500")
    (seen,) = trainer_records(record_dir)
    assert (seen["CUDA_VISIBLE_DEVICES"], seen["nproc_per_node"], seen["devices"]) == ("0,1", 2, "0,1")
    assert seen["master_port"] == 29500 and seen["port_bound"]  # free: it bound it

    # While the gang holds both of duo's GPUs, the 1-GPU jobs train on solo.
    for players in (2, 3):
        xadd_export(real_conn, ("hex8", players), write_npz(tmp_path / f"hex8_{players}p.npz", "hex8", players), 1000)
    wait_for(lambda: all(by_config(real_conn, keys).get(f"hex8_{p}p", {}).get("state") == "complete" for p in (2, 3)),
             timeout_s=60)
    jobs = by_config(real_conn, keys)
    assert {jobs["hex8_2p"]["node"], jobs["hex8_3p"]["node"]} == {"solo"}
    assert {jobs["hex8_2p"]["gpu_devices"], jobs["hex8_3p"]["gpu_devices"]} == {"0"}
    assert jobs["square19_2p"]["state"] == "running"
    assert_no_partial_hold(real_conn, keys, "duo", gpus=2, total=2)
    release(big)
    wait_for(lambda: by_config(real_conn, keys)["square19_2p"]["state"] == "complete", timeout_s=30)
    assert not [e.fields for e in stream_events(real_conn, "TRAINING_FAILED")]


def test_two_two_gpu_jobs_on_a_three_gpu_node_run_one_after_the_other(
        redis_server, real_conn, keys, service, node_workers, tmp_path: Path):
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    node_workers("trio", 3)
    service([*gang_trainer(record_dir), "--epoch-seconds", "0.5"], epochs=3, hosts={"trio": 3}, gpus=GANG,
            leases=LEASES, scheduler={"prefetch": 1})
    wait_for(lambda: real_conn.hget("rq:worker:trio-gpu2", "queues") == b"training-x2gpus,training", timeout_s=30)
    for players in (2, 3):
        xadd_export(real_conn, ("square19", players), write_npz(tmp_path / f"sq{players}.npz", "square19", players),
                    1000)
    samples = 0

    def both_done() -> bool:
        nonlocal samples
        assert_no_partial_hold(real_conn, keys, "trio", gpus=2, total=3)
        samples += 1
        jobs = by_config(real_conn, keys)
        return all(jobs.get(f"square19_{p}p", {}).get("state") == "complete" for p in (2, 3))

    wait_for(both_done, timeout_s=60)
    ran = trainer_records(record_dir)
    assert sorted(r["config_key"] for r in ran) == ["square19_2p", "square19_3p"]
    first, second = sorted(ran, key=lambda r: r["started"])
    assert first["ended"] <= second["started"]  # one after the other: never both, never half of each
    assert all(len(r["CUDA_VISIBLE_DEVICES"].split(",")) == 2 for r in ran)
    assert not [e.fields for e in stream_events(real_conn, "TRAINING_FAILED")]
    assert samples > 3


def test_a_waiting_two_gpu_job_reserves_its_node_where_a_long_job_is_refused_and_runs_elsewhere(
        redis_server, real_conn, keys, service, node_workers, tmp_path: Path):
    """Step 2 (backfill with reservations): the gang job waiting for duo's busy GPUs reserves duo; a
    1-GPU job of unknown length that a free duo GPU dequeues is handed back (it could outlast the
    reservation) and trains on solo once solo has a worker; the gang job then gets duo's GPUs."""
    node_workers("duo", 2)
    service(GATED_STUB, epochs=2, hosts={"duo": 2, "solo": 1}, gpus=GANG, leases=LEASES,
            scheduler={"rescore_interval_s": 1})
    wait_for(lambda: real_conn.hget("rq:worker:duo-gpu1", "queues") == b"training-x2gpus,training", timeout_s=30)
    first, second = (tmp_path / f"hex8_{p}p.npz" for p in (2, 3))
    for players, npz in ((2, first), (3, second)):
        npz.write_bytes(b"stub")
        hold(npz, 1)
        xadd_export(real_conn, ("hex8", players), npz, 1000)
    wait_for(lambda: all(by_config(real_conn, keys).get(f"hex8_{p}p", {}).get("epoch") == "1" for p in (2, 3)),
             timeout_s=60)
    gang_npz = tmp_path / "square19_2p.npz"
    gang_npz.write_bytes(b"stub")
    xadd_export(real_conn, ("square19", 2), gang_npz, 1000)
    wait_for(lambda: real_conn.hget(keys.reservations, "duo"), timeout_s=30)
    reservation = json.loads(real_conn.hget(keys.reservations, "duo"))
    gang_id = by_config(real_conn, keys)["square19_2p"]["job_id"]
    assert (reservation["job_id"], reservation["gpus"], reservation["mode"]) == (gang_id, 2, "backfill")

    release(first)  # one of duo's GPUs frees; the other stays busy
    wait_for(lambda: by_config(real_conn, keys)["hex8_2p"]["state"] == "complete", timeout_s=30)
    long_npz = tmp_path / "square8_2p.npz"
    long_npz.write_bytes(b"stub")
    xadd_export(real_conn, ("square8", 2), long_npz, 1000)
    wait_for(lambda: "reserved for square19_2p" in by_config(real_conn, keys).get("square8_2p", {}).get(
        "deferred_reason", ""), timeout_s=30)
    assert by_config(real_conn, keys)["square8_2p"]["state"] == "queued"  # not started on duo
    node_workers("solo", 1)
    wait_for(lambda: by_config(real_conn, keys)["square8_2p"]["state"] == "complete", timeout_s=60)
    assert by_config(real_conn, keys)["square8_2p"]["node"] == "solo"
    assert by_config(real_conn, keys)["square19_2p"]["state"] == "queued"  # still waiting for duo's second GPU

    release(second)
    wait_for(lambda: by_config(real_conn, keys)["square19_2p"]["state"] == "complete", timeout_s=60)
    gang = by_config(real_conn, keys)["square19_2p"]
    assert (gang["node"], gang["gpu_devices"]) == ("duo", "0,1")
    wait_for(lambda: not real_conn.hexists(keys.reservations, "duo"), timeout_s=10)  # dropped at its start
    assert not [e.fields for e in stream_events(real_conn, "TRAINING_FAILED")]
