"""Settings: the YAML file (`config/distributed_hosts.yaml`) loaded into frozen, validated dataclasses.

Every problem names the file, the key and what was expected; unknown keys are errors (a typo
must not silently fall back to a default). Environment overrides: `RINGRIFT_CONFIG` (the file's
path) and `REDIS_URL` (the `redis.url` key).
"""

from __future__ import annotations

import json
import os
import signal
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from coordinator.core.boards import parse_config_key
from coordinator.core.errors import ConfigError, EventError
from coordinator.trainer.checkpoints import checkpoint_pattern_problems
from coordinator.trainer.command import DEFAULT_COMMAND, template_problems
from coordinator.trainer.output import pattern_problems

DEFAULT_CONFIG_PATH = Path("config/distributed_hosts.yaml")
CONFIG_ENV = "RINGRIFT_CONFIG"
REDIS_URL_ENV = "REDIS_URL"


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "ringrift"


@dataclass(frozen=True)
class TrainerOverride:
    """`training.per_config.<config_key>`: what differs for one config (unset: the section's value)."""

    command: tuple[str, ...] | None = None
    warm_start: bool | None = None


@dataclass(frozen=True)
class TrainingSettings:
    default_epochs: int = 50
    batch_size: int = 512
    learning_rate: float = 0.001
    early_stopping_patience: int = 5
    # Argument template (never a shell string) with placeholders (coordinator/trainer/command.py);
    # "{python}" alone: the reference trainer's arguments are appended (the built-in default).
    command: tuple[str, ...] = DEFAULT_COMMAND
    # Regular expressions for progress lines on stdout or stderr (JSON lines are always read),
    # and for the summary line (coordinator/trainer/output.py).
    progress_patterns: tuple[str, ...] = ()
    summary_pattern: str | None = None
    # Checkpoint file name with one {epoch} (coordinator/trainer/checkpoints.py); unset: the reference trainer's.
    checkpoint_pattern: str | None = None
    # The trainer's working directory (unset: the worker's).
    working_dir: str | None = None
    # Each job starts from its config's newest published model ({init_weights}).
    warm_start: bool = True
    per_config: Mapping[str, TrainerOverride] = field(default_factory=dict)
    timeout_s: int = 6 * 3600
    # Where each job's output directory is created (shared storage on a real cluster).
    models_root: str = "models"
    # An export's npz_path must resolve (symlinks and .. resolved) inside one of these
    # directories, or the event is dead-lettered. A file must name them: empty is refused
    # (data_roots_problem); ["/"] allows any absolute path, on purpose.
    data_roots: tuple[str, ...] = ()
    # Workers check the NPZ (zip, arrays, shapes for the board) before starting the trainer.
    # Off only for a trainer that reads another format.
    check_npz: bool = True
    # Seconds between SIGTERM and SIGKILL when a trainer must stop (timeout, shutdown).
    kill_grace_s: int = 30
    # Records of jobs that ended are deleted this many days after they were created (0: kept).
    job_retention_days: float = 30.0
    # RQ's own job keys (its result or failure, for `rq info` and rq-dashboard) expire this long
    # after the job ends: RQ's result_ttl and failure_ttl.
    rq_result_ttl_days: float = 7.0

    @property
    def rq_result_ttl_s(self) -> int:
        return max(1, round(timedelta(days=self.rq_result_ttl_days).total_seconds()))

    def command_for(self, config_key: str) -> tuple[str, ...]:
        override = self.per_config.get(config_key)
        return override.command if override and override.command is not None else self.command

    def warm_start_for(self, config_key: str) -> bool:
        override = self.per_config.get(config_key)
        return override.warm_start if override and override.warm_start is not None else self.warm_start


@dataclass(frozen=True)
class EventSettings:
    # 0: no count cap (the byte budget still applies).
    stream_maxlen: int = 100_000
    # The event stream's approximate byte budget, applied with the count at each trim.
    stream_max_bytes: int = 512 * 1024 * 1024
    read_count: int = 100
    # An entry delivered more often than this without being handled is dead-lettered (poison).
    max_deliveries: int = 5
    block_ms: int = 1000
    # An entry pending this long in a dead consumer is taken over by a live one.
    reclaim_idle_ms: int = 60_000
    group: str = "orchestrator"


@dataclass(frozen=True)
class LeaseSettings:
    # A lease not renewed for this long is free again; the worker renews every ttl_s / 3.
    ttl_s: float = 10.0
    acquire_attempts: int = 3
    # Random delay between acquisition attempts, up to this.
    acquire_max_delay_s: float = 0.5
    # A job whose leases are busy goes back to the queue after about this long.
    defer_s: float = 5.0
    # Slots of a node that is not in `hosts` (or RINGRIFT_GPUS on the worker).
    default_node_slots: int = 1
    # How often the orchestrator looks for attempts whose lease expired (dead workers).
    reaper_interval_s: float = 1.0


@dataclass(frozen=True)
class RetrySettings:
    # Retries after infrastructure failures (lost lease or worker, Redis errors).
    infrastructure: int = 5
    # Retries after the trainer failed (non-zero exit, timeout); poison inputs get none.
    trainer: int = 1
    backoff_base_s: float = 5.0
    backoff_max_s: float = 300.0


@dataclass(frozen=True)
class BreakerSettings:
    # This many consecutive failures within window_s open a config's (or a node's) breaker.
    failures: int = 3
    window_s: float = 3600.0
    # An open breaker lets one trial through after this long; success closes it.
    cooldown_s: float = 600.0


@dataclass(frozen=True)
class PriorityWeights:
    """How much each factor (each normalised to 0..1) adds to a config's score; 0 removes it."""

    curriculum: float = 1.0
    staleness: float = 1.0
    freshness: float = 1.0
    elo_velocity: float = 1.0
    # Elo per GPU-hour of the config's next training (`coordinator.scheduling.cost`).
    value_per_gpu_hour: float = 1.0


@dataclass(frozen=True)
class BoardGpuHours:
    """GPU-hours of one training before a config has history, per board (`coordinator.core.boards.BOARDS`)."""

    square8: float = 1.0
    hex8: float = 0.75
    square19: float = 20.0
    hexagonal: float = 24.0


@dataclass(frozen=True)
class CostSettings:
    """The cost-aware factor's settings (`scheduler.cost`; the rule in `coordinator.scheduling.cost`)."""

    board_default_gpu_hours: BoardGpuHours = field(default_factory=BoardGpuHours)
    duration_window: int = 5  # recent trainings whose durations are averaged
    gain_window: int = 8  # recent Elo gains (returns diminish, so old gains say little)
    prior_elo_per_gpu_hour: float = 10.0
    prior_trainings: float = 2.0  # how many trainings' worth of evidence the prior weighs
    value_scale: float = 10.0  # Elo per GPU-hour at which the factor is 0.5

    def __post_init__(self) -> None:
        numbers = {"duration_window": self.duration_window, "gain_window": self.gain_window,
                   "prior_trainings": self.prior_trainings, "value_scale": self.value_scale,
                   **{f"board_default_gpu_hours.{k}": v for k, v in asdict(self.board_default_gpu_hours).items()}}
        bad = [name for name, value in numbers.items() if not value > 0]
        if bad or self.prior_elo_per_gpu_hour < 0:
            raise ValueError(f"cost settings must be positive: {', '.join(bad) or 'prior_elo_per_gpu_hour'}")


@dataclass(frozen=True)
class PreemptionSettings:
    """The `preemption` section (the rule in `coordinator.scheduling.preemption_rule`; defaults from the simulator)."""

    enabled: bool = True
    # Score points by which a waiting config must outrank a running job's value to take its GPU
    # (simulated: 0.5 -> 1.0 cut value preemptions on 8 GPUs from ~44 to ~4 a fortnight, same Elo).
    margin: float = 1.0
    # A job runs at least this long in each attempt before it may be asked to yield.
    min_run_minutes: float = 60.0
    # Value preemptions of one job (the wait bound is not capped).
    max_preemptions_per_job: int = 2
    # The longest a config with new data and curriculum weight > 0 waits, plus one checkpoint interval
    # (simulated on 2-4 GPUs: 24 h -> 12 h costs ~2x the preemptions, ~3% of the GPU time on 2 GPUs).
    max_wait_hours: float = 12.0
    # What the worker sends the trainer to make it checkpoint and exit.
    signal: str = "SIGTERM"

    def __post_init__(self) -> None:
        if self.margin < 0 or self.min_run_minutes < 0 or self.max_preemptions_per_job < 0:
            raise ValueError("preemption margin, min_run_minutes and max_preemptions_per_job must be >= 0")
        if self.starve_after_hours <= 0:
            raise ValueError("preemption max_wait_hours must exceed min_run_minutes")
        if self.signal not in signal.Signals.__members__:
            raise ValueError(f"preemption signal {self.signal!r} is not a signal name (e.g. SIGTERM, SIGUSR1)")

    @property
    def starve_after_hours(self) -> float:
        """A config waiting this long is starving: min run time later some job may yield to it."""
        return self.max_wait_hours - self.min_run_minutes / 60.0


@dataclass(frozen=True)
class SchedulerSettings:
    weights: PriorityWeights = field(default_factory=PriorityWeights)
    cost: CostSettings = field(default_factory=CostSettings)
    # Curriculum weight at which the curriculum factor reaches 1.
    curriculum_max_weight: float = 2.0
    # Hours since the last training at which the staleness factor reaches 1 (starving is the
    # `preemption` section's: PreemptionSettings.starve_after_hours of waiting).
    staleness_saturation_hours: float = 24.0
    # New samples at which the sample half of the freshness factor reaches 1.
    fresh_samples_saturation: int = 100_000
    # The recency half of the freshness factor halves every this many hours after an export.
    export_half_life_hours: float = 6.0
    # Fewer new samples than this since the last training: not eligible.
    min_new_samples: int = 1
    elo_window_hours: float = 24.0
    elo_window_points: int = 50
    # Elo per hour that maps to an Elo factor of 1 (and its negative to 0; no change is 0.5).
    elo_velocity_scale: float = 50.0
    # A TRAINING_BLOCKED_BY_QUALITY keeps a config out for this long, or until its next export.
    quality_block_hours: float = 6.0
    # After a failed training the config waits this long (or for its next export) before another.
    failure_cooldown_s: float = 600.0
    # Jobs queued beyond the free GPU slots, so a freed GPU never waits for the orchestrator.
    prefetch: int = 1
    # Every config is rescored this often (the time factors move with the clock).
    rescore_interval_s: float = 60.0


@dataclass(frozen=True)
class Settings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    events: EventSettings = field(default_factory=EventSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    leases: LeaseSettings = field(default_factory=LeaseSettings)
    retries: RetrySettings = field(default_factory=RetrySettings)
    breakers: BreakerSettings = field(default_factory=BreakerSettings)
    preemption: PreemptionSettings = field(default_factory=PreemptionSettings)
    # Node name -> number of GPUs it offers.
    hosts: Mapping[str, int] = field(default_factory=dict)
    source: str = field(default="<defaults>", compare=False)


# The sections a worker needs, carried whole as JSON in each job record's `settings` field (so a
# worker needs nothing but the Redis URL) and rebuilt with these dataclasses.
WORKER_SECTIONS = ("events", "leases", "retries", "breakers", "scheduler", "preemption")
# Job records written before the `settings` field held these flattened fields instead:
# record field -> (section, setting).
_LEGACY_WORKER_FIELDS = {
    "stream_maxlen": ("events", "stream_maxlen"),
    "lease_ttl_s": ("leases", "ttl_s"), "lease_attempts": ("leases", "acquire_attempts"),
    "lease_max_delay_s": ("leases", "acquire_max_delay_s"), "lease_defer_s": ("leases", "defer_s"),
    "lease_default_slots": ("leases", "default_node_slots"),
    "retries_infrastructure": ("retries", "infrastructure"), "retries_trainer": ("retries", "trainer"),
    "retry_backoff_base_s": ("retries", "backoff_base_s"), "retry_backoff_max_s": ("retries", "backoff_max_s"),
    "breaker_failures": ("breakers", "failures"), "breaker_window_s": ("breakers", "window_s"),
    "breaker_cooldown_s": ("breakers", "cooldown_s"),
}


def worker_settings_json(settings: Settings) -> str:
    """The `settings` field of a job record: the WORKER_SECTIONS of `settings`, as JSON."""
    return json.dumps({name: asdict(getattr(settings, name)) for name in WORKER_SECTIONS}, sort_keys=True)


def worker_settings(record: Mapping[str, str]) -> Settings:
    """The settings a job's worker runs with, from its record: the `settings` field, or the
    flattened fields of a record written by an older orchestrator. A setting the record lacks
    (or does not know yet) has its default here; one this code does not know is ignored."""
    if record.get("settings"):
        sections: dict[str, dict[str, Any]] = json.loads(record["settings"])
    else:
        sections = {}
        for name, (section, setting) in _LEGACY_WORKER_FIELDS.items():
            if name in record:
                sections.setdefault(section, {})[setting] = record[name]
    base = Settings()
    return replace(base, **{s: _rebuild(getattr(base, s), sections.get(s, {})) for s in WORKER_SECTIONS})


def _rebuild(default: Any, values: Mapping[str, Any]) -> Any:
    """`default` (a settings dataclass) with `values` from JSON or a record, each converted to the
    type of its default (nested dataclasses too); unknown keys ignored. No type-hint resolution:
    every RQ work horse does this once per job."""
    changes = {}
    for name, value in values.items():
        if name in default.__dataclass_fields__:
            current = getattr(default, name)
            changes[name] = _rebuild(current, value) if isinstance(value, dict) else type(current)(value)
    return replace(default, **changes) if changes else default


# Lists that may be empty.
_MAY_BE_EMPTY = {"data_roots", "progress_patterns"}
# Fields that may be zero; every other number must be strictly positive.
_MAY_BE_ZERO = {"kill_grace_s", "stream_maxlen", "curriculum", "staleness", "freshness", "elo_velocity",
                "min_new_samples", "prefetch", "infrastructure", "trainer", "job_retention_days",
                "value_per_gpu_hour", "margin", "min_run_minutes", "max_preemptions_per_job",
                "prior_elo_per_gpu_hour"}


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load settings from `path`, `$RINGRIFT_CONFIG` or `config/distributed_hosts.yaml`, in that order.

    With none of them present the built-in defaults are used. Raises ConfigError.
    """
    env = os.environ if env is None else env
    chosen = path or env.get(CONFIG_ENV)
    if chosen is None and DEFAULT_CONFIG_PATH.exists():
        chosen = DEFAULT_CONFIG_PATH
    settings = Settings() if chosen is None else _load_file(Path(chosen))
    if env.get(REDIS_URL_ENV):
        settings = replace(settings, redis=replace(settings.redis, url=env[REDIS_URL_ENV]))
    return settings


def _load_file(path: Path) -> Settings:
    import yaml  # here: every RQ work horse imports this module and never reads a file (~11 ms a job)

    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
    return parse_settings(raw or {}, source)


def parse_settings(raw: Any, source: str = "<dict>") -> Settings:
    """Validate a parsed YAML document; collects every problem before raising ConfigError."""
    problems: list[str] = []
    values = _parse_dataclass(Settings, raw, "", problems, skip={"source"})
    confinement = data_roots_problem(Settings(**values))
    if confinement:
        problems.append(confinement)
    if isinstance(values.get("training"), TrainingSettings):
        problems += trainer_problems(values["training"])
    if problems:
        raise ConfigError(source, problems)
    return Settings(**values, source=source)


def data_roots_problem(settings: Settings) -> str | None:
    """Why `settings` may not run a service: `training.data_roots` empty (or missing) would let an
    export name any absolute path (/etc/shadow included). None when data is confined, or when
    ["/"] allows any path on purpose. Checked when a file is loaded, and by `check-config` and
    `run` for the built-in defaults."""
    if settings.training.data_roots != ():
        return None
    return ("training.data_roots: empty or missing, so an export could name any absolute path; list the "
            "directories exporters write under (e.g. data_roots: [/data/training]), or allow any path on "
            "purpose with data_roots: [\"/\"]")


def trainer_problems(t: TrainingSettings) -> list[str]:
    """What is wrong with the trainer settings (templates, patterns), each naming its key."""
    problems = [f"training.command: {p}" for p in template_problems(t.command)]
    for key, override in t.per_config.items():
        if override.command is not None:
            problems += [f"training.per_config.{key}.command: {p}" for p in template_problems(override.command)]
    problems += [f"training.progress_patterns/summary_pattern: {p}"
                 for p in pattern_problems(t.progress_patterns, t.summary_pattern)]
    if t.checkpoint_pattern is not None:
        problems += [f"training.checkpoint_pattern: {p}" for p in checkpoint_pattern_problems(t.checkpoint_pattern)]
    return problems


def _parse_dataclass(cls: type, raw: Any, where: str, problems: list[str], skip: set[str] = frozenset()) -> dict:
    if not isinstance(raw, dict):
        problems.append(f"{where or 'top level'}: expected a mapping, got {_describe(raw)}")
        return {}
    known = {f.name: f for f in fields(cls) if f.name not in skip}
    for key in raw:
        if key not in known:
            problems.append(f"{where}{key}: unknown key (expected one of: {', '.join(sorted(known))})")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name in known:
        if name in raw:
            values[name] = _parse_value(hints[name], raw[name], f"{where}{name}", problems)
    return values


def _parse_value(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    if is_dataclass(hint):
        before = len(problems)
        # A value that failed to parse (None, already reported) leaves its default in place.
        values = {k: v for k, v in _parse_dataclass(hint, value, f"{key}.", problems).items() if v is not None}
        try:
            return hint(**values)
        except ValueError as exc:  # the section's own rule (__post_init__)
            if len(problems) == before:
                problems.append(f"{key}: {exc}")
            return hint()
    origin = typing.get_origin(hint)
    if origin is tuple:
        may_be_empty = key.rsplit(".", 1)[-1] in _MAY_BE_EMPTY
        if isinstance(value, list) and (value or may_be_empty) and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        what = "a list of strings" if may_be_empty else "a non-empty list of strings"
        problems.append(f"{key}: expected {what}, got {_describe(value)}")
        return None
    if origin in (Mapping, dict, typing.Mapping) or hint is Mapping:
        item = typing.get_args(hint)[1] if typing.get_args(hint) else None
        if is_dataclass(item):
            return _parse_per_config(item, value, key, problems)
        return _parse_hosts(value, key, problems)
    if origin in (typing.Union, types.UnionType):  # `X | None`: None is the default, never written
        return _parse_value(typing.get_args(hint)[0], value, key, problems)
    return _parse_scalar(hint, value, key, problems)


def _parse_scalar(hint: type, value: Any, key: str, problems: list[str]) -> Any:
    leaf = key.rsplit(".", 1)[-1]
    bound = ">= 0" if leaf in _MAY_BE_ZERO else "> 0"
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{key}: expected true or false, got {_describe(value)}")
    elif hint is str:
        if isinstance(value, str) and value:
            return value
        problems.append(f"{key}: expected a non-empty string, got {_describe(value)}")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool) and _in_range(value, leaf):
            return value
        problems.append(f"{key}: expected an integer {bound}, got {_describe(value)}")
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _in_range(value, leaf):
            return float(value)
        problems.append(f"{key}: expected a number {bound}, got {_describe(value)}")
    return None


def _in_range(value: float, leaf: str) -> bool:
    return value >= 0 if leaf in _MAY_BE_ZERO else value > 0


def _parse_hosts(value: Any, key: str, problems: list[str]) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a mapping of node name to GPU count, got {_describe(value)}")
        return {}
    hosts: dict[str, int] = {}
    for node, gpus in value.items():
        if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0:
            hosts[str(node)] = gpus
        else:
            problems.append(f"{key}.{node}: expected a number of GPUs (integer > 0), got {_describe(gpus)}")
    return hosts


def _parse_per_config(item: type, value: Any, key: str, problems: list[str]) -> dict[str, Any]:
    """config key (`<board>_<players>p`) -> `item` (a settings dataclass)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a mapping of config key (e.g. hex8_2p) to settings, got {_describe(value)}")
        return {}
    parsed = {}
    for name, raw in value.items():
        problem = _config_key_problem(name)
        if problem:
            problems.append(f"{key}.{name}: {problem}")
            continue
        parsed[name] = _parse_value(item, raw, f"{key}.{name}", problems)
    return parsed


def _config_key_problem(name: Any) -> str | None:
    """Why `name` is no config key (the events' rule, coordinator/core/boards.py), or None."""
    if not isinstance(name, str):
        return "not a config key of the form <board_type>_<players>p"
    try:
        parse_config_key(name)
    except EventError as exc:
        return str(exc)
    return None


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs and screens."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"
