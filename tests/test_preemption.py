"""The preemption decision: who yields, to whom and why; every guard can hold a job back."""

from __future__ import annotations

from dataclasses import replace

import pytest

from coordinator.core.gpu_requirements import Gpu
from coordinator.core.settings import GpuRequirement
from coordinator.scheduling.preemption_rule import VALUE, WAIT, Candidate, PreemptionSettings, RunningJob, decide

NOW = 1_800_000_000.0
HOUR = 3600.0
S = PreemptionSettings(margin=0.5, min_run_minutes=60, max_preemptions_per_job=2, max_wait_hours=12)


def job(name: str, value: float = 1.0, ran_h: float = 5.0, **extra) -> RunningJob:
    return RunningJob(f"job-{name}", name, f"slot-{name}", NOW - ran_h * HOUR, value, **extra)


def starving(name: str, waited: float = 11.5) -> Candidate:
    return Candidate(name, 1000.0 + waited, True, waited)


def victims(running, ranked, free=0, s=S) -> list[str]:
    return [p.config_key for p in decide(running, ranked, free, s, NOW).preempt]


def test_a_free_slot_is_taken_before_anyone_is_preempted():
    running = [job("a"), job("b")]
    assert victims(running, [starving("x")], free=1) == []
    assert victims(running, [starving("x"), starving("y")], free=1) == ["a"]


def test_a_starving_config_takes_the_lowest_value_job_and_says_why():
    decision = decide([job("a", 2.0), job("b", 1.0), job("c", 3.0)], [starving("x", 11.5)], 0, S, NOW)
    (p,) = decision.preempt
    assert (p.config_key, p.for_config, p.kind, p.slot) == ("b", "x", WAIT, "slot-b")
    assert "waited 11.5 h" in p.why


def test_an_outranking_config_needs_the_margin():
    running = [job("a", 1.0), job("b", 2.0)]
    assert victims(running, [Candidate("x", 1.49)]) == []
    decision = decide(running, [Candidate("x", 1.5)], 0, S, NOW)
    assert [(p.config_key, p.kind) for p in decision.preempt] == [("a", VALUE)]
    assert "margin" in decision.preempt[0].why


def test_candidates_are_served_best_first_each_with_its_own_victim():
    running = [job("a", 1.0), job("b", 1.2), job("c", 5.0)]
    ranked = [starving("s"), Candidate("x", 2.0), Candidate("y", 1.6)]
    decision = decide(running, ranked, 0, S, NOW)
    assert [(p.for_config, p.config_key) for p in decision.preempt] == [("s", "a"), ("x", "b")]


def test_no_job_is_preempted_before_its_minimum_run_time():
    young = job("a", 0.1, ran_h=0.9)
    assert victims([young], [starving("x")]) == []
    assert "min_run_minutes" in decide([young], [starving("x")], 0, S, NOW).protected["job-a"]
    assert victims([replace(young, started_at=NOW - 1.0 * HOUR)], [starving("x")]) == ["a"]


def test_one_preemption_in_flight_per_slot_and_its_slot_goes_to_the_best_candidate():
    pending = job("a", 0.1, preempt_requested_at=NOW - 60)
    other = job("b", 0.2)
    # The pending one frees a slot for "x"; "y" may still take another job.
    assert victims([pending, other], [starving("x"), Candidate("y", 5.0)]) == ["b"]
    assert victims([pending, other], [starving("x")]) == []
    assert victims([pending], [starving("x"), starving("y")]) == []


def test_the_per_job_cap_stops_value_preemptions_but_not_the_wait_bound():
    tired = job("a", 0.1, preemptions=2)
    assert victims([tired], [Candidate("x", 9.0)]) == []
    assert victims([tired], [starving("x")]) == ["a"]
    assert victims([replace(tired, preemptions=1)], [Candidate("x", 9.0)]) == ["a"]


def test_a_starving_job_is_never_preempted_for_value():
    fed = job("a", 1000.0 + 13, starving=True)
    assert victims([fed], [Candidate("x", 9999.0)]) == []


def test_starving_configs_time_slice_the_job_that_loses_least_when_all_are_starving():
    # Both checkpointed: the one whose newest checkpoint is newer loses less (issue 24, item 6).
    older = job("a", 1012.0, ran_h=3.0, starving=True, checkpoint_at=NOW - 0.9 * HOUR)
    newer = job("b", 1030.0, ran_h=2.0, starving=True, checkpoint_at=NOW - 0.1 * HOUR)
    assert victims([older, newer], [starving("x")]) == ["b"]
    # A job that was not started as starving goes first, whatever its value.
    assert victims([older, job("c", 50.0)], [starving("x")]) == ["c"]


def test_the_wait_bound_spreads_its_preemptions_instead_of_chopping_one_job():
    # Before: the same starving-started job (run longest) yielded at every turn; now the work it
    # loses is weighted by how often it has yielded, and a job at the cap goes last.
    chopped = job("a", 1000.0, ran_h=1.2, starving=True, preemptions=1, checkpoint_at=NOW - 0.2 * HOUR)
    fresh = job("b", 1000.0, ran_h=1.2, starving=True, preemptions=0, checkpoint_at=NOW - 0.35 * HOUR)
    assert victims([chopped, fresh], [starving("x")]) == ["b"]  # 0.3 h x 2 > 0.45 h x 1
    capped = replace(chopped, preemptions=2, checkpoint_at=NOW)
    assert victims([capped, replace(fresh, checkpoint_at=NOW - 0.9 * HOUR)], [starving("x")]) == ["b"]
    # The wait bound always wins: when every job is at the cap, one still yields.
    assert victims([capped], [starving("x")]) == ["a"]


def test_a_value_preemption_pays_for_the_work_it_throws_away():
    # value 2, 4 h expected, 1 h since its checkpoint + 6 min restart: 2 x 1.1 / 4 = 0.55 more to beat.
    s = replace(S, restart_minutes=6.0)
    running = [job("a", 2.0, ran_h=3.0, checkpoint_at=NOW - HOUR, expected_hours=4.0)]
    assert victims(running, [Candidate("x", 2.0 + 0.5 + 0.54)], s=s) == []
    assert victims(running, [Candidate("x", 2.0 + 0.5 + 0.56)], s=s) == ["a"]
    just_saved = [replace(running[0], checkpoint_at=NOW)]  # only the restart is lost: 2 x 0.1 / 4
    assert victims(just_saved, [Candidate("x", 2.0 + 0.5 + 0.06)], s=s) == ["a"]
    decision = decide(running, [Candidate("x", 3.1)], 0, s, NOW)
    assert "1.1 h of work to redo" in decision.preempt[0].why


def test_a_queued_starving_job_takes_a_victim_and_a_queued_one_that_does_not_waits_its_turn():
    queued = Candidate("q", 11.5, True, 11.5, queued=True)
    assert victims([job("a")], [queued]) == ["a"]
    assert victims([job("a", 0.0)], [Candidate("q", 0.0, queued=True), Candidate("x", 99.0)]) == ["a"]
    # Idle GPUs go to the head of the line: the queued job takes the first, the candidate the second.
    line = [Candidate("q", 0.0, queued=True), Candidate("x", 99.0)]
    assert victims([job("a", 0.0)], line, free=1) == ["a"]
    assert victims([job("a", 0.0)], line, free=2) == []


def test_off_switch():
    off = replace(S, enabled=False)
    decision = decide([job("a", 0.0)], [starving("x"), Candidate("y", 99.0)], 0, off, NOW)
    assert decision.preempt == () and decision.protected == {"job-a": "preemption disabled"}


def test_equal_values_yield_the_job_with_the_newest_checkpoint_first():
    older_ckpt = job("a", 1.0, checkpoint_at=NOW - 600)
    newer_ckpt = job("b", 1.0, checkpoint_at=NOW - 60)
    assert victims([older_ckpt, newer_ckpt], [starving("x")]) == ["b"]


def test_the_wait_bound_starts_starving_one_minimum_run_before_it():
    assert S.starve_after_hours == pytest.approx(11.0)
    with pytest.raises(ValueError):
        PreemptionSettings(max_wait_hours=1.0, min_run_minutes=60)
    with pytest.raises(ValueError):
        PreemptionSettings(margin=-1)
    with pytest.raises(ValueError, match="signal"):
        PreemptionSettings(signal="TERM")
    assert PreemptionSettings(signal="SIGUSR1").signal == "SIGUSR1"


# -- GPUs that differ (issue 26, item 4) ----------------------------------------------------------

BIG = GpuRequirement(min_memory_gb=40)
H100, RTX4090 = Gpu("H100", 80.0, node="big"), Gpu("RTX 4090", 24.0, node="small")


def test_an_idle_gpu_too_small_for_a_starving_big_config_does_not_serve_it():
    big = replace(starving("hexagonal_2p"), requirement=BIG)
    on_h100 = job("a", 5.0, gpu=H100)
    assert victims([on_h100], [big], free=[RTX4090]) == ["a"]  # the 4090 cannot hold it: a big GPU is freed
    assert victims([on_h100], [big], free=[H100]) == []  # an idle big GPU takes it
    assert victims([on_h100], [starving("hex8_2p")], free=[RTX4090]) == []  # a small config takes the 4090
    assert victims([on_h100], [big], free=[None]) == ["a"]  # a GPU of unknown model meets no requirement


def test_a_starving_big_config_frees_a_big_gpu_whatever_the_values_on_small_ones():
    big = replace(starving("hexagonal_2p"), requirement=BIG)
    cheap_small = job("cheap", 0.1, gpu=RTX4090)
    dear_big = job("dear", 9.0, gpu=H100)
    assert victims([cheap_small, dear_big], [big]) == ["dear"]
    assert victims([cheap_small], [big]) == []  # no GPU that fits it is held by anyone it may take


def test_a_small_job_on_a_big_gpu_is_moved_to_an_idle_small_gpu_first():
    big = replace(starving("hexagonal_3p"), requirement=BIG)
    small_on_big = job("hex8", 5.0, gpu=H100, checkpoint_at=NOW - 0.5 * HOUR)  # loses more work...
    big_on_big = job("hexagonal", 5.0, gpu=H100, requirement=BIG, checkpoint_at=NOW)
    # ...but moves at once to the idle 4090 (which the big config cannot use); the other would wait.
    assert victims([small_on_big, big_on_big], [big], free=[RTX4090]) == ["hex8"]
    assert victims([small_on_big, big_on_big], [big], free=[]) == ["hexagonal"]  # nowhere to move: least lost


# -- multi-GPU trainings (issue 27) ---------------------------------------------------------------

def on(node: str) -> Gpu:
    return Gpu("H100", 80.0, node=node)


def test_a_starving_two_gpu_training_frees_two_gpus_of_one_node_never_one_here_and_one_there():
    duo = replace(starving("square19_2p"), requirement=GpuRequirement(gpus=2))
    a1, b1 = job("a1", 1.0, gpu=on("a")), job("b1", 1.0, gpu=on("b"))
    assert victims([a1, b1], [duo]) == []  # one GPU on each node: no node can give it two
    a2 = job("a2", 5.0, gpu=on("a"))
    assert sorted(victims([a1, a2, b1], [duo])) == ["a1", "a2"]
    # An idle GPU of node b and one job there: only b1 yields.
    assert victims([a1, a2, b1], [duo], free=[on("b")]) == ["b1"]
    # Two idle GPUs of one node serve it: nobody yields; one idle here and one there does not.
    assert victims([a1, a2, b1], [duo], free=[on("b"), on("b")]) == []
    assert victims([a1, b1], [duo], free=[on("a"), on("b")]) in (["a1"], ["b1"])


def test_a_multi_gpu_training_never_preempts_for_value_and_a_pending_gang_is_not_asked_twice():
    duo = Candidate("square19_2p", 99.0, requirement=GpuRequirement(gpus=2))
    assert victims([job("a1", 0.0, gpu=on("a")), job("a2", 0.0, gpu=on("a"))], [duo]) == []
    starving_duo = replace(starving("square19_2p"), requirement=GpuRequirement(gpus=2))
    pending = [job("a1", 1.0, gpu=on("a"), preempt_requested_at=NOW), job("a2", 1.0, gpu=on("a"),
                                                                          preempt_requested_at=NOW)]
    assert victims([*pending, job("b1", 1.0, gpu=on("b"))], [starving_duo]) == []  # node a is promised to it


def test_a_starving_gang_counts_the_idle_gpu_of_its_node_that_only_configs_behind_it_would_take():
    duo = replace(starving("square19_2p"), requirement=GpuRequirement(gpus=2), queued=True)
    behind = Candidate("hex8_2p", 5.0)  # eligible, ranked after the starving queued job
    a1 = job("a1", 1.0, gpu=on("a"))
    assert victims([a1], [duo, behind], free=[on("a")]) == ["a1"]  # a's idle GPU + a1's make its two
