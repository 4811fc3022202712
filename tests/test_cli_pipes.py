"""Issue 25, item 5: output written to a pipe. A closed pipe ends a command quietly (as SIGPIPE
would), `events` is one line per event whatever $COLUMNS, `submit --wait`'s last line and the
demo's tables are never cut or glued, `--json` is one document on stdout."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from coordinator.ops import cli, demo
from coordinator.ops.submit_wait import follow_job
from tests.support.tools import console_script

LONG = "x" * 300


@pytest.fixture
def config(redis_server, tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"redis": {"url": redis_server.url}, "training": {"data_roots": [str(tmp_path)]}}))
    return path


@pytest.mark.parametrize("command", [["status", "--json"], ["status"], ["jobs"], ["events"]])
def test_a_closed_pipe_ends_the_command_quietly(config, real_conn, keys, command):
    """The reader is gone before the command writes (`| head` that has read enough)."""
    real_conn.xadd(keys.events, {"type": "FILLER", "i": 1})
    proc = subprocess.Popen([console_script("ringrift-train"), "--config", str(config), *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    proc.stdout.close()  # before it imported anything: its first write finds no reader
    _, err = proc.communicate(timeout=60)
    assert "BrokenPipe" not in err.decode() and "Traceback" not in err.decode(), err.decode()
    assert proc.returncode == cli.SIGPIPE_EXIT  # as after SIGPIPE, rich's tables included


def test_status_json_is_one_document_on_stdout(config, real_conn):
    done = subprocess.run([console_script("ringrift-train"), "--config", str(config), "status", "--json"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert set(json.loads(done.stdout)) >= {"configs", "nodes", "running"}


def test_events_are_one_line_each_on_a_pipe(config, real_conn, keys, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")
    for i in range(3):
        real_conn.xadd(keys.events, {"type": "TRAINING_FAILED", "config_key": "hex8_2p", "job_id": f"j{i}",
                                     "error": LONG, "stderr_tail": LONG})
    assert cli.main(["--config", str(config), "events"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(f"job_id=j{i}" in line for i, line in enumerate(lines)), lines


class _DoneStore:
    """The one call follow_job makes: a job record that has already ended."""

    def __init__(self, record: dict[str, str]) -> None:
        self.record = record

    def get(self, _job_id: str) -> dict[str, str]:
        return self.record


def test_submit_wait_prints_the_model_path_whole(capsys):
    model = "/srv/models/" + "/".join(["hex8_2p-20261207T142640-a4fc89"] * 4) + "/attempt-1/model.pt"
    store = _DoneStore({"config_key": "hex8_2p", "state": "complete", "epochs": "2", "epoch": "2",
                        "final_loss": "0.123", "model_path": model})
    assert follow_job(store, "hex8_2p-20261207T142640-a4fc89") == 0
    [last] = [line for line in capsys.readouterr().err.splitlines() if "complete, final loss" in line]
    assert last.endswith(f"model {model}")


def test_the_demos_round_tables_are_apart():
    """Each round's progress table starts after a blank line, not on the previous one's border."""
    out = io.StringIO()
    console = Console(file=out, width=200)
    job = {"job_id": "hex8_2p-1", "config_key": "hex8_2p", "state": "complete", "epochs": "2", "epoch": "2"}
    for _ in range(2):
        asyncio.run(demo._follow(_DoneStore(job), ["hex8_2p-1"], console, 10))
    lines = out.getvalue().splitlines()
    titles = [i for i, line in enumerate(lines) if line.strip() == "training"]
    assert len(titles) == 2 and lines[titles[1] - 1] == "" and lines[-1].startswith("└"), lines
