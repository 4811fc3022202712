"""The CLI refuses malformed names before using them, and a service that stops on a coordinator
error exits 1 with a log line, not a traceback."""

from __future__ import annotations

import pytest
import yaml

from coordinator.ops import cli
from coordinator.service.orchestrator import ConsumerDied, TrainingOrchestrator


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"training": {"data_roots": [str(tmp_path)]}}))
    return str(path)


def _no_redis(_url):
    raise AssertionError("a malformed name must be refused before Redis is used")


@pytest.mark.parametrize("argv, said", [
    (["cancel", "hex8_2p-job\nother"], "not a valid job id"),
    (["cancel", "../../etc"], "not a valid job id"),
    (["worker-alive", "bad name"], "not a valid worker"),
    (["worker-alive", "-"], "not a valid worker"),
])
def test_malformed_names_are_refused_before_use(config_path, monkeypatch, capsys, argv, said):
    monkeypatch.setattr(cli, "connect", _no_redis)
    assert cli.main(["--config", config_path, *argv]) == 1
    assert said in capsys.readouterr().err


def test_run_exits_1_with_a_log_line_when_the_consumer_dies(config_path, monkeypatch, capfd):
    async def consumer_dies(self, metrics_port=None):
        raise ConsumerDied("the event consumer stopped: boom")

    monkeypatch.setattr(TrainingOrchestrator, "__init__", lambda self, settings: None)
    monkeypatch.setattr(TrainingOrchestrator, "run_until_signal", consumer_dies)
    assert cli.main(["--config", config_path, "run"]) == 1
    err = capfd.readouterr().err
    assert "the event consumer stopped: boom" in err and "Traceback" not in err
