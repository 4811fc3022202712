"""Ephemeral nodes' termination notices (workers/node_notice.py) on fakeredis: the stop reason on the
lease renewal's reply, the job store's `node_notice` yield (no failure, not a preemption the cap
counts, the fence advanced, requeued at once), the provider's file and URL, and one attempt on an
in-process SimpleWorker of an ephemeral host that gets a notice mid-training."""

from __future__ import annotations

import http.server
import threading
from dataclasses import replace

import pytest
from rq import Queue, SimpleWorker

from coordinator import TrainingOrchestrator
from coordinator.core.job_states import PREEMPTED, QUEUED
from coordinator.core.keys import TRAINING_QUEUE
from coordinator.core.settings import NodeSettings, Settings, worker_settings, worker_settings_json
from coordinator.stores.configs import ConfigStore
from coordinator.stores.job_records import NOTICE_STOP, stop_reason
from coordinator.stores.jobs import JobStore
from coordinator.stores.leases import LeaseManager
from tests.support.jobs import take_job
from tests.support.streams import stream_events
from tests.support.trainers import stub_trainer, write_npz
from workers import gpu_inventory, node_notice


@pytest.mark.parametrize(("cancel", "preempt", "notice", "stop"), [
    ("", "", "", None), ("", "1.5", "", "preempted"), ("", "", "sigterm|1", NOTICE_STOP),
    ("", "1.5", "sigterm|1", NOTICE_STOP),  # the host is going away: not a preemption the cap counts
    ("1", "1.5", "sigterm|1", "cancelled"),  # a cancel still wins
])
def test_the_stop_reason_puts_a_notice_after_a_cancel_and_before_a_preemption(cancel, preempt, notice, stop):
    assert stop_reason(cancel, preempt, notice) == stop


def test_a_renewal_reply_carries_the_holders_termination_notice(fake_conn, keys):
    manager = LeaseManager(fake_conn, keys, ttl_s=30, default_slots=1)
    lease = manager.try_acquire("hex8_2p", "n1", "w1", "j1")
    assert manager.renew(lease, "j1", "w1").stop is None
    node_notice.write_notice(fake_conn, keys, "w1", "sigterm")
    assert 0 < fake_conn.ttl(keys.worker_notice("w1")) <= node_notice.NOTICE_TTL_S
    assert manager.renew(lease, "j1", "w2").stop is None  # another worker's notice is not this one's
    assert manager.renew(lease, "j1", "w1").stop == NOTICE_STOP
    assert manager.renew(lease, "j1").stop is None  # no worker named: no notice read
    node_notice.clear_notice(fake_conn, keys, "w1")  # a worker starting under that name again
    assert manager.renew(lease, "j1", "w1").stop is None


def _running(orch, fake_conn, keys, config_key="hexagonal_2p"):
    fake_conn.hset(keys.config(config_key), mapping={"npz_path": "/d/h.npz", "board_type": "hexagonal",
                                                     "num_players": "2", "samples": "10"})
    job_id = orch.jobs.create_job(orch.settings, config_key, _params(orch)).job_id
    Queue(TRAINING_QUEUE, connection=fake_conn).empty()  # the test is the worker: nothing dequeues it
    return job_id, take_job(orch, job_id, config_key)


def _params(orch):
    from coordinator.stores.job_records import TrainingParams

    return TrainingParams.from_settings(orch.settings)


def test_a_node_notice_yield_is_not_a_failure_nor_a_counted_preemption_and_is_requeued_at_once(
        fake_conn, keys, make_settings):
    orch = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="t")
    job_id, lease = _running(orch, fake_conn, keys)
    store = JobStore(fake_conn, keys, 1000)
    fence_before = int(fake_conn.get(keys.fence("hexagonal_2p")))
    assert store.preempted(job_id, "hexagonal_2p", lease.fence, "node-a", 1, 3, 0.01, "hexagonal", "2",
                           kind=NOTICE_STOP) == "recorded"
    record = store.get(job_id)
    assert record["state"] == PREEMPTED and record["notice_yields"] == "1" and record["last_yield_kind"] == NOTICE_STOP
    assert record.get("preemptions", "0") == "0"  # the cap's count (preemption_rule) is untouched
    assert not any(k.startswith("failures_") for k in record) and "reason" not in record
    # The fence advanced: nothing the noticed attempt still does can publish.
    assert int(fake_conn.get(keys.fence("hexagonal_2p"))) == fence_before + 1
    [event] = stream_events(fake_conn, "TRAINING_PREEMPTED")
    assert (event.fields["kind"], event.fields["preemptions"], event.fields["notice_yields"]) == (NOTICE_STOP, "0", "1")
    assert event.fields["epoch"] == "3" and not event.fields.get("preempted_for")
    assert not stream_events(fake_conn, "TRAINING_FAILED")
    # Requeued at once (what the worker does next), under a new RQ id.
    orch.leases.release(lease)
    assert store.resume_preempted(orch.settings, "hexagonal_2p", job_id,
                                  ConfigStore(fake_conn, keys, orch.settings.scheduler))
    record = store.get(job_id)
    assert record["state"] == QUEUED and record["rq_job_id"] == f"{job_id}-p0n1"
    assert Queue(TRAINING_QUEUE, connection=fake_conn).job_ids == [f"{job_id}-p0n1"]
    assert fake_conn.hget(keys.config("hexagonal_2p"), "preempted_job") is None  # not waiting for a pick


def test_a_scheduler_preemption_still_counts_and_names_its_own_kind(fake_conn, keys, make_settings):
    orch = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="t")
    job_id, lease = _running(orch, fake_conn, keys)
    store = JobStore(fake_conn, keys, 1000)
    assert store.request_preemption(job_id, str(lease.fence), "square8_2p", "wait", "starving")
    assert store.preempted(job_id, "hexagonal_2p", lease.fence, "node-a", 1, 2, 0.0) == "recorded"
    record = store.get(job_id)
    assert record["preemptions"] == "1" and "notice_yields" not in record
    [event] = stream_events(fake_conn, "TRAINING_PREEMPTED")
    assert (event.fields["kind"], event.fields["preempted_for"], event.fields["notice_yields"]) == (
        "wait", "square8_2p", "0")
    with pytest.raises(Exception, match="unknown yield kind"):
        store.preempted(job_id, "hexagonal_2p", lease.fence, "node-a", 1, 2, 0.0, kind="spot")


def test_the_nodes_section_reaches_the_worker_with_the_job_record():
    nodes = NodeSettings(notice_file="/run/notice", notice_url="http://127.0.0.1:1/x", notice_poll_s=0.5)
    settings = replace(Settings(), nodes=nodes)
    assert worker_settings({"settings": worker_settings_json(settings)}).nodes == nodes
    assert worker_settings({"settings": worker_settings_json(Settings())}).nodes == NodeSettings()


class _Notice(http.server.BaseHTTPRequestHandler):
    body = b""
    status = 404

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_provider_notice_is_a_file_that_exists_or_a_url_that_says_so(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Notice)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/spot/instance-action"
        nodes = NodeSettings(notice_file=str(tmp_path / "terminating"), notice_url=url, notice_poll_s=1.0)
        assert node_notice.provider_notice(nodes) is None  # no file, 404
        _Notice.status, _Notice.body = 200, b"FALSE"  # GCE's "preempted" answer before a notice
        assert node_notice.provider_notice(nodes) is None
        _Notice.body = b'{"action": "terminate", "time": "2026-12-07T10:00:00Z"}'
        assert node_notice.provider_notice(nodes) == f"url {url}"
        (tmp_path / "terminating").write_text("")
        assert node_notice.provider_notice(nodes) == f"file {tmp_path / 'terminating'}"
        dead = NodeSettings(notice_url="http://127.0.0.1:9/", notice_poll_s=0.2)
        assert node_notice.provider_notice(dead) is None  # unreachable: no notice
    finally:
        server.shutdown()
        server.server_close()


def test_a_horse_signals_only_the_worker_class_that_forked_it(monkeypatch):
    sent = []
    monkeypatch.setattr(node_notice.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(node_notice, "_worker_pid", None)
    assert not node_notice.signal_worker()  # a SimpleWorker (tests, this process): nothing sent
    node_notice.remember_worker(node_notice.os.getpid())
    assert not node_notice.signal_worker()  # the job runs in the worker itself
    node_notice.remember_worker(node_notice.os.getppid())
    assert node_notice.signal_worker() and sent == [(node_notice.os.getppid(), node_notice.signal.SIGTERM)]


@pytest.fixture
def ephemeral(monkeypatch):
    """This process's worker on an ephemeral host (RINGRIFT_EPHEMERAL=1), registered afresh."""
    monkeypatch.setenv("RINGRIFT_EPHEMERAL", "1")
    monkeypatch.setenv("RINGRIFT_NODE", "vast-1")
    monkeypatch.setattr(gpu_inventory, "_current", None)
    monkeypatch.setattr(node_notice, "_worker_pid", None)


@pytest.mark.parametrize("source", ["sigterm", "file"])
def test_a_notice_mid_training_checkpoints_yields_and_the_job_resumes_from_it(
        fake_conn, make_settings, tmp_path, ephemeral, source):
    npz = write_npz(tmp_path / "hex8_2p.npz")
    settings = make_settings(command=stub_trainer("--epoch-seconds", "0.3"))
    notice_file = tmp_path / "terminating"
    settings = replace(settings, nodes=NodeSettings(notice_file=str(notice_file), notice_poll_s=0.1),
                       leases=replace(settings.leases, ttl_s=1.5))
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=10, epochs=8)

    def notice() -> None:
        if source == "file":
            notice_file.write_text("")
        else:  # what the worker class's SIGTERM handler writes
            node_notice.write_notice(fake_conn, orch.keys, "eph-worker", "sigterm")

    timer = threading.Timer(1.2, notice)
    timer.start()
    SimpleWorker([Queue(TRAINING_QUEUE, connection=fake_conn)], connection=fake_conn, name="eph-worker").work(
        burst=True, max_jobs=1)
    timer.join()
    record = orch.jobs.get(job_id)
    [yielded] = stream_events(fake_conn, "TRAINING_PREEMPTED")
    assert yielded.fields["kind"] == NOTICE_STOP and record["notice_yields"] == "1"
    assert record.get("preemptions", "0") == "0"
    reached = int(yielded.fields["epoch"])
    assert 1 <= reached < 8
    # Requeued at once, its lease given back (nothing held), nothing failed, no breaker touched.
    assert record["state"] == QUEUED and record["rq_job_id"] == f"{job_id}-p0n1"
    assert not fake_conn.exists(orch.keys.lease("hex8_2p"))
    assert not stream_events(fake_conn, "TRAINING_FAILED")
    assert not fake_conn.exists(orch.keys.breaker("node", "vast-1"))
    # Another worker (a stable host) resumes it from that checkpoint and completes it.
    notice_file.unlink(missing_ok=True)
    fake_conn.delete(orch.keys.worker_notice("eph-worker"))
    SimpleWorker([Queue(TRAINING_QUEUE, connection=fake_conn)], connection=fake_conn, name="other").work(burst=True)
    record = orch.jobs.get(job_id)
    assert record["state"] == "complete" and record["attempts"] == "2"
    second = [e for e in stream_events(fake_conn, "TRAINING_STARTED")][-1]
    assert int(second.fields["resumed_epoch"]) == reached
    trained = [int(e.fields["epoch"]) for e in stream_events(fake_conn, "TRAINING_PROGRESS")]
    assert sorted(trained) == list(range(1, 9)), trained  # every epoch once
