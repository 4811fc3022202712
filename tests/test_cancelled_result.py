"""Issue 25, item 7: a cancelled training's RQ result and the worker's log say "cancelled" (RQ
itself logs "Job OK" for every task that returns). Real redis-server, `ringrift-train run` and
`rq worker` processes."""

from __future__ import annotations

from rq.job import Job, JobStatus

from coordinator.core.keys import Keys
from coordinator.stores.jobs import JobStore
from tests.support.exports import xadd_like_an_exporter
from tests.support.polling import wait_for
from tests.support.streams import stream_events
from tests.support.trainers import STUB_TRAINER

KEYS = Keys("ringrift")


def test_a_cancelled_training_says_cancelled_in_rq_and_the_worker_log(redis_server, real_conn, service, rq_workers,
                                                                      tmp_path):
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"stub")
    service([*STUB_TRAINER, "--epoch-seconds", "30"], epochs=2)
    rq_workers(1)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", "hex8_2p", "npz_path", str(npz),
                          "samples", "10")
    [started] = wait_for(lambda: stream_events(real_conn, "TRAINING_STARTED"), timeout_s=30)
    store = JobStore(real_conn, KEYS)
    job_id = started.fields["job_id"]
    wait_for(lambda: store.get(job_id)["state"] == "running")
    assert store.cancel(job_id) == "requested"
    rq_job = Job.fetch(store.get(job_id)["rq_job_id"], connection=real_conn)
    wait_for(lambda: rq_job.get_status(refresh=True) == JobStatus.FINISHED, timeout_s=30)
    assert rq_job.return_value() == {"job_id": job_id, "outcome": "cancelled", "cancelled": True}
    log = tmp_path / "worker-0.log"
    wait_for(lambda: "Job OK" in log.read_text())
    assert f"job {job_id} CANCELLED on request" in log.read_text()
