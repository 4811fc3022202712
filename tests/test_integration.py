"""End to end on a real redis-server: `ringrift-train run` + real `rq worker training` processes.

Events are sent the way exporters send them: `redis-cli XADD` with plain string fields.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coordinator.events import decode_entry
from coordinator.jobs import JobStore
from tests.conftest import wait_for
from workers.npz_data import write_synthetic_npz
from workers.train import load_model

pytestmark = pytest.mark.integration


def console_script(name: str) -> str:
    sibling = Path(sys.executable).parent / name
    found = str(sibling) if sibling.exists() else shutil.which(name)
    assert found, f"{name} is not installed (pip install -e '.[dev]')"
    return found


@pytest.fixture
def service(redis_server, tmp_path):
    """Start `ringrift-train --config <tmp yaml> run`; yields a function that starts it with a trainer."""
    procs = []

    def start(command: list[str], epochs: int = 4) -> None:
        config = {
            "redis": {"url": redis_server.url, "prefix": "ringrift"},
            "training": {"default_epochs": epochs, "batch_size": 64, "command": command,
                         "models_root": str(tmp_path / "models"), "timeout_s": 300, "kill_grace_s": 2},
            "events": {"block_ms": 100, "reclaim_idle_ms": 5000},
            "hosts": {"node-0": 1, "node-1": 1},
        }
        path = tmp_path / "coordinator.yaml"
        path.write_text(yaml.safe_dump(config))
        log = open(tmp_path / "service.log", "wb")  # noqa: SIM115 - closed at teardown
        procs.append((subprocess.Popen([console_script("ringrift-train"), "--config", str(path), "run"],
                                       stdout=log, stderr=subprocess.STDOUT), log))

    yield start
    for proc, log in procs:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    if (tmp_path / "service.log").exists():
        sys.stdout.write("--- service.log\n" + (tmp_path / "service.log").read_text()[-3000:])


def xadd_like_an_exporter(redis_server, *fields: str) -> None:
    """`redis-cli XADD ringrift:events '*' field value ...` (redis-py only where redis-cli is absent)."""
    cli = shutil.which("redis-cli")
    if cli:
        subprocess.run([cli, "-p", str(redis_server.port), "XADD", "ringrift:events", "*", *fields],
                       check=True, capture_output=True, timeout=10)
    else:
        import redis

        redis.Redis(port=redis_server.port).xadd("ringrift:events", dict(zip(fields[::2], fields[1::2])))


def stream_events(conn, event_type: str | None = None):
    events = [decode_entry(i, f) for i, f in conn.xrange("ringrift:events")]
    return [e for e in events if event_type is None or e.type == event_type]


def test_exporter_xadd_trains_a_model_end_to_end(redis_server, real_conn, service, rq_workers, tmp_path):
    npz = write_synthetic_npz(tmp_path / "data" / "hex8_2p.npz", "hex8", 2, samples=512)
    service(["{python}", "-m", "workers.train"], epochs=4)
    rq_workers(1)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "board_type", "hex8", "num_players", "2",
                          "npz_path", str(npz), "samples", "512")
    [done] = wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=180)
    types = [e.type for e in stream_events(real_conn) if e.type.startswith("TRAINING")]
    assert types == ["TRAINING_STARTED"] + ["TRAINING_PROGRESS"] * 4 + ["TRAINING_COMPLETE"]
    started = stream_events(real_conn, "TRAINING_STARTED")[0]
    assert started.fields["node"] == "node-0" and started.fields["worker"] == "test-worker-0"
    first_epoch = stream_events(real_conn, "TRAINING_PROGRESS")[0]
    assert float(done.fields["final_loss"]) < float(first_epoch.fields["train_loss"])
    model = load_model(done.fields["model_path"])
    assert model.config["policy_size"] == 4500
    record = JobStore(real_conn, _keys()).get(done.fields["job_id"])
    assert record["state"] == "complete" and record["model_path"] == done.fields["model_path"]
    assert real_conn.hget("ringrift:config:hex8_2p", "latest_model").decode() == done.fields["model_path"]
    assert real_conn.xpending("ringrift:events", "orchestrator")["pending"] == 0


def test_corrupt_npz_ends_in_training_failed_with_stderr(redis_server, real_conn, service, rq_workers, tmp_path):
    bad = tmp_path / "square8_2p.npz"
    bad.write_bytes(b"this is not an npz")
    service(["{python}", "-m", "workers.train"])
    rq_workers(1)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", "square8_2p",
                          "output_path", str(bad), "samples_exported", "10")
    [failed] = wait_for(lambda: stream_events(real_conn, "TRAINING_FAILED"), timeout_s=120)
    assert failed.fields["error"] == "trainer exited with status 2"
    assert "not an NPZ (zip) file" in failed.fields["stderr_tail"]


def test_malformed_event_is_dead_lettered_and_service_keeps_going(redis_server, real_conn, service, rq_workers,
                                                                  tmp_path):
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"stub")
    service(["{python}", "-m", "workers.stub_train"])
    rq_workers(1)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "board_type", "hex8", "num_players", "7",
                          "npz_path", str(npz))
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "board_type", "hex8", "num_players", "3",
                          "npz_path", str(npz), "samples", "100")
    wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=60)
    [(_, dead)] = real_conn.xrange("ringrift:events:dead")
    assert dead[b"num_players"] == b"7" and b"num_players must be 2..4" in dead[b"dead_reason"]


def test_two_workers_many_exports_one_training_per_config_at_a_time(redis_server, real_conn, service, rq_workers,
                                                                     tmp_path):
    service(["{python}", "-m", "workers.stub_train", "--epoch-seconds", "0.2"], epochs=3)
    rq_workers(2)
    configs = [("hex8", "2"), ("square8", "3"), ("square19", "4")]
    for version in (1, 2, 3):
        for board, players in configs:
            npz = tmp_path / f"{board}_{players}p_v{version}.npz"
            npz.write_bytes(b"stub")
            xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "board_type", board,
                                  "num_players", players, "npz_path", str(npz), "samples", str(version * 100))
    store = JobStore(real_conn, _keys())

    def settled():
        jobs = store.list(100)
        newest = {}
        for job in sorted(jobs, key=lambda j: float(j["created_at"])):
            newest[job["config_key"]] = job
        done = all(j["state"] == "complete" for j in jobs) and len(newest) == 3
        return done and all(j["npz_path"].endswith("_v3.npz") for j in newest.values()) and jobs

    jobs = wait_for(settled, timeout_s=120)
    for board, players in configs:
        runs = sorted((float(j["started_at"]), float(j["finished_at"])) for j in jobs
                      if j["config_key"] == f"{board}_{players}p")
        assert 1 <= len(runs) <= 3
        assert all(prev_end <= next_start for (_, prev_end), (next_start, _) in zip(runs, runs[1:]))
    nodes = {e.fields["node"] for e in stream_events(real_conn, "TRAINING_STARTED")}
    assert nodes == {"node-0", "node-1"}


def _keys():
    from coordinator.keys import Keys

    return Keys("ringrift")
