"""Configs: the per-config hash (`<prefix>:config:<key>`), its lists (Elo window, GPU-hours, Elo
gains) and its place in the priority sorted set. Every write to them is made here, or by a script
through the helpers of `_config.lua` beside this module (the job scripts that end a wait or take
covered samples off, atomically with the job's change of state).

What the hash holds, by who decides it:
- data (`record_exports`, `record_exports.lua`): npz_path, samples, data_version, exported_at,
  first_seen_at, last_event_id, new_samples, board_type, num_players, and `waiting_since` (the wait
  bound counts from it: set when new data finds the config without a job, or its job preempted;
  cleared when it gets a GPU or has nothing left to train).
- scores (`store_scores`): score, eligible, why, flags, the factors, their contributions and inputs.
- pipeline events: quality blocks, curriculum weights, evaluations (Elo window, lineage, gains:
  `eval_model`, `eval_elo`, `eval_lineage`, `eval_trainings`, `model_elo`), training GPU-hours and
  their count (`trainings_done`); an operator's cancel (`cancelled_at`); a config that cannot be
  scored or dispatched (`skip`).

Which training an evaluation's Elo is credited to (`attributed_gain`, the rule the cost factor's
docstring states): the evaluated model is matched against the config's published models (exact
path, else a file name only one of them has); an unmatched one is recorded with lineage "unknown".
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from coordinator.core.clock import Clock, RedisClock
from coordinator.core.errors import CoordinatorError
from coordinator.core.job_states import QUEUED
from coordinator.core.keys import Keys
from coordinator.core.lua import script
from coordinator.core.settings import SchedulerSettings
from coordinator.core.text import optional_text, text
from coordinator.trainer.warm_start import read_entry

# The score of a config that may not train now (queued or running, blocked, ...): below every score
# the formula gives, so `ZREVRANGEBYSCORE priority +inf 0` reads only the eligible.
INELIGIBLE = -1.0
MODELS_REMEMBERED = 32  # per config, in `lineage` and `model_elo` (newest kept)
# `record_exports` reads the config's active job again when it changed under the script, at most this often.
MAX_MOVED_RETRIES = 20
UNKNOWN_LINEAGE = "unknown"  # `eval_lineage` of a model that matches none of the config's published models
# One group of `record_exports`: the (export, stream id) pairs of one config, oldest first. An export
# is anything with config_key, npz_path, samples, board_type and num_players (`bus.events.Export`).
ExportGroup = list[tuple[Any, "str | None"]]


class ConfigStore:
    """Writes the config hashes (and their lists and priority entries). The client is passed in."""

    def __init__(self, conn: redis.Redis, keys: Keys, settings: SchedulerSettings, clock: Clock | None = None) -> None:
        self.conn = conn
        self.keys = keys
        self.settings = settings
        self.clock = clock or RedisClock(conn)
        self._record = script(conn, "record_exports.lua")

    # -- reads the writers need ---------------------------------------------------------------------
    def preempted_job(self, config_key: str) -> str | None:
        """The config's job waiting in state preempted, if any (dispatch resumes it)."""
        return optional_text(self.conn.hget(self.keys.config(config_key), "preempted_job"))

    def dispatch_inputs(self, config_key: str) -> list[bytes | None]:
        """What dispatch copies onto a picked config's job: its stored `rest`, `c_curriculum`, `starving`."""
        return self.conn.hmget(self.keys.config(config_key), "rest", "c_curriculum", "starving")

    # -- exports ----------------------------------------------------------------------------------
    def record_export(self, export: Any, event_id: str | None = None) -> str:
        """Store an export on its config; a queued job of that config moves to the newer data.

        Returns "recorded", "updated" (a queued job now uses this file) or "duplicate" (this stream
        entry was applied before: redelivered after a crash between its effects and its ack).
        """
        return self.record_exports([(export, event_id)])

    def record_exports(self, exports: ExportGroup) -> str:
        """Several consecutive exports of one config, applied at once by `record_exports.lua`: the
        newest file wins, every export's samples count, entries applied before are skipped (by
        stream id). Reads the config's active job first; goes again if it changed in between."""
        config_key = exports[0][0].config_key
        for _ in range(MAX_MOVED_RETRIES):
            active = optional_text(self.conn.hget(self.keys.active, config_key)) or ""
            [action] = self._record_groups([exports], [active])
            if action != "moved":
                return action
        raise CoordinatorError(f"export of {config_key}: its job kept changing after {MAX_MOVED_RETRIES} tries")

    def record_exports_many(self, groups: list[ExportGroup]) -> list[str]:
        """`record_exports` for many configs (one group each), in one `record_exports.lua` call
        that assumes no config has a job; those that do come back "moved" and go again with their
        jobs (two more round trips). A job that changed in between: `record_exports` alone. One
        action per group, in order."""
        actions = self._record_groups(groups, [""] * len(groups))
        moved = [i for i, action in enumerate(actions) if action == "moved"]
        if moved:
            jobs = [optional_text(v) or "" for v in self.conn.hmget(
                self.keys.active, [groups[i][0][0].config_key for i in moved])]
            for i, action in zip(moved, self._record_groups([groups[i] for i in moved], jobs)):
                actions[i] = action
        return [self.record_exports(group) if action == "moved" else action
                for action, group in zip(actions, groups)]

    def _record_groups(self, groups: list[ExportGroup], jobs: list[str]) -> list[str]:
        """One `record_exports.lua` call: each group with the active job id the caller expects
        ("" for none). One action per group: "moved" (its active job changed: nothing written),
        "duplicate", "updated" (the queued job now uses the newest file) or "recorded"."""
        if not groups:
            return []
        keys: list[str] = [self.keys.active, self.keys.priority]
        spec: list[dict[str, Any]] = []
        for job_id, group in zip(jobs, groups):
            ck = group[0][0].config_key
            keys += [self.keys.config(ck), self.keys.job(job_id)] if job_id else [self.keys.config(ck)]
            spec.append({"config_key": ck, "job": job_id, "exports": [
                [event_id or "", e.npz_path, str(e.samples), e.board_type, str(e.num_players)]
                for e, event_id in group]})
        args = {"now": f"{self.clock():.6f}", "ineligible": repr(INELIGIBLE), "queued": QUEUED, "configs": spec}
        return [a.decode() for a in self._record(keys=keys, args=[json.dumps(args)])]

    # -- scores -----------------------------------------------------------------------------------
    def store_scores(self, rows: Mapping[str, tuple[Mapping[str, str], float]]) -> None:
        """config key -> (its explanation fields, its score): both stored, in one round trip."""
        with self.conn.pipeline(transaction=False) as pipe:  # independent per-config writes
            for config_key, (fields, _score) in rows.items():
                pipe.hset(self.keys.config(config_key), mapping=fields)
            if rows:
                pipe.zadd(self.keys.priority, {config_key: score for config_key, (_f, score) in rows.items()})
            pipe.execute()

    def skip(self, config_key: str | bytes, reason: str) -> None:
        """Take a stored config out of the priorities (its hash stays, with the reason); `config_key`
        as the sorted set holds it (bytes that are not UTF-8 included)."""
        now = self.clock()
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.priority, config_key)
            pipe.hset(self.keys.config(text(config_key)),
                      mapping={"skipped_reason": reason, "skipped_at": f"{now:.3f}"})
            pipe.hincrby(self.keys.stats, "configs_skipped", 1)
            pipe.execute()

    # -- dispatch and preemption ----------------------------------------------------------------------
    def waiting_since(self, config_keys: Iterable[str]) -> dict[str, float | None]:
        """Since when each config waits for a GPU (None: it does not): one round trip."""
        config_keys = list(dict.fromkeys(config_keys))
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for config_key in config_keys:
                pipe.hget(self.keys.config(config_key), "waiting_since")
            values = pipe.execute()
        return {k: float(v) if v else None for k, v in zip(config_keys, values)}

    def forget_preempted_job(self, config_key: str, pipe: redis.client.Pipeline) -> None:
        """Its preempted job resumed (or ended): dispatch no longer resumes it. On the caller's pipeline."""
        pipe.hdel(self.keys.config(config_key), "preempted_job")

    # -- pipeline events ------------------------------------------------------------------------------
    def block_for_quality(self, config_key: str, blocked_at: float, until: float, fields: Mapping[str, str]) -> None:
        """TRAINING_BLOCKED_BY_QUALITY: blocked from `blocked_at` until `until` or its next export."""
        self.conn.hset(self.keys.config(config_key), mapping={
            "quality_blocked_at": f"{blocked_at:.3f}", "quality_blocked_until": f"{until:.3f}", **fields})

    def set_curriculum_weights(self, weights: Mapping[str, float]) -> None:
        with self.conn.pipeline(transaction=True) as pipe:
            for config_key, weight in weights.items():
                pipe.hset(self.keys.config(config_key), "curriculum_weight", repr(float(weight)))
                pipe.zadd(self.keys.priority, {config_key: INELIGIBLE}, nx=True)  # known from now on
            pipe.execute()

    def record_elo(self, config_key: str, elo: float, at: float, pipe: redis.client.Pipeline | None = None) -> None:
        """Append an evaluation result to the config's window (kept to `elo_window_points`); adds to
        `pipe` when given (never executes it), else writes at once."""
        self._append(self.keys.elo(config_key), f"{at:.3f} {elo:.3f}", self.settings.elo_window_points, pipe)

    def record_lineage(self, config_key: str, model_path: str, parent_model: str | None) -> None:
        """A completed training's model and the model it started from (TRAINING_COMPLETE's
        `model_path`, `parent_model`): what an evaluation of the model is compared with."""
        lineage = self._json_field(config_key, "lineage")
        lineage[model_path] = parent_model or ""
        self.conn.hset(self.keys.config(config_key), "lineage", json.dumps(_newest(lineage)))

    def record_evaluation(self, config_key: str, elo: float, at: float, model_path: str | None = None,
                          event_id: str | None = None, anchored_elo: float | None = None) -> float | None:
        """An EVALUATION_COMPLETED: its point joins the Elo window, whatever its model; the model
        (`model_path`, absolute or as reported) is matched against the config's published models
        for lineage, else recorded with lineage "unknown"; the gain `attributed_gain` credits to the
        config's trainings joins the cost factor's returns. `anchored_elo`: the Elo against RingRift's
        fixed-rating baselines (`estimated_elo`/`best_elo`), measured from `cost.untrained_elo` on a
        config's first evaluation. Returns the gain, if any. The same stream entry (`event_id`)
        handled again, redelivered after a consumer died before its XACK, adds nothing."""
        raw = self.conn.hmget(self.keys.config(config_key), "eval_model", "eval_elo", "model_elo", "lineage",
                              "eval_event_id", "trainings_done", "eval_trainings")
        previous_model, previous_elo, applied = (optional_text(v) for v in (raw[0], raw[1], raw[4]))
        if event_id and applied == event_id:
            return None
        model_elo, lineage = (json.loads(v) if v else {} for v in raw[2:4])
        done = int(raw[5] or 0)
        model = match_model(model_path, lineage, self._published(config_key)) if model_path else None
        basis = EvaluationBasis(model or model_path, model is not None, model_elo, lineage, previous_model or None,
                                float(previous_elo) if previous_elo else None,
                                done - int(raw[6] or 0) if previous_elo else None, done)
        gain = attributed_gain(elo, anchored_elo, basis, self.settings.cost.untrained_elo)
        with self.conn.pipeline(transaction=True) as pipe:
            self.record_elo(config_key, elo, at, pipe)
            fields = {"eval_elo": repr(elo), "eval_trainings": str(done), "eval_model": basis.model or "",
                      "eval_lineage": "published" if basis.published else UNKNOWN_LINEAGE,
                      "eval_model_reported": model_path or "", **({"eval_event_id": event_id} if event_id else {})}
            if basis.model:
                model_elo[basis.model] = elo
                fields["model_elo"] = json.dumps(_newest(model_elo))
            pipe.hset(self.keys.config(config_key), mapping=fields)
            if gain is not None:
                self.record_elo_gain(config_key, gain, pipe)
            pipe.execute()
        return gain

    def _published(self, config_key: str) -> list[str]:
        """The config's published model paths (warm start's list), newest first."""
        return [read_entry(text(e))[0] for e in self.conn.lrange(self.keys.models(config_key), 0, -1)]

    def record_training_cost(self, config_key: str, gpu_hours: float,
                             pipe: redis.client.Pipeline | None = None) -> None:
        """Append a finished training's GPU-hours (kept to `cost.duration_window`) and count it
        (`trainings_done`: what an evaluation's Elo change is spread over); adds to `pipe` when given
        (never executes it), else writes at once."""
        if pipe is None:
            with self.conn.pipeline(transaction=True) as own:
                self.record_training_cost(config_key, gpu_hours, own)
                own.execute()
            return
        self._append(self.keys.gpu_hours(config_key), repr(float(gpu_hours)), self.settings.cost.duration_window, pipe)
        pipe.hincrby(self.keys.config(config_key), "trainings_done", 1)

    def record_elo_gain(self, config_key: str, gain: float, pipe: redis.client.Pipeline | None = None) -> None:
        """Append the Elo a training gained over its parent model (kept to `cost.gain_window`)."""
        self._append(self.keys.elo_gains(config_key), repr(float(gain)), self.settings.cost.gain_window, pipe)

    # -- helpers ------------------------------------------------------------------------------------
    def _json_field(self, config_key: str, name: str) -> dict:
        raw = self.conn.hget(self.keys.config(config_key), name)
        return json.loads(raw) if raw else {}

    def _append(self, key: str, value: str, keep: int, pipe: redis.client.Pipeline | None) -> None:
        """RPUSH `value` onto the list `key`, kept to its last `keep` entries (in `pipe`, or at once)."""
        if pipe is None:
            with self.conn.pipeline(transaction=True) as own:
                self._append(key, value, keep, own)
                own.execute()
            return
        pipe.rpush(key, value)
        pipe.ltrim(key, -keep, -1)


@dataclass(frozen=True)
class EvaluationBasis:
    """What an evaluation's gain is measured against: the config's evaluation state before it."""

    model: str | None  # the evaluated model: a published model's path, else as reported
    published: bool  # matched one of the config's published models (its lineage is known)
    model_elo: Mapping[str, Any]  # Elo of the models evaluated before (newest MODELS_REMEMBERED)
    lineage: Mapping[str, str]  # published model -> the model it started from ("" from scratch)
    previous_model: str | None  # the config's previous evaluation: its model
    previous_elo: float | None  # ... and its Elo (None: this is the config's first evaluation)
    trainings_since: int | None  # trainings completed since the previous evaluation
    trainings_done: int  # trainings of the config completed in all


def attributed_gain(elo: float, anchored_elo: float | None, b: EvaluationBasis, untrained_elo: float
                    ) -> float | None:
    """The Elo gained per training that this evaluation shows, or None (the rule is stated in
    `coordinator/scheduling/cost.py`): over the parent model; else over the config's previous
    evaluation, spread over the trainings completed since; else, on the first evaluation, from
    `untrained_elo` on the anchored scale, spread over the trainings the model descends from."""
    if b.published and b.model in b.model_elo:
        return None  # each published model's gain once
    parent = b.lineage.get(b.model or "") if b.published else None
    if parent and parent in b.model_elo:
        return elo - float(b.model_elo[parent])
    if b.previous_elo is not None:
        steps = b.trainings_since or 0
        if b.model and b.model != b.previous_model:
            steps = max(steps, 1)  # another model: at least one training made it
        return (elo - b.previous_elo) / steps if steps > 0 else None
    if anchored_elo is None:
        return None
    steps = (_chain_length(b.model, b.lineage) if b.published else None) or b.trainings_done
    return (anchored_elo - untrained_elo) / steps if steps > 0 else None


def _chain_length(model: str | None, lineage: Mapping[str, str]) -> int | None:
    """Trainings from scratch to `model` along the remembered lineage; None when it is cut off."""
    count, current = 0, model
    while current and count <= MODELS_REMEMBERED:
        if current not in lineage:
            return None
        count, current = count + 1, lineage[current]
    return count if not current else None


def match_model(model_path: str, lineage: Mapping[str, str], published: list[str]) -> str | None:
    """The config's published model an evaluation names: the same path, else the only known model
    with that file name (RingRift reports paths relative to its own directory); None: unknown."""
    known = [*lineage, *(p for p in lineage.values() if p), *published]
    if model_path in known:
        return model_path
    named = {path for path in known if posixpath.basename(path) == posixpath.basename(model_path)}
    return named.pop() if len(named) == 1 else None


def _newest(mapping: dict) -> dict:
    """The last MODELS_REMEMBERED entries (insertion order: the newest last)."""
    return dict(list(mapping.items())[-MODELS_REMEMBERED:])

