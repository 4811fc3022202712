"""Training jobs: one record (a hash) per job, and every change of its state, made here and only here.

The states and their legal moves are in `core/job_states.py`; every change takes its allowed "from"
states from that table and passes them, with the state names and event types, to its script
(`job_*.lua` beside this module: one JSON argument of named values). Each change is one atomic
step that also publishes its event, so the record and the stream never disagree. Times come from
the store's clock (Redis' TIME unless a test gives another).

- create_job (WATCH/MULTI): unless the config has a queued or running job, writes the job record
  and enqueues it on RQ's `training` queue in the same transaction. The scheduler decides when.
- start (`job_start.lua`): queued -> leased by an attempt holding the leases, attempt + 1, its
  fencing token and resumed epoch, TRAINING_STARTED; `mark_running` once the trainer is up.
- progress (`job_progress.lua`): epoch figures on the record + TRAINING_PROGRESS (+ RQ's job meta).
- finish (`job_finish.lua`): -> complete / failed / retrying / cancelled, fenced (a stale attempt
  publishes nothing), frees the config unless it retries, TRAINING_COMPLETE/FAILED/CANCELLED.
- preempted (`job_preempted.lua`): running -> preempted at the trainer's checkpoint (asked by the
  scheduler, or kind `node_notice`: its ephemeral host is going away; `resume_preempted` then at once).
- transition (`job_transition.lua`): the simple moves (reap, retry) that recovery decides.
- requeue_delayed / resume_preempted (WATCH/MULTI): retrying, deferred or preempted -> queued and
  back on RQ's queue (`_requeue`, one step for all three).
- cancel (`job_cancel.lua`): a waiting job -> cancelled, a running one asked to stop, and its
  config marked to wait for a newer export, in one step.
- defer, request_preemption (`job_preempt_request.lua`), mark_dispatch: fields other than the
  state that the orchestrator and the worker set on a record.
- queue_first (`rq_queue_first.lua`): jobs moved to the head of RQ's queue (starving ones).

A job goes on RQ's `training` queue unless its config has a GPU requirement that refuses some
GPUs (`gpus.boards` / `gpus.per_config`): then on that requirement's queue (`training-ge40gb`,
registered in `Keys.placement_queues`), which only workers whose GPU meets it listen to
(`workers/worker.py`). The record's `rq_queue` names the queue of its current RQ job; the
requirement is read from the settings at each enqueue, so a requeue follows a changed one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import redis
from rq import Queue
from rq.job import Job

from coordinator.bus.events import (
    TRAINING_CANCELLED,
    TRAINING_FAILED,
    TRAINING_PREEMPTED,
    TRAINING_PROGRESS,
    TRAINING_STARTED,
    encode_fields,
)
from coordinator.core.clock import Clock, RedisClock
from coordinator.core.errors import CoordinatorError, EventError, JobError
from coordinator.core.gpu_requirements import queue_name, requirement_spec
from coordinator.core.job_states import (
    ACTIVE_ATTEMPT_STATES,
    CANCELLED,
    COMPLETE,
    FINAL_STATES,
    LEASED,
    PREEMPTED,
    QUEUED,
    RETRYING,
    RUNNING,
    STALE,
    allowed_from,
)
from coordinator.core.keys import TRAINING_QUEUE, Keys, rq_queue_key
from coordinator.core.lua import script
from coordinator.core.settings import EventSettings, Settings, worker_settings_json
from coordinator.core.text import decode_hash, optional_text, strings
from coordinator.stores.configs import INELIGIBLE, ConfigStore
from coordinator.stores.job_records import NOTICE_STOP, Outcome, SubmitResult, TrainingParams, new_job_id
from coordinator.trainer.warm_start import command_fingerprint, offered_models, published_entry

MAX_WATCH_RETRIES = 20
# What a new job copies from its config's hash (`_create`).
CREATE_FIELDS = ("board_type", "num_players", "npz_path", "samples", "data_version", "last_event_id")
# RQ's own timeout is a backstop behind the worker's: trainer timeout + grace + this.
RQ_TIMEOUT_MARGIN_S = 300
RUN_TRAINING = "workers.tasks.run_training"
# Published models kept per config (`Keys.models`): warm start falls back to an earlier one whose
# file still exists.
MODELS_KEPT = 5
# A preemption request's fields, cleared when the job resumes.
# The config's export fields a resumed job takes (config field -> job record field).
RESUME_DATA_FIELDS = ("npz_path", "samples", "data_version", "last_event_id")
PREEMPT_FIELDS = ("preempt_requested_at", "preempt_for", "preempt_kind", "preempt_why", "preempt_fence")
T = TypeVar("T")


def _newest_export(values: list[bytes | None]) -> dict[str, str]:
    """The config's newest export as job record fields (`source_event` is the record's name for the
    config's `last_event_id`); fields the config lacks are left as the job has them."""
    names = {"last_event_id": "source_event"}
    return {names.get(field, field): v.decode() for field, v in zip(RESUME_DATA_FIELDS, values) if v is not None}


def states(target: str) -> list[str]:
    """`allowed_from(target)` as the sorted list a script takes."""
    return sorted(allowed_from(target))


def flat(mapping: Mapping[str, Any]) -> list[str]:
    """A mapping as the flat [field, value, ...] list a script unpacks into HSET or XADD (order kept)."""
    return [item for pair in mapping.items() for item in pair]


class JobStore:
    """Reads and changes job records. The Redis client is passed in; scripts register once here."""

    def __init__(self, conn: redis.Redis, keys: Keys, stream_maxlen: int = EventSettings.stream_maxlen,
                 clock: Clock | None = None) -> None:
        self.conn = conn
        self.keys = keys
        self.stream_maxlen = stream_maxlen
        self.clock = clock or RedisClock(conn)
        self._start = script(conn, "job_start.lua")
        self._finish = script(conn, "job_finish.lua")
        self._transition = script(conn, "job_transition.lua")
        self._cancel = script(conn, "job_cancel.lua")
        self._progress = script(conn, "job_progress.lua")
        self._preempted = script(conn, "job_preempted.lua")
        self._preempt_request = script(conn, "job_preempt_request.lua")
        self._queue_first = script(conn, "rq_queue_first.lua")

    @classmethod
    def from_settings(cls, conn: redis.Redis, keys: Keys, settings: Settings, clock: Clock | None = None) -> JobStore:
        return cls(conn, keys, settings.events.stream_maxlen, clock)

    def _run(self, fn: Any, keys: list[str], **named: Any) -> Any:
        """Call a job script with its named arguments (now and the stream's cap included) as one JSON."""
        named = {"now": f"{self.clock():.6f}", "maxlen": str(self.stream_maxlen), **named}
        return fn(keys=keys, args=[json.dumps(named)])

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

    def active_job(self, config_key: str) -> str | None:
        return optional_text(self.conn.hget(self.keys.active, config_key))

    def prune(self, created_before: float, limit: int = 500) -> int:
        """Delete up to `limit` records of jobs created before `created_before` that have ended
        (a final state never changes, so no transaction is needed); queued or running ones stay."""
        ids = [i.decode() for i in self.conn.zrangebyscore(self.keys.jobs, "-inf", created_before, start=0, num=limit)]
        if not ids:
            return 0
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), "state")
            found = pipe.execute()
        ended = [j for j, state in zip(ids, found) if state is None or state.decode() in FINAL_STATES]
        if ended:
            with self.conn.pipeline(transaction=True) as pipe:
                pipe.delete(*(self.keys.job(j) for j in ended))
                pipe.zrem(self.keys.jobs, *ended)
                pipe.execute()
        return len(ended)

    # -- creation and dispatch --------------------------------------------------------------------
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
            current = optional_text(active)
            if current:
                return SubmitResult(current, "exists")
            cfg = {name: v.decode() for name, v in zip(CREATE_FIELDS, values) if v is not None}
            if not cfg.get("npz_path"):
                raise JobError(ck, "no export recorded for this config")
            job_id, now = new_job_id(ck), self.clock()
            pipe.multi()
            published = [m.decode() for m in models] if settings.training.warm_start_for(ck) else []
            self._create(pipe, settings, cfg, ck, params, job_id, now, published)
            pipe.execute()
            return SubmitResult(job_id, "created")

    def _create(
        self, pipe: redis.client.Pipeline, settings: Settings, cfg: dict[str, str], ck: str,
        params: TrainingParams, job_id: str, now: float, published: list[str],
    ) -> None:
        """`published`: the config's published-model entries, newest first. Those its trainer command
        wrote (or of unknown command) become `warm_start_from`; the worker starts from the newest
        whose file exists (empty: from scratch). `warm_start_skipped` counts the others."""
        t = settings.training
        command = list(t.command_for(ck))
        parents, skipped = offered_models(published, command_fingerprint(command))
        output_dir = Path(t.models_root).expanduser().resolve() / ck / job_id
        record = {
            "job_id": job_id, "state": QUEUED, "config_key": ck,
            "board_type": cfg["board_type"], "num_players": cfg["num_players"],
            "npz_path": cfg["npz_path"], "samples": cfg.get("samples", 0), "data_version": cfg.get("data_version", 0),
            "epochs": params.epochs, "batch_size": params.batch_size,
            "learning_rate": params.learning_rate, "early_stopping_patience": params.early_stopping_patience,
            "output_dir": str(output_dir), "command": json.dumps(command),
            "progress_patterns": json.dumps(list(t.progress_patterns)), "summary_pattern": t.summary_pattern or "",
            "checkpoint_pattern": t.checkpoint_pattern or "", "working_dir": t.working_dir or "",
            "warm_start_from": json.dumps(parents), "warm_start_skipped": skipped,
            "timeout_s": t.timeout_s, "kill_grace_s": t.kill_grace_s, "prefix": self.keys.prefix,
            "check_npz": int(t.check_npz),
            "attempts": 0, "created_at": now, "updated_at": now,
            "source_event": cfg.get("last_event_id", ""),
            "settings": worker_settings_json(settings),  # what the worker needs: config.worker_settings
        }
        pipe.hset(self.keys.job(job_id), mapping=strings(record))
        pipe.zadd(self.keys.jobs, {job_id: now})
        pipe.hset(self.keys.active, ck, job_id)
        pipe.zadd(self.keys.priority, {ck: INELIGIBLE})  # queued: not eligible until it ends
        self._enqueue_rq(pipe, settings, job_id, ck, cfg["npz_path"], 1)

    def mark_dispatch(self, job_id: str, fields: Mapping[str, str]) -> None:
        """Dispatch picked the config for `job_id` (new or resumed): what it was picked with on the
        record. The config's wait ends when the job starts (`job_start.lua`), not here."""
        self.conn.hset(self.keys.job(job_id), mapping=dict(fields))

    def deferred(self, job_ids: list[str]) -> set[str]:
        """Those of the jobs held out of RQ's queue until a later time (`defer`, a retry's backoff):
        one round trip."""
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for job_id in job_ids:
                pipe.zscore(self.keys.delayed_jobs, job_id)
            return {job_id for job_id, score in zip(job_ids, pipe.execute()) if score is not None}

    def rq_job_ids(self, job_ids: list[str]) -> list[str]:
        """The RQ job id of each job's current attempt (one round trip)."""
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), "rq_job_id")
            return [v.decode() if v else job_id for job_id, v in zip(job_ids, pipe.execute())]

    def queue_first(self, rq_job_ids: list[str]) -> int:
        """Put these RQ jobs at the head of the RQ queue each is on (RQ's `origin`: `training`, or
        its GPU requirement's queue) in this order (RQ's own `at_front` place), those still in it;
        how many were moved. The preempter puts starving jobs there so the GPU freed for one goes to it."""
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for rq_id in rq_job_ids:
                pipe.hget(Job.key_for(rq_id), "origin")
            origins = [optional_text(v) or TRAINING_QUEUE for v in pipe.execute()] if rq_job_ids else []
        by_queue: dict[str, list[str]] = {}
        for rq_id, origin in zip(rq_job_ids, origins):
            by_queue.setdefault(origin, []).append(rq_id)
        return sum(int(self._queue_first(keys=[rq_queue_key(queue)], args=[json.dumps(ids)]))
                   for queue, ids in by_queue.items())

    # -- back onto RQ's queue -----------------------------------------------------------------------
    def requeue_delayed(self, settings: Settings, job_id: str) -> bool:
        """A deferred (queued) or retrying job whose time has come goes back on RQ's queue; False when
        another orchestrator took it first or it ended meanwhile."""
        return self._retry_watch(lambda: self._requeue_delayed_once(settings, job_id), f"requeue of {job_id}")

    def _requeue_delayed_once(self, settings: Settings, job_id: str) -> bool:
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.watch(self.keys.job(job_id), self.keys.delayed_jobs)
            if pipe.zscore(self.keys.delayed_jobs, job_id) is None:
                return False  # another orchestrator took it
            state, config_key, attempts, deferrals, npz_path = (optional_text(v) for v in pipe.hmget(
                self.keys.job(job_id), "state", "config_key", "attempts", "deferrals", "npz_path"))
            pipe.multi()
            pipe.zrem(self.keys.delayed_jobs, job_id)
            back = state == QUEUED or state in allowed_from(QUEUED)
            if back:
                suffix = f"a{int(attempts or 0) + 1}" if state == RETRYING else f"d{deferrals or 0}"
                self._requeue(pipe, settings, job_id, config_key or "?", npz_path, attempts, suffix)
            pipe.execute()
            return back

    def resume_preempted(self, settings: Settings, config_key: str, job_id: str, configs: ConfigStore) -> bool:
        """preempted -> queued, back on RQ's queue under the same job id (a new RQ id per resume);
        False when the job is no longer preempted (resumed or cancelled meanwhile)."""
        return self._retry_watch(lambda: self._resume_once(settings, config_key, job_id, configs),
                                 f"resume of {job_id}")

    def _resume_once(self, settings: Settings, config_key: str, job_id: str, configs: ConfigStore) -> bool:
        job_key, config_hash = self.keys.job(job_id), self.keys.config(config_key)
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.watch(job_key, config_hash)
            state, attempts, preemptions, notices = (
                optional_text(v) for v in pipe.hmget(job_key, "state", "attempts", "preemptions", "notice_yields"))
            newest = _newest_export(pipe.hmget(config_hash, RESUME_DATA_FIELDS))
            npz_path = newest.get("npz_path")
            if state != PREEMPTED:  # resumed or cancelled meanwhile: the config no longer waits on it
                pipe.unwatch()
                if configs.preempted_job(config_key) == job_id:
                    with self.conn.pipeline(transaction=True) as forget:
                        configs.forget_preempted_job(config_key, forget)
                        forget.execute()
                return False
            pipe.multi()
            pipe.hdel(job_key, *PREEMPT_FIELDS)
            # It resumes onto the config's newest export (the trainer takes --resume with another
            # --data-path): the next attempt covers, and is credited with, what was exported meanwhile.
            pipe.hset(job_key, mapping=newest)
            configs.forget_preempted_job(config_key, pipe)
            suffix = f"p{preemptions or 0}" + (f"n{notices}" if notices else "")  # each resume its own RQ id
            self._requeue(pipe, settings, job_id, config_key, npz_path, attempts, suffix)
            pipe.execute()
        return True

    def _requeue(self, pipe: redis.client.Pipeline, settings: Settings, job_id: str, config_key: str,
                 npz_path: str | None, attempts: str | None, suffix: str) -> None:
        """The one step back onto RQ's queue, on the caller's transaction: queued again, and a new RQ
        job for the next attempt."""
        pipe.hset(self.keys.job(job_id), mapping=strings({"state": QUEUED, "updated_at": self.clock()}))
        self._enqueue_rq(pipe, settings, job_id, config_key, npz_path or "?", int(attempts or 0) + 1,
                         f"{job_id}-{suffix}")

    def _enqueue_rq(self, pipe: redis.client.Pipeline, settings: Settings, job_id: str, config_key: str,
                    npz_path: str, attempt: int, rq_job_id: str | None = None) -> None:
        """Queue the RQ job on the caller's transaction: its id is our job id, plus a suffix when the
        job goes back to the queue (so RQ's record of an earlier attempt is never overwritten)."""
        t = settings.training
        rq_job_id = rq_job_id or job_id
        queue = self._queue_for(pipe, settings, config_key)
        pipe.hset(self.keys.job(job_id), mapping={"rq_job_id": rq_job_id, "rq_queue": queue})
        Queue(queue, connection=self.conn).enqueue_call(
            RUN_TRAINING,
            args=(job_id, self.keys.prefix),
            job_id=rq_job_id,
            timeout=t.timeout_s + t.kill_grace_s + RQ_TIMEOUT_MARGIN_S,
            result_ttl=t.rq_result_ttl_s,
            failure_ttl=t.rq_result_ttl_s,
            description=f"train {config_key} from {npz_path}, attempt {attempt}",
            pipeline=pipe,
        )

    def _queue_for(self, pipe: redis.client.Pipeline, settings: Settings, config_key: str) -> str:
        """The RQ queue of the config's jobs (`gpu_requirements.queue_name`): `training` when any GPU
        will do; else its requirement's queue, registered (`Keys.placement_queues`) on the caller's
        transaction so that the workers whose GPU meets it listen to it."""
        try:
            requirement = settings.gpus.requirement_for(config_key)
        except EventError:  # not a config key (a test's or an old record's): no requirement
            return TRAINING_QUEUE
        queue = queue_name(requirement)
        if queue != TRAINING_QUEUE:
            spec = requirement_spec(requirement, settings.gpus.classes)
            pipe.hset(self.keys.placement_queues, queue, json.dumps(spec, sort_keys=True))
        return queue

    def register_queues(self, settings: Settings) -> list[str]:
        """Register the queue of every requirement the settings give (`gpus.boards`, `gpus.per_config`)
        before any job is on it, so that a worker already listens to it when the first comes (one
        HSET; dispatch calls it). The queue names."""
        gpus = settings.gpus
        keys = {*(f"{board}_2p" for board in gpus.boards), *gpus.per_config}
        specs = {}
        for config_key in sorted(keys):
            try:
                requirement = gpus.requirement_for(config_key)
            except EventError:
                continue
            if queue_name(requirement) != TRAINING_QUEUE:
                specs[queue_name(requirement)] = json.dumps(requirement_spec(requirement, gpus.classes),
                                                            sort_keys=True)
        if specs:
            self.conn.hset(self.keys.placement_queues, mapping=specs)
        return sorted(specs)

    def defer(self, job_id: str, delay_s: float, reason: str, count_as: str | None = None) -> None:
        """Leave the job queued but out of RQ until `delay_s` from now; the orchestrator puts it back.
        `count_as` names a counter of `<prefix>:stats` to add one to (for the metrics)."""
        ready = self.clock() + delay_s
        with self.conn.pipeline(transaction=True) as pipe:
            if count_as:
                pipe.hincrby(self.keys.stats, count_as, 1)
            pipe.hset(self.keys.job(job_id), mapping=strings({"deferred_reason": reason, "not_before": ready}))
            pipe.hincrby(self.keys.job(job_id), "deferrals", 1)
            pipe.zadd(self.keys.delayed_jobs, {job_id: ready})
            pipe.execute()

    def _retry_watch(self, attempt: Callable[[], T], what: str) -> T:
        for _ in range(MAX_WATCH_RETRIES):
            try:
                return attempt()
            except redis.WatchError:
                continue
        raise CoordinatorError(f"{what}: still contended after {MAX_WATCH_RETRIES} tries")

    # -- worker side ----------------------------------------------------------------------------
    def start(self, job_id: str, config_key: str, node: str, worker: str, fence: int | None = None,
              resumed_epoch: int = 0, init_weights: str | None = None) -> int | None:
        """queued -> leased; returns the attempt number, or None when the job may not start.
        `init_weights`: the model it starts from (its `parent_model`), None from scratch."""
        started, value = self._run(
            self._start, [self.keys.job(job_id), self.keys.events, self.keys.config(config_key)],
            job_id=job_id, node=node, worker=worker, fence="" if fence is None else str(fence),
            **{"from": states(LEASED)}, to=LEASED, resumed_epoch=str(resumed_epoch),
            init_weights=init_weights or "", event=TRAINING_STARTED)
        return int(value) if started else None

    def record_attempt_gpu(self, job_id: str, fields: Mapping[str, Any], batch_size: int) -> None:
        """The GPU an attempt got and the batch size it trains with (`batch_size_used`, and
        `batch_size_started` once: what the job's first attempt used), on the job's record."""
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.job(job_id), mapping=strings({**fields, "batch_size_used": batch_size}))
            pipe.hsetnx(self.keys.job(job_id), "batch_size_started", batch_size)
            pipe.execute()

    def mark_running(self, job_id: str, config_key: str) -> bool:
        return self.transition(job_id, config_key, RUNNING)

    def transition(self, job_id: str, config_key: str, target: str, fields: Mapping[str, Any] | None = None,
                   event: tuple[str, Mapping[str, Any]] | None = None, release_active: bool = False,
                   wake_at: float | None = None, undelay: bool = False, expected_fence: str = "") -> bool:
        """Move a job to `target` if `job_states.TRANSITIONS` allows it from its current state."""
        evt = encode_fields(event[0], {"job_id": job_id, "config_key": config_key, **event[1]}) if event else {}
        moved, _state = self._run(
            self._transition, [self.keys.job(job_id), self.keys.events, self.keys.active, self.keys.delayed_jobs],
            job_id=job_id, config_key=config_key, to=target, **{"from": states(target)},
            release_active="1" if release_active else "0", wake_at="" if wake_at is None else f"{wake_at:.3f}",
            undelay="1" if undelay else "0", expected_fence=expected_fence,
            job=flat(strings(fields or {})), evt=flat(evt))
        return bool(moved)

    def cancel(self, job_id: str) -> str:
        """Cancel a job: at once when it waits ("cancelled"), through its worker when it runs
        ("requested": the worker stops the trainer within seconds); "ended" when already final.
        Its config then waits for a newer export before it is scheduled again. One script
        (`job_cancel.lua`): a crash leaves either nothing done or all of it."""
        # These never change.
        config_key, board_type, num_players, queue = (optional_text(v) for v in self.conn.hmget(
            self.keys.job(job_id), "config_key", "board_type", "num_players", "rq_queue"))
        if config_key is None:
            raise JobError(job_id, "no such job")
        evt = encode_fields(TRAINING_CANCELLED, {"job_id": job_id, "config_key": config_key,
                                                 "board_type": board_type or "", "num_players": num_players or ""})
        keys = [self.keys.job(job_id), self.keys.events, self.keys.active, self.keys.delayed_jobs,
                self.keys.config(config_key), rq_queue_key(queue or TRAINING_QUEUE)]
        outcome = optional_text(self._run(
            self._cancel, keys, job_id=job_id, config_key=config_key, to=CANCELLED, reason="cancelled",
            waiting=sorted(allowed_from(CANCELLED) - ACTIVE_ATTEMPT_STATES), running=sorted(ACTIVE_ATTEMPT_STATES),
            evt=flat(evt)))
        if outcome == "missing":
            raise JobError(job_id, "no such job")
        return outcome or ""

    def progress(self, job_id: str, config_key: str, figures: Mapping[str, Any],
                 rq_meta: tuple[str, bytes] | None = None) -> None:
        """Store an epoch's figures on the record and publish TRAINING_PROGRESS in one command
        (`job_progress.lua`); `rq_meta`: (RQ's job key, its serialized meta) written with them."""
        job = strings({**figures, "updated_at": self.clock()})
        evt = encode_fields(TRAINING_PROGRESS, {"job_id": job_id, "config_key": config_key, **figures})
        keys = [self.keys.job(job_id), self.keys.events]
        args = [json.dumps({"maxlen": str(self.stream_maxlen), "job": flat(job), "evt": flat(evt)})]
        if rq_meta is not None:
            keys.append(rq_meta[0])
            args.append(rq_meta[1])
        self._progress(keys=keys, args=args)

    def finish(self, job_id: str, config_key: str, state: str, outcome: Outcome,
               retry_at: float | None = None, model: str | None = None, model_command: str = "") -> str:
        """End an attempt: "recorded", "fenced" (a newer lease or attempt exists: nothing published,
        only the event) or "not_running" (the job was ended elsewhere). `model`: the model a
        completed attempt publishes (first on the config's `Keys.models`, if recorded), kept with
        `model_command`, the fingerprint of the trainer command that wrote it (warm_start.py)."""
        if state not in FINAL_STATES | {RETRYING}:
            raise JobError(job_id, f"cannot finish in state {state!r}")
        evt = encode_fields(outcome.event_type, {"job_id": job_id, "config_key": config_key, **outcome.event_fields},
                            outcome.payload)
        keys = [self.keys.job(job_id), self.keys.events, self.keys.active, self.keys.config(config_key),
                self.keys.fence(config_key), self.keys.delayed_jobs, self.keys.models(config_key)]
        result = self._run(
            self._finish, keys, job_id=job_id, config_key=config_key, to=state, **{"from": states(state)},
            complete=COMPLETE, stale=STALE, attempt_states=sorted(ACTIVE_ATTEMPT_STATES),
            failed_event=TRAINING_FAILED, fence="" if outcome.fence is None else str(outcome.fence),
            node=outcome.node, attempt=str(outcome.attempt), job=flat(strings(outcome.job_fields)),
            cfg=flat(strings(outcome.config_fields)), evt=flat(evt),
            retry_at="" if retry_at is None else f"{retry_at:.3f}", models_kept=str(MODELS_KEPT),
            model=(published_entry(model, model_command) if model_command else model) if model else "")
        return {0: "not_running", 1: "recorded", 2: "fenced"}[int(result)]

    def preempted(self, job_id: str, config_key: str, fence: int | None, node: str, attempt: int, epoch: int,
                  lost_hours: float, board_type: str = "", num_players: str = "", kind: str = "") -> str:
        """End an attempt that yielded (`job_preempted.lua`): "recorded", "fenced" (another attempt
        holds the job: nothing changed) or "not_running" (ended elsewhere). `kind` "" : on the
        scheduler's request (its kind, counted in `preemptions`); NOTICE_STOP ("node_notice"): its ephemeral host
        announced its termination (counted in `notice_yields` only; the config's fence advances)."""
        if kind not in ("", NOTICE_STOP):
            raise JobError(job_id, f"unknown yield kind {kind!r}")
        result = self._run(
            self._preempted, [self.keys.job(job_id), self.keys.events, self.keys.config(config_key),
                              self.keys.fence(config_key)],
            job_id=job_id, config_key=config_key, fence="" if fence is None else str(fence), node=node,
            attempt=str(attempt), epoch=str(epoch), lost_hours=f"{lost_hours:.6f}", **{"from": states(PREEMPTED)},
            to=PREEMPTED, board_type=board_type, num_players=num_players, event=TRAINING_PREEMPTED,
            kind=kind, notice_kind=NOTICE_STOP)
        return {0: "not_running", 1: "recorded", 2: "fenced"}[int(result)]

    def request_preemption(self, job_id: str, fence: str, for_config: str, kind: str, why: str) -> bool:
        """Ask the running attempt holding fencing token `fence` to yield its GPU
        (`job_preempt_request.lua`): False when the job is not running, another attempt holds it, or a
        request is already pending."""
        return bool(int(self._run(self._preempt_request, [self.keys.job(job_id)], fence=fence, state=RUNNING,
                                  for_config=for_config, kind=kind, why=why)))
