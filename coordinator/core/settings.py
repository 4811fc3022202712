"""Settings: the YAML file (`config/distributed_hosts.yaml`) loaded into frozen, validated dataclasses.

Every problem names the file, the key and what was expected; unknown keys are errors (a typo
must not silently fall back to a default). Environment overrides: `RINGRIFT_CONFIG` (the file's
path) and `REDIS_URL` (the `redis.url` key).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from coordinator.core.boards import BOARDS, parse_config_key
from coordinator.core.errors import ConfigError, EventError
from coordinator.trainer.checkpoints import checkpoint_pattern_problems
from coordinator.trainer.command import DEFAULT_COMMAND, template_problems
from coordinator.trainer.output import pattern_problems

log = logging.getLogger(__name__)
DEFAULT_CONFIG_PATH = Path("config/distributed_hosts.yaml")
# Last in the search order: a host-wide file, so that a command run from any directory finds it.
SYSTEM_CONFIG_PATH = Path("/etc/ringrift/distributed_hosts.yaml")
CONFIG_ENV = "RINGRIFT_CONFIG"
REDIS_URL_ENV = "REDIS_URL"
# `Settings.source` of settings that no file gave.
BUILT_IN = "<built-in defaults>"


# The key of a field's metadata holding what the setting means: the shipped YAML's comment for it
# (`coordinator.core.settings_yaml` renders defaults and docs from these dataclasses, nowhere else).
DOC = "doc"


def _setting(default: Any, doc: str = "") -> Any:
    """A settings field: its one default and what it means."""
    return field(default=default, metadata={DOC: doc})


def _section(factory: Callable[[], Any], doc: str = "") -> Any:
    """A nested settings dataclass (or a mapping) with what it is for."""
    return field(default_factory=factory, metadata={DOC: doc})


@dataclass(frozen=True)
class RedisSettings:
    url: str = _setting("redis://127.0.0.1:6379/0", "REDIS_URL overrides it; redis+sentinel://... for Sentinel")
    prefix: str = _setting("ringrift", 'Every key this system writes starts with "<prefix>:"')


@dataclass(frozen=True)
class TrainerOverride:
    """`training.per_config.<config_key>`: what differs for one config (unset: the section's value)."""

    command: tuple[str, ...] | None = None
    warm_start: bool | None = None


@dataclass(frozen=True)
class TrainingSettings:
    # A job's hyper-parameters where its submission names none (`ringrift-train submit` may).
    default_epochs: int = _setting(50, "Each job's epochs, unless its submission names them")
    batch_size: int = _setting(512, "Each job's batch size, unless its submission names it")
    learning_rate: float = _setting(0.001, "Each job's learning rate, unless its submission names it")
    early_stopping_patience: int = _setting(
        5, "Epochs without validation improvement before the trainer stops (unless the submission says)")
    command: tuple[str, ...] = _setting(
        DEFAULT_COMMAND,
        "The trainer, as an argument template (never a shell string): placeholders such as {npz_path}, "
        "{model_path}, {init_weights}, {resume} (README, \"Using your own trainer\"); an absent value drops "
        "out with its flag. With no placeholder but {python} (the worker's own interpreter) the reference "
        "trainer's arguments are appended")
    progress_patterns: tuple[str, ...] = _setting(
        (), "Regular expressions for the trainer's progress lines on stdout or stderr (JSON lines are always "
            "read; coordinator/trainer/output.py)")
    summary_pattern: str | None = _setting(None, "Regular expression for the trainer's summary line (null for none)")
    checkpoint_pattern: str | None = _setting(
        None, "Checkpoint file name with one {epoch} (coordinator/trainer/checkpoints.py; null for the "
              "reference trainer's)")
    working_dir: str | None = _setting(None, "The trainer's working directory (null for the worker's)")
    warm_start: bool = _setting(True, "Each job starts from its config's newest published model ({init_weights})")
    per_config: Mapping[str, TrainerOverride] = _section(
        dict, "What differs for one config: <board>_<players>p -> command and/or warm_start, e.g. "
              "{square19_4p: {warm_start: false}}")
    timeout_s: int = _setting(6 * 3600, "A trainer running longer is stopped and the job fails")
    models_root: str = _setting(
        "models", "Each job writes to <models_root>/<config_key>/<job_id>/ (shared storage on a real cluster)")
    data_roots: tuple[str, ...] = _setting(
        (), "An export's npz_path must resolve (symlinks and .. resolved) inside one of these directories, or "
            "the event is dead-lettered. Empty is refused (check-config, run); [\"/\"] allows any absolute path, "
            "on purpose")
    check_npz: bool = _setting(
        True, "Workers check the NPZ's arrays and shapes before the trainer starts (off only for a trainer "
              "that reads another format)")
    kill_grace_s: int = _setting(30, "A trainer that must stop gets SIGTERM, then SIGKILL after this many seconds")
    job_retention_days: float = _setting(
        30.0, "Records of ended jobs are deleted this many days after they were created (0: kept)")
    rq_result_ttl_days: float = _setting(
        7.0, "RQ's own job keys (rq info, rq-dashboard) expire this long after the job ends (RQ's result_ttl "
             "and failure_ttl)")

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
    stream_maxlen: int = _setting(
        100_000, "The event stream is trimmed to about this many entries (0: no count cap; the byte budget "
                 "still applies)")
    stream_max_bytes: int = _setting(
        512 * 1024 * 1024, "The event stream's approximate byte budget, applied with the count at each trim")
    read_count: int = _setting(100, "Entries read per XREADGROUP")
    max_deliveries: int = _setting(
        5, "An entry delivered more often than this without being handled is dead-lettered (poison)")
    block_ms: int = _setting(1000, "How long one XREADGROUP waits for new entries")
    reclaim_idle_ms: int = _setting(60_000, "Entries pending this long in a dead consumer are taken over")
    group: str = _setting("orchestrator", "The orchestrators' consumer group")


@dataclass(frozen=True)
class LeaseSettings:
    ttl_s: float = _setting(10.0, "Renewed every ttl_s / 3 while a trainer runs; free again when not renewed")
    acquire_attempts: int = _setting(3, "Tries to take a job's leases before it is deferred")
    acquire_max_delay_s: float = _setting(0.5, "Random pause between attempts, up to this")
    defer_s: float = _setting(5.0, "A job whose leases are busy goes back to the queue after about this long")
    default_node_slots: int = _setting(
        1, "GPUs of a node missing from `hosts` (a worker may set RINGRIFT_GPUS instead)")
    reaper_interval_s: float = _setting(1.0, "How often attempts whose lease expired (dead workers) are found")


@dataclass(frozen=True)
class RetrySettings:
    infrastructure: int = _setting(
        5, "Retries after infrastructure failures (lost lease or worker, Redis errors); poison input (missing "
           "or corrupt NPZ, bad config) gets none")
    trainer: int = _setting(1, "Retries after the trainer failed (non-zero exit, timeout)")
    backoff_base_s: float = _setting(5.0, "Retry n waits min(backoff_max_s, backoff_base_s * 2^(n-1)) x 0.5..1.5")
    backoff_max_s: float = _setting(300.0)


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = _setting(3, "This many consecutive failures within window_s open a config's (or a node's) "
                                "breaker")
    window_s: float = _setting(3600.0)
    cooldown_s: float = _setting(600.0, "An open breaker lets one trial through after this long; success closes it")


@dataclass(frozen=True)
class PriorityWeights:
    """How much each factor (each normalised to 0..1) adds to a config's score; 0 removes it."""

    curriculum: float = _setting(1.0, "Curriculum weight / curriculum_max_weight")
    staleness: float = _setting(1.0, "Hours since the last training / staleness_saturation_hours")
    freshness: float = _setting(1.0, "Half new samples, half how recent the newest export is")
    elo_velocity: float = _setting(1.0, "0.5 + (Elo per hour) / (2 * elo_velocity_scale)")
    value_per_gpu_hour: float = _setting(
        1.0, "Elo per GPU-hour of the config's next training, v / (v + cost.value_scale) "
             "(coordinator/scheduling/cost.py)")


@dataclass(frozen=True)
class BoardGpuHours:
    """GPU-hours of one training before a config has history, per board (`coordinator.core.boards.BOARDS`)."""

    square8: float = _setting(1.0)
    hex8: float = _setting(0.75)
    square19: float = _setting(20.0)
    hexagonal: float = _setting(24.0)


@dataclass(frozen=True)
class CostSettings:
    """The cost-aware factor's settings (`scheduler.cost`; the rule in `coordinator.scheduling.cost`)."""

    board_default_gpu_hours: BoardGpuHours = _section(
        BoardGpuHours, "GPU-hours of one training before a config has history")
    duration_window: int = _setting(5, "Recent trainings whose GPU-hours are averaged")
    gain_window: int = _setting(8, "Recent Elo gains averaged (returns diminish, so old gains say little)")
    prior_elo_per_gpu_hour: float = _setting(10.0, "What a config without history is assumed to return")
    prior_trainings: float = _setting(2.0, "How many trainings' worth of evidence that prior weighs")
    value_scale: float = _setting(10.0, "Elo per GPU-hour at which the factor is 0.5")
    untrained_elo: float = _setting(
        400.0, "Elo of an untrained model on the scale of RingRift's gauntlet (its random baseline): a config's "
               "first evaluation carrying best_elo/estimated_elo gains over it")

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

    enabled: bool = _setting(True)
    # Simulated: 0.5 -> 1.0 cut value preemptions on 8 GPUs from ~44 to ~4 a fortnight, same Elo.
    margin: float = _setting(
        1.0, "Score points by which a waiting config must outrank a running job's value to take its GPU")
    min_run_minutes: float = _setting(
        60.0, "Each attempt runs at least this long before it may be asked to yield")
    max_preemptions_per_job: int = _setting(
        2, "Preemptions of one job (wait and value) after which it yields for value never, and for the "
           "wait bound only when every running job has reached it")
    restart_minutes: float = _setting(
        6.0, "What a preempted job's restart costs (reload the checkpoint and the data, warm up): "
             "counted against a value preemption's gain")
    # Simulated on 2-4 GPUs: 24 h -> 12 h costs ~2x the preemptions, ~3% of the GPU time on 2 GPUs.
    max_wait_hours: float = _setting(
        12.0, "The longest a config with new data and curriculum weight > 0 waits, plus one checkpoint interval")
    signal: str = _setting("SIGTERM", "What the worker sends the trainer to make it checkpoint and exit")

    def __post_init__(self) -> None:
        if min(self.margin, self.min_run_minutes, self.max_preemptions_per_job, self.restart_minutes) < 0:
            raise ValueError("preemption margin, min_run_minutes, max_preemptions_per_job and restart_minutes "
                             "must be >= 0")
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
    weights: PriorityWeights = _section(
        PriorityWeights, "Each factor is 0..1; its weight is what it can add to the score (0 removes it)")
    cost: CostSettings = _section(
        CostSettings, "What the next training costs and returns (coordinator/scheduling/cost.py)")
    curriculum_max_weight: float = _setting(2.0, "Curriculum weight at which the curriculum factor reaches 1")
    staleness_saturation_hours: float = _setting(
        24.0, "Hours since the last training at which the staleness factor reaches 1 (starving is "
              "preemption.max_wait_hours of waiting)")
    fresh_samples_saturation: int = _setting(
        100_000, "New samples at which the sample half of the freshness factor reaches 1")
    export_half_life_hours: float = _setting(
        6.0, "The recency half of the freshness factor halves every this many hours after an export")
    min_new_samples: int = _setting(1, "Fewer new samples than this since the last training: not eligible")
    elo_window_hours: float = _setting(24.0, "The Elo velocity is fitted over this many hours")
    elo_window_points: int = _setting(50, "At most this many Elo points go into that fit")
    elo_velocity_scale: float = _setting(
        50.0, "Elo per hour that maps to an Elo factor of 1 (and its negative to 0; no change is 0.5)")
    quality_block_hours: float = _setting(
        6.0, "A TRAINING_BLOCKED_BY_QUALITY keeps a config out for this long, or until its next export")
    failure_cooldown_s: float = _setting(
        600.0, "After a failed training the config waits this long (or for its next export) before another")
    prefetch: int = _setting(1, "Jobs queued beyond the free GPU slots, so a freed GPU never waits")
    rescore_interval_s: float = _setting(60.0, "Every config is rescored this often (time factors move)")


@dataclass(frozen=True)
class GpuClass:
    """`gpus.classes.<name>`: the GPUs of one class and what a training gets on them."""

    models: tuple[str, ...] = ()
    min_memory_gb: float | None = None
    batch_size: int | None = None
    cost_per_hour: float | None = None
    relative_speed: float | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("models: name at least one GPU model (e.g. [H100, H200])")


@dataclass(frozen=True)
class GpuRequirement:
    """`gpus.boards.<board>` (defaults) or `gpus.per_config.<config_key>` (override): what a GPU
    must offer a training (unset: the board's value, else no requirement)."""

    min_memory_gb: float | None = None
    allowed: tuple[str, ...] | None = None
    preferred: tuple[str, ...] | None = None
    # GPUs of ONE node a training takes at once (a multi-GPU, torchrun-style training; unset: 1).
    gpus: int | None = None


@dataclass(frozen=True)
class SpeedPriors:
    """`gpus.speed_priors`: how fast a GPU trains before any of its epochs was timed, relative to an
    RTX 4090 (1.0), RingRift-like. A class's `relative_speed` wins; else a key equal to the class's
    name in lower case, "gb" optional (`A100-80` -> a100_80gb); else the first key whose words the
    GPU's model has (`rtx_4090` matches "NVIDIA GeForce RTX 4090"; a trailing _<n>gb also needs
    >= 0.85 x n GB); else `unknown` (coordinator/scheduling/speeds.py)."""

    gh200: float = _setting(3.6)
    h200: float = _setting(3.3)
    h100: float = _setting(3.0)
    a100_80gb: float = _setting(2.0)
    a100: float = _setting(1.6)
    l40s: float = _setting(1.3)
    rtx_4090: float = _setting(1.0)
    rtx_3090: float = _setting(0.7)
    a10: float = _setting(0.6)
    unknown: float = _setting(1.0, "A GPU that matches none of the above")


BACKFILL_MODES = ("backfill", "hold", "off")  # what each does: `backfill` below


@dataclass(frozen=True)
class GpuSettings:
    """GPU classes, per-class training parameters and what each board or config needs of a GPU
    (the rules in `coordinator.core.gpu_requirements`)."""

    classes: Mapping[str, GpuClass] = _section(
        dict, "GPU class -> {models: [model names, matched as whole words], min_memory_gb, batch_size, "
              "cost_per_hour}; a GPU is of the first class that matches it, e.g. {H100: {models: [H100, H200], "
              "batch_size: 1536}}")
    boards: Mapping[str, GpuRequirement] = _section(
        dict, "Board -> {min_memory_gb, allowed: [classes], preferred: [classes, best first], gpus: GPUs of one "
              "node taken at once}, e.g. {hexagonal: {min_memory_gb: 40}, square19: {gpus: 2}}")
    per_config: Mapping[str, GpuRequirement] = _section(
        dict, "<board>_<players>p -> what differs from its board's requirement")
    speed_priors: SpeedPriors = _section(
        SpeedPriors, "Relative training speed per GPU before its epochs are timed (learned speeds replace it)")
    speed_smoothing: float = _setting(
        0.3, "Weight of the newest epoch in the learned seconds per epoch per sample (exponential mean)")
    faster_margin: float = _setting(
        1.2, "A free GPU leaves a job to another free one only if that one is expected to finish it this "
             "many times sooner (both speeds timed on the job's workload; a busy GPU is never waited for)")
    master_port_base: int = _setting(
        29500, "A trainer's {master_port} is this plus the lowest device index its lease holds on its node, so "
               "no two trainings running at once on a node share a port (torchrun's default is 29500)")

    backfill: str = _setting(
        "backfill", "A multi-GPU training waiting for GPUs of one node reserves the node expected to free them "
                    "first. backfill: other jobs start there only if expected to end before the reservation, or "
                    "on GPUs it does not need; hold: only on GPUs it does not need; off: no reservation (it waits "
                    "until the GPUs happen to be free, or for its wait bound)")
    reservation_grace_minutes: float = _setting(
        10.0, "This long past a reservation's expected start, the jobs still holding the node's GPUs are asked to "
              "yield at a checkpoint (their end was estimated too early)")

    def __post_init__(self) -> None:
        if self.backfill not in BACKFILL_MODES:
            raise ValueError(f"backfill must be one of {', '.join(BACKFILL_MODES)}, got {self.backfill!r}")
        if self.reservation_grace_minutes < 0:
            raise ValueError(f"reservation_grace_minutes must be >= 0, got {self.reservation_grace_minutes:g}")
        if not 0 < self.speed_smoothing <= 1:
            raise ValueError(f"speed_smoothing must be in (0, 1], got {self.speed_smoothing:g}")
        if self.faster_margin < 1:
            raise ValueError(f"faster_margin must be >= 1 (1: any faster GPU), got {self.faster_margin:g}")

    def requirement_for(self, config_key: str) -> GpuRequirement:
        """The config's requirement: each field from `per_config`, else from its board, else unset."""
        board = parse_config_key(config_key)[0]
        layers = [r for r in (self.per_config.get(config_key), self.boards.get(board)) if r is not None]
        return GpuRequirement(**{name: next((getattr(r, name) for r in layers if getattr(r, name) is not None), None)
                                 for name in ("min_memory_gb", "allowed", "preferred", "gpus")})


@dataclass(frozen=True)
class NodeSettings:
    """The `nodes` section: termination notices on ephemeral hosts (`hosts.<node>.ephemeral`, or a
    worker's RINGRIFT_EPHEMERAL). A worker on such a host that gets SIGTERM, or finds the provider's
    notice below, has its training checkpoint at once and requeued elsewhere (`workers/node_notice.py`)."""

    notice_file: str | None = _setting(
        None, "A file whose existence is the provider's termination notice (null: none polled)")
    notice_url: str | None = _setting(
        None, "A local URL that answers 200 with a body other than empty/false/0 once termination is "
              "announced, e.g. a metadata service's spot notice (null: none polled)")
    notice_poll_s: float = _setting(2.0, "How often a training on an ephemeral host looks for that notice")
    ephemeral_lifetime_hours: float = _setting(
        8.0, "An ephemeral host's expected lifetime until lifetimes are observed (from a worker's start to its "
             "host's notice, averaged)")
    long_training_share: float = _setting(
        0.5, "A training expected to run longer than this share of that lifetime prefers an idle stable GPU to "
             "an ephemeral one; a shorter one, an idle ephemeral GPU to a stable one")
    checkpoint_interval_stable: int = _setting(
        1, "The trainer's {checkpoint_interval} (epochs between checkpoints) on a stable host")
    checkpoint_interval_ephemeral: int = _setting(
        1, "The trainer's {checkpoint_interval} on an ephemeral host (what a notice without grace loses)")

    def __post_init__(self) -> None:
        if self.ephemeral_lifetime_hours <= 0 or not 0 < self.long_training_share:
            raise ValueError("ephemeral_lifetime_hours and long_training_share must be > 0")
        if self.checkpoint_interval_stable < 1 or self.checkpoint_interval_ephemeral < 1:
            raise ValueError("checkpoint intervals must be >= 1 epoch")

    def checkpoint_interval(self, ephemeral: bool) -> int:
        return self.checkpoint_interval_ephemeral if ephemeral else self.checkpoint_interval_stable


class HostGpus(int):
    """A `hosts` entry written as a mapping: the int is its GPU count (what an integer entry means,
    and what every reader of `hosts` takes), the attributes what it declares of its GPUs for a
    worker that cannot detect them (no NVML)."""

    gpu: str | None
    gpu_memory_gb: float | None
    cost_per_hour: float | None
    ephemeral: bool

    def __new__(cls, gpus: int = 1, gpu: str | None = None, gpu_memory_gb: float | None = None,
                cost_per_hour: float | None = None, ephemeral: bool = False) -> HostGpus:
        entry = super().__new__(cls, gpus)
        entry.__dict__.update(gpu=gpu, gpu_memory_gb=gpu_memory_gb, cost_per_hour=cost_per_hour, ephemeral=ephemeral)
        return entry

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("HostGpus is immutable")

    def declared(self) -> dict[str, Any]:
        """Its fields as the YAML writes them (gpus included), unset ones left out."""
        return {"gpus": int(self), **{k: v for k, v in self.__dict__.items() if v not in (None, False)}}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HostGpus):
            return self.declared() == other.declared()
        return int(self) == other and not isinstance(other, HostGpus) and self.declared() == {"gpus": int(self)}

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = int.__hash__

    def __repr__(self) -> str:
        return f"HostGpus({', '.join(f'{k}={v!r}' for k, v in self.declared().items())})"


# The fields of a `hosts` entry written as a mapping.
HOST_FIELDS = ("gpus", "gpu", "gpu_memory_gb", "cost_per_hour", "ephemeral")
# RingRift's host fields that are not ours, and what to write instead.
_RINGRIFT_HOST_FIELDS = {
    "gpu_vram_gb": "RingRift's gpu_vram_gb is the host's total: write gpu_memory_gb (per GPU) = gpu_vram_gb / gpus",
    "is_ephemeral": "write ephemeral: true",
}


@dataclass(frozen=True)
class Settings:
    redis: RedisSettings = _section(RedisSettings)
    training: TrainingSettings = _section(TrainingSettings)
    events: EventSettings = _section(EventSettings)
    scheduler: SchedulerSettings = _section(
        SchedulerSettings, "Which config the next free GPU trains (`ringrift-train priorities`)")
    leases: LeaseSettings = _section(
        LeaseSettings, "Training slots on the one Redis, not a quorum (`ringrift-train locks`)")
    retries: RetrySettings = _section(
        RetrySettings, "What is retried after a failure, how often, after how long (coordinator/core/retry.py)")
    breakers: BreakerSettings = _section(
        BreakerSettings, "Per config and per node: `failures` within `window_s` opens one")
    preemption: PreemptionSettings = _section(
        PreemptionSettings, "A running training yields its GPU at a checkpoint "
                            "(coordinator/scheduling/preemption_rule.py)")
    gpus: GpuSettings = _section(
        GpuSettings, "GPU classes, training parameters per class, and what each board or config needs of a GPU")
    nodes: NodeSettings = _section(
        NodeSettings, "Ephemeral hosts' termination notices: a training there checkpoints and moves elsewhere")
    hosts: Mapping[str, int] = _section(
        dict, "Node name -> its GPU count, or {gpus, gpu (model), gpu_memory_gb (per GPU), cost_per_hour, "
              "ephemeral}: what its workers take where they cannot detect their GPUs (NVML)")
    source: str = field(default=BUILT_IN, compare=False)


# The sections a worker needs, carried whole as JSON in each job record's `settings` field (so a
# worker needs nothing but the Redis URL) and rebuilt with these dataclasses.
WORKER_SECTIONS = ("events", "leases", "retries", "breakers", "scheduler", "preemption", "gpus", "nodes")
# Beside the sections in that JSON: `training.batch_size` as the orchestrator had it, so a worker
# tells a batch size the submission named (it wins on any GPU) from the default (the GPU's class
# gives one instead).
DEFAULT_BATCH_SIZE_FIELD = "default_batch_size"
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
    sections: dict[str, Any] = {name: asdict(getattr(settings, name)) for name in WORKER_SECTIONS}
    return json.dumps({**sections, DEFAULT_BATCH_SIZE_FIELD: settings.training.batch_size}, sort_keys=True)


def submitted_batch_size(record: Mapping[str, str]) -> int | None:
    """The batch size the job's submission named, or None where the record's is the settings'
    default (then the GPU's class may give another). A submission that names exactly the default
    cannot be told from it; a record from before this field counts as named."""
    default = json.loads(record.get("settings") or "{}").get(DEFAULT_BATCH_SIZE_FIELD)
    size = int(record["batch_size"])
    return None if default is not None and size == int(default) else size


def worker_settings(record: Mapping[str, str]) -> Settings:
    """The settings a job's worker runs with, from its record: the `settings` field, or the
    flattened fields of a record written by an older orchestrator. A setting the record lacks (an
    older orchestrator did not know it) has its built-in default, and the worker logs which; one
    this code does not know is ignored. Only the WORKER_SECTIONS are the orchestrator's: the
    others (redis, training, hosts) are built-in defaults a worker must not read (the prefix comes
    with RQ's args, the trainer's settings with the record's own fields)."""
    if record.get("settings"):
        sections: dict[str, dict[str, Any]] = json.loads(record["settings"])
    else:
        sections = {}
        for name, (section, setting) in _LEGACY_WORKER_FIELDS.items():
            if name in record:
                sections.setdefault(section, {})[setting] = record[name]
    base = Settings()
    missing = [m for s in WORKER_SECTIONS for m in _missing(getattr(base, s), sections.get(s, {}), f"{s}.")]
    if missing:
        log.warning("job %s: its record lacks %s: the built-in defaults are used", record.get("job_id", "?"),
                    ", ".join(missing))
    rebuilt = {s: _rebuild(getattr(base, s), sections.get(s, {})) for s in WORKER_SECTIONS if s != "gpus"}
    return replace(base, **rebuilt, gpus=gpu_settings_from_json(sections.get("gpus", {})))


def gpu_settings_from_json(values: Mapping[str, Any]) -> GpuSettings:
    """The `gpus` section from its JSON (`worker_settings_json`); unknown keys ignored."""
    def build(cls: type, raw: Mapping[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known})

    scalars: dict[str, Any] = {k: float(values[k]) for k in ("speed_smoothing", "faster_margin") if k in values}
    if "master_port_base" in values:
        scalars["master_port_base"] = int(values["master_port_base"])
    return GpuSettings(
        classes={name: build(GpuClass, raw) for name, raw in (values.get("classes") or {}).items()},
        boards={name: build(GpuRequirement, raw) for name, raw in (values.get("boards") or {}).items()},
        per_config={name: build(GpuRequirement, raw) for name, raw in (values.get("per_config") or {}).items()},
        speed_priors=build(SpeedPriors, values.get("speed_priors") or {}), **scalars)


def _missing(default: Any, values: Mapping[str, Any], where: str) -> list[str]:
    """The settings of `default` (a settings dataclass, nested ones included) that `values` lacks."""
    missing = []
    for name in default.__dataclass_fields__:
        current = getattr(default, name)
        if name not in values:
            missing.append(where + name)
        elif is_dataclass(current) and isinstance(values[name], dict) and name != "gpus":
            missing += _missing(current, values[name], f"{where}{name}.")
    return missing


def _rebuild(default: Any, values: Mapping[str, Any]) -> Any:
    """`default` (a settings dataclass) with `values` from JSON or a record, each converted to the
    type of its default (nested dataclasses too); unknown keys ignored. No type-hint resolution:
    every RQ work horse does this once per job."""
    changes = {}
    for name, value in values.items():
        if name in default.__dataclass_fields__:
            current = getattr(default, name)
            if isinstance(value, dict):
                changes[name] = _rebuild(current, value)
            else:  # an optional setting (default None) keeps its JSON value as it is
                changes[name] = value if current is None or value is None else type(current)(value)
    return replace(default, **changes) if changes else default


# Lists that may be empty.
_MAY_BE_EMPTY = {"data_roots", "progress_patterns"}
# Fields that may be zero; every other number must be strictly positive.
_MAY_BE_ZERO = {"kill_grace_s", "stream_maxlen", "curriculum", "staleness", "freshness", "elo_velocity",
                "min_new_samples", "prefetch", "infrastructure", "trainer", "job_retention_days",
                "value_per_gpu_hour", "margin", "min_run_minutes", "max_preemptions_per_job",
                "prior_elo_per_gpu_hour", "cost_per_hour"}


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load settings from `path`, `$RINGRIFT_CONFIG`, `config/distributed_hosts.yaml` (under the
    current directory) or `/etc/ringrift/distributed_hosts.yaml` (SYSTEM_CONFIG_PATH), the first
    given or present.

    With none of them present the built-in defaults are used, said in a warning and in
    `Settings.source` (BUILT_IN); `run` and `check-config` then refuse them (`data_roots_problem`),
    other commands (status, cancel, ...) work on the default Redis and prefix. A file's settings
    that it does not set are the built-in defaults (the shipped file lists each one, commented).
    `$REDIS_URL` replaces `redis.url`. Raises ConfigError.
    """
    env = os.environ if env is None else env
    chosen = path or env.get(CONFIG_ENV) or next((p for p in (DEFAULT_CONFIG_PATH, SYSTEM_CONFIG_PATH)
                                                  if p.exists()), None)
    if chosen is None:
        log.warning("no config file found: built-in defaults (no settings file: no --config, %s unset, "
                    "no %s under %s, no %s)", CONFIG_ENV, DEFAULT_CONFIG_PATH, Path.cwd(), SYSTEM_CONFIG_PATH)
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
    if isinstance(values.get("gpus"), GpuSettings):
        problems += gpu_problems(values["gpus"], values.get("hosts") or {})
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


def gpu_problems(gpus: GpuSettings, hosts: Mapping[str, int]) -> list[str]:
    """What is wrong across the `gpus` section and `hosts`, each naming its key: requirements naming
    a class `gpus.classes` lacks, or asking more memory than every declared GPU has."""
    problems = []
    declared = {node: e.gpu_memory_gb for node, e in hosts.items() if isinstance(e, HostGpus) and e.gpu_memory_gb}
    biggest = max(declared.items(), key=lambda item: item[1], default=None)
    for section, table in (("boards", gpus.boards), ("per_config", gpus.per_config)):
        for name, need in table.items():
            for field_name in ("allowed", "preferred"):
                for cls in getattr(need, field_name) or ():
                    if cls not in gpus.classes:
                        known = ", ".join(gpus.classes) or "none: define them under gpus.classes"
                        problems.append(f"gpus.{section}.{name}.{field_name}: unknown GPU class {cls!r} "
                                        f"(known: {known})")
            if need.min_memory_gb and biggest and len(declared) == len(hosts) and need.min_memory_gb > biggest[1]:
                problems.append(f"gpus.{section}.{name}.min_memory_gb: {need.min_memory_gb:g} GB is more than any "
                                f"host's GPU (largest: {biggest[0]}, {biggest[1]:g} GB): it could never train")
            most = max(hosts.items(), key=lambda item: int(item[1]), default=None)
            if need.gpus and most and need.gpus > int(most[1]):
                problems.append(f"gpus.{section}.{name}.gpus: {need.gpus} GPUs on one node, more than any host has "
                                f"(most: {most[0]}, {int(most[1])}): it could never train")
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
            try:
                return hint()
            except ValueError:  # no default either (a GPU class without models): reported above
                return None
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
            return _parse_named(item, value, key, problems)
        return _parse_hosts(value, key, problems)
    if origin in (typing.Union, types.UnionType):  # `X | None`: null (or no key) is unset, the default
        return None if value is None else _parse_value(typing.get_args(hint)[0], value, key, problems)
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
        elif isinstance(gpus, dict):
            entry = _parse_host(gpus, f"{key}.{node}", problems)
            if entry is not None:
                hosts[str(node)] = entry
        else:
            problems.append(f"{key}.{node}: expected a number of GPUs (integer > 0) or a mapping of "
                            f"{', '.join(HOST_FIELDS)}, got {_describe(gpus)}")
    return hosts


def _parse_host(raw: dict, key: str, problems: list[str]) -> HostGpus | None:
    """One `hosts` entry written as a mapping (HOST_FIELDS); None when it has a problem."""
    before = len(problems)
    for name in raw:
        if name not in HOST_FIELDS:
            hint = f"; {_RINGRIFT_HOST_FIELDS[name]}" if name in _RINGRIFT_HOST_FIELDS else ""
            problems.append(f"{key}.{name}: unknown key (expected one of: {', '.join(HOST_FIELDS)}){hint}")
    types_ = {"gpus": int, "gpu": str, "gpu_memory_gb": float, "cost_per_hour": float, "ephemeral": bool}
    values = {name: _parse_scalar(types_[name], raw[name], f"{key}.{name}", problems)
              for name in HOST_FIELDS if raw.get(name) is not None}
    return HostGpus(**values) if len(problems) == before else None


def _parse_named(item: type, value: Any, key: str, problems: list[str]) -> dict[str, Any]:
    """name -> `item` (a settings dataclass); the names by the mapping's key: config keys
    (`<board>_<players>p`, `per_config`), boards (`gpus.boards`) or any name (`gpus.classes`)."""
    if value is None:
        return {}
    leaf = key.rsplit(".", 1)[-1]
    if not isinstance(value, dict):
        what = {"boards": "board (e.g. hexagonal)", "classes": "GPU class name (e.g. H100)"}.get(
            leaf, "config key (e.g. hex8_2p)")
        problems.append(f"{key}: expected a mapping of {what} to settings, got {_describe(value)}")
        return {}
    parsed = {}
    for name, raw in value.items():
        problem = {"boards": _board_problem, "classes": _class_name_problem}.get(leaf, _config_key_problem)(name)
        if problem:
            problems.append(f"{key}.{name}: {problem}")
            continue
        parsed[name] = _parse_value(item, raw, f"{key}.{name}", problems)
    return parsed


def _board_problem(name: Any) -> str | None:
    return None if name in BOARDS else f"unknown board (known: {', '.join(BOARDS)})"


def _class_name_problem(name: Any) -> str | None:
    return None if isinstance(name, str) and name.strip() else "a GPU class needs a non-empty name"


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
