"""`ringrift-train status` and `priorities`: each worker under the node it runs on, every node a
worker or lease names, and tables written to a pipe or file kept whole."""

from __future__ import annotations

import io
import time

from rq import Worker

from coordinator.ops.priorities_view import print_priorities
from coordinator.ops.status import WORKER_NODE_FIELD, gather
from coordinator.ops.status_view import print_status, wide_console
from coordinator.scheduling.scheduler import TrainingScheduler
from coordinator.stores.leases import LeaseManager
from tests.support.polling import wait_for

LONG_CONFIGS = ("square19_4p", "hexagonal_3p", "square19_2p")


def test_each_worker_is_shown_under_the_node_it_runs_on(redis_server, real_conn, rq_workers, keys, make_settings):
    """Two real workers on one host as node-0 and node-1 (RINGRIFT_NODE), each holding a lease;
    node-1 is not in `hosts`, gpu-spare is and runs nothing."""
    settings = make_settings(redis_server.url)
    leases = LeaseManager(real_conn, keys, settings.leases.ttl_s, settings.leases.default_node_slots)
    leases.register_nodes({"node-0": 2, "gpu-spare": 1})
    rq_workers(2)  # test-worker-0 on node-0, test-worker-1 on node-1
    wait_for(lambda: len(Worker.all(connection=real_conn)) == 2, timeout_s=60)
    leases.try_acquire("hex8_2p", "node-0", "test-worker-0", "job-a")
    leases.try_acquire("square8_3p", "node-1", "test-worker-1", "job-b")

    status = gather(real_conn, settings)

    assert {w["name"]: w["node"] for w in status["workers"]} == {"test-worker-0": "node-0",
                                                                "test-worker-1": "node-1"}
    nodes = {n["node"]: n for n in status["nodes"]}
    assert set(nodes) == {"gpu-spare", "node-0", "node-1"}
    assert (nodes["node-0"]["workers"], nodes["node-0"]["in_use"], nodes["node-0"]["listed"]) == (
        ["test-worker-0"], "1", True)
    assert (nodes["node-1"]["workers"], nodes["node-1"]["in_use"], nodes["node-1"]["listed"]) == (
        ["test-worker-1"], "1", False)
    assert nodes["gpu-spare"]["workers"] == [] and nodes["gpu-spare"]["in_use"] == "0"

    screen = io.StringIO()
    print_status(status, console=wide_console(screen))
    rows = {line.split("│")[1].strip(): line for line in screen.getvalue().splitlines()
            if line.count("│") > 2 and line.split("│")[1].strip().startswith(("node-", "gpu-"))}
    assert "test-worker-0" in rows["node-0"] and "test-worker-1" in rows["node-1"]
    assert "not in hosts" in rows["node-1"] and "test-worker" not in rows["gpu-spare"]


def test_an_idle_worker_is_under_the_node_it_registered_else_its_host(fake_conn, keys, make_settings):
    for name, node in (("w-registered", "gpu-7"), ("w-plain", None)):
        worker = Worker(["training"], name=name, connection=fake_conn)
        worker.register_birth()
        if node:
            fake_conn.hset(worker.key, WORKER_NODE_FIELD, node)
    status = gather(fake_conn, make_settings())
    by_name = {w["name"]: w for w in status["workers"]}
    assert by_name["w-registered"]["node"] == "gpu-7"
    assert by_name["w-plain"]["node"] == by_name["w-plain"]["hostname"]
    assert {n["node"] for n in status["nodes"]} == {"gpu-7", by_name["w-plain"]["hostname"]}


def _long_configs(conn, keys) -> None:
    now = time.time()
    for i, key in enumerate(LONG_CONFIGS):
        conn.zadd(keys.priority, {key: -i})
        conn.hset(keys.config(key), mapping={"new_samples": 123_456 + i, "exported_at": now - 3600})


def test_status_written_to_a_pipe_keeps_every_cell_whole(fake_conn, keys, make_settings):
    _long_configs(fake_conn, keys)
    out = io.StringIO()  # not a terminal: rich alone would cut it at 80 columns
    print_status(gather(fake_conn, make_settings()), console=wide_console(out))
    text = out.getvalue()
    assert "…" not in text
    assert all(key in text for key in LONG_CONFIGS)
    assert max(len(line) for line in text.splitlines()) < 200, "a table padded to the whole pipe width"


def test_priorities_written_to_a_pipe_keep_every_cell_whole(fake_conn, keys, make_settings, capsys):
    _long_configs(fake_conn, keys)
    settings = make_settings()
    ranked = TrainingScheduler(fake_conn, keys, settings.scheduler, breakers=settings.breakers).ranked()
    print_priorities(ranked, settings.scheduler)  # stdout is captured: not a terminal
    text = capsys.readouterr().out
    assert "…" not in text
    assert all(key in text for key in LONG_CONFIGS)


def test_status_shows_a_nodes_reservation_for_a_waiting_multi_gpu_job(fake_conn, keys, make_settings):
    from coordinator.stores.reservations import Reservation, ReservationStore

    worker = Worker(["training"], name="duo-gpu0", connection=fake_conn)
    worker.register_birth()
    fake_conn.hset(worker.key, WORKER_NODE_FIELD, "duo")
    ReservationStore(fake_conn, keys).replace([Reservation("job-7", "square19_2p", "duo", 2, 1_800_000_000.0, 0)])
    status = gather(fake_conn, make_settings())
    assert [(r["node"], r["job_id"], r["promised_at"]) for r in status["reservations"]] == [
        ("duo", "job-7", 1_800_000_000.0)]
    out = io.StringIO()
    print_status(status, console=wide_console(out))
    assert "reserved: square19_2p (2 GPUs) from " + time.strftime("%H:%M", time.localtime(1_800_000_000)) \
        in out.getvalue()
