"""The CLI's commands build their components from the YAML's settings, not from built-in defaults."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from coordinator.bus.events import Export
from coordinator.core.settings import load_settings
from coordinator.ops import cli
from coordinator.stores.configs import ConfigStore
from coordinator.stores.job_records import TrainingParams
from coordinator.stores.jobs import JobStore


@pytest.fixture
def run_cli(tmp_path, monkeypatch, capsys):
    """`ringrift-train --config <tmp yaml> ...` on the given Redis; returns (exit status, stdout)."""

    def run(conn, sections: dict, *argv: str) -> tuple[int, str]:
        monkeypatch.setattr(cli, "connect", lambda _url: conn)
        path = tmp_path / "c.yaml"
        sections = {"training": {"data_roots": [str(tmp_path)]}, **sections}
        path.write_text(yaml.safe_dump(sections))
        status = cli.main(["--config", str(path), *argv])
        return status, capsys.readouterr().out

    return run


def test_priorities_uses_the_configured_breaker_cooldown(run_cli, fake_conn, keys):
    """A config breaker opened 100 s ago with cooldown_s 60 is half-open: not a reason to wait
    (the default 600 s would say "open for 500 s more")."""
    fake_conn.zadd(keys.priority, {"hex8_2p": -1})
    fake_conn.hset(keys.config("hex8_2p"), mapping={"new_samples": 10, "exported_at": time.time()})
    fake_conn.hset(keys.breaker("config", "hex8_2p"), mapping={"state": "open", "opened_at": time.time() - 100})
    status, out = run_cli(fake_conn, {"breakers": {"cooldown_s": 60}}, "priorities", "--json")
    assert status == 0
    [row] = json.loads(out)
    assert not any("circuit breaker" in why for why in row["why"]), row["why"]
    assert row["eligible"]


def test_cancel_trims_the_stream_to_the_configured_length(run_cli, real_conn, keys, tmp_path: Path):
    """`cancel` publishes TRAINING_CANCELLED trimmed to events.stream_maxlen (here 100), not to the
    built-in 100,000. Real Redis: fakeredis does not trim approximately (MAXLEN ~); Redis trims
    whole stream nodes (100 entries each), so about 100-200 entries stay."""
    settings = load_settings(env={})
    store = JobStore.from_settings(real_conn, keys, settings)
    export = Export("hex8", 2, "hex8_2p", str(tmp_path / "x.npz"), 10)
    ConfigStore(real_conn, keys, settings.scheduler).record_export(export)
    job_id = store.create_job(settings, "hex8_2p", TrainingParams.from_settings(settings)).job_id
    with real_conn.pipeline(transaction=False) as pipe:
        for i in range(1000):
            pipe.xadd(keys.events, {"type": "FILLER", "i": i})
        pipe.execute()
    status, out = run_cli(real_conn, {"events": {"stream_maxlen": 100}}, "cancel", job_id)
    assert status == 0 and "cancelled" in out
    assert real_conn.xlen(keys.events) <= 300
    assert store.get(job_id)["state"] == "cancelled"
