"""The scheduling simulator drives the shipped coordinator (fakeredis, a simulated clock): a tiny run
keeps the invariants of the job store, and its figures come from what the coordinator did."""

from __future__ import annotations

import pytest

from bench import scheduling_sim as sim
from bench.sim_world import EXPORT_SIZE, World, cluster
from coordinator.core.job_states import FINAL_STATES
from coordinator.stores.gpus import GpuStore
from coordinator.stores.speeds import SpeedStore


@pytest.fixture(scope="module")
def run() -> sim.Simulation:
    """Half a simulated day of short trainings on 2 GPUs, the shipped settings (a few seconds)."""
    s = sim.Simulation("short", 2, "coordinator", days=0.5, seed=1)
    s.result = s.run()  # type: ignore[attr-defined]
    return s


def test_every_job_the_coordinator_created_ended_or_is_its_configs_active_job(run):
    r = run.result
    assert r.problems == []
    assert r.jobs_created >= r.trainings > 5  # the coordinator dispatched and the workers trained
    active = {v.decode() for v in run.conn.hvals(run.keys.active)}
    states = [run.conn.hget(run.keys.job(j.decode()), "state").decode() for j in run.conn.zrange(run.keys.jobs, 0, -1)]
    assert sum(state not in FINAL_STATES for state in states) == len(active)


def test_no_config_ran_two_attempts_at_once_and_every_attempt_started_once(run):
    c = run.result.counters
    assert c.overlaps == 0 and c.not_started == 0 and c.release_lost == 0
    running = sum(a is not None for a in run.workers.running.values())
    assert c.attempts == c.completed + sum(c.preempted.values()) + running


def test_the_coordinator_kept_the_simulated_time(run):
    """Stored times are on the simulated clock: every job was created within the simulated half day."""
    created = [float(run.conn.hget(run.keys.job(j.decode()), "created_at"))
               for j in run.conn.zrange(run.keys.jobs, 0, -1)]
    assert created and sim.T0 <= min(created) and max(created) <= sim.T0 + 0.5 * 24 * sim.HOUR


def test_waits_are_counted_and_evaluations_reach_the_cost_factor(run):
    r = run.result
    assert 0 < r.worst_wait_h <= 0.5 * 24 and all(w >= 0 for w in r.waits.values())
    assert r.weighted_elo > 0
    # Evaluations (with the published model paths) gave the coordinator Elo gains through lineage.
    gains = sum(run.conn.llen(run.keys.elo_gains(s.key)) for s in run.specs)
    assert gains > 0


def test_a_baseline_changes_only_the_choice_and_a_run_is_a_function_of_its_seed():
    a, b = (sim.simulate("short", 2, "round_robin", 0.25, seed=3) for _ in range(2))
    assert (a.weighted_elo, a.trainings, a.worst_wait_h) == (b.weighted_elo, b.trainings, b.worst_wait_h)
    assert a.preemptions == {"wait": 0, "value": 0} and a.problems == []


def test_the_workloads_are_the_ringrift_configs_short_and_long():
    ringrift, short = cluster(0, "ringrift"), cluster(0, "short")
    assert [s.key for s in ringrift] == [s.key for s in short] and len(short) == 12
    assert max(s.gpu_hours for s in short) < 2.2 < 15 < max(s.gpu_hours for s in ringrift)


def test_a_trainings_length_is_its_boards_cost_per_sample_times_the_samples_of_its_export():
    """RingRift's trainer passes over its NPZ once per epoch: the world's training time is the board's
    cost per sample x the export's samples (what the coordinator divides epoch times by), the same
    per sample for every config of a board, and a typical export takes the config's GPU-hours."""
    for workload in ("ringrift", "short"):
        specs = cluster(0, workload)
        world = World(specs, 0)
        for s in specs:
            assert world.training_hours(s.key, s.typical_samples) == pytest.approx(s.gpu_hours)
            assert world.training_hours(s.key, 2 * s.typical_samples) == pytest.approx(2 * s.gpu_hours)
            assert s.hours_per_sample == next(x for x in specs if x.board == s.board).hours_per_sample
        world.export("hexagonal_4p")
        path, samples, _ = world.export("hexagonal_4p")
        assert world.hours_on("hexagonal_4p", path) == world.hours_on("hexagonal_4p") == pytest.approx(
            world.by_key["hexagonal_4p"].hours_per_sample * samples)


@pytest.mark.slow
def test_with_ringrift_length_trainings_and_prefetch_the_wait_bound_holds_and_no_sample_is_credited_untrained():
    """Issue 24: on 4 GPUs with the shipped prefetch, a queued starving job kept losing its wait clock
    (worst waits of 16-19 h against the 12 h bound) and resumed attempts were credited with exports
    they never trained on. Three simulated days of day-long trainings on the shipped code."""
    r = sim.simulate("ringrift", 4, "coordinator", days=3, seed=0)
    longest = max(s.gpu_hours for s in cluster(0, "ringrift")) * EXPORT_SIZE[1]  # the largest export's training
    checkpoint_h = longest / sim.build_settings(4).training.default_epochs
    assert r.problems == [] and r.preemptions["wait"] > 0  # the bound was exercised
    assert r.worst_wait_h <= sim.build_settings(4).preemption.max_wait_hours + checkpoint_h
    assert r.credited_untrained == 0


# -- heterogeneous clusters: RingRift-shaped GPUs, memory needs per board, ephemeral hosts --------------
@pytest.fixture(scope="module")
def contended() -> dict[str, sim.Simulation]:
    """Six simulated hours of the contended RingRift-shaped cluster (3 of 9 GPUs >= 40 GB, a 4x RTX
    4090 vast.ai host that vanishes at 0.7 h for 2 h), class-blind, memory-aware and speed-aware
    (fakeredis)."""
    runs = {}
    for placement in ("class-blind", "memory-aware", "speed-aware"):
        s = sim.Simulation("ringrift", 0, "coordinator", days=0.25, seed=2, cluster_name="ringrift-contended",
                           placement=placement)
        s.result = s.run()  # type: ignore[attr-defined]
        runs[placement] = s
    return runs


def test_memory_aware_placement_puts_every_large_board_on_a_gpu_that_holds_it(contended):
    r = contended["memory-aware"].result
    assert r.problems == [] and r.hetero.big_board_attempts > 0
    assert r.counters.oom == 0 and r.hetero.big_board_misplaced == 0 and r.counters.misfits == 0
    assert r.counters.failed_jobs == 0 and r.trainings > 0


def test_class_blind_placement_runs_large_boards_on_24_gb_cards_which_die_of_out_of_memory(contended):
    r = contended["class-blind"].result
    assert r.problems == []
    assert r.counters.oom > 0 and r.hetero.big_board_misplaced > 0 and r.counters.oom_gpu_hours > 0
    # the failures reached the nodes' circuit breakers, as the real worker records them
    s = contended["class-blind"]
    failures = [int(s.conn.hget(s.keys.breaker("node", n), "failures") or 0) for n in s.settings.hosts]
    assert sum(failures) > 0


def test_workers_declared_their_gpus_and_a_vanished_host_went_through_the_reaper(contended):
    s = contended["memory-aware"]
    inventory = GpuStore(s.conn, s.keys).inventory()
    assert [slot["memory_gb"] for slot in inventory["vast-29129529"]["slots"]] == [24.0] * 4
    assert inventory["lambda-gh200-1"]["memory_gb"] == 96.0 and inventory["vast-29129529"]["ephemeral"]
    c = s.result.counters
    assert c.vanished > 0 and c.vanish_gpu_hours > 0
    # the reaper found their leases expired and retried them (an infrastructure failure each)
    reaped = [int(s.conn.hget(s.keys.job(j.decode()), "failures_infrastructure") or 0)
              for j in s.conn.zrange(s.keys.jobs, 0, -1)]
    assert sum(reaped) == c.vanished


def test_speed_aware_placement_learns_the_speeds_from_simulated_epochs_and_places_by_them(contended):
    """The simulated workers report each epoch's time as `workers/tasks.py` does (`epoch_time_s`,
    `speed_class`) and run the shipped worker's hand-back check: the coordinator learned the hidden
    per-class speeds from them, and no job went to a GPU too small. (Hand-backs need both GPUs timed
    on the job's workload and the faster one idle: six hours rarely give one; the 3-day table does.)"""
    s = contended["speed-aware"]
    r = s.result
    assert r.problems == [] and r.counters.oom == 0 and r.counters.misfits == 0
    assert r.hetero.timed_epochs > 0
    learned = {(row.board, row.cls): row for row in r.hetero.speeds}
    gh200 = learned[("hexagonal", "GH200")]
    assert gh200.basis != "prior" and learned[("hexagonal", "H100")].basis != "prior"
    hidden = float(gh200.truth)  # GH200 / H100 on hexagonal, the world's (1.30); the prior says 1.2
    assert abs(gh200.learned / hidden - 1) <= 0.02
    # The world's epochs take the board's cost per sample x the record's samples, as the coordinator
    # assumes: any two classes timed on a board are learned at their hidden ratio.
    timed = [row for row in r.hetero.speeds if row.basis != "prior" and "/" not in row.truth]
    pairs = [(a, b) for a in timed for b in timed if a.board == b.board and a.cls < b.cls]
    assert len(pairs) >= 2
    assert all(abs((a.learned / b.learned) / (float(a.truth) / float(b.truth)) - 1) <= 0.02 for a, b in pairs)
    stored = SpeedStore(s.conn, s.keys).read()
    assert stored[("hexagonal", "H100")][1] > 0  # learned under the class name, from TRAINING_PROGRESS
    # the record says where the attempt ran and how fast that GPU is (`_record_gpu`)
    records = [s.conn.hgetall(s.keys.job(j.decode())) for j in s.conn.zrange(s.keys.jobs, 0, -1)]
    assert any(rec.get(b"gpu_class") == b"GH200" for rec in records)


def test_without_the_speed_margin_memory_aware_placement_still_learns_and_hands_back_no_more(contended):
    """`gpus.faster_margin` at NO_SPEED_MARGIN drops the speed clause only (preferred classes and a
    cheaper equal GPU remain): no more hand-backs than speed-aware, the same speeds learned."""
    r = contended["memory-aware"].result
    assert r.counters.oom == 0 and r.hetero.timed_epochs > 0
    assert r.hetero.hand_backs <= contended["speed-aware"].result.hetero.hand_backs


# -- multi-GPU trainings: reservations, backfill against holding the GPUs idle ---------------------------
@pytest.fixture(scope="module")
def gangs() -> dict[str, sim.Simulation]:
    """The RingRift-shaped cluster with multi-GPU hosts (hexagonal on 2 GPUs, hexagonal_4p on 4 of
    80 GB): three simulated hours of short trainings with backfill (a reserved 4-GPU job starts), and
    twelve hours of RingRift-length ones with backfill and with hold (fakeredis). Those run without
    preemption: with it, RingRift-length trainings free no node before the 12 h wait bound would,
    and no node is reserved (`reservations.plan`)."""
    runs = {}
    for name, workload, days, placement, policy in (
            ("short", "short", 0.125, "gang-backfill", "coordinator"),
            ("backfill", "ringrift", 0.5, "gang-backfill", "coordinator-nopreempt"),
            ("hold", "ringrift", 0.5, "gang-hold", "coordinator-nopreempt")):
        s = sim.Simulation(workload, 0, policy, days=days, seed=0, cluster_name="ringrift-gang",
                           placement=placement)
        s.result = s.run()  # type: ignore[attr-defined]
        runs[name] = s
    return runs


@pytest.mark.slow  # three simulated runs, about 30 s
def test_gang_jobs_take_n_gpus_of_one_node_and_start_by_their_reservation_plus_a_checkpoint(gangs):
    """The simulated workers run multi-GPU trainings as `run_training` does (reservation check, N-GPU
    lease, reservation dropped): no GPU ran two attempts, and every reserved gang job started (or
    still waits) within its reserved node's expected free time + one checkpoint interval + the
    grace and one tick."""
    for s in gangs.values():
        r = s.result
        assert r.problems == [] and r.counters.device_overlaps == 0 and r.counters.drop_missed == 0
        assert r.hetero.gang.violations() == []
    short = gangs["short"].result
    assert short.counters.gang_attempts > 0
    started = [w for w in short.hetero.gang.judged() if w.started_at is not None]
    assert started and all(w.started_node in w.nodes for w in started)
    assert max(w.past_bound_s(short.hetero.gang.end) for w in started) <= short.hetero.gang.allowance_s
    four = [w for w in started if w.gpus == 4]
    assert four and four[0].started_node == "nebius-h100x4-1"  # the only node with 4 GPUs of 80 GB
    # Held GPUs: the attempt's record names its devices and how many (`_record_gpu` with the lease).
    job = gangs["short"].conn.hgetall(gangs["short"].keys.job(four[0].job_id))
    assert job[b"gpus_held"] == b"4" and len(job[b"gpu_devices"].split(b",")) == 4


@pytest.mark.slow  # three simulated runs, about 30 s
def test_backfill_keeps_more_gpu_time_busy_on_reserved_nodes_than_holding_them(gangs):
    backfill, hold = (gangs[k].result.hetero.gang for k in ("backfill", "hold"))
    assert backfill.judged() and hold.judged()  # a gang job waited with a reservation in both
    assert backfill.reserved_busy_h > hold.reserved_busy_h
    assert backfill.reserved_idle_h < hold.reserved_idle_h
