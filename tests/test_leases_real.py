"""Leases on a real redis-server with real processes: contention, SIGSTOP past the TTL, node slots."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time

import psutil
import pytest

from coordinator.core.keys import Keys
from coordinator.stores.jobs import JobStore
from tests.support.exports import xadd_like_an_exporter
from tests.support.gated_train import hold, release
from tests.support.lease_contender import LOG
from tests.support.polling import wait_for
from tests.support.races import GATED_STUB
from tests.support.streams import stream_events

pytestmark = pytest.mark.integration
CONTENDERS, ROUNDS = 8, 40


def test_eight_processes_never_hold_one_config_at_once(redis_server, real_conn):
    procs = [subprocess.Popen([sys.executable, "-m", "tests.support.lease_contender", redis_server.url, str(ROUNDS),
                               f"p{i}"]) for i in range(CONTENDERS)]
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


def _signal(procs: tuple[psutil.Process, ...], sig: int) -> None:
    """Signal each in turn; one already reaped is skipped (the cleanup must reach the others)."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)


def _is_trainer(proc: psutil.Process) -> bool:
    return "tests.support.gated_train" in proc.cmdline()


def test_a_holder_stopped_past_its_ttl_is_fenced_at_publish(redis_server, real_conn, service, rq_workers, tmp_path):
    """Worker 1 is SIGSTOPped mid-training; its lease expires; the orchestrator's reaper requeues the
    job and worker 2 trains it under a newer fencing token; worker 1, continued, cannot publish."""
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"stub")
    hold(npz, 1)  # attempt 1 pauses after its first epoch: it is mid-training when stopped
    service(GATED_STUB, epochs=2, leases={"ttl_s": 1.0})
    [first] = rq_workers(1)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", "hex8_2p",
                          "npz_path", str(npz), "samples", "100")
    [progress] = wait_for(lambda: stream_events(real_conn, "TRAINING_PROGRESS"), timeout_s=30)
    job_id = progress.fields["job_id"]
    store = JobStore(real_conn, Keys("ringrift"))
    assert store.get(job_id)["state"] == "running"
    [trainer] = [p for p in _descendants(first.pid) if _is_trainer(p)]
    [horse] = [p for p in _descendants(first.pid) if p.pid != trainer.pid]
    _signal((horse, trainer), signal.SIGSTOP)
    try:
        [lost] = wait_for(lambda: [e for e in stream_events(real_conn, "TRAINING_FAILED")
                                   if e.fields["reason"] == "worker_lost"], timeout_s=30)  # reaped after the TTL
        assert lost.fields["will_retry"] == "true" and lost.fields["failure_class"] == "infrastructure"
        assert not real_conn.exists(Keys("ringrift").lease("hex8_2p"))
        release(npz)  # attempt 1 is stopped: only attempt 2 runs on
        rq_workers(1)  # worker 2 takes attempt 2 with fence 2
        wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=60)
        # The trainer alone goes on: it trains its last epoch and exits 0, a zombie under its stopped
        # horse. Only then the horse: it finds a finished training to publish (not one to kill for
        # its lost lease, which its lease keeper would report first if the trainer still ran).
        trainer.send_signal(signal.SIGCONT)
        wait_for(lambda: trainer.status() == psutil.STATUS_ZOMBIE, timeout_s=30)
    finally:
        _signal((trainer, horse), signal.SIGCONT)
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
    hold(npz, 1)  # the first trainings pause after an epoch: the node stays full until the test lets go
    service(GATED_STUB, epochs=2, hosts={"gpu-node": 2}, scheduler={"prefetch": 2}, leases={"defer_s": 0.3})
    rq_workers(4, extra_env={"RINGRIFT_NODE": "gpu-node"})
    configs = [f"{b}_{p}p" for b in ("hex8", "square8", "square19") for p in (2, 3)]
    for config_key in configs:
        xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", config_key,
                              "npz_path", str(npz), "samples", "100")
    store = JobStore(real_conn, Keys("ringrift"))

    def deferrals() -> int:
        return sum(int(j.get("deferrals", 0)) for j in store.list(50))

    # Two trainings hold the node's two GPUs. The third and fourth workers share those GPUs: one that
    # dequeued before the leases were taken finds the node full and defers its job; one that looks
    # after sees its GPU held and takes nothing (which of the two happens is a race). Either way no
    # third training starts while the gate holds the first two, however long it holds them.
    wait_for(lambda: len(stream_events(real_conn, "TRAINING_PROGRESS")) == 2, timeout_s=120)
    time.sleep(2.0)  # several defer periods (0.3-0.6 s) and dequeue steps (1 s)
    assert len(stream_events(real_conn, "TRAINING_STARTED")) == 2
    release(npz)
    wait_for(lambda: len(stream_events(real_conn, "TRAINING_COMPLETE")) == len(configs), timeout_s=120)
    timeline = sorted((int(e.id.split("-")[0]), 1 if e.type == "TRAINING_STARTED" else -1)
                      for e in stream_events(real_conn) if e.type in ("TRAINING_STARTED", "TRAINING_COMPLETE"))
    running = peak = 0
    for _, delta in timeline:
        running += delta
        peak = max(peak, running)
    print(f"\nnode slots: {len(configs)} trainings on 4 workers sharing 2 GPUs: peak {peak} at once, "
          f"{deferrals()} deferrals")
    assert peak == 2


def test_locks_command_shows_holders_and_slots(redis_server, real_conn):
    import json

    from coordinator.stores.leases import LeaseManager
    from tests.support.tools import console_script

    leases = LeaseManager(real_conn, Keys("ringrift"), ttl_s=60, default_slots=1)
    leases.register_nodes({"gpu-a": 2, "gpu-b": 1})
    leases.set_node_health("gpu-b", "down")
    began = time.monotonic()
    leases.try_acquire("hex8_2p", "gpu-a", "worker-1", "job-42")
    env = {"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"}
    out = json.loads(subprocess.run([console_script("ringrift-train"), "locks", "--json"], env=env,
                                    capture_output=True, text=True, timeout=60, check=True).stdout)
    [held] = out["leases"]
    assert (held["config_key"], held["node"], held["worker"], held["job_id"], held["fence"]) == (
        "hex8_2p", "gpu-a", "worker-1", "job-42", "1")
    # No more gone than the time the acquisition and the command took, measured, not guessed.
    assert 60_000 - (time.monotonic() - began) * 1000 <= int(held["ttl_left_ms"]) <= 60_000
    # No worker started: neither node's GPUs are known yet (no slot inventory).
    assert out["nodes"] == [{"node": "gpu-a", "gpus": "2", "status": "healthy", "in_use": "1", "gpu": "unknown",
                             "gpu_slots": []},
                            {"node": "gpu-b", "gpus": "1", "status": "down", "in_use": "0", "gpu": "unknown",
                             "gpu_slots": []}]
    text = subprocess.run([console_script("ringrift-train"), "locks"], env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert "job-42" in text and "1/2" in text
