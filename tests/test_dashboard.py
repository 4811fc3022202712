"""`ringrift-train dashboard`: its data read as the `viewer` ACL user from real Redis state, the
token gate and bind rule, and a real headless Chromium loading the page while a training runs."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
import redis

from coordinator.core.errors import ConfigError
from coordinator.core.settings import BreakerSettings, load_settings
from coordinator.ops.dashboard.command import add_dashboard_parser
from coordinator.ops.dashboard.data import DashboardData
from coordinator.ops.dashboard.server import TOKEN_COOKIE, check_bind, serve_in_thread
from coordinator.ops.local_redis import free_port
from coordinator.scheduling.scheduler import TrainingScheduler
from coordinator.service.orchestrator import TrainingOrchestrator
from coordinator.stores.breakers import CircuitBreakers
from tests.support.acl import as_role, url
from tests.support.exports import xadd_export
from tests.support.jobs import end_job, take_job
from tests.support.polling import get_json, wait_for
from tests.support.tools import console_script, require
from tests.support.trainers import stub_trainer

pytestmark = pytest.mark.integration


@pytest.fixture
def seeded(acl_server, make_settings, npz):
    """A cluster written as the coordinator: three configs, a running job with two epochs, a
    finished one, a failure with its stderr, a dead letter, Elo evaluations, a node breaker open."""
    coordinator = as_role(acl_server, "coordinator")
    for pattern in ("ringrift:*", "rq:*"):  # the server is the module's: start clean (no FLUSHALL for this role)
        for key in coordinator.scan_iter(match=pattern, count=1000):
            coordinator.delete(key)
    settings = replace(make_settings(url(acl_server, "coordinator")), hosts={"node-a": 2, "node-b": 1})
    orch = TrainingOrchestrator(settings, coordinator, consumer_name="t")
    orch.prepare()
    for config_key in ("hex8_2p", "square8_3p", "hexagonal_4p"):
        xadd_export(coordinator, config_key, npz, 5000)
    coordinator.xadd(orch.keys.events, {"type": "NPZ_EXPORT_COMPLETE", "config_key": "hex8_2p"})  # dead letter
    for at, elo in ((1000.0, 1200), (2000.0, 1260)):
        coordinator.xadd(orch.keys.events, {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": str(elo),
                                            "timestamp": str(at)})
    while orch.process_once(block_ms=None):
        pass
    running, done, failed = (orch.jobs.active_job(c) for c in ("hex8_2p", "square8_3p", "hexagonal_4p"))
    coordinator.set(orch.keys.fence("hex8_2p"), 41)  # 41 earlier leases: a fence unlike any other number here
    lease = take_job(orch, running, "hex8_2p", node="node-a")
    for epoch in (1, 2):
        orch.jobs.progress(running, "hex8_2p", {"epoch": epoch, "total_epochs": 3, "train_loss": 1.0 / epoch,
                                                "val_loss": 1.2 / epoch})
    take_job(orch, done, "square8_3p", node="node-b")
    orch.jobs.progress(done, "square8_3p", {"epoch": 1, "total_epochs": 3, "train_loss": 0.9, "val_loss": 1.0})
    end_job(orch.jobs, done, "square8_3p", latest_model="/models/square8_3p/model.pt")
    take_job(orch, failed, "hexagonal_4p", node="node-a")
    from coordinator.stores.job_records import Outcome

    fields = {"reason": "trainer_error", "error": "trainer exited with status 1", "will_retry": "false",
              "stderr_tail": "Traceback ...\nRuntimeError: CUDA out of memory"}
    orch.jobs.finish(failed, "hexagonal_4p", "failed", Outcome("TRAINING_FAILED", {**fields, "node": "node-a"},
                                                                fields, node="node-a", attempt=1))
    breakers = CircuitBreakers(coordinator, orch.keys, BreakerSettings(failures=1, cooldown_s=3600), stream_maxlen=0)
    breakers.record("node", "node-b", success=False)
    orch.scheduler.rescore()
    return {"settings": settings, "orch": orch, "running": running, "done": done, "failed": failed,
            "fence": str(lease.fence)}


def test_page_data_as_the_viewer_user(acl_server, seeded):
    viewer = as_role(acl_server, "viewer")  # read commands only: any write would raise NOPERM
    settings, orch = seeded["settings"], seeded["orch"]
    # The running job started 100 s ago (2 of its 3 epochs done): its ETA is half the time elapsed.
    as_role(acl_server, "coordinator").hset(orch.keys.job(seeded["running"]), "started_at", f"{time.time() - 100:.3f}")
    data = DashboardData(viewer, settings, cache_s=0)
    page = data.page()

    ranked = TrainingScheduler.from_settings(viewer, orch.keys, settings).ranked()
    assert [c["config_key"] for c in page["configs"]] == [p.config_key for p in ranked]
    square = next(c for c in page["configs"] if c["config_key"] == "square8_3p")
    assert square["latest_model"] == "/models/square8_3p/model.pt"
    assert set(square["contributions"]) == set(page["factors"])
    hex8 = next(c for c in page["configs"] if c["config_key"] == "hex8_2p")
    assert not hex8["eligible"] and hex8["why"][0].startswith("queued or running")

    [run] = page["running"]
    assert (run["job_id"], run["node"], run["attempt"], run["epoch"], run["epochs"]) == (
        seeded["running"], "node-a", 1, 2, 3)
    assert run["fence"] == seeded["fence"]  # the fencing token its lease was granted
    assert run["elapsed_s"] >= 100 and run["eta_s"] == pytest.approx(run["elapsed_s"] / 2, abs=0.1)
    assert run["curve"] == [[1, 1.0, 1.2], [2, 0.5, 0.6]] or run["curve"] == [(1, 1.0, 1.2), (2, 0.5, 0.6)]

    # More epochs arrive: the next poll reads only the stream's new entries and the curve grows.
    orch.jobs.progress(seeded["running"], "hex8_2p", {"epoch": 3, "total_epochs": 3, "train_loss": 0.3})
    [run] = data.page()["running"]
    assert [p[0] for p in run["curve"]] == [1, 2, 3]

    assert {j["job_id"]: j["state"] for j in page["jobs"]} == {
        seeded["running"]: "running", seeded["done"]: "complete", seeded["failed"]: "failed"}
    finished = data.job(seeded["done"])
    assert [tuple(p) for p in finished["curve"]] == [(1, 0.9, 1.0)] and finished["state"] == "complete"
    # A job whose epochs are no longer on the stream: the history its record carries, if any.
    assert data.job(seeded["failed"])["curve"] == []
    as_role(acl_server, "coordinator").hset(orch.keys.job(seeded["failed"]), "history",
                                            json.dumps([{"epoch": 1, "train_loss": 2.0}]))
    assert [tuple(p) for p in data.job(seeded["failed"])["curve"]] == [(1, 2.0, None)]

    assert page["elo"]["configs"] == ["hex8_2p"]
    assert [tuple(p) for p in page["elo"]["points"]["hex8_2p"]] == [(1000.0, 1200.0), (2000.0, 1260.0)]
    history = data.config("square8_3p")
    assert [t["job_id"] for t in history["trainings"]] == [seeded["done"]]

    bars = {b[0]: b for b in page["timeline"]["bars"]}
    assert (bars[seeded["done"]][2], bars[seeded["done"]][5]) == ("node-b", "complete")
    assert bars[seeded["failed"]][5] == "failed"
    assert {n["node"]: n["gpus"] for n in page["timeline"]["nodes"]} == {"node-a": 2, "node-b": 1}

    trouble = page["trouble"]
    [failure] = trouble["failures"]
    assert failure["job_id"] == seeded["failed"] and "CUDA out of memory" in failure["stderr_tail"]
    [dead] = trouble["dead_letters"]
    assert dead["type"] == "NPZ_EXPORT_COMPLETE" and "npz_path" in dead["reason"]
    assert {"kind": "node", "name": "node-b", "why": "open: its workers hand jobs back"} in trouble["breakers"]
    [group] = trouble["consumer_groups"]  # the workers' events since the last read wait for the orchestrator
    assert group["name"] == settings.events.group and group["lag"] > 0
    assert data.job("no-such-job") is None and data.config("no_such_config") is None


def test_bind_rule_and_token_gate(redis_server, real_conn, make_settings):
    with pytest.raises(ConfigError, match="--token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "t0k3n")
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind(host, None)
    parser = argparse.ArgumentParser()
    add_dashboard_parser(parser.add_subparsers())
    args = parser.parse_args(["dashboard", "--host", "0.0.0.0", "--redis-url", redis_server.url])
    assert (args.host, args.port, args.token) == ("0.0.0.0", 8080, None)
    assert args.func(args, make_settings(redis_server.url)) == 2  # refused before it binds anything

    port = free_port()
    serve_in_thread(make_settings(redis_server.url), port, token="t0k3n")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _status(f"{base}/api/page") == 401, timeout_s=20)
    assert _status(f"{base}/") == 401 and _status(f"{base}/static/app.js") == 401
    with urllib.request.urlopen(f"{base}/?token=t0k3n", timeout=10) as reply:
        cookie = reply.headers["set-cookie"]
        assert cookie.startswith(f"{TOKEN_COOKIE}=t0k3n") and b"app.js" in reply.read()
    with_cookie = urllib.request.Request(f"{base}/api/page", headers={"Cookie": cookie.split(";")[0]})
    assert json.loads(urllib.request.urlopen(with_cookie, timeout=10).read())["configs"] == []
    bearer = urllib.request.Request(f"{base}/static/uPlot.iife.min.js", headers={"Authorization": "Bearer t0k3n"})
    assert b"uPlot" in urllib.request.urlopen(bearer, timeout=10).read()
    assert _status(f"{base}/api/page?token=wrong") == 401


def _status(address: str) -> int:
    try:
        with urllib.request.urlopen(address, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def dump_dom(chromium: str, address: str) -> str:
    """The page's DOM after its scripts ran (headless, 4 s of virtual time: the first poll and the next)."""
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=4000",
                           "--dump-dom", address], capture_output=True, text=True, timeout=120, check=True).stdout


def job_points(dom: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r'class="job" data-job="([^"]+)" data-points="(\d+)"', dom)}


def config_rows(dom: str) -> list[tuple[str, bool]]:
    return [(m[0], m[2] == "1") for m in re.findall(
        r'<tr class="clickable[^"]*" data-config="([^"]+)" data-rank="([^"]*)" data-eligible="([01])"', dom)]


def test_chromium_sees_the_curve_grow_and_the_priorities(redis_server, real_conn, service, rq_workers, npz, tmp_path):
    chromium = require("chromium")
    service(stub_trainer("--epoch-seconds", "2"), epochs=8)
    config = tmp_path / "coordinator.yaml"
    rq_workers(1)
    for config_key in ("hex8_2p", "square8_2p"):
        xadd_export(real_conn, config_key, npz, 10)
    port = free_port()
    settings = load_settings(str(config))
    serve_in_thread(settings, port)
    address = f"http://127.0.0.1:{port}/"

    first = wait_for(lambda: {j: n for j, n in job_points(dump_dom(chromium, address)).items() if n >= 1},
                     timeout_s=90, interval_s=0.5)
    [(job_id, points)] = first.items()
    grown = wait_for(lambda: job_points(dump_dom(chromium, address)).get(job_id, 0) > points, timeout_s=90,
                     interval_s=0.5)
    assert grown

    def table_matches_priorities() -> bool:
        rows = config_rows(dump_dom(chromium, address))
        ranked = json.loads(subprocess.run(
            [console_script("ringrift-train"), "--config", str(config), "priorities",
             "--json"], capture_output=True, text=True, timeout=60, check=True).stdout)
        return bool(rows) and rows == [(p["config_key"], p["eligible"]) for p in ranked]

    # A job may end between the two reads: the table and the ranking agree at a quiet moment.
    assert wait_for(table_matches_priorities, timeout_s=60, interval_s=0.5)


def test_viewer_url_serves_the_page(acl_server, seeded):
    """The whole server on a viewer URL (what `ringrift-train dashboard --redis-url` gets)."""
    settings = replace(seeded["settings"], redis=replace(seeded["settings"].redis, url=url(acl_server, "viewer")))
    port = free_port()
    serve_in_thread(settings, port)
    page = wait_for(lambda: get_json(f"http://127.0.0.1:{port}/api/page"), timeout_s=20)
    assert len(page["configs"]) == 3 and page["running"][0]["job_id"] == seeded["running"]
    job = get_json(f"http://127.0.0.1:{port}/api/job/{seeded['done']}")
    assert job["state"] == "complete"
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_role(acl_server, "viewer").hset("ringrift:stats", "x", 1)  # the role really is read-only


