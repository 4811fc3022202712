"""Leases on a real redis-server with real processes: contention, SIGSTOP past the TTL, node slots."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from coordinator.core.keys import Keys
from coordinator.stores.jobs import JobStore
from tests.conftest import stream_events, wait_for, xadd_like_an_exporter
from tests.lease_contender import LOG

pytestmark = pytest.mark.integration
CONTENDERS, ROUNDS = 8, 40


def test_eight_processes_never_hold_one_config_at_once(redis_server, real_conn):
    procs = [subprocess.Popen([sys.executable, "-m", "tests.lease_contender", redis_server.url, str(ROUNDS), f"p{i}"])
             for i in range(CONTENDERS)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    log = [line.decode().split() for line in real_conn.lrange(LOG, 0, -1)]
    assert len(log) == 2 * CONTENDERS * ROUNDS
    overlaps, fences = 0, []
    for i in range(0, len(log), 2):
        (kind_a, fence_a, who_a), (kind_b, fence_b, who_b) = log[i], log[i + 1]
        if not (kind_a == "start" and kind_b == "end" and fence_a == fence_b and who_a == who_b):
            overlaps += 1
        fences.append(int(fence_a))
    print(f"\ncontention: {CONTENDERS} processes x {ROUNDS} rounds = {len(fences)} holds, overlaps: {overlaps}")
    assert overlaps == 0
    assert fences == sorted(fences) and len(set(fences)) == len(fences)  # fencing tokens only grow


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_a_holder_stopped_past_its_ttl_is_fenced_at_publish(redis_server, real_conn, service, rq_workers, tmp_path):
    """Worker 1 is SIGSTOPped mid-training; its lease expires; the orchestrator's reaper requeues the
    job and worker 2 trains it under a newer fencing token; worker 1, continued, cannot publish."""
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"stub")
    service(["{python}", "-m", "workers.stub_train", "--epoch-seconds", "2"], epochs=1, leases={"ttl_s": 1.0})
    [first] = rq_workers(1)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", "hex8_2p",
                          "npz_path", str(npz), "samples", "100")
    [started] = wait_for(lambda: stream_events(real_conn, "TRAINING_STARTED"), timeout_s=30)
    job_id = started.fields["job_id"]
    wait_for(lambda: any("stub_train" in " ".join(p.cmdline()) for p in _descendants(first.pid)), timeout_s=10)
    time.sleep(1.0)  # the trainer is past its start-up, inside its 2 s epoch
    stopped = _descendants(first.pid)  # the work horse and the trainer
    for proc in stopped:
        proc.send_signal(signal.SIGSTOP)
    try:
        [lost] = wait_for(lambda: [e for e in stream_events(real_conn, "TRAINING_FAILED")
                                   if e.fields["reason"] == "worker_lost"], timeout_s=10)  # reaped after the TTL
        assert lost.fields["will_retry"] == "true" and lost.fields["failure_class"] == "infrastructure"
        assert not real_conn.exists(Keys("ringrift").lease("hex8_2p"))
        rq_workers(1)  # worker 2 takes attempt 2 with fence 2
        wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=30)
    finally:
        # Continue the trainer first (its sleep is over: it exits 0), then the horse, which publishes.
        for proc in sorted(stopped, key=lambda p: "stub_train" not in " ".join(p.cmdline())):
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.5)
    store = JobStore(real_conn, Keys("ringrift"))
    [fenced] = wait_for(lambda: [e for e in stream_events(real_conn, "TRAINING_FAILED")
                                 if e.fields["reason"] == "fenced"], timeout_s=30)
    [complete] = stream_events(real_conn, "TRAINING_COMPLETE")
    print(f"\nSIGSTOP scenario: attempt 1 (fence {fenced.fields.get('fence')}) -> {fenced.fields['reason']}: "
          f"{fenced.fields['error']}; attempt {complete.fields['attempt']} (fence {complete.fields['fence']}) "
          f"published {complete.fields['model_path']}")
    assert fenced.fields["reason"] == "fenced"
    assert complete.fields["attempt"] == "2" and complete.fields["fence"] == "2"
    config = real_conn.hgetall("ringrift:config:hex8_2p")
    assert config[b"latest_model"].decode() == complete.fields["model_path"] and config[b"latest_fence"] == b"2"
    assert store.get(job_id)["state"] == "complete" and store.get(job_id)["last_stale_attempt"] == "1"


def test_a_node_with_two_gpus_never_runs_three_trainings(redis_server, real_conn, service, rq_workers, tmp_path):
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"stub")
    service(["{python}", "-m", "workers.stub_train", "--epoch-seconds", "0.4"], epochs=2,
            hosts={"gpu-node": 2}, scheduler={"prefetch": 2}, leases={"defer_s": 0.3})
    rq_workers(4, extra_env={"RINGRIFT_NODE": "gpu-node"})
    configs = [f"{b}_{p}p" for b in ("hex8", "square8", "square19") for p in (2, 3)]
    for config_key in configs:
        xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", config_key,
                              "npz_path", str(npz), "samples", "100")
    wait_for(lambda: len(stream_events(real_conn, "TRAINING_COMPLETE")) == len(configs), timeout_s=120)
    timeline = sorted((int(e.id.split("-")[0]), 1 if e.type == "TRAINING_STARTED" else -1)
                      for e in stream_events(real_conn) if e.type in ("TRAINING_STARTED", "TRAINING_COMPLETE"))
    running = peak = 0
    for _, delta in timeline:
        running += delta
        peak = max(peak, running)
    deferrals = sum(int(j.get("deferrals", 0)) for j in JobStore(real_conn, Keys("ringrift")).list(50))
    print(f"\nnode slots: {len(configs)} trainings on 4 workers sharing 2 GPUs: peak {peak} at once, "
          f"{deferrals} deferrals")
    assert peak == 2
    assert deferrals > 0  # the third and fourth workers found the node full and moved on


def test_locks_command_shows_holders_and_slots(redis_server, real_conn):
    import json

    from coordinator.stores.leases import LeaseManager
    from tests.conftest import console_script

    leases = LeaseManager(real_conn, Keys("ringrift"), ttl_s=60, default_slots=1)
    leases.register_nodes({"gpu-a": 2, "gpu-b": 1})
    leases.set_node_health("gpu-b", "down")
    leases.try_acquire("hex8_2p", "gpu-a", "worker-1", "job-42")
    env = {"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"}
    out = json.loads(subprocess.run([console_script("ringrift-train"), "locks", "--json"], env=env,
                                    capture_output=True, text=True, timeout=60, check=True).stdout)
    [held] = out["leases"]
    assert (held["config_key"], held["node"], held["worker"], held["job_id"], held["fence"]) == (
        "hex8_2p", "gpu-a", "worker-1", "job-42", "1")
    assert 50_000 < int(held["ttl_left_ms"]) <= 60_000
    assert out["nodes"] == [{"node": "gpu-a", "gpus": "2", "status": "healthy", "in_use": "1"},
                            {"node": "gpu-b", "gpus": "1", "status": "down", "in_use": "0"}]
    text = subprocess.run([console_script("ringrift-train"), "locks"], env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert "job-42" in text and "1/2" in text
