"""Defaults live once, in coordinator/core/settings.py: the shipped YAML is generated from the dataclasses
(and cannot drift from them), every setting round-trips, and no signature carries a copy of one."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from coordinator.core.settings import (
    BoardGpuHours,
    CostSettings,
    GpuClass,
    GpuRequirement,
    GpuSettings,
    HostGpus,
    NodeSettings,
    PreemptionSettings,
    PriorityWeights,
    RedisSettings,
    Settings,
    SpeedPriors,
    TrainerOverride,
    parse_settings,
)
from coordinator.core.settings_yaml import default_yaml, example_settings, render_yaml, settings_dict

SHIPPED = Path(__file__).parent.parent / "config" / "distributed_hosts.yaml"
# A commented-out setting: `# key: value` (its `# ` at any column); prose comments never start "key:".
COMMENTED_SETTING = re.compile(r"^(\s*)# (\s*[a-z_][a-z0-9_]*:.*)$", re.MULTILINE)


def uncommented(text: str) -> str:
    """`text` with every commented-out setting (and section) switched on."""
    return COMMENTED_SETTING.sub(r"\1\2", text)


def leaves(obj: Any, where: str = "") -> dict[str, Any]:
    """Every setting of a settings dataclass by dotted name (hosts and per_config as whole values)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name == "source":
            continue
        out.update(leaves(value, f"{where}{f.name}.") if is_dataclass(value) else {where + f.name: value})
    return out


def test_shipped_yaml_is_the_generated_one():
    """A default changed in the dataclasses, or a comment edited in the file, fails here."""
    assert SHIPPED.read_text() == default_yaml(), (
        "config/distributed_hosts.yaml differs from the dataclasses' defaults: regenerate it with "
        "`python -m coordinator.core.settings_yaml > config/distributed_hosts.yaml`")


def test_commented_defaults_switched_on_are_every_setting_at_its_default():
    text = SHIPPED.read_text()
    assert parse_settings(yaml.safe_load(text)) == example_settings()
    switched_on = yaml.safe_load(uncommented(text))
    assert switched_on == settings_dict(example_settings())  # every setting, nested ones included, once
    assert parse_settings(switched_on) == example_settings()


def test_shipped_yaml_sets_only_what_a_deployment_must():
    plain = yaml.safe_load(SHIPPED.read_text())
    assert plain == {"redis": {"url": RedisSettings().url}, "hosts": {"gpu-node-1": 8, "gpu-node-2": 8},
                     "training": {"models_root": "models", "data_roots": ["/data/training"]}}


def test_check_config_is_clean_on_the_shipped_yaml(capsys):
    from coordinator.ops import cli

    assert cli.main(["check-config", str(SHIPPED)]) == 0
    assert "OK" in capsys.readouterr().out


def every_setting_changed() -> Settings:
    """Settings in which no setting has its default (checked by the round-trip test)."""
    base = Settings()
    t, e, s, lease, r, b = base.training, base.events, base.scheduler, base.leases, base.retries, base.breakers
    return replace(
        base,
        redis=RedisSettings(url="redis://db.internal:6380/3", prefix="rr"),
        training=replace(
            t, default_epochs=7, batch_size=64, learning_rate=0.02, early_stopping_patience=9,
            command=("{python}", "train.py", "--data={npz_path}", "--out={model_path}"),
            progress_patterns=(r"epoch (?P<epoch>\d+)",), summary_pattern=r"loss=(?P<final_loss>\S+)",
            checkpoint_pattern="ckpt_{epoch}.pth", working_dir="/srv/trainer", warm_start=False,
            per_config={"square19_4p": TrainerOverride(warm_start=True),
                        "hex8_2p": TrainerOverride(command=("{python}", "other.py"), warm_start=False)},
            timeout_s=3600, models_root="/shared/models", data_roots=("/data/a", "/data/b"), check_npz=False,
            kill_grace_s=0, job_retention_days=2.5, rq_result_ttl_days=1.5),
        events=replace(e, stream_maxlen=0, stream_max_bytes=1 << 20, read_count=10, max_deliveries=2, block_ms=50,
                       reclaim_idle_ms=5000, group="orch2"),
        scheduler=replace(
            s, weights=PriorityWeights(curriculum=0.5, staleness=0.0, freshness=2.0, elo_velocity=3.0,
                                       value_per_gpu_hour=0.25),
            cost=CostSettings(board_default_gpu_hours=BoardGpuHours(square8=2.0, hex8=1.5, square19=10.0,
                                                                    hexagonal=12.0),
                              duration_window=3, gain_window=4, prior_elo_per_gpu_hour=0.0, prior_trainings=1.0,
                              value_scale=5.0, untrained_elo=300.0),
            curriculum_max_weight=3.0, staleness_saturation_hours=12.0, fresh_samples_saturation=5000,
            export_half_life_hours=2.0, min_new_samples=0, elo_window_hours=6.0, elo_window_points=10,
            elo_velocity_scale=25.0, quality_block_hours=1.0, failure_cooldown_s=30.0, prefetch=0,
            rescore_interval_s=5.0),
        leases=replace(lease, ttl_s=3.0, acquire_attempts=5, acquire_max_delay_s=0.1, defer_s=1.0,
                       default_node_slots=4, reaper_interval_s=0.5),
        retries=replace(r, infrastructure=0, trainer=3, backoff_base_s=1.0, backoff_max_s=60.0),
        breakers=replace(b, failures=5, window_s=60.0, cooldown_s=30.0),
        preemption=PreemptionSettings(enabled=False, margin=0.0, min_run_minutes=30.0, max_preemptions_per_job=0,
                                      max_wait_hours=4.0, signal="SIGUSR1", restart_minutes=1.5),
        gpus=GpuSettings(
            classes={"H100": GpuClass(models=("H100", "H200"), batch_size=1536, cost_per_hour=2.5,
                                      relative_speed=2.8),
                     "A100-80": GpuClass(models=("A100",), min_memory_gb=70.0, batch_size=1024)},
            boards={"hexagonal": GpuRequirement(min_memory_gb=40.0, preferred=("H100", "A100-80"), gpus=2)},
            per_config={"hexagonal_4p": GpuRequirement(min_memory_gb=70.0, allowed=("H100",))},
            speed_priors=SpeedPriors(gh200=4.0, h200=3.5, h100=3.1, a100_80gb=2.1, a100=1.7, l40s=1.4, rtx_4090=1.1,
                                     rtx_3090=0.8, a10=0.5, unknown=0.9),
            speed_smoothing=0.5, faster_margin=1.5, master_port_base=30000, backfill="hold",
            reservation_grace_minutes=5.0),
        nodes=NodeSettings(notice_file="/run/ringrift/termination", notice_url="http://127.0.0.1:8500/notice",
                           notice_poll_s=1.0, ephemeral_lifetime_hours=4.0, long_training_share=0.25,
                           checkpoint_interval_stable=2, checkpoint_interval_ephemeral=3),
        hosts={"gpu-a": 2, "gpu-b": HostGpus(4, gpu="RTX 4090", gpu_memory_gb=24.0, ephemeral=True)})


def test_every_setting_round_trips_through_dict_and_yaml():
    changed = every_setting_changed()
    same = [name for name, value in leaves(changed).items() if value == leaves(Settings())[name]]
    assert same == [], "every_setting_changed() must change every setting (a new one too)"
    assert parse_settings(settings_dict(changed)) == changed
    assert parse_settings(yaml.safe_load(yaml.safe_dump(settings_dict(changed)))) == changed
    rendered = render_yaml(changed)
    assert parse_settings(yaml.safe_load(rendered)) == changed
    assert not COMMENTED_SETTING.search(rendered)  # nothing at its default: nothing commented out


def test_render_comments_out_exactly_the_settings_at_their_defaults():
    base = example_settings()
    one = replace(base, leases=replace(base.leases, ttl_s=2.5))
    text = render_yaml(one)
    assert parse_settings(yaml.safe_load(text)) == one
    lines = text.splitlines()
    assert "leases:" in [line.split("#")[0].rstrip() for line in lines]  # its section switched on
    assert any(line.startswith("  ttl_s: 2.5") for line in lines)
    assert any(line.startswith("  # acquire_attempts: 3") for line in lines)
    assert any(line.startswith("# events:") for line in lines)  # a section all at defaults, commented whole


def test_an_explicit_null_leaves_an_optional_setting_unset():
    raw = {"training": {"data_roots": ["/"], "summary_pattern": None, "working_dir": None,
                        "per_config": {"hex8_2p": {"command": None, "warm_start": False}}}}
    t = parse_settings(raw).training
    assert (t.summary_pattern, t.working_dir, t.per_config["hex8_2p"]) == (None, None, TrainerOverride(None, False))


def test_no_signature_carries_a_copy_of_a_setting():
    """These take the settings' values from their callers (or from_settings), never a literal copy."""
    from coordinator.bus.events import publish
    from coordinator.stores.breakers import CircuitBreakers
    from coordinator.stores.leases import LeaseManager
    from workers.tasks import run_training

    must_be_passed = {LeaseManager.__init__: ("ttl_s", "default_slots"),
                      LeaseManager.acquire: ("attempts", "max_delay_s"), publish: ("maxlen",),
                      CircuitBreakers.__init__: ("settings", "stream_maxlen"), run_training: ("prefix",)}
    for function, names in must_be_passed.items():
        parameters = inspect.signature(function).parameters
        defaulted = [n for n in names if parameters[n].default is not inspect.Parameter.empty]
        assert defaulted == [], f"{function.__qualname__} defaults {defaulted}"
    inspect.signature(run_training).bind("job-id", "prefix")  # RQ's stored args: (job_id, prefix)
