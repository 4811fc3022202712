"""The operator's tools: metrics over HTTP, the dashboard, status/events/submit on real Redis."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

from coordinator.ops.local_redis import free_port
from tests.support.exports import cli_export, xadd_like_an_exporter
from tests.support.grafana import DASHBOARD
from tests.support.polling import or_none, wait_for
from tests.support.streams import stream_events
from tests.support.tools import console_script
from tests.support.trainers import stub_trainer

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def test_metrics_endpoint_series_exist_and_move(redis_server, real_conn, service, rq_workers, npz):
    port = free_port()
    service(stub_trainer(), epochs=2, run_args=("--metrics-port", str(port)))
    before = wait_for(lambda: or_none(lambda: scrape(port), OSError), timeout_s=20)
    rq_workers(1)
    cli_export(redis_server, "hex8_2p", npz, 10)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", "hex8_9p")
    wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=60)
    after = wait_for(lambda: (s := scrape(port)).get(
        'ringrift_events_consumed_total{type="TRAINING_COMPLETE"}') and s, timeout_s=20)
    assert after['ringrift_events_consumed_total{type="NPZ_EXPORT_COMPLETE"}'] == 1
    assert after['ringrift_events_dead_lettered_total{type="NPZ_EXPORT_COMPLETE"}'] == 1
    assert after["ringrift_lease_acquisitions_total"] == before.get("ringrift_lease_acquisitions_total", 0) + 1
    assert after["ringrift_training_duration_seconds_count"] == 1
    assert after["ringrift_event_to_start_seconds_count"] == 1
    assert after['ringrift_jobs{state="complete"}'] == 1
    assert after['ringrift_config_priority{config="hex8_2p"}'] == -1.0  # trained: nothing new
    assert after['ringrift_node_slots{node="node-0",status="healthy"}'] == 1
    assert "ringrift_queue_depth" in after and "ringrift_lease_busy_total" in after
    # Every metric the dashboard queries is one the endpoint serves.
    served = {re.sub(r"\{.*", "", name) for name in after}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"ringrift_[a-z_]+", target["expr"]):
                assert name in served, f"dashboard panel {panel['title']!r} uses {name}, which is not served"


def test_submit_wait_follows_the_job_and_fails_with_it(redis_server, real_conn, service, rq_workers, tmp_path,
                                                       npz):
    service(stub_trainer("--epoch-seconds", "0.3"), epochs=3)
    rq_workers(1)
    base = [console_script("ringrift-train"), "--config", str(tmp_path / "coordinator.yaml"), "submit"]

    def submit(board: str, path: str) -> list[str]:
        return [*base, "--board-type", board, "--num-players", "2", "--npz-path", path, "--epochs", "3", "--wait"]

    ok = subprocess.run(submit("hex8", str(npz)), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    job_id = ok.stdout.strip()
    assert job_id.startswith("hex8_2p-") and "complete, final loss" in ok.stderr
    missing = subprocess.run(submit("square8", str(tmp_path / "gone.npz")), capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 1 and "failed (missing_input)" in missing.stderr
    bad = subprocess.run(submit("hex9", "/x.npz"), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown board_type 'hex9'" in bad.stderr


def test_events_and_status_commands(redis_server, real_conn, service, rq_workers, npz):
    service(stub_trainer("--epoch-seconds", "3"), epochs=3)
    rq_workers(1)
    for key in ("hex8_2p", "square8_3p"):
        cli_export(redis_server, key, npz, 10)
    wait_for(lambda: [e for e in stream_events(real_conn, "TRAINING_PROGRESS")], timeout_s=30)
    env = {"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin", "COLUMNS": "160"}
    run = [console_script("ringrift-train")]
    lines = subprocess.run([*run, "events", "--type", "NPZ_EXPORT_COMPLETE", "--json"], env=env, check=True,
                           capture_output=True, text=True, timeout=30).stdout.splitlines()
    assert [json.loads(line)["config_key"] for line in lines] == ["hex8_2p", "square8_3p"]
    status = json.loads(subprocess.run([*run, "status", "--json"], env=env, check=True, capture_output=True,
                                       text=True, timeout=30).stdout)
    [running] = status["running"]
    other = ({"hex8_2p", "square8_3p"} - {running["config_key"]}).pop()
    text = subprocess.run([*run, "events", "--config", running["config_key"]], env=env, check=True,
                          capture_output=True, text=True, timeout=30).stdout
    assert "TRAINING_STARTED" in text and other not in text
    assert running["state"] == "running" and running["epoch"] >= 1 and running["node"] == "node-0"
    assert {c["config_key"] for c in status["configs"]} == {"hex8_2p", "square8_3p"}
    screen = subprocess.run([*run, "status"], env=env, check=True, capture_output=True, text=True, timeout=30).stdout
    assert "running" in screen and running["config_key"] in screen and "configs by priority" in screen


def test_status_watch_in_a_terminal(redis_server, real_conn, service, rq_workers, npz):
    assert shutil.which("tmux"), "tmux is missing: .ci/run installs it"
    service(stub_trainer("--epoch-seconds", "2"), epochs=4)
    rq_workers(1)
    session = f"ringrift-{free_port()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50",
                    f"COLUMNS=160 REDIS_URL={redis_server.url} {console_script('ringrift-train')} status --watch "
                    "--interval 0.5"],
                   check=True)
    try:
        cli_export(redis_server, "hex8_2p", npz, 10)

        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                  text=True).stdout

        try:
            first = wait_for(lambda: "1/4" in (s := screen()) and s, timeout_s=30)
        except AssertionError:
            raise AssertionError(f"the screen never showed epoch 1/4:\n{screen()}") from None
        later = wait_for(lambda: "2/4" in (s := screen()) and s, timeout_s=30)
        assert "hex8_2p" in first and first != later
        time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
