"""Termination notices end to end on a real redis-server with real `rq worker training` processes and
the gated stub trainer (it pauses after an epoch until let go, so nothing here races its speed):

- SIGTERM to the worker of an ephemeral host (RINGRIFT_EPHEMERAL=1): its training checkpoints at once,
  TRAINING_PREEMPTED kind node_notice (no failure, not a counted preemption), the worker exits once
  that is recorded, and the job resumes on the other worker from the checkpoint and completes; every
  epoch trained once.
- SIGTERM to a worker elsewhere is RQ's warm shutdown, as before: the training goes on and ends, then
  the worker exits."""

from __future__ import annotations

import signal
import time

from tests.support.gated_train import hold, release
from tests.support.polling import wait_for
from tests.support.races import GATED_STUB
from tests.support.streams import stream_events

EPOCHS, HELD_AFTER = 5, 2
LEASES = {"ttl_s": 1.5}  # renewals (and so the notice's way to the trainer) every 0.5 s


def _submit(conn, tmp_path, npz):
    from coordinator import TrainingOrchestrator
    from coordinator.core.settings import load_settings

    api = TrainingOrchestrator(load_settings(tmp_path / "coordinator.yaml"), conn, consumer_name="api")
    return api.submit_training_sync("hex8", 2, str(npz), epochs=EPOCHS, samples=10)


def _held(conn, job_id):
    return [e for e in stream_events(conn, "TRAINING_PROGRESS")
            if e.fields["job_id"] == job_id and e.fields["epoch"] == str(HELD_AFTER)]


def test_sigterm_on_an_ephemeral_worker_checkpoints_and_the_job_resumes_elsewhere(
        redis_server, real_conn, service, rq_workers, tmp_path):
    npz = tmp_path / "hex8.npz"
    npz.write_bytes(b"stub")
    service(GATED_STUB, epochs=EPOCHS, leases=LEASES)
    hold(npz, HELD_AFTER)
    [spot] = rq_workers(1, {"RINGRIFT_EPHEMERAL": "1"})  # alone: the job goes to it
    job_id = _submit(real_conn, tmp_path, npz)
    wait_for(lambda: _held(real_conn, job_id), timeout_s=30)
    [stable] = rq_workers(1)  # node-1, not ephemeral
    spot.send_signal(signal.SIGTERM)
    [yielded] = wait_for(lambda: stream_events(real_conn, "TRAINING_PREEMPTED"), timeout_s=15)
    release(npz)
    assert yielded.fields["kind"] == "node_notice" and yielded.fields["node"] == "node-0"
    assert int(yielded.fields["epoch"]) == HELD_AFTER  # checkpointed where it was
    assert spot.wait(timeout=15) == 0  # warm shutdown once the horse recorded the yield
    done = wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=30)
    assert done[0].fields["job_id"] == job_id and done[0].fields["node"] == "node-1"
    events = [e for e in stream_events(real_conn) if e.fields.get("job_id") == job_id]
    kinds = [e.type for e in events if e.type != "TRAINING_PROGRESS"]
    assert kinds == ["TRAINING_STARTED", "TRAINING_PREEMPTED", "TRAINING_STARTED", "TRAINING_COMPLETE"], kinds
    first, second = [e for e in events if e.type == "TRAINING_STARTED"]
    assert int(second.fields["resumed_epoch"]) == HELD_AFTER  # from the notice's checkpoint
    assert int(second.fields["fence"]) > int(first.fields["fence"]) + 1  # the notice advanced it too
    trained = [int(e.fields["epoch"]) for e in events if e.type == "TRAINING_PROGRESS"]
    assert sorted(trained) == list(range(1, EPOCHS + 1)), trained  # every epoch once
    assert not stream_events(real_conn, "TRAINING_FAILED")
    record = {k.decode(): v.decode() for k, v in real_conn.hgetall(f"ringrift:job:{job_id}").items()}
    assert record["notice_yields"] == "1" and record.get("preemptions", "0") == "0"
    assert stable.poll() is None  # the stable worker carries on


def test_sigterm_on_a_stable_worker_is_still_a_warm_shutdown(redis_server, real_conn, service, rq_workers,
                                                               tmp_path):
    npz = tmp_path / "hex8.npz"
    npz.write_bytes(b"stub")
    service(GATED_STUB, epochs=EPOCHS, leases=LEASES)
    hold(npz, HELD_AFTER)
    [worker] = rq_workers(1)
    job_id = _submit(real_conn, tmp_path, npz)
    wait_for(lambda: _held(real_conn, job_id), timeout_s=30)
    worker.send_signal(signal.SIGTERM)
    time.sleep(2.0)  # four renewals: a notice would have stopped the training by now
    assert worker.poll() is None and not stream_events(real_conn, "TRAINING_PREEMPTED")
    release(npz)
    assert worker.wait(timeout=20) == 0  # it waited for the training
    [done] = stream_events(real_conn, "TRAINING_COMPLETE")
    assert done.fields["job_id"] == job_id
    assert not stream_events(real_conn, "TRAINING_PREEMPTED") and not stream_events(real_conn, "TRAINING_FAILED")
