"""The cost-aware factor: what a config's next training costs in GPU-hours and what it returns in Elo.

Pure functions (no Redis, no clock), like `compute_priority`: the scheduler, tests and the scheduling
simulator (`bench/scheduling_sim.py`) call them with what a coordinator records.

- **Expected GPU-hours** of the next training: the mean of the config's last `duration_window`
  trainings (GPU-hours each: wall hours x GPUs held); before any history, its board's default.
- **Elo gained per training**: what each `EVALUATION_COMPLETED` shows, by the first rule that applies
  (`attributed_gain` in `coordinator/stores/configs.py`, which records it as the evaluation arrives):
  1. a published model evaluated before: nothing (each model's gain once);
  2. its parent (model lineage) was evaluated: its Elo minus the parent's (one training);
  3. the config was evaluated before: the Elo change since, divided by the trainings of the config
     completed in between (at least 1 when another model is named; none, and the same or no model
     named: a re-evaluation, no gain). RingRift re-evaluates one path (`canonical_<config>.pth`)
     whose contents each promotion replaces, so the path alone cannot say whether a training
     happened; the coordinator's own count of completed trainings can;
  4. the config's first evaluation, carrying RingRift's `estimated_elo`/`best_elo`: that Elo minus
     `untrained_elo`, divided by the trainings the model descends from (its lineage back to a
     training from scratch when complete, else every training of the config completed so far;
     none: no gain). In RingRift (`app/training/game_gauntlet.py`, `evaluation_daemon.py`)
     `estimated_elo` is the model's own Elo estimated from its win rates against baselines of fixed
     rating (random 400, heuristic 1200, ...), `best_elo` the best harness's (the same number for a
     single-harness gauntlet), and `elo` is set to `best_elo`: neither is a previous or best-so-far
     Elo of the config, so no gain is in the event itself. What makes the first evaluation usable is
     the fixed scale: an untrained network plays like the random baseline, so the distance from
     `untrained_elo` (400) is what the config's trainings bought. This counts every training the
     coordinator saw; a config trained elsewhere before has that work credited too (an optimistic
     first estimate, smoothed by the prior below and outweighed by later rule-3 gains). An Elo on
     another scale (a tournament's `elo` alone) is never measured from the anchor: rule 4 needs
     `estimated_elo`/`best_elo`.
  The last `gain_window` gains are smoothed towards a prior of `prior_elo_per_gpu_hour` x expected
  GPU-hours with the weight of `prior_trainings` trainings. The prior is a rate, so every config
  without history starts equal per GPU-hour, whatever its board.
- **Factor** (0..1): v / (v + `value_scale`) for v = smoothed gain / expected GPU-hours in Elo per
  GPU-hour (0.5 at `value_scale`, towards 1 above it); 0 when the smoothed gain is not positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.core.settings import BoardGpuHours, CostSettings

__all__ = ["BoardGpuHours", "CostEstimate", "CostSettings", "estimate"]


@dataclass(frozen=True)
class CostEstimate:
    """One config's factor and what it came from (what `priorities` explains)."""

    expected_gpu_hours: float
    elo_per_training: float  # smoothed
    value_per_gpu_hour: float  # Elo per GPU-hour
    factor: float  # 0..1
    trainings_seen: int  # gains that entered the smoothing

    def why(self) -> str:
        return (f"{self.elo_per_training:+.1f} Elo per training (smoothed over {self.trainings_seen}) / "
                f"{self.expected_gpu_hours:.2f} GPU-h = {self.value_per_gpu_hour:.1f} Elo per GPU-h")


def expected_gpu_hours(recent_gpu_hours: Sequence[float], board_type: str, s: CostSettings) -> float:
    """The mean of the last `duration_window` trainings' GPU-hours, or the board's default."""
    recent = [h for h in recent_gpu_hours if h > 0][-s.duration_window:]
    if not recent:
        try:
            return float(getattr(s.board_default_gpu_hours, board_type))
        except AttributeError:
            raise ValueError(f"no default GPU-hours for board {board_type!r}") from None
    return sum(recent) / len(recent)


def smoothed_elo_per_training(gains: Sequence[float], gpu_hours: float, s: CostSettings) -> float:
    """The last `gain_window` gains' mean, shrunk towards the prior rate x `gpu_hours`."""
    recent = list(gains)[-s.gain_window:]
    prior = s.prior_elo_per_gpu_hour * gpu_hours
    return (sum(recent) + s.prior_trainings * prior) / (len(recent) + s.prior_trainings)


def value_factor(value_per_gpu_hour: float, s: CostSettings) -> float:
    """v / (v + value_scale), 0 for v <= 0: monotonic, in 0..1, 0.5 at `value_scale`."""
    if value_per_gpu_hour <= 0:
        return 0.0
    return value_per_gpu_hour / (value_per_gpu_hour + s.value_scale)


def estimate(recent_gpu_hours: Sequence[float], elo_gains: Sequence[float], board_type: str,
             s: CostSettings) -> CostEstimate:
    """The config's cost factor from its recent durations (GPU-hours) and attributed Elo gains."""
    hours = expected_gpu_hours(recent_gpu_hours, board_type, s)
    gain = smoothed_elo_per_training(elo_gains, hours, s)
    value = gain / hours
    return CostEstimate(hours, gain, value, value_factor(value, s), min(len(elo_gains), s.gain_window))
