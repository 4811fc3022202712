"""Issue 25, item 1: an open node breaker shows in `status` (text and JSON) and `locks` with when
its trial goes through; `breakers` lists and resets them; a job that nothing can run is not
logged at WARNING on every requeue. The CLI runs in-process against a real redis-server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from coordinator.core.settings import BreakerSettings
from coordinator.ops import cli
from coordinator.stores.breakers import CircuitBreakers
from coordinator.stores.leases import LeaseManager
from tests.support.streams import stream_events

COOLDOWN_S = 600


@pytest.fixture
def ringrift(redis_server, tmp_path: Path, capsys):
    """`ringrift-train --config <yaml on the test server> ARGS...` -> (exit status, stdout, stderr)."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"redis": {"url": redis_server.url}, "training": {"data_roots": [str(tmp_path)]},
                                    "breakers": {"failures": 3, "cooldown_s": COOLDOWN_S},
                                    "hosts": {"gpu-node-1": 1, "gpu-node-2": 1}}))

    def run(*argv: str) -> tuple[int, str, str]:
        status = cli.main(["--config", str(path), *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def node_1_open(real_conn, keys):
    """Both nodes known; gpu-node-1's breaker opened by three failures."""
    LeaseManager(real_conn, keys, 10, 1).register_nodes({"gpu-node-1": 1, "gpu-node-2": 1})
    breakers = CircuitBreakers(real_conn, keys, BreakerSettings(failures=3, cooldown_s=COOLDOWN_S), 0)
    for _ in range(3):
        breakers.record("node", "gpu-node-1", False)
    assert breakers.state("node", "gpu-node-1") == "open"
    return breakers


def test_status_json_shows_each_nodes_breaker_and_its_trial(ringrift, node_1_open):
    status, out, _ = ringrift("status", "--json")
    assert status == 0
    nodes = {n["node"]: n for n in json.loads(out)["nodes"]}
    assert nodes["gpu-node-1"]["breaker"] == "open" and nodes["gpu-node-1"]["breaker_failures"] == 3
    assert 0 < nodes["gpu-node-1"]["breaker_trial_in_s"] <= COOLDOWN_S
    assert nodes["gpu-node-2"]["breaker"] == "closed" and nodes["gpu-node-2"]["breaker_trial_in_s"] is None


def test_status_and_locks_text_show_the_open_breaker(ringrift, node_1_open):
    for command in ("status", "locks"):
        status, out, _ = ringrift(command)
        assert status == 0
        [row] = [line for line in out.splitlines() if "gpu-node-1" in line]
        assert "open, trial in 9m" in row or "open, trial in 10m" in row, (command, out)
        [other] = [line for line in out.splitlines() if "gpu-node-2" in line]
        assert "closed" in other and "open" not in other


def test_locks_json_has_the_breaker(ringrift, node_1_open):
    [breaker] = json.loads(ringrift("locks", "--json")[1])["node_breakers"]
    assert (breaker["name"], breaker["state"], breaker["failures"]) == ("gpu-node-1", "open", 3)
    assert 0 < breaker["trial_in_s"] <= COOLDOWN_S


def test_breakers_lists_and_resets_one(ringrift, node_1_open, real_conn, keys):
    node_1_open.record("config", "hex8_2p", False)  # one failure: a closed config breaker with a hash
    status, out, _ = ringrift("breakers")
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "open, trial in" in rows["node:gpu-node-1"] and rows["config:hex8_2p"].split()[1] == "closed"
    listed = json.loads(ringrift("breakers", "--json")[1])
    assert [(b["kind"], b["name"], b["state"]) for b in listed] == [
        ("config", "hex8_2p", "closed"), ("node", "gpu-node-1", "open")]

    status, out, _ = ringrift("breakers", "--reset", "node:gpu-node-1")
    assert status == 0 and "was open, now closed" in out
    assert node_1_open.state("node", "gpu-node-1") == "closed"
    [closed] = stream_events(real_conn, "CIRCUIT_CLOSED")
    assert closed.fields == {"type": "CIRCUIT_CLOSED", "kind": "node", "name": "gpu-node-1", "reason": "reset"}
    # Its failures are forgotten: one more failure does not reopen it.
    assert node_1_open.record("node", "gpu-node-1", False) == "closed"
    status, out, _ = ringrift("breakers", "--reset", "node:gpu-node-1")
    assert status == 0 and "already closed" in out and len(stream_events(real_conn, "CIRCUIT_CLOSED")) == 1


def test_breakers_reset_takes_a_bare_name_only_when_unambiguous(ringrift, node_1_open):
    status, out, _ = ringrift("breakers", "--reset", "gpu-node-1")
    assert status == 0 and "node:gpu-node-1: was open" in out
    status, _, err = ringrift("breakers", "--reset", "gpu-node-9")
    assert status == 1 and "no breaker has this name" in err
    status, _, err = ringrift("breakers", "--reset", "rack:gpu-node-1")
    assert status == 1 and "the kind must be config or node" in err


def test_a_job_requeued_every_tick_is_logged_at_warning_once(orch, fake_conn, caplog):
    """Nothing can run it (its RQ job keeps vanishing): one WARNING, then DEBUG while it repeats."""
    job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    caplog.set_level(logging.DEBUG, logger="coordinator.service.recovery")
    for _ in range(3):
        rq_id = orch.jobs.get(job_id)["rq_job_id"]
        fake_conn.delete(f"rq:job:{rq_id}")
        fake_conn.lrem("rq:queue:training", 0, rq_id)
        assert orch.recovery.requeue_lost() == [job_id]
        assert orch.recovery.requeue_due() == [job_id]
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "had no live RQ job" in r.getMessage()]
    assert [level for level, _ in said] == [logging.WARNING, logging.DEBUG, logging.DEBUG], said
