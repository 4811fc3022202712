"""The scheduling simulator, and the wait bound asserted on its simulated clock with day-long trainings."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from bench import scheduling_sim as sim
from coordinator.scheduling.preemption_rule import PreemptionSettings

W = PreemptionSettings(max_wait_hours=12.0, min_run_minutes=60.0)


def day_long(seed: int) -> list[sim.Spec]:
    """The 12 configs, every training 24-29 GPU-hours (20 epochs: a checkpoint every 1.2-1.44 h)."""
    return [replace(s, gpu_hours=24.0 * (1 + 0.1 * (k % 3))) for k, s in enumerate(sim.cluster(random.Random(seed)))]


# The bound needs min run < max_wait x S / N (each GPU hands over at most once per min run).
@pytest.mark.parametrize(("gpus", "seed", "min_run_minutes"), [(2, 0, 60), (3, 1, 60), (4, 2, 60), (3, 0, 120),
                                                               (4, 1, 120)])
def test_the_wait_bound_holds_whatever_the_training_length(gpus, seed, min_run_minutes):
    specs = day_long(seed)
    checkpoint = max(s.checkpoint_h for s in specs)
    w = replace(W, min_run_minutes=min_run_minutes)
    assert min_run_minutes / 60 < w.max_wait_hours * gpus / len(specs)
    r = sim.simulate(specs, gpus, sim.Policy("proposed", preemption=w), days=8, seed=seed)
    # Past the cold start (every config's first data arrives within a few hours of the others):
    # max_wait + one checkpoint interval.
    assert r.worst_wait_from(24.0) <= w.max_wait_hours + checkpoint + 1e-6
    # The cold start: (N - S) configs starve together and the GPUs pass from one to the next
    # every min run + checkpoint interval.
    burst = (math.ceil((len(specs) - gpus) / gpus) - 1) * (w.min_run_minutes / 60 + checkpoint)
    assert r.worst_wait_h <= w.max_wait_hours + checkpoint + burst + 1e-6
    assert r.preemptions > 0 and r.lost_gpu_hours == pytest.approx(r.preemptions * sim.RESUME_OVERHEAD_H)


def test_without_preemption_the_wait_is_a_multiple_of_the_training_length():
    specs = day_long(0)
    bound = W.max_wait_hours + max(s.checkpoint_h for s in specs)
    for policy in (sim.Policy("proposed", preemption=replace(W, enabled=False)), sim.Policy("current")):
        r = sim.simulate(specs, 2, policy, days=8, seed=0)
        assert r.preemptions == 0
        assert r.worst_wait_from(24.0) > 2 * bound


def test_a_run_is_a_function_of_its_seed():
    specs = sim.cluster(random.Random(4))
    a, b = (sim.simulate(specs, 3, sim.Policy("proposed"), days=3, seed=4) for _ in range(2))
    assert a == b
    assert sim.simulate(specs, 3, sim.Policy("proposed"), days=3, seed=5) != a


def test_the_cluster_has_the_ringrift_configs_from_under_an_hour_to_about_a_day():
    specs = sim.cluster(random.Random(0))
    assert len(specs) == 12 and {s.key.split("_")[0] for s in specs} == set(sim.BOARD_MODELS)
    hours = {s.key: s.gpu_hours for s in specs}
    assert hours["hex8_2p"] < 1.0 and hours["hexagonal_4p"] > 24.0
    assert sum(s.weight == 0.05 for s in specs) == 1


def test_the_proposed_policy_earns_more_per_gpu_hour_than_round_robin_when_gpus_are_scarce():
    rows = sim.compare([("proposed", sim.Policy("proposed"))], [2], seeds=2, days=7)
    assert min(rows[0].ratios) > 1.0


def test_the_cli_prints_one_markdown_row_per_policy_and_gpu_count(capsys):
    assert sim.main(["--seeds", "1", "--days", "2", "--gpus", "2,8"]) == 0
    out = capsys.readouterr().out
    for gpus in (2, 8):
        for policy in sim.POLICIES:
            assert f"| {gpus} | {policy} |" in out
    assert sim.main(["--seeds", "1", "--days", "1", "--gpus", "2", "--sweep", "max_wait_hours=6,12"]) == 0
    assert "| 2 | proposed max_wait_hours=6 |" in capsys.readouterr().out


def test_the_proposed_policy_scores_like_the_scheduler_on_redis(fake_conn, keys):
    """What the simulator ranks equals what TrainingScheduler.ranked() gives for the same config
    hashes and lists (starvation by waiting time and the cost factor included)."""
    from coordinator.scheduling.scheduler import TrainingScheduler

    specs = sim.cluster(random.Random(3))
    s = sim.Simulation(specs, 2, sim.Policy("proposed"), days=4, seed=3)
    s.run()
    now_h = s.horizon
    first = next(i for i in range(len(specs)) if s._eligible(i))
    s.state[first].waiting_since = now_h - 20.0  # one config starving, the others as the run left them
    scheduler = TrainingScheduler(fake_conn, keys, sim.Policy("proposed").scheduler, clock=lambda: sim._unix(now_h),
                                  preemption=sim.Policy("proposed").preemption)
    for i, (spec, st) in enumerate(zip(specs, s.state)):
        fields = {"curriculum_weight": spec.weight, "new_samples": st.new_samples,
                  "exported_at": sim._unix(st.exported_at),
                  "first_seen_at": sim._unix(st.first_seen_at), "last_trained_at": sim._unix(st.last_trained_at),
                  "waiting_since": sim._unix(st.waiting_since)}
        fake_conn.hset(keys.config(spec.key), mapping={k: repr(v) for k, v in fields.items() if v is not None})
        for at, elo in st.points:
            scheduler.configs.record_elo(spec.key, elo, at)
        for hours in st.durations:
            scheduler.configs.record_training_cost(spec.key, hours)
        for gain in st.gains:
            scheduler.configs.record_elo_gain(spec.key, gain)
        if not s._eligible(i):
            fake_conn.hset(keys.active, spec.key, f"job-{i}")
        fake_conn.zadd(keys.priority, {spec.key: -1})
    simulated = [(c.config_key, round(c.score, 6), c.starving) for c in s._ranked(now_h)]
    real = [(p.config_key, round(p.score, 6), p.starving) for p in scheduler.ranked() if p.eligible]
    assert simulated == real and any(starving for *_, starving in real)
