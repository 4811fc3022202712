"""Issue 25, item 6: every command says which config file it read (or that none was found) and
which Redis it uses, on stderr, password masked; /etc/ringrift/distributed_hosts.yaml is the last
place searched. `status` runs in-process against a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from coordinator.core import settings as settings_module
from coordinator.core.settings import load_settings
from coordinator.ops import cli


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch) -> Path:
    """A directory without config/, no $RINGRIFT_CONFIG or $REDIS_URL, and no system-wide file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RINGRIFT_CONFIG", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(settings_module, "SYSTEM_CONFIG_PATH", tmp_path / "etc" / "distributed_hosts.yaml")
    return tmp_path


def write_config(path: Path, redis_url: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"redis": {"url": redis_url}, "training": {"data_roots": [str(path.parent)]}}))
    return path


def test_status_says_which_file_and_redis_and_json_stays_clean(redis_server, real_conn, nowhere, capsys):
    config = write_config(nowhere / "mine.yaml", redis_server.url)
    assert cli.main(["--config", str(config), "status", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "configs" in json.loads(out)
    assert f"config {config}; redis {redis_server.url}, prefix ringrift" in err, err


def test_no_file_found_is_said_with_the_redis_from_the_environment(redis_server, real_conn, nowhere, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert cli.main(["status", "--json"]) == 0
    out, err = capsys.readouterr()
    json.loads(out)
    assert "no config file found: built-in defaults" in err
    assert f"config none found: built-in defaults; redis {redis_server.url} (from $REDIS_URL)" in err, err


def test_the_system_wide_file_is_searched_last(redis_server, real_conn, nowhere, capsys):
    system = write_config(settings_module.SYSTEM_CONFIG_PATH, redis_server.url)
    assert load_settings().source == str(system)
    assert cli.main(["status", "--json"]) == 0
    assert f"config {system}; redis {redis_server.url}" in capsys.readouterr().err
    local = write_config(nowhere / "config" / "distributed_hosts.yaml", "redis://127.0.0.1:1/0")
    assert load_settings().source == str(local.relative_to(nowhere))  # ./config/ comes first


def test_check_config_names_the_file_and_masks_the_password(nowhere, capsys):
    config = write_config(nowhere / "c.yaml", "redis://worker:hunter2@redis.example:6379/0")
    assert cli.main(["check-config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert f"config {config}; redis redis://worker:***@redis.example:6379/0" in err, err
    assert "OK" in out and "hunter2" not in out + err
