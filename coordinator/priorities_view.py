"""The `ringrift-train priorities` table: the ranking with every factor's contribution and input."""

from __future__ import annotations

from rich.table import Table

from coordinator.config import SchedulerSettings
from coordinator.scheduler import FACTORS, STARVING_BASE, Priority
from coordinator.status_view import wide_console


def priorities_table(ranked: list[Priority], s: SchedulerSettings) -> Table:
    w = s.weights
    table = Table(title="training priorities (highest first)",
                  caption=f"contribution = weight x factor (0..1); weights: curriculum {w.curriculum}, "
                          f"staleness {w.staleness}, freshness {w.freshness}, elo_velocity {w.elo_velocity}; "
                          f"starving (> {s.staleness_saturation_hours:g} h) = {STARVING_BASE:g} + hours waited")
    for column in ("#", "config", "score", *FACTORS, "h since trained", "h since export", "new samples",
                   "Elo/h", "notes"):
        table.add_column(column, justify="right" if column not in ("config", "notes") else "left")
    for rank, p in enumerate(ranked, 1):
        notes = "; ".join(p.why + p.flags) or "eligible"
        style = None if p.eligible else "dim"
        since_export = "-" if p.hours_since_export is None else f"{p.hours_since_export:.1f}"
        table.add_row(
            str(rank) if p.eligible else "-", p.config_key, f"{p.score:.3f}",
            *(f"{p.contributions[f]:.3f}" for f in FACTORS),
            f"{p.hours_since_training:.1f}", since_export, f"{p.new_samples:,}", f"{p.elo_per_hour:+.1f}", notes,
            style=style,
        )
    return table


def print_priorities(ranked: list[Priority], s: SchedulerSettings) -> None:
    wide_console().print(priorities_table(ranked, s))
