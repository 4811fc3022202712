"""Scheduling simulator: simulated days of a RingRift cluster under several scheduling policies.

The cluster: the 12 RingRift configs (square8, hex8, square19, hexagonal x 2, 3, 4 players) share S
GPUs. Trainings take from ~0.5 GPU-hours (hex8) to ~a day (hexagonal 4p) in 20 epochs (a checkpoint
each); exports arrive every 1-4 h per config. A training's Elo gain diminishes with the data it
covers (1 - exp(-samples / data_half)) and with the config's strength ((room left / room)^1.5), plus
noise; an evaluation (with its own noise) follows each training. Curriculum weights are drawn per
seed (one config at 0.05, the one nobody favours).

Policies (all dispatch when a GPU is free; only `proposed` preempts):
- `round_robin`, `oldest_first` (longest since its last training), `most_new_data`;
- `current`: the scheduler before issue 16 (the real `compute_priority` without the cost factor,
  starving after staleness saturation, oldest first);
- `proposed`: the real `compute_priority` as the coordinator runs it (the value_per_gpu_hour factor,
  weighted `cost_weight`, from the config's training GPU-hours and Elo gains; starving once it has
  waited `max_wait - min_run` since `waiting_since`) and the real preemption decision
  (`coordinator.scheduling.preemption_rule.decide`) every `tick_h` and whenever a config starts starving or a job
  passes its minimum run time. A preempted job yields at its next epoch boundary
  (the worst case: a trainer that cannot save mid-epoch) and pays `RESUME_OVERHEAD_H` when it resumes.

The policies read only what a coordinator sees: the config hash fields (curriculum weight, new samples,
export times, last training, `waiting_since`), the evaluations, the jobs' durations and start scores.

Figures: curriculum-weighted Elo (true Elo gained, x weight) per GPU-hour, as a ratio to round-robin on
the same seed; worst wait (hours a config with new data and weight > 0 waited for a GPU, open waits at
the end included); preemptions and GPU-hours lost to them (resume overhead), per run.

    python -m bench.scheduling_sim --seeds 20 --days 14
    python -m bench.scheduling_sim --sweep max_wait_hours=8,12,24 --seeds 8 --gpus 2,4
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from coordinator.core.settings import SchedulerSettings
from coordinator.scheduling import cost
from coordinator.scheduling.preemption_rule import Candidate, PreemptionSettings, RunningJob, decide
from coordinator.scheduling.scheduler import STARVING_BASE, ConfigInputs, compute_priority

HOUR = 3600.0
T0 = 1_800_000_000.0
EPOCHS = 20
RESUME_OVERHEAD_H = 0.1  # reload the checkpoint and the data, warm up
EVAL_NOISE_ELO = 12.0
# Wake-ups land this much after the instant they wait for: the score reads unix seconds (~1.8e9),
# whose rounding could put "waited 11 h" a hair under 11 h at the very event meant to see it.
CLOCK_EPSILON_H = 1e-6
BASELINES = ("round_robin", "oldest_first", "most_new_data", "current")
POLICIES = (*BASELINES, "proposed")
# Chosen with --sweep (8 seeds, 2/4/8 GPUs): 0..4 moved Elo/GPU-h by ~1-2% (seed noise); above 1 it also
# raised value preemptions on 8 GPUs. 1.0: the same weight as every other factor.
DEFAULT_COST_WEIGHT = 1.0


@dataclass(frozen=True)
class BoardModel:
    gpu_hours: float  # one training at 2 players
    export_every_h: float
    samples_per_h: float
    elo_room: float  # Elo between the first model and the ceiling
    gain: float  # Elo of one training with ample data at the first model's strength
    data_half: float  # samples: 1 - 1/e of the gain


BOARD_MODELS = {
    "square8": BoardModel(0.75, 1.0, 20_000, 600, 35, 40_000),
    "hex8": BoardModel(0.5, 1.0, 25_000, 600, 30, 40_000),
    "square19": BoardModel(18.0, 3.0, 4_000, 900, 220, 60_000),
    "hexagonal": BoardModel(22.0, 4.0, 3_000, 900, 240, 60_000),
}


@dataclass(frozen=True)
class Spec:
    key: str
    board: str
    gpu_hours: float
    export_every_h: float
    samples_per_h: float
    elo_room: float
    gain: float
    data_half: float
    weight: float

    @property
    def checkpoint_h(self) -> float:
        return self.gpu_hours / EPOCHS


def cluster(rng: random.Random) -> list[Spec]:
    """The 12 configs with per-seed jitter and curriculum weights (one config at 0.05)."""
    specs = []
    for board, m in BOARD_MODELS.items():
        for players in (2, 3, 4):
            more = players - 2
            specs.append(Spec(f"{board}_{players}p", board, m.gpu_hours * (1 + 0.15 * more) * rng.uniform(0.85, 1.15),
                              m.export_every_h, m.samples_per_h * (1 - 0.15 * more), m.elo_room * rng.uniform(0.8, 1.2),
                              m.gain * rng.uniform(0.7, 1.3), m.data_half, rng.choice((0.25, 0.5, 1.0, 1.5, 2.0))))
    light = rng.randrange(len(specs))
    specs[light] = replace(specs[light], weight=0.05)
    return specs


@dataclass(frozen=True)
class Policy:
    name: str
    cost_weight: float = DEFAULT_COST_WEIGHT
    preemption: PreemptionSettings = field(default_factory=PreemptionSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    costs: cost.CostSettings = field(default_factory=cost.CostSettings)


@dataclass
class Job:
    config: int
    covered: int
    done_h: float = 0.0  # useful work done (checkpointed at epoch boundaries)
    spent_h: float = 0.0  # GPU-hours held, overhead included
    slot: int | None = None
    attempt_start: float = 0.0  # sim hours
    overhead_h: float = 0.0  # this attempt's resume overhead
    value: float = 0.0
    starving: bool = False
    preemptions: int = 0
    preempt_requested_at: float | None = None
    token: int = 0


@dataclass
class ConfigState:
    elo: float = 0.0
    last_measured: float = 0.0
    points: list[tuple[float, float]] = field(default_factory=list)
    new_samples: int = 0
    exported_at: float | None = None
    first_seen_at: float | None = None
    last_trained_at: float | None = None
    waiting_since: float | None = None
    wait_seq: int = 0  # which wait a "starving" event belongs to
    job: Job | None = None
    durations: list[float] = field(default_factory=list)
    gains: list[float] = field(default_factory=list)


@dataclass
class Result:
    policy: str
    gpus: int
    weighted_elo: float
    gpu_hours: float
    worst_wait_h: float
    preemptions: int
    lost_gpu_hours: float
    trainings: int
    waits: dict[str, float]  # the longest wait of each config
    wait_log: list[tuple[float, float, str]]  # (from hour, hours waited, config)

    def worst_wait_from(self, hour: float) -> float:
        """The longest wait that began at or after `hour` (past a cold start, say)."""
        return max((h for since, h, _ in self.wait_log if since >= hour), default=0.0)

    @property
    def per_gpu_hour(self) -> float:
        return self.weighted_elo / self.gpu_hours


class Simulation:
    """One run: one cluster, one policy, one seed, on a simulated clock in hours."""

    def __init__(self, specs: Sequence[Spec], gpus: int, policy: Policy, days: float, seed: int,
                 tick_h: float = 1.0) -> None:
        self.specs = list(specs)
        self.gpus = gpus
        self.policy = policy
        self.horizon = days * 24.0
        self.tick_h = tick_h
        self.rng = random.Random(seed * 7919 + 1)  # the same exports and noise for every policy
        self.noise = random.Random(seed * 104729 + 3)
        self.state = [ConfigState() for _ in self.specs]
        self.slots: list[Job | None] = [None] * gpus
        self.events: list[tuple[float, int, str, int, int]] = []
        self.seq = 0
        self.rr_next = 0
        self.preemptions = 0
        self.lost = 0.0
        self.trainings = 0
        self.waits = {s.key: 0.0 for s in self.specs}
        self.wait_log: list[tuple[float, float, str]] = []  # (from, hours, config) of every wait
        self.preempting = policy.name == "proposed" and policy.preemption.enabled
        for i, st in enumerate(self.state):
            st.points.append((T0, 0.0))  # the first model's evaluation
            self._push(self.rng.uniform(0, self.specs[i].export_every_h), "export", i)
        if self.preempting:
            self._push(tick_h, "tick", 0)

    # -- the clock ----------------------------------------------------------------------------------
    def _push(self, at: float, kind: str, a: int, b: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, a, b))

    def run(self) -> Result:
        while self.events and self.events[0][0] <= self.horizon:
            now, _, kind, a, b = heapq.heappop(self.events)
            if kind == "export":
                self._export(now, a)
            elif kind == "end":
                self._end(now, a, b)
            elif kind == "tick":
                self._dispatch(now)
                self._preempt(now)
                self._push(now + self.tick_h, "tick", 0)
                continue
            elif kind == "starving" and self.state[a].wait_seq == b and self.state[a].waiting_since is not None:
                self._preempt(now)
            elif kind == "preemptible" and (job := self.slots[a]) is not None and job.token == b:
                self._preempt(now)
            self._dispatch(now)
        for i, st in enumerate(self.state):
            if st.waiting_since is not None:
                self._waited(i, st.waiting_since, self.horizon)
        weighted = sum(s.weight * st.elo for s, st in zip(self.specs, self.state))
        return Result(self.policy.name, self.gpus, weighted, self.gpus * self.horizon, max(self.waits.values()),
                      self.preemptions, self.lost, self.trainings, dict(self.waits), self.wait_log)

    def _waited(self, i: int, since: float, until: float) -> None:
        key = self.specs[i].key
        if self.specs[i].weight > 0:
            self.waits[key] = max(self.waits[key], until - since)
            self.wait_log.append((since, until - since, key))

    # -- what happens -------------------------------------------------------------------------------
    def _export(self, now: float, i: int) -> None:
        spec, st = self.specs[i], self.state[i]
        every = spec.export_every_h * self.rng.uniform(0.5, 1.5)
        st.new_samples += int(spec.samples_per_h * spec.export_every_h * self.rng.uniform(0.7, 1.3))
        st.exported_at = now
        st.first_seen_at = st.first_seen_at if st.first_seen_at is not None else now
        if st.job is None and st.waiting_since is None:
            self._wait_from(now, i)  # proposed: record_exports.lua sets it (HSETNX) when no job is active
        self._push(now + every, "export", i)

    def _start(self, now: float, i: int, value: float, starving: bool) -> None:
        st = self.state[i]
        slot = self.slots.index(None)
        job = st.job or Job(i, st.new_samples)
        job.overhead_h = RESUME_OVERHEAD_H if job.preemptions else 0.0
        job.slot, job.attempt_start, job.value, job.starving = slot, now, value, starving
        job.preempt_requested_at, job.token = None, job.token + 1
        st.job, self.slots[slot] = job, job
        if st.waiting_since is not None:
            self._waited(i, st.waiting_since, now)
            st.waiting_since = None
        end = now + job.overhead_h + (self.specs[i].gpu_hours - job.done_h)
        self._push(end, "end", slot, job.token)
        if self.preempting:  # when it may be preempted
            self._push(now + self.policy.preemption.min_run_minutes / 60.0, "preemptible", slot, job.token)

    def _end(self, now: float, slot: int, token: int) -> None:
        job = self.slots[slot]
        if job is None or job.token != token:
            return  # this attempt yielded earlier
        spec, st = self.specs[job.config], self.state[job.config]
        self.slots[slot] = None
        job.spent_h += now - job.attempt_start
        if job.done_h + (now - job.attempt_start - job.overhead_h) < spec.gpu_hours - 1e-9:  # a yield
            job.done_h += max(0.0, now - job.attempt_start - job.overhead_h)
            job.slot, job.preemptions = None, job.preemptions + 1
            self._wait_from(now, job.config)
            self.preemptions += 1
            self.lost += RESUME_OVERHEAD_H
            return
        room = max(0.0, 1.0 - st.elo / spec.elo_room)
        expected = spec.gain * room ** 1.5 * (1.0 - math.exp(-job.covered / spec.data_half))
        st.elo += expected + self.noise.gauss(0.0, 0.25 * spec.gain * room + 3.0)
        measured = st.elo + self.noise.gauss(0.0, EVAL_NOISE_ELO)
        st.points = [*st.points, (T0 + now * HOUR, measured)][-self.policy.scheduler.elo_window_points:]
        st.gains.append(measured - st.last_measured)
        st.last_measured = measured
        st.durations.append(job.spent_h)
        st.new_samples = max(0, st.new_samples - job.covered)
        st.last_trained_at = now
        st.job = None
        st.waiting_since = None
        if st.new_samples > 0:
            self._wait_from(now, job.config)
        self.trainings += 1

    def _wait_from(self, now: float, i: int) -> None:
        """Config i waits for a GPU from now: wake the preemption check when it starts starving."""
        st = self.state[i]
        st.waiting_since, st.wait_seq = now, st.wait_seq + 1
        if self.preempting:
            self._push(now + self.policy.preemption.starve_after_hours + CLOCK_EPSILON_H, "starving", i, st.wait_seq)

    # -- the policies ---------------------------------------------------------------------------------
    def _eligible(self, i: int) -> bool:
        st = self.state[i]
        return (st.job is None or st.job.slot is None) and st.new_samples > 0 and self.specs[i].weight > 0

    def _ranked(self, now: float) -> list[Candidate]:
        """Eligible configs, best first, as the policy scores them."""
        name = self.policy.name
        eligible = [i for i in range(len(self.specs)) if self._eligible(i)]
        if name == "round_robin":
            n = len(self.specs)
            order = sorted(eligible, key=lambda i: (i - self.rr_next) % n)
            return [Candidate(self.specs[i].key, float(-k)) for k, i in enumerate(order)]
        if name == "oldest_first":
            def since(i: int) -> float:
                st = self.state[i]
                return st.last_trained_at if st.last_trained_at is not None else (st.first_seen_at or 0.0)
            return [Candidate(self.specs[i].key, -since(i)) for i in sorted(eligible, key=since)]
        if name == "most_new_data":
            order = sorted(eligible, key=lambda i: -self.state[i].new_samples)
            return [Candidate(self.specs[i].key, float(self.state[i].new_samples)) for i in order]
        return self._scored(now, eligible)

    def _scored(self, now: float, eligible: list[int]) -> list[Candidate]:
        """The real score, from what the config hash and lists hold (`TrainingScheduler.load_inputs`)."""
        current = self.policy.name == "current"
        weights = replace(self.policy.scheduler.weights, value_per_gpu_hour=0.0 if current else self.policy.cost_weight)
        settings = replace(self.policy.scheduler, weights=weights, cost=self.policy.costs)
        starve_after = math.inf if current else self.policy.preemption.starve_after_hours
        out = []
        for i in eligible:
            spec, st = self.specs[i], self.state[i]
            inputs = ConfigInputs(spec.key, spec.weight, st.new_samples, _unix(st.exported_at),
                                  _unix(st.first_seen_at), _unix(st.last_trained_at), elo_points=tuple(st.points),
                                  waiting_since=_unix(st.waiting_since), recent_gpu_hours=tuple(st.durations),
                                  elo_gains=tuple(st.gains))
            p = compute_priority(inputs, settings, T0 + now * HOUR, starve_after_hours=starve_after)
            if not p.eligible:
                continue
            if current and p.factors["staleness"] >= 1.0:  # the old rule: starving once staleness saturates
                out.append(Candidate(spec.key, STARVING_BASE + p.hours_since_training, True, p.hours_since_training))
            else:
                out.append(Candidate(spec.key, p.score, p.starving, p.hours_waiting))
        return sorted(out, key=lambda c: (c.score, c.config_key), reverse=True)

    def _dispatch(self, now: float) -> None:
        free = self.slots.count(None)
        if not free:
            return
        index = {s.key: i for i, s in enumerate(self.specs)}
        for c in self._ranked(now)[:free]:
            i = index[c.config_key]
            self._start(now, i, c.score, c.starving)
            self.rr_next = (i + 1) % len(self.specs)

    def _preempt(self, now: float) -> None:
        free = self.slots.count(None)
        min_run_h = self.policy.preemption.min_run_minutes / 60.0
        if not any(j is not None and j.preempt_requested_at is None and now - j.attempt_start >= min_run_h - 1e-9
                   for j in self.slots):
            return  # nothing may be preempted now
        running = [RunningJob(f"j{j.config}", self.specs[j.config].key, str(j.slot), T0 + j.attempt_start * HOUR,
                              j.value, j.starving, j.preemptions,
                              None if j.preempt_requested_at is None else T0 + j.preempt_requested_at * HOUR)
                   for j in self.slots if j is not None]
        decision = decide(running, self._ranked(now), free, self.policy.preemption, T0 + now * HOUR)
        for p in decision.preempt:
            job = self.slots[int(p.slot)]
            assert job is not None
            job.preempt_requested_at = now
            spec = self.specs[job.config]
            done_now = job.done_h + max(0.0, now - job.attempt_start - job.overhead_h)
            boundary = min(spec.gpu_hours, math.ceil(done_now / spec.checkpoint_h - 1e-9) * spec.checkpoint_h)
            yield_at = max(now, job.attempt_start + job.overhead_h) + (boundary - done_now)
            if boundary < spec.gpu_hours - 1e-9:  # else it ends at that boundary anyway
                job.token += 1  # the attempt's own end event is ignored from now on
                self._push(yield_at, "end", int(p.slot), job.token)


def _unix(hours: float | None) -> float | None:
    return None if hours is None else T0 + hours * HOUR


def simulate(specs: Sequence[Spec], gpus: int, policy: Policy, days: float, seed: int,
             tick_h: float = 1.0) -> Result:
    return Simulation(specs, gpus, policy, days, seed, tick_h).run()


# -- the table ----------------------------------------------------------------------------------------
@dataclass
class Row:
    label: str
    gpus: int
    ratios: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    preemptions: list[int] = field(default_factory=list)
    lost: list[float] = field(default_factory=list)

    def cells(self) -> list[str]:
        return [str(self.gpus), self.label, f"{statistics.mean(self.ratios):.3f}", f"{min(self.ratios):.3f}",
                f"{statistics.median(self.waits):.1f}", f"{max(self.waits):.1f}",
                f"{statistics.mean(self.preemptions):.1f}", f"{statistics.mean(self.lost):.1f}"]


HEADER = ["GPUs", "policy", "weighted Elo/GPU-h vs round-robin (mean)", "(worst seed)", "worst wait h (median)",
          "(max)", "preemptions/run", "GPU-h lost/run"]


def compare(policies: Sequence[tuple[str, Policy]], gpu_counts: Sequence[int], seeds: int, days: float,
            tick_h: float = 1.0, progress: Callable[[str], None] | None = None) -> list[Row]:
    rows = {(g, label): Row(label, g) for g in gpu_counts for label, _ in policies}
    for g in gpu_counts:
        for seed in range(seeds):
            specs = cluster(random.Random(seed))
            base = simulate(specs, g, Policy("round_robin"), days, seed, tick_h)
            for label, policy in policies:
                r = base if policy.name == "round_robin" else simulate(specs, g, policy, days, seed, tick_h)
                row = rows[(g, label)]
                row.ratios.append(r.per_gpu_hour / base.per_gpu_hour)
                row.waits.append(r.worst_wait_h)
                row.preemptions.append(r.preemptions)
                row.lost.append(r.lost_gpu_hours)
        if progress:
            progress(f"{g} GPUs done")
    return list(rows.values())


def markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def proposed_policy(args: argparse.Namespace, **overrides: float | bool) -> Policy:
    knobs = {"cost_weight": args.cost_weight, "enabled": not args.no_preemption, "margin": args.margin,
             "min_run_minutes": args.min_run_minutes, "max_wait_hours": args.max_wait_hours,
             "max_preemptions_per_job": args.max_preemptions, **overrides}
    pre = PreemptionSettings(enabled=bool(knobs["enabled"]), margin=float(knobs["margin"]),
                             min_run_minutes=float(knobs["min_run_minutes"]),
                             max_wait_hours=float(knobs["max_wait_hours"]),
                             max_preemptions_per_job=int(knobs["max_preemptions_per_job"]))
    return Policy("proposed", cost_weight=float(knobs["cost_weight"]), preemption=pre)


def main(argv: Sequence[str] | None = None) -> int:
    d = PreemptionSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--gpus", default="2,3,4,8", help="comma-separated GPU counts")
    parser.add_argument("--tick-hours", type=float, default=1.0,
                        help="how often value preemption is considered (the wait bound wakes on time)")
    parser.add_argument("--cost-weight", type=float, default=DEFAULT_COST_WEIGHT)
    parser.add_argument("--no-preemption", action="store_true")
    parser.add_argument("--margin", type=float, default=d.margin)
    parser.add_argument("--min-run-minutes", type=float, default=d.min_run_minutes)
    parser.add_argument("--max-wait-hours", type=float, default=d.max_wait_hours)
    parser.add_argument("--max-preemptions", type=int, default=d.max_preemptions_per_job)
    parser.add_argument("--sweep", help="KNOB=V1,V2,... : the proposed policy once per value (knobs: cost_weight, "
                        "enabled, margin, min_run_minutes, max_wait_hours, max_preemptions_per_job)")
    args = parser.parse_args(argv)
    gpu_counts = [int(g) for g in args.gpus.split(",")]
    if args.sweep:
        knob, values = args.sweep.split("=", 1)
        policies = [(f"proposed {knob}={v}", proposed_policy(args, **{knob: _value(v)})) for v in values.split(",")]
    else:
        policies = [(name, Policy(name)) for name in BASELINES] + [("proposed", proposed_policy(args))]
    began = time.monotonic()
    rows = compare(policies, gpu_counts, args.seeds, args.days, args.tick_hours,
                   progress=lambda line: print(line, file=sys.stderr, flush=True))
    p = proposed_policy(args).preemption
    print(f"{args.seeds} seeds x {args.days:g} days, 12 configs; proposed: cost weight {args.cost_weight:g}, "
          f"preemption {'on' if p.enabled else 'off'}, margin {p.margin:g}, min run {p.min_run_minutes:g} min, "
          f"max wait {p.max_wait_hours:g} h, max preemptions/job {p.max_preemptions_per_job} "
          f"({time.monotonic() - began:.0f} s)\n")
    print(markdown(rows))
    return 0


def _value(text: str) -> float | bool:
    return text.lower() == "true" if text.lower() in ("true", "false") else float(text)


if __name__ == "__main__":
    sys.exit(main())
