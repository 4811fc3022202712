"""The `ringrift-train priorities` table: the ranking with every factor's contribution and input,
any pending preemption (the job yielding its GPU, and the config it yields to), and why a config
whose requirement refuses some GPUs waits ("no free GPU with >= 40 GB": `scheduling/placement.py`
`notes`)."""

from __future__ import annotations

from rich.table import Table

from coordinator.core.settings import SchedulerSettings
from coordinator.ops.status_view import since_trained, wide_console
from coordinator.scheduling.scheduler import FACTORS, STARVING_BASE, Priority


def priorities_table(ranked: list[Priority], s: SchedulerSettings,
                     trained: dict[str, float | None] | None = None,
                     placement: dict[str, str] | None = None) -> Table:
    """`trained`: config key -> its last training's time (None: never; `status.last_trained`);
    without it the hours are shown as the scheduler counts them. `placement`: config key -> why it
    waits for a GPU (`placement.notes`), among its notes."""
    placement = placement or {}
    w = s.weights
    weights = ", ".join(f"{name} {getattr(w, name):g}" for name in FACTORS)
    table = Table(title="training priorities (highest first)",
                  caption=f"contribution = weight x factor (0..1); weights: {weights}; starving (waited "
                          f"preemption.max_wait_hours - min run) = {STARVING_BASE:g} + hours waited; "
                          "value_per_gpu_hour: Elo per training / GPU-hours of the next one")
    for column in ("#", "config", "score", *FACTORS, "h waiting", "h since trained", "h since export",
                   "new samples", "Elo/h", "GPU-h next", "notes"):
        table.add_column(column, justify="right" if column not in ("config", "notes") else "left")
    for rank, p in enumerate(ranked, 1):
        waits = [placement[p.config_key]] if placement.get(p.config_key) else []
        notes = "; ".join(p.why + p.flags + ([p.preemption] if p.preemption else []) + waits) or "eligible"
        style = None if p.eligible else "dim"
        since_export = "-" if p.hours_since_export is None else f"{p.hours_since_export:.1f}"
        table.add_row(
            str(rank) if p.eligible else "-", p.config_key, f"{p.score:.3f}",
            *(f"{p.contributions[f]:.3f}" for f in FACTORS), f"{p.hours_waiting:.1f}",
            since_trained(p.hours_since_training, trained.get(p.config_key, 0.0) if trained is not None else 0.0),
            since_export, f"{p.new_samples:,}", f"{p.elo_per_hour:+.1f}",
            f"{p.expected_gpu_hours:.2f}" if p.expected_gpu_hours else "-", notes,
            style=style,
        )
    return table


def print_priorities(ranked: list[Priority], s: SchedulerSettings,
                     trained: dict[str, float | None] | None = None,
                     placement: dict[str, str] | None = None) -> None:
    wide_console().print(priorities_table(ranked, s, trained, placement))
