"""Fault injection on a real redis-server (AOF) with real `rq worker` and `ringrift-train run`
processes: dead workers and nodes, a crashed orchestrator, two orchestrators, a Redis restart,
cancellation, retries by failure class."""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest

from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from coordinator.stores.jobs import JobStore
from tests.support.exports import cli_export
from tests.support.jobs import trained
from tests.support.polling import wait_for
from tests.support.processes import alive, kill_tree
from tests.support.streams import stream_events
from tests.support.tools import console_script
from tests.support.trainers import stub_trainer

pytestmark = pytest.mark.integration
KEYS = Keys("ringrift")
GROUP = Settings().events.group


def event_ms(event) -> float:
    return int(event.id.split("-")[0]) / 1000.0


def test_killed_node_is_retried_elsewhere_and_resumes(redis_server, real_conn, service, rq_workers, npz):
    """SIGKILL a worker with its work horse and trainer mid-training (a node lost): within the lease
    TTL plus a reaper tick the job is retried on the other worker, from the last epoch checkpoint."""
    service(stub_trainer("--epoch-seconds", "1"), epochs=6)  # default lease TTL: 10 s
    workers = rq_workers(2)
    cli_export(redis_server, "hex8_2p", npz)
    [started] = wait_for(lambda: stream_events(real_conn, "TRAINING_STARTED"), timeout_s=30)
    wait_for(lambda: [e for e in stream_events(real_conn, "TRAINING_PROGRESS") if e.fields["epoch"] == "2"])
    victim = workers[int(started.fields["node"].split("-")[1])]
    killed = kill_tree(victim.pid)
    kill_time = time.time()
    retry = wait_for(lambda: [e for e in stream_events(real_conn, "TRAINING_STARTED")
                              if e.fields["attempt"] == "2"], timeout_s=45)[0]
    recovery_s = event_ms(retry) - kill_time
    print(f"\nnode killed: retry started {recovery_s:.1f} s after the kill, resumed from epoch "
          f"{retry.fields['resumed_epoch']}")
    assert recovery_s < 30
    assert int(retry.fields["resumed_epoch"]) >= 2 and retry.fields["node"] != started.fields["node"]
    assert not any(alive(pid) for pid in killed)
    [done] = wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=30)
    assert done.fields["attempt"] == "2"
    [lost] = [e for e in stream_events(real_conn, "TRAINING_FAILED") if e.fields["reason"] == "worker_lost"]
    assert (lost.fields["failure_class"], lost.fields["will_retry"]) == ("infrastructure", "true")
    record = JobStore(real_conn, KEYS).get(done.fields["job_id"])
    assert record["state"] == "complete" and record["attempts"] == "2"


def test_worker_killed_alone_leaves_one_attempt_running(redis_server, real_conn, service, rq_workers, npz):
    """SIGKILL only the worker's main process: its work horse and trainer keep running and keep the
    lease, so the job is not started a second time; the first attempt finishes it."""
    service(stub_trainer("--epoch-seconds", "1"), epochs=4, leases={"ttl_s": 2.0})
    workers = rq_workers(2)
    cli_export(redis_server, "hex8_2p", npz)
    [started] = wait_for(lambda: stream_events(real_conn, "TRAINING_STARTED"), timeout_s=30)
    victim = workers[int(started.fields["node"].split("-")[1])]
    wait_for(lambda: psutil.Process(victim.pid).children(recursive=True), timeout_s=10)
    victim.kill()
    [done] = wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=60)
    assert done.fields["attempt"] == "1"
    assert len(stream_events(real_conn, "TRAINING_STARTED")) == 1  # never run twice
    assert not [e for e in stream_events(real_conn, "TRAINING_FAILED") if e.fields["reason"] == "worker_lost"]


def test_crashed_orchestrator_restarts_without_a_second_job(redis_server, real_conn, service, rq_workers, npz,
                                                            more_orchestrators):
    """SIGKILL the orchestrator in a burst of exports; the restarted one handles what the first read
    but never acknowledged, and no data generation is trained twice."""
    first = service(stub_trainer("--epoch-seconds", "0.2"), epochs=2, consumer="orch-a")
    rq_workers(2)
    configs = ["hex8_2p", "square8_2p", "square19_3p"]
    for i in range(30):
        cli_export(redis_server, configs[i % 3], npz, samples=100 + i)
        if i == 14:
            first.kill()
            first.wait()
    more_orchestrators("orch-a")  # the same consumer name: it finds its predecessor's pending entries
    _all_exports_trained(real_conn, configs, samples_of_last={"hex8_2p": 127, "square8_2p": 128,
                                                             "square19_3p": 129})


def test_two_orchestrators_never_submit_the_same_training_twice(redis_server, real_conn, service, rq_workers,
                                                                npz, more_orchestrators):
    service(stub_trainer("--epoch-seconds", "0.2"), epochs=2, consumer="orch-a")
    more_orchestrators("orch-b")
    rq_workers(2)
    configs = ["hex8_2p", "square8_2p", "square19_3p"]
    for i in range(30):
        cli_export(redis_server, configs[i % 3], npz, samples=100 + i)
    _all_exports_trained(real_conn, configs, samples_of_last={"hex8_2p": 127, "square8_2p": 128,
                                                             "square19_3p": 129})


def _all_exports_trained(conn, configs, samples_of_last: dict[str, int]) -> None:
    def trained_last(job: dict[str, str]) -> bool:
        return int(job["samples"]) == samples_of_last[job["config_key"]]

    jobs = wait_for(lambda: trained(JobStore(conn, KEYS), configs, trained_last), timeout_s=120)
    for config_key in configs:
        mine = sorted((j for j in jobs if j["config_key"] == config_key), key=lambda j: float(j["started_at"]))
        versions = [int(j["data_version"]) for j in mine]
        assert len(versions) == len(set(versions)), f"{config_key}: a data generation trained twice: {versions}"
        for before, after in zip(mine, mine[1:]):
            assert float(before["finished_at"]) <= float(after["started_at"]), f"{config_key}: overlapping runs"
    starts = stream_events(conn, "TRAINING_STARTED")
    assert len(starts) == len(jobs)  # every job ran exactly once


def test_redis_restart_mid_run_loses_nothing(redis_server, real_conn, service, rq_workers, npz):
    """Redis (AOF, everysec) restarts mid-training: the orchestrator and the worker reconnect by
    themselves and the run completes; an export sent after the restart is trained too."""
    service(stub_trainer("--epoch-seconds", "1"), epochs=5)
    rq_workers(1)
    cli_export(redis_server, "hex8_2p", npz)
    wait_for(lambda: [e for e in stream_events(real_conn, "TRAINING_PROGRESS") if e.fields["epoch"] == "1"],
             timeout_s=30)
    began = time.time()
    redis_server.restart(down_s=2.0)
    cli_export(redis_server, "square8_2p", npz)
    done = wait_for(lambda: len(stream_events(real_conn, "TRAINING_COMPLETE")) == 2 and
                    stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=90)
    print(f"\nredis restart: both trainings complete {time.time() - began:.1f} s after the restart began")
    assert {e.fields["config_key"] for e in done} == {"hex8_2p", "square8_2p"}
    assert {e.fields["attempt"] for e in done} == {"1"}  # the running attempt survived the outage


def test_cancel_stops_a_running_trainer_and_frees_its_leases(redis_server, real_conn, service, rq_workers, npz):
    service(stub_trainer("--epoch-seconds", "30"), epochs=2)
    rq_workers(1)
    cli_export(redis_server, "hex8_2p", npz)
    [started] = wait_for(lambda: stream_events(real_conn, "TRAINING_STARTED"), timeout_s=30)
    wait_for(lambda: JobStore(real_conn, KEYS).get(started.fields["job_id"])["state"] == "running")
    env = {"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"}
    began = time.time()
    out = subprocess.run([console_script("ringrift-train"), "cancel", started.fields["job_id"]], env=env,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert "stops the trainer" in out
    wait_for(lambda: stream_events(real_conn, "TRAINING_CANCELLED"), timeout_s=15)
    print(f"\ncancel: trainer stopped and job cancelled {time.time() - began:.1f} s after the command")
    assert JobStore(real_conn, KEYS).get(started.fields["job_id"])["state"] == "cancelled"
    assert not real_conn.exists(KEYS.lease("hex8_2p"))
    assert real_conn.zcard(KEYS.node_slots("node-0")) == 0


def test_trainer_failures_retry_then_fail_and_open_the_breaker(redis_server, real_conn, service, rq_workers, npz):
    service(stub_trainer("--fail-with", "3"), epochs=2, retries={"trainer": 1, "backoff_base_s": 0.2},
            breakers={"failures": 2})
    rq_workers(1)
    cli_export(redis_server, "hex8_2p", npz)
    failures = wait_for(lambda: len(stream_events(real_conn, "TRAINING_FAILED")) == 2 and
                        stream_events(real_conn, "TRAINING_FAILED"), timeout_s=60)
    assert [(e.fields["attempt"], e.fields["will_retry"]) for e in failures] == [("1", "true"), ("2", "false")]
    opened = wait_for(lambda: len(stream_events(real_conn, "CIRCUIT_OPENED")) == 2 and
                      stream_events(real_conn, "CIRCUIT_OPENED"), timeout_s=10)
    assert {(e.fields["kind"], e.fields["name"]) for e in opened} == {("config", "hex8_2p"), ("node", "node-0")}
    store = JobStore(real_conn, KEYS)
    [failed] = store.list()
    entry_id = cli_export(redis_server, "hex8_2p", npz)  # new data, but the breaker is open: not dispatched
    # The orchestrator dispatches a batch before it acknowledges it: once the entry is acknowledged
    # (and recorded as the config's second data generation), any job it would create exists.
    wait_for(lambda: acknowledged(real_conn, entry_id), timeout_s=30)
    config = real_conn.hgetall(KEYS.config("hex8_2p"))
    assert (config[b"last_event_id"].decode(), config[b"data_version"]) == (entry_id, b"2")
    assert [j["job_id"] for j in store.list()] == [failed["job_id"]] and failed["state"] == "failed"
    assert store.active_job("hex8_2p") is None
    assert len(stream_events(real_conn, "TRAINING_STARTED")) == 2  # attempts 1 and 2 of the failed job
    assert "circuit breaker open" in config[b"why"].decode()


def acknowledged(conn, entry_id: str) -> bool:
    """The orchestrators' group has read `entry_id` and acknowledged it (it is not pending)."""
    [group] = [g for g in conn.xinfo_groups(KEYS.events) if g["name"].decode() == GROUP]
    read = stream_id(group["last-delivered-id"].decode()) >= stream_id(entry_id)
    return read and not conn.xpending_range(KEYS.events, GROUP, min=entry_id, max=entry_id, count=1)


def stream_id(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)
