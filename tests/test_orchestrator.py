"""The orchestrator's event handling and the job state machine, on fakeredis."""

import asyncio
import time
from dataclasses import replace

import pytest
from rq import Queue

from coordinator import TrainingOrchestrator
from coordinator.bus.events import EventConsumer, decode_entry
from coordinator.core.job_states import LEASED, QUEUED, RUNNING
from coordinator.core.keys import TRAINING_QUEUE
from tests.support.exports import xadd_export
from tests.support.jobs import end_job, take_job
from tests.support.streams import dead_letters, stream_events


def queued_ids(conn):
    return Queue(TRAINING_QUEUE, connection=conn).job_ids


def test_export_creates_one_job_enqueued_on_rq(orch, fake_conn, keys):
    xadd_export(fake_conn)
    assert orch.process_once(block_ms=None) == 1
    job_id = orch.jobs.active_job("hex8_2p")
    record = orch.jobs.get(job_id)
    assert record["state"] == QUEUED
    assert (record["npz_path"], record["samples"], record["epochs"]) == ("/data/hex8_2p.npz", "40000", "3")
    assert record["output_dir"].endswith(f"hex8_2p/{job_id}")
    assert queued_ids(fake_conn) == [job_id]
    assert fake_conn.zscore(keys.priority, "hex8_2p") == -1.0  # queued: not eligible again
    assert fake_conn.hget(keys.config("hex8_2p"), "why") == f"queued or running ({job_id})".encode()
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0


def test_rq_keeps_its_job_keys_for_training_rq_result_ttl_days(make_orch, fake_conn):
    from rq.job import Job

    from coordinator.core.errors import ConfigError
    from coordinator.core.settings import parse_settings

    orch = make_orch(rq_result_ttl_days=0.5)
    xadd_export(fake_conn)
    orch.process_once(block_ms=None)
    job = Job.fetch(orch.jobs.active_job("hex8_2p"), connection=fake_conn)
    assert (job.result_ttl, job.failure_ttl) == (43_200, 43_200)
    with pytest.raises(ConfigError, match="training.rq_result_ttl_days"):
        parse_settings({"training": {"rq_result_ttl_days": 0}})


def test_second_export_while_queued_updates_the_queued_job(orch, fake_conn, keys):
    xadd_export(fake_conn, npz_path="/data/v1.npz", samples=100)
    xadd_export(fake_conn, npz_path="/data/v2.npz", samples=200)
    orch.process_once(block_ms=None)
    [job_id] = queued_ids(fake_conn)
    record = orch.jobs.get(job_id)
    assert (record["npz_path"], record["samples"], record["data_version"]) == ("/data/v2.npz", "200", "2")


def test_export_batch_falls_back_when_the_active_job_changed_under_it(orch, fake_conn, keys):
    """record_exports_many reads the active jobs, then runs one script per config: a config whose
    job appeared in between is written again with the job it has now, not with stale state."""
    from coordinator.bus.events import Export

    xadd_export(fake_conn, npz_path="/data/v1.npz", samples=100)
    orch.process_once(block_ms=None)
    [job_id] = queued_ids(fake_conn)
    real_hmget = fake_conn.hmget
    fake_conn.hmget = lambda key, fields: [None] * len(fields)  # as if read before the job existed
    try:
        new = [(Export("hex8", 2, "hex8_2p", "/data/v2.npz", 200), "9999999999999-0")]
        assert orch.configs.record_exports_many([new]) == ["updated"]
    finally:
        fake_conn.hmget = real_hmget
    record = orch.jobs.get(job_id)
    assert (record["npz_path"], record["samples"], record["data_version"]) == ("/data/v2.npz", "200", "2")
    assert orch.configs.record_exports_many([new]) == ["duplicate"]  # the same stream id again


def test_export_while_running_waits_then_trains_on_the_newest_data(orch, fake_conn, keys):
    xadd_export(fake_conn, npz_path="/data/v1.npz")
    orch.process_once(block_ms=None)
    [first] = queued_ids(fake_conn)
    lease = take_job(orch, first, "hex8_2p")
    xadd_export(fake_conn, npz_path="/data/v2.npz")
    orch.process_once(block_ms=None)
    assert orch.jobs.get(first)["npz_path"] == "/data/v1.npz"  # running: untouched
    assert orch.jobs.active_job("hex8_2p") == first
    assert end_job(orch.jobs, first, "hex8_2p", fence=lease.fence) == "recorded"
    orch.leases.release(lease)
    orch.process_once(block_ms=None)  # sees TRAINING_STARTED and TRAINING_COMPLETE
    second = orch.jobs.active_job("hex8_2p")
    assert second not in (None, first)
    assert orch.jobs.get(second)["npz_path"] == "/data/v2.npz"
    assert queued_ids(fake_conn)[-1] == second


def test_redelivered_export_is_applied_once(orch, fake_conn, keys):
    event_id = xadd_export(fake_conn)
    orch.process_once(block_ms=None)
    [job_id] = queued_ids(fake_conn)
    lease = take_job(orch, job_id, "hex8_2p")
    # The same entry handled again (a crash between its effects and its ack):
    [entry] = fake_conn.xrange(keys.events, event_id, event_id)
    orch._handle_batch([decode_entry(*entry)])
    assert fake_conn.hget(keys.config("hex8_2p"), "data_version") == b"1"
    assert end_job(orch.jobs, job_id, "hex8_2p", fence=lease.fence) == "recorded"
    orch.leases.release(lease)
    orch.process_once(block_ms=None)
    assert orch.jobs.active_job("hex8_2p") is None  # no second training for the same data


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"type": "NPZ_EXPORT_COMPLETE", "board_type": "hex8", "num_players": "9", "npz_path": "/x"},
         b"num_players must be 2..4"),
        ({"type": "NPZ_EXPORT_COMPLET", "board_type": "hex8"}, b"unknown event type 'NPZ_EXPORT_COMPLET'"),
        ({"board_type": "hex8"}, b"missing field 'type'"),
        ({"type": "TRAINING_BLOCKED_BY_QUALITY", "config_key": "nope"}, b"not of the form"),
    ],
)
def test_bad_events_are_dead_lettered_and_the_consumer_goes_on(orch, fake_conn, keys, fields, reason):
    fake_conn.xadd(keys.events, fields)
    xadd_export(fake_conn)
    orch.process_once(block_ms=None)
    [dead] = dead_letters(fake_conn)
    assert reason in dead[b"dead_reason"]
    assert orch.jobs.active_job("hex8_2p") is not None
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0


def test_quality_block_and_cluster_health_are_recorded(orch, fake_conn, keys):
    fake_conn.xadd(keys.events, {"type": "TRAINING_BLOCKED_BY_QUALITY", "config_key": "square8_3p", "reason": "low"})
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "node": "gpu-2", "status": "down"})
    orch.process_once(block_ms=None)
    assert fake_conn.hget(keys.config("square8_3p"), "quality_block_reason") == b"low"
    assert fake_conn.hget(keys.cluster_health, "node") == b"gpu-2"
    assert fake_conn.hget(keys.node("gpu-2"), "status") == b"down"
    assert fake_conn.xlen(keys.dead_letters) == 0


def test_node_health_changes_the_usable_slots(cluster, fake_conn, keys):
    assert cluster.total_slots() == 7
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "node": "a", "status": "down"})
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "node": "d", "status": "healthy", "gpus": "8"})
    cluster.process_once(block_ms=None)
    assert cluster.total_slots() == 2 + 1 + 8
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "alive_peers": "a, c"})
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "alive_peers": "3"})  # a count: recorded only
    fake_conn.xadd(keys.events, {"type": "CLUSTER_HEALTH_CHANGED", "node": "a", "status": "on fire"})
    cluster.process_once(block_ms=None)
    assert {n["node"]: n["status"] for n in cluster.leases.nodes()} == {"a": "healthy", "b": "down",
                                                                        "c": "healthy", "d": "down"}
    assert cluster.total_slots() == 5
    [dead] = dead_letters(fake_conn)
    assert dead[b"dead_reason"].startswith(b"status must be one of")


def test_restarted_orchestrator_handles_its_unacknowledged_entries(fake_conn, keys, make_settings):
    first = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="host-a")
    first.prepare()
    xadd_export(fake_conn)
    first.consumer.read(10, None)  # delivered, then the process "dies" before handling it
    again = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="host-a")
    again.prepare()
    assert again.jobs.active_job("hex8_2p") is not None
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0


def test_other_consumers_pending_entries_are_reclaimed(fake_conn, keys, make_settings):
    dead = EventConsumer(fake_conn, keys, "orchestrator", "dead-host")
    dead.ensure_group()
    xadd_export(fake_conn)
    dead.read(10, None)  # delivered to a consumer that never comes back
    settings = make_settings()
    settings = replace(settings, events=replace(settings.events, reclaim_idle_ms=20))
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="live-host")
    orch.prepare()
    assert orch.jobs.active_job("hex8_2p") is None
    time.sleep(0.05)
    orch.process_once(block_ms=None)
    assert orch.jobs.active_job("hex8_2p") is not None
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0


def test_async_api_submit_start_stop(fake_conn, keys, make_settings):
    async def scenario():
        orch = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="api")
        await orch.start()
        job_id = await orch.submit_training(board_type="hex8", num_players=2, npz_path="/data/h.npz", epochs=7)
        again = await orch.submit_training(board_type="hex8", num_players=2, npz_path="/data/h2.npz")
        await orch.stop()
        return orch, job_id, again

    orch, job_id, again = asyncio.run(scenario())
    assert job_id == again  # still queued: the same job, now on the newer file
    record = orch.jobs.get(job_id)
    assert (record["epochs"], record["npz_path"]) == ("7", "/data/h2.npz")


def test_start_and_finish_are_guarded_by_state(orch, fake_conn, keys):
    job_id = orch.submit_training_sync("square8", 2, "/d.npz")
    assert orch.jobs.start(job_id, "square8_2p", "n", "w") == 1
    assert orch.jobs.start(job_id, "square8_2p", "n", "w") is None  # already taken
    assert orch.jobs.get(job_id)["state"] == LEASED
    assert orch.jobs.mark_running(job_id, "square8_2p")
    assert not orch.jobs.mark_running(job_id, "square8_2p")  # running -> running is no move
    assert orch.jobs.get(job_id)["state"] == RUNNING
    assert end_job(orch.jobs, job_id, "square8_2p") == "recorded"
    assert end_job(orch.jobs, job_id, "square8_2p") == "not_running"
    assert len(stream_events(fake_conn, "TRAINING_COMPLETE")) == 1


def test_a_burst_of_exports_is_rescored_once_it_ends_then_dispatched(fake_conn, keys, make_settings):
    base = make_settings()
    settings = replace(base, events=replace(base.events, read_count=2), hosts={"node-0": 8})
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="burst")
    orch.prepare()
    for board, players in (("hex8", 2), ("square8", 2), ("square19", 2), ("hex8", 3)):
        xadd_export(fake_conn, (board, players))
    assert orch.process_once(block_ms=None) == 2  # a full batch, first of the burst: scored and dispatched
    assert orch.jobs.active_job("hex8_2p") and orch.jobs.active_job("square8_2p")
    assert orch.process_once(block_ms=None) == 2  # full again, right after: recorded and acked, scoring waits
    assert fake_conn.hget(keys.config("square19_2p"), "data_version") == b"1"
    assert orch.jobs.active_job("square19_2p") is None
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0
    assert orch.process_once(block_ms=None) == 0  # caught up: the burst's configs are scored and dispatched
    assert orch.jobs.active_job("square19_2p") and orch.jobs.active_job("hex8_3p")


def test_a_cancelled_config_waits_for_a_newer_export(orch, fake_conn, keys):
    xadd_export(fake_conn)
    orch.process_once(block_ms=None)
    job_id = orch.jobs.active_job("hex8_2p")
    assert orch.jobs.cancel(job_id) == "cancelled"
    orch.process_once(block_ms=None)  # TRAINING_CANCELLED: rescored, dispatched
    assert orch.jobs.active_job("hex8_2p") is None  # not handed the same data straight back
    assert b"cancelled" in fake_conn.hget(keys.config("hex8_2p"), "why")
    time.sleep(0.01)
    xadd_export(fake_conn, npz_path="/data/v2.npz")
    orch.process_once(block_ms=None)
    assert orch.jobs.active_job("hex8_2p") not in (None, job_id)


def test_periodic_work_knows_nothing_of_the_orchestrator():
    import ast
    from pathlib import Path

    import coordinator.service.periodic as periodic

    tree = ast.parse(Path(periodic.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name and name.startswith("coordinator")}


def test_periodic_tasks_run_from_the_table_they_are_given(fake_conn):
    from coordinator.service.periodic import PeriodicTask, PeriodicWork

    ran = []
    work = PeriodicWork(fake_conn, "t", {"ping": PeriodicTask(1, lambda: ran.append("ping"))})
    assert work.register() == ["t-periodic-ping"] and work.register() == []
    assert work.run_due() == ["ping"] and ran == ["ping"]


def test_a_periodic_entry_dropped_between_rq_schedulers_two_writes_comes_back(fake_conn, monkeypatch):
    """rq-scheduler moves a repeating entry with ZREM then ZADD; a Redis error between them drops it."""
    from coordinator.service import periodic
    from coordinator.service.periodic import PeriodicTask, PeriodicWork

    ran = []
    work = PeriodicWork(fake_conn, "t", {"ping": PeriodicTask(1, lambda: ran.append("ping"))})
    now = [1000.0]
    monkeypatch.setattr(periodic.time, "monotonic", lambda: now[0])
    work.register()
    fake_conn.zrem(work.scheduler.scheduled_jobs_key, "t-periodic-ping")  # the ZADD never happened
    now[0] += periodic.REREGISTER_INTERVAL_S
    assert work.run_due() == ["ping"] and ran == ["ping"]  # scheduled again, and run


def test_an_older_versions_periodic_entry_is_replaced(fake_conn, make_settings):
    from datetime import datetime, timezone

    from coordinator.service.periodic import MAINTENANCE_QUEUE

    orch = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="t")
    orch.periodic.scheduler.schedule(datetime.now(timezone.utc), "coordinator.service.periodic.maintenance",
                                     args=("ringrift", "tick"), id="ringrift-periodic-tick",
                                     interval=int(orch.settings.scheduler.rescore_interval_s),
                                     queue_name=MAINTENANCE_QUEUE)
    assert "ringrift-periodic-tick" in orch.periodic.register()
    [tick] = [j for j in orch.periodic.scheduler.get_jobs() if j.id == "ringrift-periodic-tick"]
    assert tick.args == ["tick"] or tuple(tick.args) == ("tick",)


def test_maintenance_runs_a_task_on_an_rq_worker_without_a_new_orchestrator_each_time(fake_conn, monkeypatch):
    from rq import SimpleWorker

    from coordinator.service import orchestrator as module
    from coordinator.service.periodic import MAINTENANCE_FUNC, MAINTENANCE_QUEUE

    module._maintainer.cache_clear()
    built = []
    real_init = TrainingOrchestrator.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(TrainingOrchestrator, "__init__", counting_init)
    queue = Queue(MAINTENANCE_QUEUE, connection=fake_conn)
    for task in ("trim", "prune", "requeue_due"):
        queue.enqueue(MAINTENANCE_FUNC, task)
    SimpleWorker([queue], connection=fake_conn).work(burst=True)
    assert queue.failed_job_registry.count == 0 and len(built) == 1
    module._maintainer.cache_clear()


def test_the_maintenance_worker_refuses_built_in_defaults(fake_conn, monkeypatch, tmp_path):
    """Without the coordinator's settings file it would trim and prune under the default prefix and
    hosts: the job fails with the reason instead."""
    from rq import SimpleWorker

    from coordinator.service import orchestrator as module
    from coordinator.service.periodic import MAINTENANCE_FUNC, MAINTENANCE_QUEUE

    module._maintainer.cache_clear()
    monkeypatch.chdir(tmp_path)  # no config/distributed_hosts.yaml here
    monkeypatch.delenv("RINGRIFT_CONFIG", raising=False)
    queue = Queue(MAINTENANCE_QUEUE, connection=fake_conn)
    job = queue.enqueue(MAINTENANCE_FUNC, "trim")
    SimpleWorker([queue], connection=fake_conn).work(burst=True)
    job.refresh()
    assert job.is_failed and "no settings file: set RINGRIFT_CONFIG" in job.latest_result().exc_string
    module._maintainer.cache_clear()
