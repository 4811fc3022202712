"""Issue 25, item 10: `jobs` rounds losses so its columns stay in line, `locks` keeps a long worker
name in its column, a config that never trained shows "never" in `status` and `priorities`."""

from __future__ import annotations

import time

import pytest
import yaml

from coordinator.ops import cli
from coordinator.stores.leases import LeaseManager


@pytest.fixture
def run_cli(tmp_path, monkeypatch, capsys, fake_conn):
    monkeypatch.setattr(cli, "connect", lambda _url: fake_conn)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"training": {"data_roots": [str(tmp_path)], "check_npz": False}}))

    def run(*argv: str) -> str:
        assert cli.main(["--config", str(path), *argv]) == 0
        return capsys.readouterr().out

    return run


def test_jobs_rounds_losses_and_keeps_its_columns(run_cli, orch, fake_conn, keys):
    jobs = [orch.submit_training_sync("hex8", players, "/d/x.npz", samples=10) for players in (2, 3)]
    fake_conn.hset(keys.job(jobs[0]), "final_loss", "1.9234567890123456")
    fake_conn.hset(keys.job(jobs[1]), "final_loss", "0.5")
    header, *rows = run_cli("jobs").splitlines()
    assert "1.9235 " in "\n".join(rows) and "1.92345" not in "\n".join(rows)
    assert len({len(row.rstrip()) for row in rows}) == 1  # each ends with its parent "-" at one column


def test_locks_keeps_a_long_worker_name_in_its_column(run_cli, fake_conn, keys):
    leases = LeaseManager(fake_conn, keys, 60, 1)
    leases.register_nodes({"gpu-node-1": 1})
    worker = "rq-worker-on-a-host-with-a-very-long-name-0123456789abcdef"
    leases.try_acquire("hex8_2p", "gpu-node-1", worker, "hex8_2p-20261207T142640-a4fc89")
    lines = run_cli("locks").splitlines()
    [header] = [line for line in lines if " worker " in line]
    [row] = [line for line in lines if worker in line]
    assert row.index("hex8_2p-20261207T142640-a4fc89") == header.index("job")


def test_a_config_that_never_trained_says_never(run_cli, fake_conn, keys):
    now = time.time()
    fake_conn.zadd(keys.priority, {"hex8_2p": 0, "square8_2p": 0})
    fake_conn.hset(keys.config("hex8_2p"), mapping={"new_samples": 10, "exported_at": now - 7200,
                                                    "first_seen_at": now - 7200})
    fake_conn.hset(keys.config("square8_2p"), mapping={"new_samples": 10, "exported_at": now,
                                                       "last_trained_at": now - 3 * 3600})
    for command in ("status", "priorities"):
        out = run_cli(command)
        [never] = [line for line in out.splitlines() if "hex8_2p" in line]
        [trained] = [line for line in out.splitlines() if "square8_2p" in line]
        assert "never" in never and "never" not in trained and " 3.0 " in trained, (command, out)


def test_status_prints_ids_that_cancel_takes(run_cli, orch, fake_conn, keys):
    """Issue 25, item 2: the running job's id and a failure's job id, whole in `status`, are ids
    `cancel` accepts."""
    from tests.support.jobs import take_job

    job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    take_job(orch, job_id, "hex8_2p")
    fake_conn.xadd(keys.events, {"type": "TRAINING_FAILED", "job_id": job_id, "config_key": "hex8_2p",
                                 "reason": "trainer_error", "error": "boom", "will_retry": "true"})
    rows = [line for line in run_cli("status").splitlines() if "hex8_2p" in line and ("boom" in line or "0/3" in line)]
    assert len(rows) == 2 and all(f" {job_id} " in row for row in rows), rows
    assert f"{job_id}: running; its worker stops the trainer" in run_cli("cancel", job_id)
