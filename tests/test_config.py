from pathlib import Path

import pytest

from coordinator.core.errors import ConfigError
from coordinator.core.settings import Settings, load_settings, parse_settings

EXAMPLE = Path(__file__).parent.parent / "config" / "distributed_hosts.yaml"


def test_example_file_loads_with_the_seed_defaults():
    settings = load_settings(EXAMPLE, env={})
    assert settings.training.default_epochs == 50
    assert settings.training.batch_size == 512
    assert settings.training.learning_rate == 0.001
    assert settings.training.early_stopping_patience == 5
    assert settings.redis.prefix == "ringrift"
    assert settings.training.command == ("{python}", "-m", "workers.train")
    assert settings.hosts == {"gpu-node-1": 8, "gpu-node-2": 8}
    assert settings.training.data_roots == ("/data/training",)  # the shipped config confines data
    assert settings.source == str(EXAMPLE)


def test_wrong_type_names_file_key_and_expectation(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  batch_size: big\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert str(path) in message
    assert "training.batch_size" in message
    assert "expected an integer > 0" in message
    assert "'big'" in message


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "redis:\n  urll: redis://x\ntraining:\n  learning_rate: -1\n  command: 'python train.py'\n  data_roots: [/d]\n"
        "hosts:\n  gpu-a: zero\nextra: 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    problems = info.value.problems
    assert any(p.startswith("redis.urll: unknown key") for p in problems)
    assert any(p.startswith("training.learning_rate: expected a number > 0") for p in problems)
    assert any(p.startswith("training.command: expected a non-empty list of strings") for p in problems)
    assert any(p.startswith("hosts.gpu-a: expected a number of GPUs") for p in problems)
    assert any(p.startswith("extra: unknown key") for p in problems)
    assert len(problems) == 5


def test_booleans_are_not_integers():
    with pytest.raises(ConfigError, match="training.default_epochs"):
        parse_settings({"training": {"default_epochs": True}})


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_settings(path, env={})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_environment_overrides_path_and_url(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("redis:\n  url: redis://from-file:6379/0\n  prefix: other\ntraining:\n  data_roots: [/d]\n")
    settings = load_settings(env={"RINGRIFT_CONFIG": str(path), "REDIS_URL": "redis://from-env:1/2"})
    assert settings.redis.url == "redis://from-env:1/2"
    assert settings.redis.prefix == "other"


def test_no_file_anywhere_gives_defaults_and_says_so(tmp_path, monkeypatch, caplog):
    from coordinator.core.settings import BUILT_IN

    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings == Settings() and settings.source == BUILT_IN
    assert "no settings file" in caplog.text and "built-in defaults" in caplog.text
    caplog.clear()
    load_settings(Path(__file__).parent.parent / "config" / "distributed_hosts.yaml", env={})
    assert caplog.text == ""  # a file: nothing to warn about


def test_sentinel_urls_are_parsed():
    from coordinator.core.connection import parse_sentinel_url

    target = parse_sentinel_url("redis+sentinel://worker:pw@s1:26379,s2:26380,s3/mymaster/2")
    assert target.instances == [("s1", 26379), ("s2", 26380), ("s3", 26379)]
    assert (target.master_name, target.db, target.username, target.password) == ("mymaster", 2, "worker", "pw")
    with pytest.raises(Exception, match="master name"):
        parse_sentinel_url("redis+sentinel://s1:26379")


def test_worker_settings_travel_as_whole_sections():
    from dataclasses import replace

    from coordinator.core.settings import worker_settings, worker_settings_json

    base = Settings()
    settings = replace(base, leases=replace(base.leases, ttl_s=2.5, default_node_slots=4),
                       retries=replace(base.retries, trainer=3), breakers=replace(base.breakers, cooldown_s=7.0),
                       events=replace(base.events, stream_maxlen=1_000_000),
                       scheduler=replace(base.scheduler, quality_block_hours=2.0,
                                         weights=replace(base.scheduler.weights, curriculum=0.0)))
    rebuilt = worker_settings({"settings": worker_settings_json(settings)})
    for section in ("leases", "retries", "breakers", "events", "scheduler"):
        assert getattr(rebuilt, section) == getattr(settings, section)
    assert worker_settings({}) == base  # nothing on the record: the defaults, from config.py


def test_worker_settings_name_the_settings_a_record_lacks(caplog):
    """A record from an older orchestrator that did not know a setting: the worker uses the default
    and says which; a complete record logs nothing."""
    import json

    from coordinator.core.settings import worker_settings, worker_settings_json

    complete = json.loads(worker_settings_json(Settings()))
    assert worker_settings({"job_id": "j1", "settings": json.dumps(complete)}) == Settings()
    assert caplog.text == ""
    del complete["leases"]["reaper_interval_s"], complete["scheduler"]["cost"]["gain_window"]
    rebuilt = worker_settings({"job_id": "j1", "settings": json.dumps(complete)})
    assert rebuilt.leases.reaper_interval_s == Settings().leases.reaper_interval_s
    assert "job j1" in caplog.text and "leases.reaper_interval_s, scheduler.cost.gain_window" in caplog.text


def test_worker_settings_read_records_of_the_old_flattened_layout():
    from coordinator.core.settings import worker_settings

    old = {"lease_ttl_s": "2.5", "lease_attempts": "4", "lease_default_slots": "2", "retries_trainer": "3",
           "retry_backoff_max_s": "60.0", "breaker_failures": "9", "breaker_cooldown_s": "7.0",
           "stream_maxlen": "1000000", "job_id": "x"}
    s = worker_settings(old)
    assert (s.leases.ttl_s, s.leases.acquire_attempts, s.leases.default_node_slots) == (2.5, 4, 2)
    assert (s.retries.trainer, s.retries.backoff_max_s, s.retries.infrastructure) == (3, 60.0, 5)
    assert (s.breakers.failures, s.breakers.cooldown_s, s.events.stream_maxlen) == (9, 7.0, 1_000_000)


@pytest.mark.parametrize("training", ["training:\n  data_roots: []\n", "training:\n  batch_size: 8\n", ""])
def test_unconfined_data_is_refused_with_how_to_allow_it(tmp_path, training, capsys):
    from coordinator.ops import cli

    path = tmp_path / "c.yaml"
    path.write_text(training + "hosts:\n  n: 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    [problem] = info.value.problems
    assert str(path) in str(info.value) and problem.startswith("training.data_roots: empty or missing")
    assert 'data_roots: ["/"]' in problem  # how to allow any path on purpose
    assert cli.main(["check-config", str(path)]) == 1 and "training.data_roots" in capsys.readouterr().out
    assert cli.main(["--config", str(path), "run"]) == 1
    path.write_text('training:\n  data_roots: ["/"]\n')
    assert load_settings(path, env={}).training.data_roots == ("/",)


def test_run_refuses_the_built_in_defaults_too(tmp_path, monkeypatch, capsys):
    from coordinator.ops import cli

    monkeypatch.chdir(tmp_path)  # no config/distributed_hosts.yaml here
    monkeypatch.delenv("RINGRIFT_CONFIG", raising=False)
    assert cli.main(["run"]) == 1 and "training.data_roots" in capsys.readouterr().err
    assert cli.main(["check-config"]) == 1


def test_shipped_file_carries_the_cost_and_preemption_sections_at_their_defaults():
    settings = load_settings(EXAMPLE, env={})
    assert settings.preemption == Settings().preemption
    assert settings.scheduler.cost == Settings().scheduler.cost
    assert settings.scheduler.weights.value_per_gpu_hour == 1.0


def test_a_section_rule_is_reported_with_its_key():
    raw = {"training": {"data_roots": ["/"]}, "preemption": {"signal": "SIGFOO", "min_run_minutes": 0},
           "scheduler": {"cost": {"board_default_gpu_hours": {"hex8": 0}}}}
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, "x.yaml")
    problems = "\n".join(info.value.problems)
    assert "preemption: preemption signal 'SIGFOO'" in problems
    assert "scheduler.cost.board_default_gpu_hours.hex8: expected a number > 0" in problems


def test_check_config_names_file_and_key_of_a_bad_trainer_setting(tmp_path, capsys):
    from coordinator.ops.cli import main

    path = tmp_path / "trainer.yaml"
    path.write_text("training:\n  data_roots: [/d]\n  command: ['{python}', '--x={nope}']\n"
                    "  checkpoint_pattern: 'ckpt.pth'\n  progress_patterns: ['Epoch (\\\\d+)']\n"
                    "  per_config:\n    hex8_2p:\n      command: ['{python}', '{resume']\n")
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: training.command: argument 1 '--x={{nope}}': unknown placeholder {{nope}}" in out
    assert f"{path}: training.checkpoint_pattern: checkpoint pattern 'ckpt.pth': needs exactly one {{epoch}}" in out
    assert "training.progress_patterns/summary_pattern: progress pattern 0" in out
    assert f"{path}: training.per_config.hex8_2p.command: argument 1" in out


def test_ringrift_trainer_settings_load():
    from coordinator.trainer.checkpoints import RINGRIFT_CHECKPOINT_PATTERN
    from coordinator.trainer.output import RINGRIFT_PROGRESS, RINGRIFT_SUMMARY
    from workers.ringrift_stand_in import COMMAND

    t = parse_settings({"training": {
        "data_roots": ["/d"], "command": list(COMMAND), "progress_patterns": list(RINGRIFT_PROGRESS),
        "summary_pattern": RINGRIFT_SUMMARY, "checkpoint_pattern": RINGRIFT_CHECKPOINT_PATTERN,
        "working_dir": "/srv/ai-service", "per_config": {"square19_4p": {"warm_start": False}}}}).training
    assert t.command_for("hex8_2p") == COMMAND and t.warm_start_for("hex8_2p")
    assert not t.warm_start_for("square19_4p")
