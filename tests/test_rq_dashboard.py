"""RQ's own web dashboard, run as the README says, against a real run: it lists the `training`
queue and the worker busy with our job (rq-dashboard 0.9.0 needs `six`, which it does not declare)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from rq import Queue

from coordinator.core.keys import TRAINING_QUEUE
from coordinator.ops.local_redis import free_port
from tests.support.exports import xadd_export
from tests.support.polling import or_none, wait_for
from tests.support.tools import unavailable
from tests.support.trainers import stub_trainer

pytestmark = pytest.mark.integration


def test_rq_dashboard_shows_the_queue_and_the_busy_worker(redis_server, real_conn, service, rq_workers,
                                                          tmp_path, npz):
    try:
        import rq_dashboard  # noqa: F401 - in the dev extras
    except ImportError as exc:
        unavailable(f"rq-dashboard is not installed (pip install -e '.[dev]'): {exc}")
    # A minute a job (not waited for: the worker is stopped cold), so the first still runs while
    # the page is read, and the second still waits on the queue.
    service(stub_trainer("--epoch-seconds", "10"), epochs=6)
    rq_workers(1)
    for config_key in ("hex8_2p", "square8_2p"):  # one worker: one runs, the other waits on the queue
        xadd_export(real_conn, config_key, npz, 10)
    port = free_port()
    log = open(tmp_path / "rq-dashboard.log", "wb")  # noqa: SIM115 - closed below
    rqd = subprocess.Popen([str(Path(sys.executable).parent / "rq-dashboard"), "--redis-url", redis_server.url,
                            "--bind", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        def get(path: str) -> dict | None:
            address = f"http://127.0.0.1:{port}/0/data/{path}"
            return or_none(lambda: json.loads(urllib.request.urlopen(address, timeout=10).read()), OSError)

        def busy_worker() -> dict | None:
            workers = (get("workers.json") or {}).get("workers", [])
            return next((w for w in workers if w["state"] == "busy" and w.get("current_job")), None)

        def training_queue_count() -> int | None:
            queues = {q["name"]: q for q in (get("queues.json") or {}).get("queues", [])}
            return queues[TRAINING_QUEUE]["count"] if TRAINING_QUEUE in queues else None

        worker = wait_for(busy_worker, timeout_s=90, interval_s=0.5)
        assert worker["name"] == "test-worker-0" and worker["queues"] == [TRAINING_QUEUE]
        running = re.match(r"train (hex8_2p|square8_2p) from .*x\.npz, attempt 1", worker["current_job"]["description"])
        assert running
        # Both jobs fit the dispatch capacity (the two declared GPUs plus scheduler.prefetch): the one
        # worker runs one, the other waits on RQ's queue (enqueued maybe a moment after the first started).
        wait_for(lambda: training_queue_count() == 1, timeout_s=30, interval_s=0.5)
        [waiting] = Queue(TRAINING_QUEUE, connection=real_conn).get_jobs()
        other = ({"hex8_2p", "square8_2p"} - {running.group(1)}).pop()
        assert waiting.description.startswith(f"train {other} from ")
    finally:
        rqd.terminate()
        rqd.wait(timeout=15)
        log.close()
    assert "Traceback" not in (tmp_path / "rq-dashboard.log").read_text()
