"""TrainingScheduler: properties of the score, starvation by waiting time, the cost factor, event-driven
inputs, dispatch order."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import TrainingOrchestrator, TrainingScheduler
from coordinator.core.settings import PreemptionSettings, PriorityWeights, SchedulerSettings
from coordinator.scheduling.scheduler import STARVING_BASE, ConfigInputs, compute_priority, elo_velocity
from tests.support.exports import xadd_export
from tests.support.jobs import end_job, take_job
from tests.support.streams import dead_letters

NOW = 1_800_000_000.0
HOUR = 3600.0
S = SchedulerSettings()
STARVE_H = PreemptionSettings().starve_after_hours  # 11 h: max_wait_hours 12 - min run 1 h

weights = st.floats(0.01, 5.0)
hours = st.floats(0.0, 23.0)  # the staleness factor below saturation
samples = st.integers(1, 300_000)
slopes = st.floats(-200.0, 200.0)


def inputs(weight=1.0, trained_h=1.0, new=10_000, export_h=0.5, slope=0.0, waiting_h=0.5, **extra) -> ConfigInputs:
    """Waiting (new data, no job) for `waiting_h` hours: below STARVE_H, the weighted sum."""
    points = ((NOW - 2 * HOUR, 1000.0), (NOW - HOUR, 1000.0 + slope)) if slope else ()
    return ConfigInputs("hex8_2p", curriculum_weight=weight, new_samples=new, exported_at=NOW - export_h * HOUR,
                        last_trained_at=NOW - trained_h * HOUR, elo_points=points,
                        waiting_since=NOW - waiting_h * HOUR, **extra)


def score(i: ConfigInputs, s: SchedulerSettings = S) -> float:
    return compute_priority(i, s, NOW).score


@given(weights, weights, hours, samples)
def test_score_is_monotonic_in_curriculum_weight(a, b, h, n):
    lo, hi = sorted((a, b))
    assert score(inputs(weight=lo, trained_h=h, new=n)) <= score(inputs(weight=hi, trained_h=h, new=n))


@given(hours, hours, weights)
def test_score_is_monotonic_in_time_since_training(a, b, w):
    lo, hi = sorted((a, b))
    assert score(inputs(trained_h=lo, weight=w)) <= score(inputs(trained_h=hi, weight=w))


@given(samples, samples, hours)
def test_score_is_monotonic_in_new_samples(a, b, h):
    lo, hi = sorted((a, b))
    assert score(inputs(new=lo, trained_h=h)) <= score(inputs(new=hi, trained_h=h))


@given(st.floats(0.0, 100.0), st.floats(0.0, 100.0))
def test_newer_exports_score_higher(a, b):
    recent, older = sorted((a, b))
    assert score(inputs(export_h=older)) <= score(inputs(export_h=recent))


@given(slopes, slopes)
def test_score_is_monotonic_in_elo_velocity(a, b):
    lo, hi = sorted((a, b))
    assert score(inputs(slope=lo)) <= score(inputs(slope=hi))


@given(st.lists(st.floats(-50.0, 300.0), max_size=8), st.floats(-50.0, 300.0), st.floats(0.1, 30.0))
def test_score_is_monotonic_in_elo_gained_per_training(gains, extra, gpu_hours):
    recent = (gpu_hours,)
    lower = score(inputs(elo_gains=(*gains, extra), recent_gpu_hours=recent))
    assert lower <= score(inputs(elo_gains=(*gains, extra + 25.0), recent_gpu_hours=recent)) + 1e-12


@given(st.floats(0.1, 30.0), st.floats(0.1, 30.0))
def test_the_same_gains_from_longer_trainings_score_lower(a, b):
    short, long = sorted((a, b))
    gains = (40.0, 60.0)
    assert score(inputs(elo_gains=gains, recent_gpu_hours=(long,))) <= score(
        inputs(elo_gains=gains, recent_gpu_hours=(short,)))


@pytest.mark.parametrize("factor", ["curriculum", "staleness", "freshness", "elo_velocity", "value_per_gpu_hour"])
@given(data=st.data())
@settings(max_examples=40)
def test_a_weight_of_zero_removes_its_factor(factor, data):
    s = replace(S, weights=replace(PriorityWeights(), **{factor: 0.0}))
    changes = {
        "curriculum": {"weight": data.draw(weights)},
        "staleness": {"trained_h": data.draw(hours)},
        "freshness": {"new": data.draw(samples), "export_h": data.draw(st.floats(0, 50))},
        "elo_velocity": {"slope": data.draw(slopes)},
        "value_per_gpu_hour": {"elo_gains": tuple(data.draw(st.lists(st.floats(-50, 300), max_size=5))),
                               "recent_gpu_hours": (data.draw(st.floats(0.1, 30.0)),)},
    }[factor]
    assert math.isclose(score(inputs(), s), score(inputs(**changes), s), abs_tol=1e-9)


def test_factors_are_normalised_and_explained():
    p = compute_priority(inputs(weight=4.0, trained_h=12, new=50_000, export_h=6, slope=-30), S, NOW)
    assert p.factors["curriculum"] == 1.0  # capped at curriculum_max_weight
    assert p.factors["staleness"] == pytest.approx(0.5)
    assert p.factors["freshness"] == pytest.approx(0.25 + 0.25)  # half the samples, one half-life
    assert p.factors["elo_velocity"] == pytest.approx(0.5 - 30 / 100)
    assert p.elo_per_hour == pytest.approx(-30) and "regressing" in p.flags
    assert p.factors["value_per_gpu_hour"] == pytest.approx(0.5)  # no history: the prior, 10 Elo/GPU-h
    assert p.score == pytest.approx(sum(p.contributions.values()))


def test_the_cost_factor_is_explained_and_stored(fake_conn, keys):
    """Each finished training's GPU-hours and Elo gain feed the factor; the config hash says why."""
    scheduler = TrainingScheduler(fake_conn, keys, S, clock=lambda: NOW)
    fake_conn.hset(keys.config("square19_2p"), mapping={"new_samples": 100, "exported_at": NOW,
                                                        "last_trained_at": NOW, "waiting_since": NOW})
    scheduler.configs.set_curriculum_weights({"square19_2p": 1.0})
    scheduler.rescore()
    prior = fake_conn.hgetall(keys.config("square19_2p"))
    assert float(prior[b"expected_gpu_hours"]) == 20.0  # the board's default before any history
    assert float(prior[b"f_value_per_gpu_hour"]) == pytest.approx(0.5)
    for _ in range(S.cost.gain_window + 2):
        scheduler.configs.record_training_cost("square19_2p", 4.0)
        scheduler.configs.record_elo_gain("square19_2p", 120.0)  # 30 Elo per GPU-hour, well above the prior's 10
    assert fake_conn.llen(keys.gpu_hours("square19_2p")) == S.cost.duration_window  # trimmed to the windows
    assert fake_conn.llen(keys.elo_gains("square19_2p")) == S.cost.gain_window
    scheduler.rescore()
    stored = fake_conn.hgetall(keys.config("square19_2p"))
    assert float(stored[b"expected_gpu_hours"]) == 4.0
    [p] = scheduler.ranked()
    assert p.factors["value_per_gpu_hour"] > 0.6 and p.score > float(prior[b"score"])
    assert stored[b"cost_why"].decode() == p.cost_why and "Elo per GPU-h" in p.cost_why
    assert float(stored[b"c_value_per_gpu_hour"]) == pytest.approx(p.contributions["value_per_gpu_hour"])


def test_a_key_that_names_no_board_scores_without_a_cost_estimate():
    p = compute_priority(ConfigInputs("cfg_a", new_samples=5, waiting_since=NOW), S, NOW)
    assert p.eligible and p.factors["value_per_gpu_hour"] == 0.0 and p.cost_why.startswith("no cost estimate")


def test_elo_velocity_needs_two_points_and_is_a_least_squares_slope():
    assert elo_velocity([]) == 0.0
    assert elo_velocity([(NOW, 1500.0)]) == 0.0  # no spike from a first sample
    assert elo_velocity([(NOW, 1500.0), (NOW, 1600.0)]) == 0.0  # no spread in time
    points = [(NOW + h * HOUR, 1000 + 10 * h + (3 if h % 2 else -3)) for h in range(6)]
    assert elo_velocity(points) == pytest.approx(10.0, abs=1.5)


def test_eligibility_reasons():
    assert compute_priority(inputs(active_job="j1"), S, NOW).why == ["queued or running (j1)"]
    assert "0 new samples < minimum 1" in compute_priority(inputs(new=0), S, NOW).why
    assert compute_priority(inputs(weight=0), S, NOW).why == ["curriculum weight 0"]
    blocked = compute_priority(inputs(quality_blocked_at=NOW - HOUR, export_h=2), S, NOW)
    assert blocked.why[0].startswith("blocked by quality for 5.0 h more") and blocked.score == -1
    unblocked_by_export = compute_priority(inputs(quality_blocked_at=NOW - HOUR, export_h=0.1), S, NOW)
    assert unblocked_by_export.eligible


def test_starving_configs_go_first_longest_wait_first():
    starving_old = compute_priority(inputs(weight=0.01, trained_h=60, new=1, waiting_h=40), S, NOW)
    starving_new = compute_priority(inputs(weight=0.01, trained_h=60, new=1, waiting_h=STARVE_H), S, NOW)
    best_fed = compute_priority(inputs(weight=9, trained_h=23.9, new=10**6, export_h=0, slope=500,
                                       waiting_h=STARVE_H - 0.01), S, NOW)
    assert starving_old.starving and "starving" in starving_old.flags
    assert starving_old.score == pytest.approx(STARVING_BASE + 40) and starving_old.hours_waiting == pytest.approx(40)
    assert starving_new.starving and not best_fed.starving
    assert starving_old.score > starving_new.score > best_fed.score


def test_starvation_counts_the_wait_for_a_gpu_not_the_time_since_training():
    # Trained 100 h ago but its data came 2 h ago: not starving (staleness saturates, the wait does not).
    assert not compute_priority(inputs(trained_h=100, waiting_h=2), S, NOW).starving
    # Its job was preempted 30 h ago and still waits (the active job is that preempted one): starving.
    preempted = compute_priority(inputs(trained_h=1, waiting_h=30, active_job="j1", preempted_job="j1"), S, NOW)
    assert preempted.eligible and preempted.starving
    # A config's own queued job (not a preempted one) keeps it out, however long it waited.
    assert compute_priority(inputs(waiting_h=30, active_job="j2", preempted_job="j1"), S, NOW).why == [
        "queued or running (j2)"]
    # Records written before waiting_since: the hours since the last training stand in.
    legacy = replace(inputs(trained_h=STARVE_H + 1), waiting_since=None)
    assert compute_priority(legacy, S, NOW).starving
    # The starvation point is the preemption settings' (max_wait_hours - min_run_minutes).
    late = PreemptionSettings(max_wait_hours=48.0).starve_after_hours
    assert not compute_priority(inputs(waiting_h=30), S, NOW, starve_after_hours=late).starving


def simulate(configs: dict[str, float], slots: int, duration_h: float, horizon_h: float, conn, keys):
    """Every config exports every hour; a training takes `duration_h`; returns the longest wait seen.
    No preemption here (see test_scheduling_sim for the bound preemption enforces)."""
    clock = [NOW]
    scheduler = TrainingScheduler(conn, keys, S, clock=lambda: clock[0])
    scheduler.configs.set_curriculum_weights(configs)
    running: dict[str, float] = {}  # config -> end time
    waiting_since = dict.fromkeys(configs, NOW)
    longest = 0.0
    for step in range(int(horizon_h / 0.25)):
        clock[0] = NOW + step * 0.25 * HOUR
        for key in configs:
            conn.hset(keys.config(key), mapping={"exported_at": clock[0], "new_samples": 5000,
                                                 "first_seen_at": NOW})
        for key, end in list(running.items()):
            if end <= clock[0]:
                del running[key]
                conn.hdel(keys.active, key)
                conn.hset(keys.config(key), mapping={"last_trained_at": end, "waiting_since": end})
                waiting_since[key] = end
        scheduler.rescore()
        while len(running) < slots and (key := scheduler.get_next_training_config()):
            longest = max(longest, (clock[0] - waiting_since[key]) / HOUR)
            running[key] = clock[0] + duration_h * HOUR
            conn.hset(keys.active, key, f"job-{step}")
            conn.hdel(keys.config(key), "waiting_since")  # as job_start.lua does
            scheduler.rescore([key])
    return longest


def test_no_config_starves_and_the_wait_is_bounded(fake_conn, keys):
    # Eleven heavily weighted configs with endless fresh data and one with a tiny weight, 2 slots,
    # 3-hour trainings: without the guard the light one would never train. Without preemption the
    # bound is the starvation point + ceil(N / S) x D (with it: max_wait_hours + one checkpoint interval).
    configs = {f"square19_{p}p": 2.0 for p in (2, 3, 4)} | {f"hex8_{p}p": 2.0 for p in (2, 3, 4)}
    configs |= {f"square8_{p}p": 2.0 for p in (2, 3, 4)} | {"hexagonal_2p": 2.0, "hexagonal_3p": 2.0}
    configs["hexagonal_4p"] = 0.01
    slots, duration = 2, 3.0
    bound = STARVE_H + math.ceil(len(configs) / slots) * duration
    longest = simulate(configs, slots, duration, horizon_h=24 * 6, conn=fake_conn, keys=keys)
    assert longest <= bound, f"a config waited {longest:.1f} h, bound {bound:.1f} h"
    assert fake_conn.hget(keys.config("hexagonal_4p"), "last_trained_at") is not None


def test_ties_break_deterministically(fake_conn, keys):
    clock = lambda: NOW  # noqa: E731
    scheduler = TrainingScheduler(fake_conn, keys, S, clock=clock)
    for key in ("square8_2p", "hex8_2p", "square19_2p"):
        fake_conn.hset(keys.config(key), mapping={"new_samples": 100, "exported_at": NOW, "last_trained_at": NOW})
    scheduler.configs.set_curriculum_weights({"square8_2p": 1, "hex8_2p": 1, "square19_2p": 1})
    scheduler.rescore()
    picks = {scheduler.get_next_training_config() for _ in range(5)}
    assert picks == {"square8_2p"}  # the greater key among equal scores, every time
    assert [p.config_key for p in scheduler.ranked()][0] == "square8_2p"


def test_curriculum_weights_passed_in_override_stored_ones_for_that_call(fake_conn, keys):
    scheduler = TrainingScheduler(fake_conn, keys, S, clock=lambda: NOW)
    for key in ("hex8_2p", "square8_2p", "square19_2p"):
        fake_conn.hset(keys.config(key), mapping={"new_samples": 100, "exported_at": NOW, "last_trained_at": NOW})
    scheduler.configs.set_curriculum_weights({"hex8_2p": 0.5, "square8_2p": 1.0, "square19_2p": 1.5})
    scheduler.rescore()
    assert scheduler.get_next_training_config() == "square19_2p"
    seed_weights = {"hex8_2p": 1.5, "square8_2p": 1.0, "square19_2p": 0.5}
    assert scheduler.get_next_training_config(curriculum_weights=seed_weights) == "hex8_2p"
    assert scheduler.get_next_training_config(curriculum_weights={"square19_2p": 0}) == "square8_2p"
    assert scheduler.get_next_training_config() == "square19_2p"  # stored weights untouched
    fake_conn.hset(keys.active, "hex8_2p", "job-1")
    scheduler.rescore()
    assert scheduler.get_next_training_config(curriculum_weights={"hex8_2p": 100}) == "square19_2p"


# -- event-driven inputs through the orchestrator (fakeredis) --------------------------------------

def test_evaluations_feed_the_elo_velocity(orch, fake_conn, keys):
    fake_conn.xadd(keys.events, {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": "1500",
                                 "timestamp": str(NOW - 2 * HOUR)})
    orch.process_once(block_ms=None)
    [p] = orch.scheduler.ranked()
    assert p.elo_per_hour == 0.0  # one point: no velocity yet
    fake_conn.xadd(keys.events, {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": "1440",
                                 "timestamp": str(NOW - HOUR)})
    orch.scheduler.clock = lambda: NOW
    orch.process_once(block_ms=None)
    [p] = orch.scheduler.ranked()
    assert p.elo_per_hour == pytest.approx(-60.0) and "regressing" in p.flags


def test_curriculum_event_sets_weights_and_bad_ones_are_dead_lettered(orch, fake_conn, keys):
    fake_conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", "hex8_2p": "1.5", "square8_2p": "0.5",
                                 "source": "curriculum_feedback"})
    fake_conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", "hex8_2p": "lots"})
    fake_conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", "hex8_9p": "1"})
    fake_conn.xadd(keys.events, {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": "nan"})
    orch.process_once(block_ms=None)
    assert fake_conn.hget(keys.config("hex8_2p"), "curriculum_weight") == b"1.5"
    assert fake_conn.hget(keys.config("square8_2p"), "curriculum_weight") == b"0.5"
    reasons = [f[b"dead_reason"] for f in dead_letters(fake_conn)]
    number = b"must be a number (ASCII digits, optional sign, decimals, exponent)"  # schemas' one number rule
    assert reasons == [b"weight of hex8_2p " + number + b", got 'lots'", b"num_players must be 2..4, got 9",
                       b"elo " + number + b", got 'nan'"]


def test_failed_training_cools_down_until_new_data(orch, fake_conn, keys):
    job_id = orch.submit_training_sync("hex8", 2, "/d/v1.npz", samples=100)
    take_job(orch, job_id, "hex8_2p")
    end_job(orch.jobs, job_id, "hex8_2p", "failed", last_failed_at=NOW + 10**6)
    orch.process_once(block_ms=None)
    assert orch.jobs.active_job("hex8_2p") is None
    assert "last training failed" in fake_conn.hget(keys.config("hex8_2p"), "why").decode()


def test_one_slot_busy_three_configs_start_in_priority_order(fake_conn, make_settings, keys):
    order_a = run_dispatch_order(fake_conn, make_settings, keys,
                                 {"hex8_2p": 1.5, "square8_2p": 1.0, "square19_2p": 0.5})
    assert order_a == ["hex8_2p", "square8_2p", "square19_2p"]
    fake_conn.flushall()
    order_b = run_dispatch_order(fake_conn, make_settings, keys,
                                 {"hex8_2p": 0.5, "square8_2p": 1.0, "square19_2p": 1.5})
    assert order_b == ["square19_2p", "square8_2p", "hex8_2p"]


def run_dispatch_order(conn, make_settings, keys, weights: dict[str, float]) -> list[str]:
    settings = make_settings()
    settings = replace(settings, hosts={"gpu-1": 1}, scheduler=replace(settings.scheduler, prefetch=0))
    orch = TrainingOrchestrator(settings, conn, consumer_name="t")
    orch.prepare()
    busy = orch.submit_training_sync("hexagonal", 2, "/d/busy.npz", samples=10)  # the one slot
    lease = take_job(orch, busy, "hexagonal_2p", "gpu-1")
    conn.xadd(keys.events, {"type": "CURRICULUM_WEIGHTS_UPDATED", **{k: str(v) for k, v in weights.items()}})
    for key in weights:
        board, players = key.rsplit("_", 1)
        xadd_export(conn, (board, int(players[0])), f"/d/{key}.npz", 1000)
    orch.process_once(block_ms=None)
    assert conn.hlen(keys.active) == 1  # nothing queued while the slot is busy
    started, running = [], (busy, "hexagonal_2p", lease)
    for _ in range(len(weights)):
        end_job(orch.jobs, *running[:2], fence=running[2].fence)
        orch.leases.release(running[2])
        orch.process_once(block_ms=None)  # the slot is free: the best config is queued
        [(config_key, job_id)] = [(k.decode(), v.decode()) for k, v in conn.hgetall(keys.active).items()]
        started.append(config_key)
        running = (job_id, config_key, take_job(orch, job_id, config_key, "gpu-1"))
    return started


def test_rescore_reads_every_field_the_inputs_use():
    """load_inputs reads only INPUT_FIELDS (HMGET, not the stored explanation): from_hash must
    not use a field missing from that list."""
    from coordinator.scheduling.scheduler import INPUT_FIELDS, ConfigInputs

    class Recorder(dict):
        def __init__(self) -> None:
            super().__init__()
            self.asked: set[str] = set()

        def get(self, key, default=None):
            self.asked.add(key)
            return super().get(key, default)

        def __getitem__(self, key):
            self.asked.add(key)
            return super().__getitem__(key)

    raw = Recorder()
    ConfigInputs.from_hash("hex8_2p", raw, None, [])
    assert raw.asked and raw.asked <= set(INPUT_FIELDS)


def test_an_evaluation_of_a_new_model_adds_its_gain_over_the_previous_one(fake_conn, keys):
    scheduler = TrainingScheduler(fake_conn, keys, S, clock=lambda: NOW)
    assert scheduler.configs.record_evaluation("hex8_2p", 1000.0, NOW - 3 * HOUR, "/m/a.pt") is None  # first: no parent
    assert scheduler.configs.record_evaluation("hex8_2p", 1010.0, NOW - 2 * HOUR, "/m/a.pt") is None  # same model again
    assert scheduler.configs.record_evaluation("hex8_2p", 1060.0, NOW - HOUR, "/m/b.pt") == pytest.approx(50.0)
    assert scheduler.configs.record_evaluation("hex8_2p", 1050.0, NOW, None) is None  # no model named: window only
    assert [float(g) for g in fake_conn.lrange(keys.elo_gains("hex8_2p"), 0, -1)] == [50.0]
    assert fake_conn.llen(keys.elo("hex8_2p")) == 4


def test_the_gain_is_over_the_parent_model_by_lineage(fake_conn, keys):
    scheduler = TrainingScheduler(fake_conn, keys, S, clock=lambda: NOW)
    scheduler.configs.record_lineage("hex8_2p", "/m/a.pt", None)
    scheduler.configs.record_lineage("hex8_2p", "/m/b.pt", "/m/a.pt")
    scheduler.configs.record_lineage("hex8_2p", "/m/c.pt", "/m/a.pt")  # also warm-started from a (b not published yet)
    assert scheduler.configs.record_evaluation("hex8_2p", 1000.0, NOW - 3 * HOUR, "/m/a.pt") is None  # no parent
    assert scheduler.configs.record_evaluation("hex8_2p", 1100.0, NOW - 2 * HOUR, "/m/b.pt") == pytest.approx(100.0)
    # c's parent is a (1000), not the previous evaluation b (1100).
    assert scheduler.configs.record_evaluation("hex8_2p", 1030.0, NOW - HOUR, "/m/c.pt") == pytest.approx(30.0)
    assert scheduler.configs.record_evaluation("hex8_2p", 1035.0, NOW, "/m/c.pt") is None  # each model's gain once
    assert [float(g) for g in fake_conn.lrange(keys.elo_gains("hex8_2p"), 0, -1)] == [100.0, 30.0]
