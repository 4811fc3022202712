"""Preemption at run time on fakeredis: requests on job records (one at a time, fenced), the
decision from what Redis holds, pending requests in `priorities`, and a preempted job's resume."""

from __future__ import annotations

import io
import time

import pytest
from rq import Queue

from coordinator.core.job_states import PREEMPTED, QUEUED
from coordinator.core.keys import TRAINING_QUEUE
from coordinator.ops.priorities_view import priorities_table
from coordinator.scheduling.preempter import Preempter, dispatch_fields
from coordinator.scheduling.preemption_rule import VALUE, WAIT
from coordinator.stores.job_records import pending_preemptions
from coordinator.stores.jobs import JobStore
from tests.support.exports import xadd_export
from tests.support.jobs import end_job, take_job

HOUR = 3600.0


def running_job(orch, config_key: str, ran_h: float, **fields: str):
    """A job of `config_key` running for `ran_h` hours (leases held, record as a worker leaves it)."""
    board, players = config_key.rsplit("_", 1)
    job_id = orch.submit_training_sync(board, int(players[0]), f"/d/{config_key}.npz", samples=100)
    lease = take_job(orch, job_id, config_key)
    orch.conn.hset(orch.keys.job(job_id), mapping={"started_at": f"{time.time() - ran_h * HOUR:.3f}", **fields})
    return job_id, lease


def waiting_config(orch, config_key: str, waited_h: float, weight: float = 1.0) -> None:
    """A config with new data, no job, waiting for a GPU since `waited_h` hours ago."""
    now = time.time()
    orch.conn.hset(orch.keys.config(config_key), mapping={
        "new_samples": 5000, "exported_at": now, "first_seen_at": now - 48 * HOUR, "last_trained_at": now - 48 * HOUR,
        "waiting_since": now - waited_h * HOUR, "curriculum_weight": weight})
    orch.conn.zadd(orch.keys.priority, {config_key: -1}, nx=True)
    orch.scheduler.rescore()


@pytest.fixture
def preempter(orch):
    return Preempter(orch.jobs, orch.scheduler, orch.settings)


def test_a_starving_config_asks_the_running_job_to_yield_once(orch, preempter, fake_conn, keys):
    job_id, lease = running_job(orch, "hexagonal_2p", ran_h=3)
    waiting_config(orch, "square8_2p", waited_h=20, weight=0.05)  # starving, however low its value
    assert preempter.tick(free_slots=0) == [job_id]
    record = {k.decode(): v.decode() for k, v in fake_conn.hgetall(keys.job(job_id)).items()}
    assert record["preempt_for"] == "square8_2p" and record["preempt_kind"] == WAIT
    assert record["preempt_fence"] == str(lease.fence) and "starving" in record["preempt_why"]
    assert preempter.tick(free_slots=0) == []  # one preemption in flight per slot
    [p] = pending_preemptions(fake_conn, keys)
    assert (p.job_id, p.config_key, p.for_config) == (job_id, "hexagonal_2p", "square8_2p")
    notes = {q.config_key: q.preemption for q in orch.scheduler.ranked()}
    assert notes["hexagonal_2p"].startswith("yielding its GPU to square8_2p")
    assert notes["square8_2p"].startswith(f"a GPU is being freed for it (job {job_id}")
    from rich.console import Console

    console = Console(width=600, record=True)
    console.print(priorities_table(orch.scheduler.ranked(), orch.settings.scheduler))
    assert "yielding its GPU to square8_2p" in console.export_text()


def test_guards_min_run_free_slot_off_switch_and_value_margin(orch, preempter, fake_conn, keys):
    from dataclasses import replace

    young, _ = running_job(orch, "hexagonal_2p", ran_h=0.5)  # under min_run_minutes 60
    waiting_config(orch, "square8_2p", waited_h=20)
    assert preempter.tick(free_slots=0) == []
    assert "min_run_minutes" in preempter.decide(0).protected[young]
    fake_conn.hset(keys.job(young), "started_at", f"{time.time() - 2 * HOUR:.3f}")
    assert preempter.tick(free_slots=1) == []  # a free slot takes the starving config instead
    off = Preempter(orch.jobs, orch.scheduler, replace(orch.settings, preemption=replace(
        orch.settings.preemption, enabled=False)))
    assert off.tick(free_slots=0) == []
    # Not starving (waited 1 h): only a margin over the running job's value, its config scored now
    # on a waiting config's terms, preempts it; the value stored at dispatch plays no part.
    waiting_config(orch, "square8_2p", waited_h=1, weight=2.0)
    now = time.time()
    fake_conn.hset(keys.job(young), mapping={"score_at_start": "0.0", "picked_starving": "0"})
    fake_conn.hset(keys.config("hexagonal_2p"), mapping={"curriculum_weight": 2.0, "last_trained_at": now - 48 * HOUR})
    assert preempter.tick(free_slots=0) == []  # as valuable now as the candidate
    fake_conn.hset(keys.config("hexagonal_2p"), mapping={"curriculum_weight": 0.05, "last_trained_at": now})
    assert preempter.tick(free_slots=0) == [young]
    assert fake_conn.hget(keys.job(young), "preempt_kind").decode() == VALUE


def test_a_job_picked_as_starving_is_not_preempted_for_value(orch, preempter, fake_conn, keys):
    job_id, _ = running_job(orch, "hexagonal_2p", ran_h=3, score_at_start="0.1", picked_starving="1")
    waiting_config(orch, "square8_2p", waited_h=1, weight=2.0)
    assert preempter.tick(free_slots=0) == []


def test_the_request_is_fenced_and_needs_a_running_attempt(orch, preempter, fake_conn, keys):
    job_id, lease = running_job(orch, "hexagonal_2p", ran_h=3)
    ask = orch.jobs.request_preemption
    assert not ask(job_id, str(lease.fence + 1), "square8_2p", WAIT, "test")  # another attempt's token
    fake_conn.hset(keys.job(job_id), "state", "leased")
    assert not ask(job_id, str(lease.fence), "square8_2p", WAIT, "test")  # not running yet
    assert fake_conn.hget(keys.job(job_id), "preempt_requested_at") is None
    fake_conn.hset(keys.job(job_id), "state", "running")
    assert ask(job_id, str(lease.fence), "square8_2p", WAIT, "test")
    assert fake_conn.hget(keys.job(job_id), "preempt_fence") == str(lease.fence).encode()
    assert not ask(job_id, str(lease.fence), "hex8_2p", WAIT, "test")  # one request in flight
    assert fake_conn.hget(keys.job(job_id), "preempt_for") == b"square8_2p"


def test_a_preempted_job_resumes_under_its_id_and_frees_its_slot_meanwhile(orch, preempter, fake_conn, keys):
    job_id, _ = running_job(orch, "hexagonal_2p", ran_h=3, preemptions="1")
    assert preempter.busy_slots() == 1
    # What the worker's job_finish leaves: the job preempted, the config waiting, its active entry kept.
    fake_conn.hset(keys.job(job_id), mapping={"state": PREEMPTED, "preempt_requested_at": "1"})
    fake_conn.hset(keys.config("hexagonal_2p"), mapping={"preempted_job": job_id, "waiting_since": time.time()})
    assert preempter.busy_slots() == 0
    orch.scheduler.rescore()
    [p] = [p for p in orch.scheduler.ranked() if p.config_key == "hexagonal_2p"]
    assert p.eligible, p.why
    assert preempter.resume("hexagonal_2p", job_id)
    record = {k.decode(): v.decode() for k, v in fake_conn.hgetall(keys.job(job_id)).items()}
    assert record["state"] == QUEUED and "preempt_requested_at" not in record
    assert record["rq_job_id"] == f"{job_id}-p1"
    assert f"{job_id}-p1" in Queue(TRAINING_QUEUE, connection=fake_conn).job_ids
    assert fake_conn.hget(keys.config("hexagonal_2p"), "preempted_job") is None
    assert fake_conn.hget(keys.active, "hexagonal_2p").decode() == job_id
    assert not preempter.resume("hexagonal_2p", job_id)  # once
    fake_conn.hset(keys.config("hexagonal_2p"), "preempted_job", job_id)  # left by a cancel meanwhile
    assert not preempter.resume("hexagonal_2p", job_id) and preempter.preempted_job("hexagonal_2p") is None


def test_dispatch_marks_the_job_keeps_the_wait_and_the_priorities_view(orch, preempter, fake_conn, keys):
    waiting_config(orch, "square8_2p", waited_h=20)
    [p] = orch.scheduler.ranked()
    assert dispatch_fields(b"1.5", b"0.25", b"1") == {"score_at_start": "1.750000", "picked_starving": "1"}
    preempter.mark_dispatch("square8_2p", "job-x")
    assert fake_conn.hmget(keys.job("job-x"), "score_at_start", "picked_starving") == [
        f"{p.rest + p.contributions['curriculum']:.6f}".encode(), b"1"]
    # The wait goes on while the job is queued (the wait bound holds with prefetch): it ends at the start.
    assert fake_conn.hget(keys.config("square8_2p"), "waiting_since") is not None
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(priorities_table([p], orch.settings.scheduler))
    text = console.export_text()
    assert "value_per_gpu_hour" in text and "h waiting" in text and "starving" in text


def test_the_worker_records_the_yield_and_the_job_resumes_after_it(orch, preempter, fake_conn, keys):
    from coordinator.scheduling.preempter import lost_gpu_hours
    from coordinator.stores.job_records import stop_reason

    job_id, lease = running_job(orch, "hexagonal_2p", ran_h=3)
    waiting_config(orch, "square8_2p", waited_h=20)
    assert stop_reason(None, None) is None
    assert preempter.tick(free_slots=0) == [job_id]
    record = fake_conn.hmget(keys.job(job_id), "cancel_requested", "preempt_requested_at")
    assert stop_reason(*record) == "preempted" and stop_reason(b"1", record[1]) == "cancelled"  # cancel wins
    assert lost_gpu_hours(None, 100.0, 100.0 + 1800) == pytest.approx(0.5)  # no checkpoint: the whole attempt
    assert lost_gpu_hours(100.0 + 1700, 100.0, 100.0 + 1800) == pytest.approx(100 / 3600)
    assert lost_gpu_hours(None, 100.0, 100.0 + 1800, gpus=2) == pytest.approx(1.0)  # a 2-GPU attempt: both
    record_preempted = JobStore(fake_conn, keys, 1000).preempted
    args = (job_id, "hexagonal_2p")
    assert record_preempted(*args, lease.fence + 1, "node-a", 1, 7, 0.0) == "fenced"  # another attempt's
    assert fake_conn.hget(keys.job(job_id), "state") == b"running"
    assert record_preempted(*args, lease.fence, "node-a", 1, 7, 0.25, "hexagonal", "2") == "recorded"
    assert record_preempted(*args, lease.fence, "node-a", 1, 7, 0.25) == "not_running"  # once
    job = {k.decode(): v.decode() for k, v in fake_conn.hgetall(keys.job(job_id)).items()}
    assert job["state"] == PREEMPTED and job["preemptions"] == "1" and job["epoch_reached"] == "7"
    assert float(job["yielded_gpu_hours"]) == pytest.approx(3.0, abs=0.01)  # the attempt ran 3 h
    assert "preempt_requested_at" not in job and pending_preemptions(fake_conn, keys) == []
    cfg = fake_conn.hgetall(keys.config("hexagonal_2p"))
    assert cfg[b"preempted_job"].decode() == job_id and float(cfg[b"waiting_since"]) > time.time() - 60
    assert fake_conn.hget(keys.active, "hexagonal_2p").decode() == job_id  # kept while it waits
    [(_, event)] = [e for e in fake_conn.xrange(keys.events) if e[1][b"type"] == b"TRAINING_PREEMPTED"]
    assert (event[b"job_id"].decode(), event[b"preempted_for"], event[b"epoch"], event[b"kind"]) == (
        job_id, b"square8_2p", b"7", WAIT.encode())
    assert float(event[b"lost_gpu_hours"]) == 0.25
    orch.scheduler.rescore()
    [p] = [p for p in orch.scheduler.ranked() if p.config_key == "hexagonal_2p"]
    assert p.eligible and not p.starving  # competes again, waiting from now
    assert preempter.busy_slots() == 0 and preempter.resume("hexagonal_2p", job_id)


# -- the orchestrator's wiring (fakeredis) ----------------------------------------------------------

def test_an_export_with_no_job_starts_the_wait_and_the_jobs_start_ends_it(orch, fake_conn, keys):
    record = orch.configs._record
    seen = []

    def spy(*args, **kwargs):  # what record_exports.lua left, before dispatch
        result = record(*args, **kwargs)
        seen.append(fake_conn.hget(keys.config("hex8_2p"), "waiting_since"))
        return result

    orch.configs._record = spy
    xadd_export(fake_conn, "hex8_2p", "/d/a.npz", 100)
    orch.process_once(block_ms=None)  # recorded, then dispatched at once (free slots)
    assert seen and seen[0] is not None  # no job: the config waits for a GPU from now
    job_id = orch.jobs.active_job("hex8_2p")
    waited_from = fake_conn.hget(keys.config("hex8_2p"), "waiting_since")
    assert job_id and waited_from == seen[0]  # queued: it still waits for a GPU, from the same time
    assert fake_conn.hget(keys.job(job_id), "picked_starving") == b"0"
    xadd_export(fake_conn, "hex8_2p", "/d/b.npz", 100)
    orch.process_once(block_ms=None)  # a newer export does not restart the clock
    assert fake_conn.hget(keys.config("hex8_2p"), "waiting_since") == waited_from
    take_job(orch, job_id, "hex8_2p")  # the job starts: the wait is over
    assert fake_conn.hget(keys.config("hex8_2p"), "waiting_since") is None


def test_the_tick_preempts_and_dispatch_resumes_the_preempted_job(fake_conn, make_settings, keys):
    from dataclasses import replace

    from coordinator import TrainingOrchestrator

    settings = make_settings()
    settings = replace(settings, hosts={"node-a": 1}, scheduler=replace(settings.scheduler, prefetch=0))
    orch = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    orch.prepare()
    job_id, lease = running_job(orch, "hexagonal_2p", ran_h=3)
    waiting_config(orch, "square8_2p", waited_h=20)
    fake_conn.hset(keys.config("square8_2p"), mapping={"npz_path": "/d/s.npz", "board_type": "square8",
                                                       "num_players": "2"})
    orch.tick()
    assert fake_conn.hget(keys.job(job_id), "preempt_for") == b"square8_2p"
    # Starving: queued past the prefetch (0 here), at the head of RQ's queue, picked as starving.
    short = orch.jobs.active_job("square8_2p")
    assert short and Queue(TRAINING_QUEUE, connection=fake_conn).job_ids[0] == short
    assert JobStore(fake_conn, keys, 1000).preempted(job_id, "hexagonal_2p", lease.fence, "node-a", 1, 4, 0.0) == \
        "recorded"
    orch.leases.release(lease)
    fake_conn.xadd(keys.events, {"type": "TRAINING_PREEMPTED", "job_id": job_id, "config_key": "hexagonal_2p",
                                 "epoch": "4", "preempted_for": "square8_2p", "kind": "wait"})
    orch.process_once(block_ms=None)  # the slot is free: the starving config's queued job takes it
    assert orch.jobs.active_job("square8_2p") == short
    assert fake_conn.hget(keys.job(short), "picked_starving") == b"1"
    assert fake_conn.hget(keys.job(job_id), "state").decode() == PREEMPTED  # waits, not queued twice
    end = take_job(orch, short, "square8_2p")
    end_job(orch.jobs, short, "square8_2p", fence=end.fence)
    orch.leases.release(end)
    orch.process_once(block_ms=None)
    assert fake_conn.hget(keys.job(job_id), "state").decode() == QUEUED  # resumed under its id
    assert orch.jobs.active_job("hexagonal_2p") == job_id


def test_completions_and_evaluations_feed_the_cost_factor(orch, fake_conn, keys):
    fake_conn.hset(keys.job("j1"), "yielded_gpu_hours", "1.5")  # an earlier attempt, preempted
    fake_conn.xadd(keys.events, {"type": "TRAINING_COMPLETE", "job_id": "j1", "config_key": "hex8_2p",
                                 "duration_s": "1800", "model_path": "/m/b.pt", "parent_model": "/m/a.pt"})
    for elo, model in (("1000", "/m/a.pt"), ("1070", "/m/x.pt"), ("1040", "/m/b.pt")):
        fake_conn.xadd(keys.events, {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": elo,
                                     "model_path": model})
    orch.process_once(block_ms=None)
    assert [float(h) for h in fake_conn.lrange(keys.gpu_hours("hex8_2p"), 0, -1)] == [2.0]
    # A 2-GPU training: its half hour costs a GPU-hour.
    fake_conn.hset(keys.job("j2"), "gpus_held", "2")
    fake_conn.xadd(keys.events, {"type": "TRAINING_COMPLETE", "job_id": "j2", "config_key": "hex8_2p",
                                 "duration_s": "1800", "model_path": "/m/c.pt"})
    orch.process_once(block_ms=None)
    assert [float(h) for h in fake_conn.lrange(keys.gpu_hours("hex8_2p"), 0, -1)][:2] in ([1.0, 2.0], [2.0, 1.0])
    # x (no lineage): over the previous evaluation; b: over its parent a, by lineage.
    assert [float(g) for g in fake_conn.lrange(keys.elo_gains("hex8_2p"), 0, -1)] == [70.0, 40.0]


def test_status_and_metrics_show_pending_preemptions_and_count_them(orch, preempter, fake_conn, keys):
    from coordinator.bus.events import decode_entry
    from coordinator.ops.status import gather
    from coordinator.ops.status_view import print_status, wide_console
    from coordinator.service.metrics import Metrics

    job_id, lease = running_job(orch, "hexagonal_2p", ran_h=3)
    waiting_config(orch, "square8_2p", waited_h=20)
    metrics = Metrics(fake_conn, keys, orch.settings)
    assert metrics.registry.get_sample_value("ringrift_preemptions_pending") == 0
    assert preempter.tick(free_slots=0) == [job_id]
    status = gather(fake_conn, orch.settings)
    [p] = status["preemptions"]
    assert (p["job_id"], p["config_key"], p["for_config"], p["kind"]) == (job_id, "hexagonal_2p", "square8_2p", WAIT)
    [row] = [r for r in status["running"] if r["job_id"] == job_id]
    assert row["preempt_for"] == "square8_2p" and "starving" in row["preempt_why"]
    out = io.StringIO()
    print_status(status, console=wide_console(out))
    [line] = [ln for ln in out.getvalue().splitlines() if "░" in ln]  # the running table's one row
    assert "hexagonal_2p" in line and "to square8_2p" in line and "starving" in line
    flags = {c["config_key"]: c["flags"] for c in status["configs"]}
    assert any(f.startswith("a GPU is being freed for it") for f in flags["square8_2p"])
    assert metrics.registry.get_sample_value("ringrift_preemptions_pending") == 1
    assert metrics.registry.get_sample_value("ringrift_preemptions_total", {"kind": WAIT}) == 0
    event = decode_entry("1-0", {b"type": b"TRAINING_PREEMPTED", b"job_id": job_id.encode(),
                                 b"config_key": b"hexagonal_2p", b"kind": b"wait", b"lost_gpu_hours": b"0.25"})
    metrics.observe(event, dead=False)
    assert metrics.registry.get_sample_value("ringrift_preemptions_total", {"kind": WAIT}) == 1
    assert metrics.registry.get_sample_value("ringrift_preemption_lost_gpu_hours_total") == 0.25


def test_an_end_with_new_samples_left_starts_the_configs_wait(orch, fake_conn, keys):
    job_id, lease = running_job(orch, "hexagonal_2p", ran_h=1)
    fake_conn.hincrby(keys.config("hexagonal_2p"), "new_samples", 500)  # exported while it trained
    assert end_job(orch.jobs, job_id, "hexagonal_2p", fence=lease.fence) == "recorded"
    since = fake_conn.hget(keys.config("hexagonal_2p"), "waiting_since")
    assert since is not None and float(since) > time.time() - 60
    orch.leases.release(lease)
    other, lease = running_job(orch, "square8_2p", ran_h=1)
    assert end_job(orch.jobs, other, "square8_2p", fence=lease.fence) == "recorded"  # covered everything
    assert fake_conn.hget(keys.config("square8_2p"), "waiting_since") is None


def test_an_evaluation_handled_again_after_a_redelivery_adds_nothing(orch, fake_conn, keys):
    """A consumer that dies after applying an event but before its XACK gets it redelivered: the
    Elo window and the gains must not count it twice (a new evaluation of the same model still counts)."""
    from coordinator.bus.events import decode_entry

    fields = {b"type": b"EVALUATION_COMPLETED", b"config_key": b"hex8_2p", b"elo": b"1000", b"model_path": b"/m/a.pt",
              b"timestamp": b"1700000000"}
    first = decode_entry("5-0", fields)
    orch._handlers["EVALUATION_COMPLETED"](first)
    orch._handlers["EVALUATION_COMPLETED"](first)  # redelivered
    assert len(fake_conn.lrange(keys.elo("hex8_2p"), 0, -1)) == 1
    second = decode_entry("6-0", {**fields, b"elo": b"1010", b"timestamp": b"1700000100"})
    orch._handlers["EVALUATION_COMPLETED"](second)
    assert len(fake_conn.lrange(keys.elo("hex8_2p"), 0, -1)) == 2


# -- issue 24: the wait bound with prefetch, and a resume onto the newest export ------------------

def test_a_queued_starving_job_keeps_its_wait_goes_to_the_head_of_rqs_queue_and_frees_a_gpu(
        orch, preempter, fake_conn, keys):
    running, _ = running_job(orch, "hexagonal_2p", ran_h=3)
    queue = Queue(TRAINING_QUEUE, connection=fake_conn)
    fake_conn.lrem(queue.key, 0, running)  # taken by its worker
    first = orch.submit_training_sync("hex8", 2, "/d/hex8.npz", samples=100)  # queued first (prefetch)
    starved = orch.submit_training_sync("square8", 2, "/d/sq8.npz", samples=100)
    fake_conn.hset(keys.config("square8_2p"), "waiting_since", f"{time.time() - 20 * HOUR:.3f}")
    assert queue.job_ids == [first, starved]
    assert preempter.tick(free_slots=0) == [running]  # queued, yet starving: it takes a victim
    assert queue.job_ids == [starved, first]  # and the GPU freed for it goes to it
    assert fake_conn.hget(keys.job(running), "preempt_for") == b"square8_2p"
    # Idle GPUs go to the head of the line first: with one idle GPU the starving job needs no victim.
    fake_conn.hdel(keys.job(running), "preempt_requested_at")
    assert preempter.decide(free_slots=1).preempt == ()


def test_a_resumed_job_trains_on_the_newest_export_and_is_credited_with_it(orch, preempter, fake_conn, keys):
    job_id, lease = running_job(orch, "hexagonal_2p", ran_h=3)
    assert fake_conn.hget(keys.job(job_id), "covered_samples") == b"100"
    assert JobStore(fake_conn, keys, 1000).preempted(job_id, "hexagonal_2p", lease.fence, "node-a", 1, 4, 0.0) == \
        "recorded"
    orch.leases.release(lease)
    # Exported while it waited (what record_exports.lua leaves: a preempted job keeps its file).
    fake_conn.hset(keys.config("hexagonal_2p"), mapping={"npz_path": "/d/newer.npz", "samples": 300})
    fake_conn.hincrby(keys.config("hexagonal_2p"), "new_samples", 300)
    assert preempter.resume("hexagonal_2p", job_id)
    record = fake_conn.hmget(keys.job(job_id), "npz_path", "samples")
    assert record == [b"/d/newer.npz", b"300"]
    take_job(orch, job_id, "hexagonal_2p")
    assert fake_conn.hget(keys.job(job_id), "covered_samples") == b"400"  # what it now trains on
