"""Bad input by class: paths outside the data roots, poison messages, replay, config checks, secrets."""

from __future__ import annotations

import subprocess

import msgpack

from coordinator import TrainingOrchestrator
from coordinator.core.settings import redact_url
from tests.support.exports import xadd_export
from tests.support.streams import dead_reasons
from tests.support.tools import console_script


def test_paths_must_resolve_inside_the_data_roots(make_orch, fake_conn, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "ok.npz").write_bytes(b"x")
    (root / "escape.npz").symlink_to("/etc/passwd")
    orch = make_orch(data_roots=(str(root),))
    for path in (root / "ok.npz", root / "../../etc/passwd", root / "escape.npz", "/tmp/elsewhere.npz"):
        xadd_export(fake_conn, "hex8_2p", path, 10)
    orch.process_once(block_ms=None)
    reasons = dead_reasons(fake_conn)
    assert len(reasons) == 3 and all("outside the data roots" in r for r in reasons)
    assert "resolves to '/etc/passwd'" in reasons[1]
    assert orch.jobs.get(orch.jobs.active_job("hex8_2p"))["npz_path"] == str(root / "ok.npz")


def test_payloads_must_be_small_shallow_msgpack(orch, fake_conn, keys):
    deep: list = []
    for _ in range(20):
        deep = [deep]
    base = {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": "1500"}
    import pickle

    for payload in (pickle.dumps({"x": 1}), msgpack.packb(deep), msgpack.packb("x" * 300_000), msgpack.packb({"a": 1})):
        fake_conn.xadd(keys.events, {**base, "payload": payload})
    orch.process_once(block_ms=None)
    reasons = dead_reasons(fake_conn)
    assert reasons[0].startswith("payload is not valid msgpack")  # a pickle is never unpickled
    assert reasons[1] == "payload is nested deeper than 8"
    assert reasons[2].startswith("payload is larger than")
    assert len(reasons) == 3  # the small, shallow one was handled


def test_dead_letters_command_lists_and_replays(redis_server, real_conn, make_settings):
    orch = TrainingOrchestrator(make_settings(redis_server.url), real_conn, consumer_name="t")
    orch.prepare()
    xadd_export(real_conn, ("hex8", 9), "/d/x.npz", 5)
    orch.process_once(block_ms=None)
    env = {"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    listing = subprocess.run([console_script("ringrift-train"), "dead-letters"], env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout
    assert "num_players must be 2..4, got 9" in listing
    [(dead_id, _)] = real_conn.xrange("ringrift:events:dead")
    out = subprocess.run([console_script("ringrift-train"), "dead-letters", "--replay", dead_id.decode()], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "replayed as" in out and real_conn.xlen("ringrift:events:dead") == 0
    replayed = real_conn.xrevrange("ringrift:events", count=1)[0][1]
    assert replayed[b"num_players"] == b"9" and b"dead_reason" not in replayed


def test_check_config_prints_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  batch_size: big\n  data_roots: /data\nleases:\n  ttl_s: -1\nsurprise: 1\n")
    proc = subprocess.run([console_script("ringrift-train"), "check-config", str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert f"{bad}: training.batch_size: expected an integer > 0, got 'big' (str)" in lines
    assert any(line.startswith(f"{bad}: training.data_roots: expected a list of strings") for line in lines)
    assert any(line.startswith(f"{bad}: leases.ttl_s: expected a number > 0") for line in lines)
    assert any(line.startswith(f"{bad}: surprise: unknown key") for line in lines)
    good = subprocess.run([console_script("ringrift-train"), "check-config", "config/distributed_hosts.yaml"],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and "OK" in good.stdout
    service = subprocess.run([console_script("ringrift-train"), "--config", str(bad), "run"], capture_output=True,
                             text=True, timeout=60)
    assert service.returncode == 1 and "training.batch_size" in service.stderr  # refuses to start


def test_passwords_never_reach_the_screen():
    assert redact_url("redis://worker:s3cret@gpu-redis:6379/0") == "redis://worker:***@gpu-redis:6379/0"
    assert redact_url("rediss://:s3cret@h:6380") == "rediss://:***@h:6380"
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_json_logs_carry_the_job_and_no_password(capsys):
    import json
    import logging

    from coordinator.core.logs import configure, for_job

    configure(logging.INFO, "json")
    try:
        for_job(logging.getLogger("t"), job_id="hex8_2p-1", config_key="hex8_2p").warning(
            "cannot reach redis://worker:s3cret@redis:6379/0")
    finally:
        logging.getLogger().handlers.clear()
    entry = json.loads(capsys.readouterr().err.strip())
    assert (entry["job_id"], entry["config_key"], entry["level"]) == ("hex8_2p-1", "hex8_2p", "WARNING")
    assert "s3cret" not in entry["message"] and "worker:***@redis" in entry["message"]
