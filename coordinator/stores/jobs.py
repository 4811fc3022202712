"""Training jobs: one record (a hash) per job, and every change of its state.

The states and their legal moves are in `job_states.py`. Each change is one atomic step that
also publishes its event, so the record and the stream never disagree:

- record_exports (`record_exports.lua`, many configs per call): stores exports on their configs
  (path, samples, new-sample count, redeliveries skipped by stream id); a queued job of that
  config is pointed at the newer file.
- create_job (WATCH/MULTI): unless the config has a queued or running job, writes the job record
  and enqueues it on RQ's `training` queue in the same transaction. The scheduler decides when.
- start (`job_start.lua`): queued -> leased by an attempt holding the leases, attempt + 1, its
  fencing token and resumed epoch, TRAINING_STARTED; `mark_running` once the trainer is up.
- progress (`job_progress.lua`): epoch figures on the record + TRAINING_PROGRESS (+ RQ's job meta),
  one command an epoch.
- finish (`job_finish.lua`): -> complete / failed / retrying / cancelled, fenced (a stale attempt
  publishes nothing), frees the config unless it retries, TRAINING_COMPLETE/FAILED/CANCELLED.
- transition (`job_transition.lua`): the simple moves (reap, retry) for `recovery.py`.
- cancel (`job_cancel.lua`): a waiting job -> cancelled, a running one asked to stop, and its
  config marked to wait for a newer export, in one step.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from rq import Queue

from coordinator.bus.events import TRAINING_CANCELLED, TRAINING_PROGRESS, Export, encode_fields
from coordinator.core.errors import CoordinatorError, JobError
from coordinator.core.job_states import (
    ACTIVE_ATTEMPT_STATES,
    CANCELLED,
    FINAL_STATES,
    LEASED,
    PREEMPTED,
    QUEUED,
    RETRYING,
    RUNNING,
    allowed_from,
    csv_from,
)
from coordinator.core.keys import TRAINING_QUEUE, Keys
from coordinator.core.lua import script
from coordinator.core.settings import EventSettings, Settings, worker_settings_json
from coordinator.core.text import decode_hash
from coordinator.core.text import optional_text as _text
from coordinator.core.text import strings as _strings
from coordinator.stores.configs import INELIGIBLE

MAX_WATCH_RETRIES = 20
# What a new job copies from its config's hash (`_create`).
CREATE_FIELDS = ("board_type", "num_players", "npz_path", "samples", "data_version", "last_event_id")
# RQ's own timeout is a backstop behind the worker's: trainer timeout + grace + this.
RQ_TIMEOUT_MARGIN_S = 300
RUN_TRAINING = "workers.tasks.run_training"
# Published models kept per config (`Keys.models`): warm start falls back to an earlier one whose
# file still exists.
MODELS_KEPT = 5
# Why a running attempt is asked to stop (`stop_reason`, from its lease renewal's reply).
CANCELLED_STOP, PREEMPTED_STOP = "cancelled", "preempted"
# What `active_records` reads of each active job (the preempter's view of the running attempts).
RECORD_FIELDS = ("state", "config_key", "node", "started_at", "fence", "score_at_start", "picked_starving",
                 "preemptions", "preempt_requested_at", "preempt_for", "preempt_kind", "preempt_why",
                 "updated_at", "epoch")
SLOT_STATES = frozenset({LEASED, RUNNING})  # attempts that hold a GPU slot
T = TypeVar("T")


@dataclass(frozen=True)
class TrainingParams:
    """Hyper-parameters of one job; defaults come from the `training` settings."""

    epochs: int
    batch_size: int
    learning_rate: float
    early_stopping_patience: int

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TrainingParams:
        t = settings.training
        values = {
            "epochs": t.default_epochs,
            "batch_size": t.batch_size,
            "learning_rate": t.learning_rate,
            "early_stopping_patience": t.early_stopping_patience,
        }
        for name, value in overrides.items():
            if name not in values:
                raise CoordinatorError(f"unknown training parameter {name!r}")
            if value is not None:
                values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class Outcome:
    """What an ending attempt records: job fields, config fields (on success), and its event."""

    event_type: str
    event_fields: Mapping[str, Any]
    job_fields: Mapping[str, Any]
    node: str
    attempt: int
    fence: int | None = None
    config_fields: Mapping[str, Any] = field(default_factory=dict)
    payload: Any = None


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    action: str  # created | exists (the config's queued or running job)


def new_job_id(config_key: str) -> str:
    return f"{config_key}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class PendingPreemption:
    """A request a worker has not acted on yet."""

    job_id: str
    config_key: str
    for_config: str
    kind: str
    why: str
    requested_at: float


def stop_reason(cancel_requested: object, preempt_requested_at: object) -> str | None:
    """What the job record asks of its running attempt: 'cancelled' (wins), 'preempted' or nothing."""
    if cancel_requested:
        return CANCELLED_STOP
    return PREEMPTED_STOP if preempt_requested_at else None



def active_records(conn: redis.Redis, keys: Keys) -> list[tuple[str, dict[str, str]]]:
    """(job id, record fields in RECORD_FIELDS) of every config's active job: two round trips
    whatever their number (the preempter's view of the running attempts)."""
    job_ids = sorted({v.decode() for v in conn.hvals(keys.active)})
    with conn.pipeline(transaction=False) as pipe:  # batched reads only
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), RECORD_FIELDS)
        rows = pipe.execute()
    return [(job_id, {n: v.decode() for n, v in zip(RECORD_FIELDS, row) if v is not None})
            for job_id, row in zip(job_ids, rows)]


def pending_preemptions(conn: redis.Redis, keys: Keys) -> list[PendingPreemption]:
    """Requests to yield that the job's worker has not acted on yet (oldest first)."""
    out = [PendingPreemption(job_id, r.get("config_key", ""), r.get("preempt_for", ""), r.get("preempt_kind", ""),
                             r.get("preempt_why", ""), float(r["preempt_requested_at"]))
           for job_id, r in active_records(conn, keys)
           if r.get("state") in SLOT_STATES and r.get("preempt_requested_at")]
    return sorted(out, key=lambda p: (p.requested_at, p.job_id))


class JobStore:
    """Reads and changes job records. The Redis client is passed in; scripts register once here."""

    def __init__(self, conn: redis.Redis, keys: Keys, stream_maxlen: int = EventSettings.stream_maxlen) -> None:
        self.conn = conn
        self.keys = keys
        self.stream_maxlen = stream_maxlen
        self._start = script(conn, "job_start.lua")
        self._finish = script(conn, "job_finish.lua")
        self._transition = script(conn, "job_transition.lua")
        self._record = script(conn, "record_exports.lua")
        self._cancel = script(conn, "job_cancel.lua")
        self._progress = script(conn, "job_progress.lua")
        self._preempted = script(conn, "job_preempted.lua")

    @classmethod
    def from_settings(cls, conn: redis.Redis, keys: Keys, settings: Settings) -> JobStore:
        return cls(conn, keys, settings.events.stream_maxlen)

    # -- reading --------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, str]:
        record = decode_hash(self.conn.hgetall(self.keys.job(job_id)))
        if not record:
            raise JobError(job_id, "no such job")
        return record

    def list(self, limit: int = 50) -> list[dict[str, str]]:
        """The newest `limit` job records, newest first."""
        ids = [i.decode() for i in self.conn.zrevrange(self.keys.jobs, 0, limit - 1)]
        with self.conn.pipeline(transaction=False) as pipe:  # batching reads only
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
            return [decode_hash(raw) for raw in pipe.execute() if raw]

    def prune(self, created_before: float, limit: int = 500) -> int:
        """Delete up to `limit` records of jobs created before `created_before` that have ended
        (a final state never changes, so no transaction is needed); queued or running ones stay."""
        ids = [i.decode() for i in self.conn.zrangebyscore(self.keys.jobs, "-inf", created_before, start=0, num=limit)]
        if not ids:
            return 0
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), "state")
            states = pipe.execute()
        ended = [j for j, state in zip(ids, states) if state is None or state.decode() in FINAL_STATES]
        if ended:
            with self.conn.pipeline(transaction=True) as pipe:
                pipe.delete(*(self.keys.job(j) for j in ended))
                pipe.zrem(self.keys.jobs, *ended)
                pipe.execute()
        return len(ended)

    def active_job(self, config_key: str) -> str | None:
        job_id = self.conn.hget(self.keys.active, config_key)
        return job_id.decode() if job_id else None

    # -- exports and job creation ---------------------------------------------------------------
    def record_export(self, export: Export, event_id: str | None = None) -> str:
        """Store an export on its config; a queued job of that config moves to the newer data.

        Returns "recorded", "updated" (a queued job now uses this file) or "duplicate" (this stream
        entry was applied before: redelivered after a crash between its effects and its ack).
        """
        return self.record_exports([(export, event_id)])

    def record_exports(self, exports: list[tuple[Export, str | None]]) -> str:
        """Several consecutive exports of one config, applied at once by `record_exports.lua`: the
        newest file wins, every export's samples count, entries applied before are skipped (by
        stream id). Reads the config's active job first; goes again if it changed in between."""
        config_key = exports[0][0].config_key
        for _ in range(MAX_WATCH_RETRIES):
            [action] = self._record_groups([exports], [self.active_job(config_key) or ""])
            if action != "moved":
                return action
        raise CoordinatorError(f"export of {config_key}: its job kept changing after {MAX_WATCH_RETRIES} tries")

    def record_exports_many(self, groups: list[list[tuple[Export, str | None]]]) -> list[str]:
        """`record_exports` for many configs (one group each), in one `record_exports.lua` call
        that assumes no config has a job; those that do come back "moved" and go again with their
        jobs (two more round trips). A job that changed in between: `record_exports` alone. One
        action per group, in order."""
        actions = self._record_groups(groups, [""] * len(groups))
        moved = [i for i, action in enumerate(actions) if action == "moved"]
        if moved:
            jobs = [_text(v) or "" for v in self.conn.hmget(self.keys.active,
                                                             [groups[i][0][0].config_key for i in moved])]
            for i, action in zip(moved, self._record_groups([groups[i] for i in moved], jobs)):
                actions[i] = action
        return [self.record_exports(group) if action == "moved" else action
                for action, group in zip(actions, groups)]

    def _record_groups(self, groups: list[list[tuple[Export, str | None]]], jobs: list[str]) -> list[str]:
        """One `record_exports.lua` call: each group with the active job id the caller expects."""
        keys: list[str] = [self.keys.active, self.keys.priority]
        args: list[object] = [repr(time.time()), INELIGIBLE, QUEUED]
        for job_id, group in zip(jobs, groups):
            ck = group[0][0].config_key
            keys += [self.keys.config(ck), self.keys.job(job_id)] if job_id else [self.keys.config(ck)]
            args += [ck, job_id, len(group)]
            for export, event_id in group:
                args += [event_id or "", export.npz_path, export.samples, export.board_type, export.num_players]
        return [a.decode() for a in self._record(keys=keys, args=args)] if groups else []

    def create_job(self, settings: Settings, config_key: str, params: TrainingParams) -> SubmitResult:
        """Create and enqueue a job on the config's newest data, unless one is queued or running."""
        return self._retry_watch(lambda: self._create_once(settings, config_key, params), f"job for {config_key}")

    def _create_once(self, settings: Settings, ck: str, params: TrainingParams) -> SubmitResult:
        config_key = self.keys.config(ck)
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.watch(self.keys.active, config_key)
            # Both reads in one round trip, on another connection: WATCH still sees any change made
            # after it, whoever reads.
            with self.conn.pipeline(transaction=False) as reads:
                reads.hget(self.keys.active, ck)
                reads.hmget(config_key, CREATE_FIELDS)
                reads.lrange(self.keys.models(ck), 0, -1)
                active, values, models = reads.execute()
            current = _text(active)
            if current:
                return SubmitResult(current, "exists")
            cfg = {name: v.decode() for name, v in zip(CREATE_FIELDS, values) if v is not None}
            if not cfg.get("npz_path"):
                raise JobError(ck, "no export recorded for this config")
            job_id, now = new_job_id(ck), time.time()
            pipe.multi()
            parents = [m.decode() for m in models] if settings.training.warm_start_for(ck) else []
            self._create(pipe, settings, cfg, ck, params, job_id, now, parents)
            pipe.execute()
            return SubmitResult(job_id, "created")

    def _retry_watch(self, attempt: Callable[[], T], what: str) -> T:
        for _ in range(MAX_WATCH_RETRIES):
            try:
                return attempt()
            except redis.WatchError:
                continue
        raise CoordinatorError(f"{what}: still contended after {MAX_WATCH_RETRIES} tries")

    def _create(
        self, pipe: redis.client.Pipeline, settings: Settings, cfg: dict[str, str], ck: str,
        params: TrainingParams, job_id: str, now: float, parents: list[str],
    ) -> None:
        """`parents`: the config's published models, newest first; the worker starts from the newest
        whose file exists (warm start; empty: from scratch)."""
        t = settings.training
        output_dir = Path(t.models_root).expanduser().resolve() / ck / job_id
        record = {
            "job_id": job_id, "state": QUEUED, "config_key": ck,
            "board_type": cfg["board_type"], "num_players": cfg["num_players"],
            "npz_path": cfg["npz_path"], "samples": cfg.get("samples", 0), "data_version": cfg.get("data_version", 0),
            "epochs": params.epochs, "batch_size": params.batch_size,
            "learning_rate": params.learning_rate, "early_stopping_patience": params.early_stopping_patience,
            "output_dir": str(output_dir), "command": json.dumps(list(t.command_for(ck))),
            "progress_patterns": json.dumps(list(t.progress_patterns)), "summary_pattern": t.summary_pattern or "",
            "checkpoint_pattern": t.checkpoint_pattern or "", "working_dir": t.working_dir or "",
            "warm_start_from": json.dumps(parents),
            "timeout_s": t.timeout_s, "kill_grace_s": t.kill_grace_s, "prefix": self.keys.prefix,
            "check_npz": int(t.check_npz),
            "attempts": 0, "created_at": now, "updated_at": now,
            "source_event": cfg.get("last_event_id", ""),
            "settings": worker_settings_json(settings),  # what the worker needs: config.worker_settings
        }
        pipe.hset(self.keys.job(job_id), mapping=_strings(record))
        pipe.zadd(self.keys.jobs, {job_id: now})
        pipe.hset(self.keys.active, ck, job_id)
        pipe.zadd(self.keys.priority, {ck: INELIGIBLE})  # queued: not eligible until it ends
        self._enqueue_rq(pipe, settings, job_id, ck, cfg["npz_path"], 1)

    def _enqueue_rq(self, pipe: redis.client.Pipeline, settings: Settings, job_id: str, config_key: str,
                    npz_path: str, attempt: int, rq_job_id: str | None = None) -> None:
        """Queue the RQ job on the caller's transaction: its id is our job id, plus a suffix when the
        job goes back to the queue (so RQ's record of an earlier attempt is never overwritten)."""
        t = settings.training
        rq_job_id = rq_job_id or job_id
        pipe.hset(self.keys.job(job_id), "rq_job_id", rq_job_id)
        Queue(TRAINING_QUEUE, connection=self.conn).enqueue_call(
            RUN_TRAINING,
            args=(job_id, self.keys.prefix),
            job_id=rq_job_id,
            timeout=t.timeout_s + t.kill_grace_s + RQ_TIMEOUT_MARGIN_S,
            result_ttl=t.rq_result_ttl_s,
            failure_ttl=t.rq_result_ttl_s,
            description=f"train {config_key} from {npz_path}, attempt {attempt}",
            pipeline=pipe,
        )

    # -- worker side ----------------------------------------------------------------------------
    def start(self, job_id: str, config_key: str, node: str, worker: str, fence: int | None = None,
              resumed_epoch: int = 0, init_weights: str | None = None) -> int | None:
        """queued -> leased; returns the attempt number, or None when the job may not start.
        `init_weights`: the model it starts from (its `parent_model`), None from scratch."""
        started, value = self._start(
            keys=[self.keys.job(job_id), self.keys.events, self.keys.config(config_key)],
            args=[self.stream_maxlen, f"{time.time():.3f}", job_id, node, worker, "" if fence is None else fence,
                  csv_from(LEASED), resumed_epoch, init_weights or ""],
        )
        return int(value) if started else None

    def mark_running(self, job_id: str, config_key: str) -> bool:
        return self.transition(job_id, config_key, RUNNING)

    def transition(self, job_id: str, config_key: str, target: str, fields: Mapping[str, Any] | None = None,
                   event: tuple[str, Mapping[str, Any]] | None = None, release_active: bool = False,
                   wake_at: float | None = None, undelay: bool = False, expected_fence: str = "") -> bool:
        """Move a job to `target` if `job_states.TRANSITIONS` allows it from its current state."""
        job = _strings(fields or {})
        evt = encode_fields(event[0], {"job_id": job_id, "config_key": config_key, **event[1]}) if event else {}
        args: list[Any] = [self.stream_maxlen, job_id, config_key, target, csv_from(target),
                           "1" if release_active else "0", "" if wake_at is None else f"{wake_at:.3f}",
                           "1" if undelay else "0", expected_fence, len(job), len(evt)]
        for mapping in (job, evt):
            for key, value in mapping.items():
                args.extend((key, value))
        keys = [self.keys.job(job_id), self.keys.events, self.keys.active, self.keys.delayed_jobs]
        moved, _state = self._transition(keys=keys, args=args)
        return bool(moved)

    def cancel(self, job_id: str) -> str:
        """Cancel a job: at once when it waits ("cancelled"), through its worker when it runs
        ("requested": the worker stops the trainer within seconds); "ended" when already final.
        Its config then waits for a newer export before it is scheduled again. One script
        (`job_cancel.lua`): a crash leaves either nothing done or all of it."""
        # These never change.
        config_key, board_type, num_players = (_text(v) for v in self.conn.hmget(
            self.keys.job(job_id), "config_key", "board_type", "num_players"))
        if config_key is None:
            raise JobError(job_id, "no such job")
        evt = encode_fields(TRAINING_CANCELLED, {"job_id": job_id, "config_key": config_key,
                                                 "board_type": board_type or "", "num_players": num_players or ""})
        keys = [self.keys.job(job_id), self.keys.events, self.keys.active, self.keys.delayed_jobs,
                self.keys.config(config_key), Queue(TRAINING_QUEUE, connection=self.conn).key]
        args: list[Any] = [self.stream_maxlen, job_id, config_key, repr(time.time()), CANCELLED,
                           ",".join(sorted(allowed_from(CANCELLED) - ACTIVE_ATTEMPT_STATES)),
                           ",".join(sorted(ACTIVE_ATTEMPT_STATES)), len(evt)]
        for key, value in evt.items():
            args.extend((key, value))
        outcome = _text(self._cancel(keys=keys, args=args))
        if outcome == "missing":
            raise JobError(job_id, "no such job")
        return outcome

    def progress(self, job_id: str, config_key: str, figures: Mapping[str, Any],
                 rq_meta: tuple[str, bytes] | None = None) -> None:
        """Store an epoch's figures on the record and publish TRAINING_PROGRESS in one command
        (`job_progress.lua`); `rq_meta`: (RQ's job key, its serialized meta) written with them."""
        job = _strings({**figures, "updated_at": time.time()})
        evt = encode_fields(TRAINING_PROGRESS, {"job_id": job_id, "config_key": config_key, **figures})
        args: list[Any] = [self.stream_maxlen, len(job), len(evt)]
        for mapping in (job, evt):
            for key, value in mapping.items():
                args.extend((key, value))
        keys = [self.keys.job(job_id), self.keys.events]
        if rq_meta is not None:
            keys.append(rq_meta[0])
            args.append(rq_meta[1])
        self._progress(keys=keys, args=args)

    def finish(self, job_id: str, config_key: str, state: str, outcome: Outcome,
               retry_at: float | None = None, model: str | None = None) -> str:
        """End an attempt: "recorded", "fenced" (a newer lease or attempt exists: nothing published,
        only the event) or "not_running" (the job was ended elsewhere). `model`: the model a
        completed attempt publishes (first on the config's `Keys.models`, if recorded)."""
        if state not in FINAL_STATES | {RETRYING}:
            raise JobError(job_id, f"cannot finish in state {state!r}")
        job = _strings(outcome.job_fields)
        cfg = _strings(outcome.config_fields)
        evt = encode_fields(outcome.event_type, {"job_id": job_id, "config_key": config_key, **outcome.event_fields},
                            outcome.payload)
        fence = "" if outcome.fence is None else outcome.fence
        args: list[Any] = [self.stream_maxlen, job_id, config_key, state, fence, outcome.node, outcome.attempt,
                           len(job), len(cfg), len(evt), csv_from(state),
                           "" if retry_at is None else f"{retry_at:.3f}", model or "", MODELS_KEPT]
        for mapping in (job, cfg, evt):
            for key, value in mapping.items():
                args.extend((key, value))
        keys = [self.keys.job(job_id), self.keys.events, self.keys.active, self.keys.config(config_key),
                self.keys.fence(config_key), self.keys.delayed_jobs, self.keys.models(config_key)]
        return {0: "not_running", 1: "recorded", 2: "fenced"}[int(self._finish(keys=keys, args=args))]

    def preempted(self, job_id: str, config_key: str, fence: int | None, node: str, attempt: int, epoch: int,
                  lost_hours: float, board_type: str = "", num_players: str = "") -> str:
        """End an attempt that yielded on request (`job_preempted.lua`): "recorded", "fenced" (another
        attempt holds the job: nothing changed) or "not_running" (ended elsewhere)."""
        args = [self.stream_maxlen, job_id, config_key, "" if fence is None else fence, node, attempt, epoch,
                f"{lost_hours:.6f}", csv_from(PREEMPTED), board_type, num_players]
        result = self._preempted(keys=[self.keys.job(job_id), self.keys.events, self.keys.config(config_key)],
                                 args=args)
        return {0: "not_running", 1: "recorded", 2: "fenced"}[int(result)]
