"""Getting jobs back on the queue: deferrals, retries after backoff, and abandoned attempts. This
module decides; every change of a job it makes goes through the job store (`stores/jobs.py`).

- deferral (`JobStore.defer`, by the worker): it found the leases busy; the job stays queued, out
  of RQ, until a set time.
- `requeue_due` (orchestrator, every second): deferred and retrying jobs whose time has come
  go back on RQ's queue (`JobStore.requeue_delayed`: one transaction with the state change).
- `reap` (orchestrator, every `leases.reaper_interval_s`): an attempt whose config lease is gone
  (or held under another fencing token) was abandoned: its worker died, froze or lost Redis past
  the TTL. A tick reads only the jobs whose lease expiry has passed (one ZRANGEBYSCORE of the
  zset the lease scripts keep), so a running training costs the reaper nothing.
  The job moves to retrying (an infrastructure failure: backoff, a retry limit) and
  TRAINING_FAILED says so. Whatever is left of the old attempt is fenced at publish.
- `requeue_lost`: a queued job that nothing will run is put back: its RQ job ended or vanished
  without starting it (e.g. Redis went away), or a worker took it from RQ and died before taking
  its leases (RQ says "started", our record still says queued, for longer than a worker ever needs
  to take its leases).
"""

from __future__ import annotations

import logging
import time
from datetime import timezone

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from coordinator.bus.events import TRAINING_FAILED
from coordinator.core.job_states import ACTIVE_ATTEMPT_STATES, FAILED, QUEUED, RETRYING
from coordinator.core.keys import TRAINING_QUEUE, Keys
from coordinator.core.lua import script
from coordinator.core.retry import decide
from coordinator.core.settings import Settings
from coordinator.core.text import decode_hash
from coordinator.core.text import optional_text as _text
from coordinator.stores.jobs import JobStore
from coordinator.stores.leases import parse_holder

log = logging.getLogger(__name__)
# Backoff before the first retry of an attempt found dead: short, the node is simply gone.
REAPED_RETRY_DELAY_S = 0.0
# A worker takes its leases within seconds of taking a job from RQ; past this it died doing so.
LOST_AFTER_S = 20.0
# The reaper reads at most this many expired lease entries a tick (the rest the next tick).
REAP_BATCH = 500
# How often the reaper checks every active job rather than only the expired lease entries.
FULL_SWEEP_S = 300.0


class Recovery:
    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        self.conn = store.conn
        self.keys = store.keys
        self.clock = store.clock
        self.settings = settings
        self._forget_expired = script(self.conn, "lease_expiry_forget.lua")
        self._next_sweep = 0.0  # the first reap checks every active job
        # job id -> the RQ status its last requeue was logged with: a job that keeps coming back
        # (nothing can run it: node breakers open, no worker) is logged at WARNING once per status.
        self._requeue_logged: dict[str, str] = {}

    @classmethod
    def from_settings(cls, conn: redis.Redis, keys: Keys, settings: Settings) -> Recovery:
        return cls(JobStore.from_settings(conn, keys, settings), settings)

    # -- back onto RQ (orchestrator side) ---------------------------------------------------------
    def requeue_due(self, limit: int = 100) -> list[str]:
        """Deferred (queued) and retrying jobs whose time has come go back on RQ's queue."""
        due = [j.decode() for j in self.conn.zrangebyscore(self.keys.delayed_jobs, "-inf", self.clock(),
                                                            start=0, num=limit)]
        return [job_id for job_id in due if self.store.requeue_delayed(self.settings, job_id)]

    def requeue_lost(self) -> list[str]:
        """Queued jobs that nothing will run (their RQ job ended without starting them)."""
        active = {k.decode(): v.decode() for k, v in self.conn.hgetall(self.keys.active).items()}
        # A job whose lease is live was taken by a worker: not lost, and not read (one command for
        # all the running trainings instead of one each).
        leased = {j.decode() for j in self.conn.zrangebyscore(self.keys.lease_expiry, int(self.clock() * 1000),
                                                               "+inf")} if active else set()
        lost = []
        queue = Queue(TRAINING_QUEUE, connection=self.conn)
        for config_key, job_id in active.items():
            if job_id in leased:
                continue
            state, rq_id, not_before = (_text(v) for v in self.conn.hmget(
                self.keys.job(job_id), "state", "rq_job_id", "not_before"))
            if state != QUEUED or self.conn.zscore(self.keys.delayed_jobs, job_id) is not None:
                continue
            status, started_at = _rq_status(queue, rq_id or job_id)
            taken_and_dropped = status == JobStatus.STARTED and started_at is not None and (
                self.clock() - started_at > LOST_AFTER_S)
            if taken_and_dropped or status in (None, JobStatus.FAILED, JobStatus.FINISHED, JobStatus.STOPPED,
                                               JobStatus.CANCELED):
                self.store.defer(job_id, 0.0, f"RQ job {rq_id} {status or 'missing'}: requeued")
                lost.append(job_id)
                self._log_requeue(config_key, job_id, str(status))
        self._requeue_logged = {j: s for j, s in self._requeue_logged.items() if j in active.values()}
        return lost

    def _log_requeue(self, config_key: str, job_id: str, status: str) -> None:
        """WARNING the first time a job is requeued with this RQ status, DEBUG while it repeats."""
        repeated = self._requeue_logged.get(job_id) == status
        self._requeue_logged[job_id] = status
        log.log(logging.DEBUG if repeated else logging.WARNING,
                "%s: queued job %s had no live RQ job (%s); requeued%s", config_key, job_id, status,
                "" if repeated else " (repeats of this are logged at DEBUG)")

    # -- abandoned attempts -----------------------------------------------------------------------
    def reap(self) -> list[str]:
        """Attempts whose lease is gone or taken over: retry them (or fail them past the limit).

        One ZRANGEBYSCORE a tick: only the jobs whose lease expiry (`Keys.lease_expiry`, kept by
        the lease scripts) has passed are read, not every running job. Every `FULL_SWEEP_S` (and
        on the first tick) every active job is checked too, for an entry nothing set (a record
        older than the expiry zset)."""
        candidates = [j.decode() for j in self.conn.zrangebyscore(
            self.keys.lease_expiry, "-inf", int(self.clock() * 1000), start=0, num=REAP_BATCH)]
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + FULL_SWEEP_S
            expired = set(candidates)
            candidates += [job_id for job_id in (v.decode() for v in self.conn.hvals(self.keys.active))
                           if job_id not in expired]
        if not candidates:
            return []
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for job_id in candidates:
                pipe.hmget(self.keys.job(job_id), "state", "fence", "config_key")
            records = [tuple(_text(v) for v in reply) for reply in pipe.execute()]
        suspects = [(job_id, fence, config_key) for job_id, (state, fence, config_key) in zip(candidates, records)
                    if state in ACTIVE_ATTEMPT_STATES and config_key]
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for _job_id, _fence, config_key in suspects:
                pipe.get(self.keys.lease(config_key))
            leases = pipe.execute() if suspects else []
        reaped, alive = [], set()
        for (job_id, fence, _config_key), lease in zip(suspects, leases):
            holder = parse_holder(lease.decode()) if lease else {}
            if holder.get("fence") == fence:
                alive.add(job_id)  # its worker renews (or it is renewed by a version that sets no entry)
                continue
            # The whole record only for a suspect; abandon() re-checks state and fence atomically.
            record = decode_hash(self.conn.hgetall(self.keys.job(job_id)))
            if self.abandon(record, "worker_lost", "lease expired: the worker died, froze or lost Redis"):
                reaped.append(job_id)
        handled = [job_id for job_id in candidates if job_id not in alive]
        if handled:  # ended, reaped or no longer leased: only entries still past their time go
            self._forget_expired(keys=[self.keys.lease_expiry], args=handled)
        return reaped

    def abandon(self, record: dict[str, str], reason: str, error: str) -> bool:
        """Move an abandoned attempt to retrying (or failed past its retry limit), with its event."""
        job_id, config_key = record["job_id"], record["config_key"]
        decision = decide(reason, int(record.get("failures_infrastructure", 0)), self.settings.retries)
        wake = self.clock() + (REAPED_RETRY_DELAY_S if decision.failures_of_class == 1 else decision.delay_s)
        target = RETRYING if decision.will_retry else FAILED
        fields = {"reason": reason, "error": error, "failure_class": decision.failure_class,
                  "will_retry": str(decision.will_retry).lower(), "attempt": record.get("attempts", "0"),
                  "node": record.get("node", "")}
        moved = self.store.transition(
            job_id, config_key, target,
            {**fields, f"failures_{decision.failure_class}": decision.failures_of_class},
            (TRAINING_FAILED, {**fields, "retry_in_s": round(wake - self.clock(), 3),
                               "board_type": record.get("board_type", ""),
                               "num_players": record.get("num_players", "")}),
            release_active=target == FAILED, wake_at=wake if decision.will_retry else None,
            expected_fence=record.get("fence", ""),
        )
        if moved:
            log.warning("%s: attempt %s of %s abandoned (%s); %s", config_key, record.get("attempts"), job_id,
                        error, "retrying" if decision.will_retry else "failed")
        return moved


def _rq_status(queue: Queue, rq_id: str) -> tuple[str | None, float | None]:
    """RQ's status of the job (None: missing, or queued but not in the queue) and its start time."""
    try:
        job = Job.fetch(rq_id, connection=queue.connection)
    except NoSuchJobError:  # only that: a Redis error is not a missing job, it propagates
        return None, None
    status = job.get_status(refresh=False)
    if job.origin and job.origin != queue.name:  # on its GPU requirement's queue (stores/jobs.py)
        queue = Queue(job.origin, connection=queue.connection)
    if status == JobStatus.QUEUED and rq_id not in queue.job_ids:
        return None, None
    started = job.started_at
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)  # RQ stores UTC
    return status, started.timestamp() if started else None

