"""README promises that no other test checked (issue 23), each with a test that fails when the promise
is broken. On fakeredis, with the worker's RQ job run by an in-process SimpleWorker and real trainer
subprocesses (tests/support/signal_trainer.py records the signals it gets). The promises that need a real
redis-server or rq worker process are in test_promises_worker.py.

The numbers asserted are the README's (64 fields, 16 KiB, 256 KiB, 5 models, 5 minutes, 0.5 s -> 30 s),
written out here rather than read from the constants, so that changing a constant breaks its test.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from rq import Queue

from coordinator import TrainingOrchestrator
from coordinator.bus.events import TRAINING_COMPLETE
from coordinator.core.job_states import RUNNING
from coordinator.core.keys import TRAINING_QUEUE, Keys
from coordinator.core.settings import Settings
from coordinator.service import recovery as recovery_module
from coordinator.stores.breakers import CircuitBreakers
from coordinator.stores.jobs import JobStore, Outcome
from tests.support.burst import work
from tests.support.exports import xadd_export
from tests.support.jobs import take_job
from tests.support.polling import wait_for
from tests.support.processes import alive
from tests.support.signal_trainer import PID_FILE, STARTED_FILE, received
from tests.support.streams import stream_events
from tests.support.trainers import SIGNAL_TRAINER, STUB_TRAINER, stub_trainer, write_npz

NODE = "gpu-node-7"
SHORT_TTL_S = 1.5  # the worker renews every 0.5 s: a stop request reaches it within that


# -- helpers -------------------------------------------------------------------------------------
def settings_with(make_settings: Callable[..., Settings], **sections: Mapping[str, Any]) -> Settings:
    """The test settings with some fields of some sections replaced (`hosts`: the whole mapping)."""
    base = make_settings()
    return replace(base, **{name: values if name == "hosts" else replace(getattr(base, name), **values)
                            for name, values in sections.items()})


def attempt_dir(store: JobStore, job_id: str, attempt: int = 1) -> Path:
    return Path(store.get(job_id)["output_dir"]) / f"attempt-{attempt}"


def when_running(store: JobStore, job_id: str, action: Callable[[], None]) -> Callable[[], None]:
    """Run `action` in a thread once the job's trainer is up (its `started` file, the record
    running); returns a function that waits for the thread and re-raises what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            wait_for(lambda: (attempt_dir(store, job_id) / STARTED_FILE).exists()
                     and store.get(job_id).get("state") == RUNNING, timeout_s=30)
            action()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> None:
        thread.join(timeout=60)
        if errors:
            raise errors[0]

    return join


def request_preemption(conn: redis.Redis, keys: Keys, job_id: str) -> None:
    """What the preempter does (`JobStore.request_preemption`, fenced on the running attempt)."""
    fence = conn.hget(keys.job(job_id), "fence").decode()
    assert JobStore(conn, keys).request_preemption(job_id, fence, "square8_2p", "value", "test")


def record_signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    """Every signal the worker sends a trainer's process group, with when (time.monotonic)."""
    sent: list[tuple[int, float]] = []
    real_killpg = os.killpg

    def killpg(pgid: int, sig: int) -> None:
        sent.append((sig, time.monotonic()))
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    return sent


# -- 2. an open node breaker: that node's workers hand jobs back --------------------------------------
def test_an_open_node_breaker_makes_its_workers_hand_jobs_back(fake_conn, keys, make_settings, npz,
                                                               monkeypatch):
    """README "Circuit breakers": "that node's workers hand their jobs back": deferred, not run, not lost."""
    settings = settings_with(make_settings, training={"command": STUB_TRAINER})
    breakers = CircuitBreakers.from_settings(fake_conn, keys, settings)
    for _ in range(settings.breakers.failures):
        breakers.record("node", NODE, success=False)
    assert breakers.state("node", NODE) == "open"
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=10)
    monkeypatch.setenv("RINGRIFT_NODE", NODE)
    work(fake_conn)
    record = orch.jobs.get(job_id)
    assert (record["state"], record["attempts"]) == ("queued", "0")
    assert record["deferred_reason"] == f"circuit breaker of node {NODE} is open"
    assert fake_conn.zscore(keys.delayed_jobs, job_id) is not None  # handed back: the orchestrator requeues it
    assert stream_events(fake_conn, "TRAINING_STARTED") == [] and not attempt_dir(orch.jobs, job_id).exists()
    # Not lost: once due, it goes back on RQ and a worker of a healthy node trains it.
    fake_conn.zadd(keys.delayed_jobs, {job_id: 0})
    assert orch.recovery.requeue_due() == [job_id]
    monkeypatch.setenv("RINGRIFT_NODE", "gpu-node-8")
    work(fake_conn)
    assert (orch.jobs.get(job_id)["state"], orch.jobs.get(job_id)["node"]) == ("complete", "gpu-node-8")


# -- 3. a failure cooldown ends at the config's next export --------------------------------------------
def test_a_failure_cooldown_ends_at_the_configs_next_export(fake_conn, keys, make_settings, tmp_path):
    """README "Not eligible": "failed within failure_cooldown_s (or until its next export)"."""
    settings = settings_with(make_settings, training={"command": STUB_TRAINER},
                             scheduler={"failure_cooldown_s": 3600.0})
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    orch.prepare()
    missing = tmp_path / "hex8_2p.npz"  # not there yet: the attempt fails as poison, never retried

    def export() -> None:
        xadd_export(fake_conn, ("hex8", 2), missing, 1000)
        orch.process_once()

    export()
    failed_job = orch.jobs.active_job("hex8_2p")
    work(fake_conn)
    assert orch.jobs.get(failed_job)["state"] == "failed"
    orch.process_once()  # its TRAINING_FAILED: the config is rescored, nothing is dispatched
    assert orch.tick() == [] and orch.jobs.active_job("hex8_2p") is None
    [why] = [p.why for p in orch.scheduler.ranked() if p.config_key == "hex8_2p"]
    assert any("last training failed" in reason for reason in why)
    write_npz(missing)
    export()  # well inside the hour's cooldown
    new_job = orch.jobs.active_job("hex8_2p")
    assert new_job is not None and new_job != failed_job
    assert new_job in Queue(TRAINING_QUEUE, connection=fake_conn).job_ids


# -- 4. stopping a trainer on request: the signal, the grace, the exit status --------------------------
@pytest.mark.parametrize("request_stop", ["cancel", "preempt"])
def test_a_trainer_that_ignores_sigterm_is_sigkilled_kill_grace_s_later(fake_conn, keys, make_settings, npz,
                                                                        monkeypatch, request_stop):
    """README "Training slots": "A cancel or preemption asks with SIGTERM ... and waits kill_grace_s
    before SIGKILL"."""
    grace_s = 1.0
    settings = settings_with(make_settings, training={"command": SIGNAL_TRAINER, "kill_grace_s": grace_s},
                             leases={"ttl_s": SHORT_TTL_S})
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=10)
    sent = record_signals(monkeypatch)
    ask = (lambda: orch.jobs.cancel(job_id)) if request_stop == "cancel" else (
        lambda: request_preemption(fake_conn, keys, job_id))
    joined = when_running(orch.jobs, job_id, ask)
    work(fake_conn)
    joined()
    out = attempt_dir(orch.jobs, job_id)
    assert received(out) == ["SIGTERM"]  # asked, and it ignored the request
    assert [sig for sig, _ in sent] == [signal.SIGTERM, signal.SIGKILL]
    assert sent[1][1] - sent[0][1] >= grace_s
    assert not alive(int((out / PID_FILE).read_text()))
    ended = {"cancel": ("cancelled", "TRAINING_CANCELLED"), "preempt": ("preempted", "TRAINING_PREEMPTED")}
    assert (orch.jobs.get(job_id)["state"], stream_events(fake_conn)[-1].type) == ended[request_stop]
    assert stream_events(fake_conn, "TRAINING_FAILED") == []


@pytest.mark.parametrize("exit_status", [0, 2, 7])
def test_a_preempted_trainer_gets_the_configured_signal_and_counts_as_preempted_whatever_its_exit(
        fake_conn, keys, make_settings, npz, exit_status):
    """README "Preemption at a checkpoint": the worker "sends the trainer `preemption.signal`" and
    "whatever its exit status, a trainer stopped on request counts as preempted": exit 0 without a
    model (else no_model), 2 (else bad_input, poison) and 7 (else trainer_error)."""
    command = (*SIGNAL_TRAINER, "--exit-on", "SIGUSR1", "--exit-with", str(exit_status))
    settings = settings_with(make_settings, training={"command": command, "kill_grace_s": 5.0},
                             leases={"ttl_s": SHORT_TTL_S}, preemption={"signal": "SIGUSR1"})
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=10)
    joined = when_running(orch.jobs, job_id, lambda: request_preemption(fake_conn, keys, job_id))
    work(fake_conn)
    joined()
    assert received(attempt_dir(orch.jobs, job_id)) == ["SIGUSR1"]  # the configured signal, and only it
    record = orch.jobs.get(job_id)
    assert (record["state"], record.get("preemptions")) == ("preempted", "1")
    assert stream_events(fake_conn)[-1].type == "TRAINING_PREEMPTED"
    assert stream_events(fake_conn, "TRAINING_FAILED") == []
    assert fake_conn.zscore(keys.delayed_jobs, job_id) is None  # no retry
    assert not fake_conn.exists(keys.breaker("config", "hex8_2p"), keys.breaker("node", record["node"]))


# -- 6. schema limits: 64 fields, stderr_tail 16 KiB, history 256 KiB -----------------------------------
def _export_with_fields(count: int) -> dict[str, object]:
    fields: dict[str, object] = {"type": "NPZ_EXPORT_COMPLETE", "board_type": "hex8", "num_players": 2,
                                 "npz_path": "/data/hex8_2p.npz", "samples": 100}
    return {**fields, **{f"meta_{i}": "x" for i in range(count - len(fields))}}


def _history_of(size: int) -> str:
    """A JSON list of exactly `size` bytes."""
    return json.dumps(["h" * (size - 4)])


def _ended(event_type: str, **fields: str) -> dict[str, str]:
    return {"type": event_type, "job_id": "20261124T213609-d73aec", "config_key": "hex8_2p", **fields}


LIMITS = {  # name: (what the README allows, an entry of a given size, the reason when over)
    "fields": (64, _export_with_fields, "too many fields: 65 > 64"),
    "stderr_tail": (16 * 1024, lambda n: _ended("TRAINING_FAILED", reason="trainer_error", stderr_tail="e" * n),
                    "field 'stderr_tail' is larger than 16384 bytes (16385)"),
    "history": (256 * 1024, lambda n: _ended(TRAINING_COMPLETE, history=_history_of(n)),
                "field 'history' is larger than 262144 bytes (262145)"),
}


@pytest.mark.parametrize("limit", sorted(LIMITS))
def test_an_event_at_a_schema_limit_is_accepted_and_one_over_it_dead_lettered_with_the_reason(
        orch, fake_conn, keys, limit):
    """README "Bad input": "at most 64 fields, ... (`stderr_tail` 16 KiB, the JSON `history` 256 KiB)"."""
    size, entry, reason = LIMITS[limit]
    at_limit = fake_conn.xadd(keys.events, entry(size)).decode()
    over = fake_conn.xadd(keys.events, entry(size + 1)).decode()
    orch.process_once()
    dead = {letter.fields["dead_original_id"]: letter.fields["dead_reason"] for letter in orch.consumer.dead_letters()}
    assert at_limit not in dead and dead == {over: reason}
    assert fake_conn.xpending(keys.events, orch.consumer.group)["pending"] == 0  # both handled and acknowledged


# -- 7. the last 5 published models per config -----------------------------------------------------------
def test_the_last_five_published_models_are_kept_per_config(orch, fake_conn, keys):
    """README "Warm start": "the last 5 published are kept, `<prefix>:config:<key>:models`"; a new job
    may start from any of them (`warm_start_from`), newest first."""
    published = []
    for n in range(7):
        job_id = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
        lease = take_job(orch, job_id, "hex8_2p")
        model = f"/models/hex8_2p/{job_id}/model-{n}.pt"
        outcome = Outcome(TRAINING_COMPLETE, {"model_path": model}, {"model_path": model}, node="node-a",
                          attempt=1, fence=lease.fence, config_fields={"latest_model": model})
        assert orch.jobs.finish(job_id, "hex8_2p", "complete", outcome, model=model) == "recorded"
        assert orch.leases.release(lease)
        published.append(model)
    newest_five = published[::-1][:5]
    assert [m.decode() for m in fake_conn.lrange(keys.models("hex8_2p"), 0, -1)] == newest_five
    next_job = orch.submit_training_sync("hex8", 2, "/d/x.npz", samples=10)
    assert json.loads(orch.jobs.get(next_job)["warm_start_from"]) == newest_five


# -- 8. the reaper's full sweep every 5 minutes ------------------------------------------------------------
def test_the_reaper_checks_every_active_job_on_its_first_tick_and_then_every_five_minutes(
        orch, fake_conn, keys, monkeypatch):
    """README "Dead worker or node": the reaper reads only expired lease entries, "every active job on its
    first tick and every 5 minutes as well". A job with no entry is found only by those sweeps."""
    clock = [1000.0]
    monkeypatch.setattr(recovery_module, "time", types.SimpleNamespace(time=time.time, monotonic=lambda: clock[0]))

    def abandoned_without_entry(players: int, node: str) -> str:
        job_id = orch.submit_training_sync("hex8", players, "/d/x.npz", samples=10)
        take_job(orch, job_id, f"hex8_{players}p", node=node)
        fake_conn.delete(keys.lease(f"hex8_{players}p"))  # its lease is gone ...
        fake_conn.zrem(keys.lease_expiry, job_id)  # ... and nothing says when it expired
        return job_id

    first = abandoned_without_entry(2, "node-a")
    assert orch.recovery.reap() == [first]  # the first tick sweeps
    second = abandoned_without_entry(3, "node-b")
    clock[0] += 299.0
    assert orch.recovery.reap() == []  # only the expiry entries: it has none
    assert orch.jobs.get(second)["state"] == "running"
    clock[0] += 1.0  # five minutes after the first sweep
    assert orch.recovery.reap() == [second]
    assert orch.jobs.get(second)["state"] == "retrying"


# -- 9. the orchestrator's backoff while Redis is unreachable ----------------------------------------------
class RecordedStop(threading.Event):
    """The consumer loop's stop event: records each wait instead of waiting, and calls `on_wait(n)`
    after the n-th."""

    def __init__(self, on_wait: Callable[[int], None]) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.on_wait = on_wait

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.on_wait(len(self.waits))
        return self.is_set()


def test_the_orchestrator_backs_off_half_a_second_doubling_to_30_s_and_resumes_by_itself(
        make_settings, keys, monkeypatch):
    """README "Circuit breakers": "While Redis is unreachable the orchestrator backs off (0.5 s doubling
    to 30 s) and resumes by itself". Two outages: the second starts again at 0.5 s."""
    server = fakeredis.FakeServer()
    conn = fakeredis.FakeRedis(server=server)
    orch = TrainingOrchestrator(make_settings(), conn, consumer_name="t")
    orch.prepare()
    xadd_export(conn, ("hex8", 2), "/data/hex8_2p.npz", 100)
    first_outage = 9

    def on_wait(n: int) -> None:
        if n == first_outage:
            server.connected = True  # Redis is back
        elif n == first_outage + 2:
            stop.set()

    stop = RecordedStop(on_wait)
    monkeypatch.setattr(orch, "_stopping", stop)
    handled = orch.process_once

    def process_once(block_ms: int | None = None) -> int:
        count = handled(block_ms)
        server.connected = False  # once the export is handled, a second outage
        return count

    monkeypatch.setattr(orch, "process_once", process_once)
    server.connected = False
    orch._consume_until_stopped()
    assert stop.waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 0.5, 1]
    server.connected = True
    assert orch.jobs.active_job("hex8_2p") is not None  # resumed: the export was handled in between


# -- 10. redis_error and worker_error ----------------------------------------------------------------------
def _redis_away_when_the_trainer_starts(monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """Redis fails the worker's move to running (not best-effort, unlike progress)."""
    def refused(_self: JobStore, _job_id: str, _config_key: str) -> bool:
        raise redis.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr(JobStore, "mark_running", refused)
    return stub_trainer("--epoch-seconds", "30")


def _trainer_cannot_be_started(_monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """The worker's own failure: the command's program does not exist on this node."""
    return ("/nonexistent/ringrift-trainer", "{output_dir}")


SITUATIONS = {"redis_error": _redis_away_when_the_trainer_starts, "worker_error": _trainer_cannot_be_started}


@pytest.mark.parametrize("reason", sorted(SITUATIONS))
def test_redis_and_worker_errors_are_infrastructure_failures_retried_and_counted_on_the_breakers(
        fake_conn, keys, make_settings, npz, monkeypatch, reason):
    """README "Retries by failure class": infrastructure failures (Redis errors; the worker's own)
    are retried up to `retries.infrastructure` times; "Circuit breakers": failures open the config's
    and the node's breaker. Here one retry and a breaker that opens at two failures."""
    command = SITUATIONS[reason](monkeypatch)
    settings = settings_with(make_settings, training={"command": command},
                             retries={"infrastructure": 1, "backoff_base_s": 0.0}, breakers={"failures": 2})
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    monkeypatch.setenv("RINGRIFT_NODE", NODE)
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=10)
    work(fake_conn)
    first = stream_events(fake_conn, "TRAINING_FAILED")[-1].fields
    assert (first["reason"], first["failure_class"], first["will_retry"]) == (reason, "infrastructure", "true")
    assert orch.jobs.get(job_id)["state"] == "retrying" and stream_events(fake_conn, "CIRCUIT_OPENED") == []
    assert orch.recovery.requeue_due() == [job_id]
    work(fake_conn)
    second = stream_events(fake_conn, "TRAINING_FAILED")[-1].fields
    assert (second["reason"], second["attempt"], second["will_retry"]) == (reason, "2", "false")  # past the limit
    record = orch.jobs.get(job_id)
    assert (record["state"], record["failures_infrastructure"]) == ("failed", "2")
    opened = {(e.fields["kind"], e.fields["name"]) for e in stream_events(fake_conn, "CIRCUIT_OPENED")}
    assert opened == {("config", "hex8_2p"), ("node", NODE)}


# -- 11. submit_training is queued at once, whatever the priorities ----------------------------------------
def test_submit_training_for_an_idle_config_is_queued_at_once_whatever_the_priorities(fake_conn, keys,
                                                                                      make_settings):
    """README "Scheduling": "An explicit `submit_training` call is queued at once, whatever the
    priorities": here the config has the lowest score, a higher one is eligible and no slot is free."""
    settings = settings_with(make_settings, hosts={"node-a": 1}, scheduler={"prefetch": 0})
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    orch.prepare()
    # One board, so that only the curriculum weights differ between the three configs' scores.
    fake_conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", "hex8_4p": 2.0, "hex8_3p": 1.5,
                                 "hex8_2p": 0.1})
    for players in (4, 3, 2):
        xadd_export(fake_conn, ("hex8", players), f"/data/hex8_{players}p.npz", 1000)
    orch.process_once()
    assert orch.jobs.active_job("hex8_4p") is not None and orch.jobs.active_job("hex8_3p") is None  # one slot
    scores = {ck: fake_conn.zscore(keys.priority, ck) for ck in ("hex8_3p", "hex8_2p")}
    assert scores["hex8_3p"] > scores["hex8_2p"] > 0  # both eligible, hex8_2p the lowest
    job_id = orch.submit_training_sync("hex8", 2, "/data/hex8_2p.npz", samples=1000)
    assert orch.jobs.get(job_id)["state"] == "queued" and orch.jobs.active_job("hex8_2p") == job_id
    assert job_id in Queue(TRAINING_QUEUE, connection=fake_conn).job_ids
