"""TrainingScheduler: which config the next free GPU trains, and why (like Slurm's `sprio`).

Score = sum over the five factors of weight x factor, each factor normalised to 0..1:

| factor             | value                                                                    |
|--------------------|--------------------------------------------------------------------------|
| curriculum         | min(curriculum weight, curriculum_max_weight) / curriculum_max_weight    |
| staleness          | min(1, hours since the last successful training / staleness_saturation_hours) |
| freshness          | 0.5 min(1, new samples / fresh_samples_saturation) + 0.5 * 0.5^(hours since |
|                    | the newest export / export_half_life_hours)                              |
| elo_velocity       | clamp(0.5 + Elo-per-hour / (2 elo_velocity_scale), 0, 1); Elo/h is the least- |
|                    | squares slope of the window's EVALUATION_COMPLETED points, 0 with fewer than 2 |
| value_per_gpu_hour | v / (v + value_scale), v = smoothed Elo per training / expected GPU-hours |
|                    | of the next training (`coordinator.scheduling.cost`, settings `scheduler.cost`)      |

Starvation guard: an eligible config that has waited for a GPU (since `waiting_since`: new data with
no job, or its job preempted) `preemption.max_wait_hours` - `min_run_minutes` is *starving* and
scores STARVING_BASE + hours waited, above every non-starving config, longest wait first; the
preemption decision (`coordinator.scheduling.preemption_rule.decide`) then frees a GPU for it within one minimum
run time. Hence the bound: such a config starts within `max_wait_hours` + one checkpoint interval,
whatever the length of the trainings (while min run < max_wait x S / N; see preemption_rule.py).

Ineligible configs (queued or running, quality-blocked, circuit breaker open, failed recently,
too few new samples, curriculum weight 0)
score INELIGIBLE in the sorted set; their hash says why. A config whose job was preempted is
eligible again (its job waits in state preempted and resumes when the config is picked).
Ties: the greater config key first (Redis's ZREVRANGE order). Scores are recomputed when an input
changes and on a periodic tick; `get_next_training_config` reads one pipelined round trip,
whatever the number of configs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import redis

from coordinator.core.boards import split_config_key
from coordinator.core.clock import Clock, RedisClock
from coordinator.core.errors import EventError
from coordinator.core.keys import Keys
from coordinator.core.settings import BreakerSettings, PreemptionSettings, SchedulerSettings, Settings
from coordinator.scheduling import cost
from coordinator.stores.breakers import open_until
from coordinator.stores.configs import INELIGIBLE, ConfigStore
from coordinator.stores.job_records import PendingPreemption, pending_preemptions

STARVING_BASE = 1000.0
FACTORS = ("curriculum", "staleness", "freshness", "elo_velocity", "value_per_gpu_hour")
SCORE_FIELDS = ("score", "eligible", "base_eligible", "rest", "starving", "why", "flags", "scored_at",
                *(f"f_{name}" for name in FACTORS), *(f"c_{name}" for name in FACTORS),
                "hours_since_training", "hours_since_export", "elo_per_hour", "hours_waiting",
                "expected_gpu_hours", "elo_per_training", "cost_why")


INPUT_FIELDS = ("curriculum_weight", "new_samples", "exported_at", "first_seen_at", "last_trained_at",
                "quality_blocked_at", "quality_blocked_until", "last_failed_at", "cancelled_at",
                "waiting_since", "preempted_job")  # from_hash reads


@dataclass(frozen=True)
class ConfigInputs:
    """What the score is computed from (all stored on `<prefix>:config:<key>`)."""

    config_key: str
    curriculum_weight: float = 1.0
    new_samples: int = 0
    exported_at: float | None = None
    first_seen_at: float | None = None
    last_trained_at: float | None = None
    quality_blocked_at: float | None = None
    quality_blocked_until: float | None = None
    last_failed_at: float | None = None
    cancelled_at: float | None = None  # an operator cancelled its job: waits for newer data
    breaker_open_until: float | None = None  # the config's circuit breaker: open until then
    active_job: str | None = None
    elo_points: tuple[tuple[float, float], ...] = ()  # (unix time, elo)
    # Since when it waits for a GPU (new data and no job, or its job preempted); None: not recorded,
    # the time since its last training stands in (records written before waiting_since existed).
    waiting_since: float | None = None
    preempted_job: str | None = None  # its active job, preempted, waits to resume (not a blocker)
    recent_gpu_hours: tuple[float, ...] = ()  # GPU-hours of its recent trainings, oldest first
    elo_gains: tuple[float, ...] = ()  # Elo gained by its recent trainings (evaluation - parent's)

    @property
    def board_type(self) -> str | None:
        try:
            return split_config_key(self.config_key)[0]
        except EventError:
            return None

    @classmethod
    def from_hash(cls, config_key: str, raw: Mapping[str, str], active_job: str | None,
                  elo_points: Iterable[tuple[float, float]], breaker_open_until: float | None = None,
                  recent_gpu_hours: Iterable[float] = (), elo_gains: Iterable[float] = ()) -> ConfigInputs:
        def number(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return cls(
            config_key=config_key,
            curriculum_weight=float(raw.get("curriculum_weight", 1.0)),
            new_samples=int(float(raw.get("new_samples", 0))),
            exported_at=number("exported_at"),
            first_seen_at=number("first_seen_at"),
            last_trained_at=number("last_trained_at"),
            quality_blocked_at=number("quality_blocked_at"),
            quality_blocked_until=number("quality_blocked_until"),
            last_failed_at=number("last_failed_at"),
            cancelled_at=number("cancelled_at"),
            breaker_open_until=breaker_open_until,
            active_job=active_job,
            elo_points=tuple(elo_points),
            waiting_since=number("waiting_since"),
            preempted_job=raw.get("preempted_job") or None,
            recent_gpu_hours=tuple(recent_gpu_hours),
            elo_gains=tuple(elo_gains),
        )


@dataclass(frozen=True)
class Priority:
    config_key: str
    score: float
    eligible: bool
    base_eligible: bool  # eligible but for the curriculum weight (which a caller may override)
    starving: bool
    rest: float  # the score without the curriculum contribution (when not starving)
    factors: dict[str, float]
    contributions: dict[str, float]
    why: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    hours_since_training: float = 0.0
    hours_since_export: float | None = None
    elo_per_hour: float = 0.0
    new_samples: int = 0
    hours_waiting: float = 0.0
    expected_gpu_hours: float = 0.0
    elo_per_training: float = 0.0
    cost_why: str = ""
    preemption: str = ""  # a pending preemption of its job, or for it (`ranked` only)
    ready: bool = False  # eligible but for its own queued or running job (a queued job's wait counts)

    def as_fields(self, now: float) -> dict[str, str]:
        fields = {
            "score": f"{self.score:.6f}", "eligible": str(int(self.eligible)),
            "base_eligible": str(int(self.base_eligible)), "rest": f"{self.rest:.6f}",
            "starving": str(int(self.starving)), "why": "; ".join(self.why), "flags": ",".join(self.flags),
            "scored_at": f"{now:.3f}", "hours_since_training": f"{self.hours_since_training:.3f}",
            "hours_since_export": "" if self.hours_since_export is None else f"{self.hours_since_export:.3f}",
            "elo_per_hour": f"{self.elo_per_hour:.3f}", "hours_waiting": f"{self.hours_waiting:.3f}",
            "expected_gpu_hours": f"{self.expected_gpu_hours:.3f}", "elo_per_training": f"{self.elo_per_training:.3f}",
            "cost_why": self.cost_why,
        }
        fields.update({f"f_{k}": f"{v:.6f}" for k, v in self.factors.items()})
        fields.update({f"c_{k}": f"{v:.6f}" for k, v in self.contributions.items()})
        return fields

    def as_dict(self) -> dict:
        return asdict(self)


def elo_velocity(points: Iterable[tuple[float, float]]) -> float:
    """Least-squares slope in Elo per hour; 0 with fewer than two points or no spread in time."""
    pts = list(points)
    if len(pts) < 2:
        return 0.0
    hours = [t / 3600.0 for t, _ in pts]
    elos = [e for _, e in pts]
    mean_h, mean_e = sum(hours) / len(hours), sum(elos) / len(elos)
    spread = sum((h - mean_h) ** 2 for h in hours)
    if spread == 0:
        return 0.0
    return sum((h - mean_h) * (e - mean_e) for h, e in zip(hours, elos)) / spread


def compute_priority(inputs: ConfigInputs, s: SchedulerSettings, now: float,
                     curriculum_weight: float | None = None, starve_after_hours: float | None = None) -> Priority:
    """The pure scoring function: every stored score comes from here.

    `starve_after_hours`: the waiting time at which an eligible config starves (the scheduler passes
    its `preemption` settings' `starve_after_hours`; None: that of the default settings)."""
    if starve_after_hours is None:
        starve_after_hours = PreemptionSettings().starve_after_hours
    weight = inputs.curriculum_weight if curriculum_weight is None else curriculum_weight
    since = inputs.last_trained_at or inputs.first_seen_at or inputs.exported_at or now
    hours_training = max(0.0, (now - since) / 3600.0)
    hours_waiting = hours_training if inputs.waiting_since is None else max(0.0, (now - inputs.waiting_since) / 3600.0)
    hours_export = None if inputs.exported_at is None else max(0.0, (now - inputs.exported_at) / 3600.0)
    window_start = now - s.elo_window_hours * 3600.0
    window = sorted(p for p in inputs.elo_points if p[0] >= window_start)[-s.elo_window_points:]
    velocity = elo_velocity(window)
    value = _cost_estimate(inputs, s)
    factors = {
        "curriculum": min(max(weight, 0.0), s.curriculum_max_weight) / s.curriculum_max_weight,
        "staleness": min(1.0, hours_training / s.staleness_saturation_hours),
        "freshness": 0.5 * min(1.0, inputs.new_samples / s.fresh_samples_saturation)
        + (0.0 if hours_export is None else 0.5 * 0.5 ** (hours_export / s.export_half_life_hours)),
        "elo_velocity": min(1.0, max(0.0, 0.5 + velocity / (2.0 * s.elo_velocity_scale))),
        "value_per_gpu_hour": value.factor if isinstance(value, cost.CostEstimate) else 0.0,
    }
    w = s.weights
    contributions = {name: getattr(w, name) * value for name, value in factors.items()}
    why = _blockers(inputs, s, now)
    base_eligible = not why
    if weight <= 0:
        why.append("curriculum weight 0")
    eligible = not why
    ready = eligible or (weight > 0 and not _blockers(replace(inputs, active_job=None), s, now))
    starving = eligible and hours_waiting >= starve_after_hours
    rest = sum(v for k, v in contributions.items() if k != "curriculum")
    if starving:
        score = STARVING_BASE + hours_waiting
    elif eligible:
        score = rest + contributions["curriculum"]
    else:
        score = INELIGIBLE
    flags = (["regressing"] if velocity < 0 else []) + (["starving"] if starving else [])
    if isinstance(value, cost.CostEstimate):
        cost_fields = {"expected_gpu_hours": value.expected_gpu_hours, "elo_per_training": value.elo_per_training,
                       "cost_why": value.why()}
    else:
        cost_fields = {"cost_why": value}
    return Priority(inputs.config_key, score, eligible, base_eligible, starving, rest, factors, contributions,
                    why, flags, hours_training, hours_export, velocity, inputs.new_samples, hours_waiting,
                    **cost_fields, ready=ready)


def _cost_estimate(inputs: ConfigInputs, s: SchedulerSettings) -> cost.CostEstimate | str:
    """The config's cost estimate, or why there is none (a key that names no known board, no history)."""
    try:
        return cost.estimate(inputs.recent_gpu_hours, inputs.elo_gains, inputs.board_type or "", s.cost)
    except ValueError as exc:
        return f"no cost estimate: {exc}"


def quality_block_until(blocked_at: float | None, until: float | None, exported_at: float | None,
                        s: SchedulerSettings) -> float | None:
    """Until when a TRAINING_BLOCKED_BY_QUALITY keeps a config out: its `until`, else
    quality_block_hours after the block; None when not blocked (never, or a newer export lifted it).
    The one rule: the scheduler scores with it, the worker holds a queued job with it."""
    if not blocked_at or (exported_at or 0) > blocked_at:
        return None
    return until or blocked_at + s.quality_block_hours * 3600


def _blockers(inputs: ConfigInputs, s: SchedulerSettings, now: float) -> list[str]:
    why = []
    if inputs.active_job and inputs.active_job != inputs.preempted_job:
        why.append(f"queued or running ({inputs.active_job})")
    until = quality_block_until(inputs.quality_blocked_at, inputs.quality_blocked_until, inputs.exported_at, s)
    if until is not None and now < until:
        why.append(f"blocked by quality for {(until - now) / 3600:.1f} h more")
    if inputs.breaker_open_until and now < inputs.breaker_open_until:
        why.append(f"circuit breaker open for {inputs.breaker_open_until - now:.0f} s more")
    failed = inputs.last_failed_at
    if failed and now - failed < s.failure_cooldown_s and (inputs.exported_at or 0) <= failed:
        why.append(f"last training failed; retry in {s.failure_cooldown_s - (now - failed):.0f} s or on new data")
    if inputs.cancelled_at and (inputs.exported_at or 0) <= inputs.cancelled_at:
        why.append("its last job was cancelled; waits for a newer export")
    if inputs.new_samples < s.min_new_samples:
        why.append(f"{inputs.new_samples} new samples < minimum {s.min_new_samples}")
    return why


class TrainingScheduler:
    """Scores configs into `<prefix>:training:priority` and picks the next one to train."""

    def __init__(self, conn: redis.Redis, keys: Keys, settings: SchedulerSettings | None = None,
                 clock: Clock | None = None, breakers: BreakerSettings | None = None,
                 preemption: PreemptionSettings | None = None) -> None:
        self.conn = conn
        self.keys = keys
        self.settings = settings or SchedulerSettings()
        self.clock = clock or RedisClock(conn)
        self.configs = ConfigStore(conn, keys, self.settings, self.clock)  # where the scores are written
        self.breakers = breakers or BreakerSettings()
        self.preemption = preemption or PreemptionSettings()

    @classmethod
    def from_settings(cls, conn: redis.Redis, keys: Keys, settings: Settings,
                      clock: Clock | None = None) -> TrainingScheduler:
        return cls(conn, keys, settings.scheduler, clock, settings.breakers, settings.preemption)

    def score(self, inputs: ConfigInputs, now: float, curriculum_weight: float | None = None) -> Priority:
        """`compute_priority` with this scheduler's settings (the starvation point included)."""
        return compute_priority(inputs, self.settings, now, curriculum_weight, self.preemption.starve_after_hours)

    # -- reading ---------------------------------------------------------------------------------
    def get_next_training_config(self, curriculum_weights: Mapping[str, float] | None = None) -> str | None:
        """The eligible config with the highest score, or None. One round trip.

        `curriculum_weights` override the stored weights for this call only.
        """
        overrides = dict(curriculum_weights or {})
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            pipe.zrevrangebyscore(self.keys.priority, "+inf", 0, start=0, num=len(overrides) + 1, withscores=True)
            for config_key in overrides:
                pipe.hmget(self.keys.config(config_key), "base_eligible", "rest", "starving", "score")
            top, *stored = pipe.execute()
        candidates = [(score, key.decode()) for key, score in top if key.decode() not in overrides]
        for (config_key, weight), (base_ok, rest, starving, score) in zip(overrides.items(), stored):
            if base_ok != b"1" or weight <= 0:
                continue
            if starving == b"1":
                candidates.append((float(score), config_key))
            else:
                c = min(weight, self.settings.curriculum_max_weight) / self.settings.curriculum_max_weight
                candidates.append((float(rest) + self.settings.weights.curriculum * c, config_key))
        return max(candidates)[1] if candidates else None

    def is_starving(self, config_key: str) -> bool:
        """Whether the config's stored score says it starves (one read)."""
        score = self.conn.zscore(self.keys.priority, config_key)
        return score is not None and score >= STARVING_BASE

    def ranked(self, curriculum_weights: Mapping[str, float] | None = None,
               preemption_notes: Mapping[str, str] | None = None) -> list[Priority]:
        """Every config with each factor's contribution and any pending preemption, best first (the
        `priorities` view). `preemption_notes`: config key -> its `preemption` text; None: read from
        the pending requests (the preemption decision, which reads the job records itself, passes {})."""
        now = self.clock()
        config_keys = [k.decode() for k in self.conn.zrange(self.keys.priority, 0, -1)]
        overrides = curriculum_weights or {}
        notes = describe(pending_preemptions(self.conn, self.keys)) if preemption_notes is None else preemption_notes
        priorities = [replace(self.score(inputs, now, overrides.get(inputs.config_key)),
                              preemption=notes.get(inputs.config_key, ""))
                      for inputs in self.load_inputs(config_keys)]
        return sorted(priorities, key=lambda p: (p.score, p.config_key), reverse=True)

    def load_inputs(self, config_keys: list[str]) -> list[ConfigInputs]:
        """Inputs of many configs in one pipelined round trip."""
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            pipe.hmget(self.keys.active, config_keys) if config_keys else pipe.ping()
            for config_key in config_keys:
                pipe.hmget(self.keys.config(config_key), INPUT_FIELDS)  # not the stored explanation
                pipe.lrange(self.keys.elo(config_key), 0, -1)
                pipe.hmget(self.keys.breaker("config", config_key), "state", "opened_at")
                pipe.lrange(self.keys.gpu_hours(config_key), 0, -1)
                pipe.lrange(self.keys.elo_gains(config_key), 0, -1)
            active, *rest = pipe.execute()
        active = active if config_keys else []
        inputs = []
        for i, config_key in enumerate(config_keys):
            fields, elo, breaker, gpu_hours, gains = rest[5 * i:5 * i + 5]
            raw = {name: v.decode() for name, v in zip(INPUT_FIELDS, fields) if v is not None}
            job = active[i].decode() if active[i] else None
            until = open_until({k: v.decode() for k, v in zip(("state", "opened_at"), breaker) if v}, self.breakers)
            inputs.append(ConfigInputs.from_hash(config_key, raw, job, (_elo_point(p) for p in elo), until,
                                                 map(float, gpu_hours), map(float, gains)))
        return inputs

    # -- writing ---------------------------------------------------------------------------------
    def rescore(self, config_keys: Iterable[str] | None = None, batch: int = 500) -> int:
        """Recompute and store the scores of `config_keys` (default: every known config)."""
        keys = list(config_keys) if config_keys is not None else [
            k.decode() for k in self.conn.zrange(self.keys.priority, 0, -1)]
        for start in range(0, len(keys), batch):
            chunk = keys[start:start + batch]
            now = self.clock()
            scored = [self.score(i, now) for i in self.load_inputs(chunk)]
            self.configs.store_scores({p.config_key: (p.as_fields(now), p.score) for p in scored})
        return len(keys)


def describe(pend: Sequence[PendingPreemption]) -> dict[str, str]:
    """config key -> what its row in `priorities` says about a pending preemption (both sides)."""
    notes: dict[str, str] = {}
    for p in pend:
        notes[p.config_key] = f"yielding its GPU to {p.for_config} ({p.kind}: {p.why})"
        notes.setdefault(p.for_config, f"a GPU is being freed for it (job {p.job_id} of {p.config_key})")
    return notes


def _elo_point(raw: bytes) -> tuple[float, float]:
    at, elo = raw.split()
    return float(at), float(elo)

