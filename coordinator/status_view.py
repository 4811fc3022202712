"""Rendering `ringrift-train status` with rich: one screen, readable at 12 configs and at 200."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

BAR_WIDTH = 20


def render(status: dict[str, Any], max_configs: int = 15) -> Group:
    return Group(_header(status), _running(status), _configs(status, max_configs), _nodes(status),
                 _failures(status))


def _header(status: dict[str, Any]) -> Text:
    q = status["queue"]
    return Text(f"ringrift training  {time.strftime('%H:%M:%S', time.localtime(status['at']))}  |  "
                f"queued on RQ: {q['depth']}  waiting (deferred/retrying): {q['delayed']}  "
                f"queued or running: {q['active']}  |  workers: {len(status['workers'])}", style="bold")


def _running(status: dict[str, Any]) -> Table:
    table = Table(title="running", title_justify="left", expand=True)
    for column in ("config", "job", "node", "try", "progress", "loss", "elapsed", "ETA"):
        table.add_column(column, no_wrap=True)
    for r in status["running"]:
        done = int(BAR_WIDTH * r["epoch"] / max(r["total_epochs"], 1))
        bar = f"[green]{'█' * done}[/green]{'░' * (BAR_WIDTH - done)} {r['epoch']}/{r['total_epochs']}"
        table.add_row(r["config_key"], r["job_id"].split("-", 1)[-1], r["node"], str(r["attempt"]), bar,
                      r["train_loss"] or "-", _duration(r["elapsed_s"]), _duration(r["eta_s"]))
    if not status["running"]:
        table.add_row("-", "nothing is training", "", "", "", "", "", "")
    return table


def _configs(status: dict[str, Any], limit: int) -> Table:
    rows = status["configs"]
    eligible = sum(1 for c in rows if c["eligible"])
    shown = rows[:limit]
    table = Table(title=f"configs by priority ({len(rows)}: {eligible} eligible)", title_justify="left",
                  caption=f"... {len(rows) - limit} more: `ringrift-train priorities`" if len(rows) > limit else None,
                  expand=True)
    for column in ("#", "config", "score", "h since trained", "new samples", "Elo/h", "breaker", "why not"):
        table.add_column(column, no_wrap=column != "why not")
    for c in shown:
        style = None if c["eligible"] else "dim"
        breaker = c["breaker"] if c["breaker"] == "closed" else f"[red]{c['breaker']}[/red]"
        table.add_row(str(c["rank"] or "-"), c["config_key"], f"{c['score']:.3f}", f"{c['hours_since_training']:.1f}",
                      f"{c['new_samples']:,}", f"{c['elo_per_hour']:+.1f}", breaker,
                      "; ".join(c["why"] + c["flags"]), style=style)
    return table


def _nodes(status: dict[str, Any]) -> Table:
    table = Table(title="nodes and workers", title_justify="left", expand=True)
    for column in ("node", "status", "slots", "worker", "state", "heartbeat"):
        table.add_column(column, no_wrap=True)
    workers = status["workers"]
    for i in range(max(len(status["nodes"]), len(workers))):
        n = status["nodes"][i] if i < len(status["nodes"]) else None
        w = workers[i] if i < len(workers) else None
        table.add_row(
            n["node"] if n else "", (n["status"] if n["status"] == "healthy" else f"[red]{n['status']}[/red]")
            if n else "", f"{n['in_use']}/{n['gpus']}" if n else "",
            w["name"] if w else "", w["state"] if w else "",
            f"{w['seconds_since_heartbeat']:.0f} s ago" if w and w["seconds_since_heartbeat"] is not None else "")
    return table


def _failures(status: dict[str, Any]) -> Table:
    table = Table(title="recent failures", title_justify="left", expand=True)
    for column in ("config", "job", "reason", "retry", "error"):
        table.add_column(column, no_wrap=column != "error")
    for f in status["failures"]:
        table.add_row(f["config_key"], f["job_id"].split("-", 1)[-1], f["reason"], f["will_retry"], f["error"])
    return table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
