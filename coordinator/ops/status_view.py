"""Rendering `ringrift-train status` with rich: one screen, readable at 12 configs and at 200;
and the console every rich table of the CLI prints through (`wide_console`)."""

from __future__ import annotations

import time
from typing import IO, Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from coordinator.stores.breakers import CLOSED

BAR_WIDTH = 20
# Columns when the output is a pipe or a file: rich would use 80 and cut cells to `squ…`.
PIPE_WIDTH = 512


class PipeConsole(Console):
    """A rich Console that leaves a closed pipe to the CLI (`cli._until_pipe_closes`: exit 141, as
    after SIGPIPE, whatever printed last); rich alone would exit 1."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def wide_console(file: IO[str] | None = None) -> Console:
    """The terminal's width on a terminal; `PIPE_WIDTH` columns on a pipe or file (`| less`, logs),
    so a table keeps its full width there."""
    console = PipeConsole(file=file)
    return console if console.is_terminal else PipeConsole(file=file, width=PIPE_WIDTH)


def print_status(status: dict[str, Any], max_configs: int = 15, console: Console | None = None) -> None:
    """`status` once: tables fill a terminal; on a pipe or file each is only as wide as its cells."""
    console = console or wide_console()
    console.print(render(status, max_configs, fill=console.is_terminal))


def render(status: dict[str, Any], max_configs: int = 15, fill: bool = True) -> Group:
    """`fill`: tables as wide as the console (a terminal), else as wide as their cells."""
    return Group(_header(status), _running(status, fill), _configs(status, max_configs, fill), _nodes(status, fill),
                 _failures(status, fill))


def _header(status: dict[str, Any]) -> Text:
    q = status["queue"]
    return Text(f"ringrift training  {time.strftime('%H:%M:%S', time.localtime(status['at']))}  |  "
                f"queued on RQ: {q['depth']}  waiting (deferred/retrying): {q['delayed']}  "
                f"queued or running: {q['active']}  |  workers: {len(status['workers'])}", style="bold")


def _running(status: dict[str, Any], fill: bool) -> Table:
    table = Table(title="running", title_justify="left", expand=fill)
    for column in ("config", "job", "node", "try", "progress", "loss", "elapsed", "ETA", "yielding"):
        table.add_column(column, no_wrap=column != "yielding")
    for r in status["running"]:
        done = int(BAR_WIDTH * r["epoch"] / max(r["total_epochs"], 1))
        bar = f"[green]{'█' * done}[/green]{'░' * (BAR_WIDTH - done)} {r['epoch']}/{r['total_epochs']}"
        yielding = f"[yellow]to {r['preempt_for']}[/yellow]: {r.get('preempt_why') or ''}" if r.get("preempt_for") \
            else ""
        table.add_row(r["config_key"], r["job_id"], r["node"], str(r["attempt"]), bar,
                      r["train_loss"] or "-", duration(r["elapsed_s"]), duration(r["eta_s"]), yielding)
    if not status["running"]:
        table.add_row("-", "nothing is training", "", "", "", "", "", "", "")
    return table


def _configs(status: dict[str, Any], limit: int, fill: bool) -> Table:
    rows = status["configs"]
    eligible = sum(1 for c in rows if c["eligible"])
    shown = rows[:limit]
    table = Table(title=f"configs by priority ({len(rows)}: {eligible} eligible)", title_justify="left",
                  caption=f"... {len(rows) - limit} more: `ringrift-train priorities`" if len(rows) > limit else None,
                  expand=fill)
    for column in ("#", "config", "score", "h since trained", "new samples", "Elo/h", "breaker", "why not"):
        table.add_column(column, no_wrap=column != "why not")
    for c in shown:
        style = None if c["eligible"] else "dim"
        breaker = _breaker(c)
        table.add_row(str(c["rank"] or "-"), c["config_key"], f"{c['score']:.3f}",
                      since_trained(c["hours_since_training"], c.get("last_trained_at", 0.0)), f"{c['new_samples']:,}",
                      f"{c['elo_per_hour']:+.1f}", breaker,
                      "; ".join(c["why"] + c["flags"]), style=style)
    return table


def since_trained(hours: float, last_trained_at: float | None) -> str:
    """Hours since the config's last training; "never" when it has not trained (the scheduler
    then counts its hours from when it was first seen)."""
    return "never" if last_trained_at is None else f"{hours:.1f}"


def _nodes(status: dict[str, Any], fill: bool) -> Table:
    """One row per worker under the node it runs on; a node without workers gets one row."""
    table = Table(title="nodes and workers", title_justify="left", expand=fill)
    for column in ("node", "status", "breaker", "slots", "GPU", "worker", "slot", "worker's GPU", "state", "heartbeat"):
        table.add_column(column, no_wrap=True)
    workers = {w["name"]: w for w in status["workers"]}
    reserved = {r["node"]: r for r in status.get("reservations", [])}
    for n in status["nodes"]:
        health = n["status"] if n["status"] == "healthy" else f"[red]{n['status']}[/red]"
        if (r := reserved.get(n["node"])) is not None:
            health += (f" [yellow]reserved: {r['config_key']} ({r['gpus']} GPUs) from "
                       f"{time.strftime('%H:%M', time.localtime(r['promised_at']))}[/yellow]")
        node_cells = [n["node"], health if n["listed"] else f"{health} (not in hosts)", _breaker(n),
                      f"{n['in_use']}/{n['gpus']}", _node_gpu(n)]
        for w in [workers[name] for name in n["workers"]] or [None]:
            beat = w["seconds_since_heartbeat"] if w else None
            table.add_row(*node_cells, w["name"] if w else "", (w.get("gpu_slot") or "") if w else "",
                          (w.get("gpu") or "") if w else "", w["state"] if w else "",
                          "" if beat is None else f"{beat:.0f} s ago")
            node_cells = ["", "", "", "", ""]
    return table


def _node_gpu(node: dict[str, Any]) -> str:
    """A node's GPUs: "H100 80GB HBM3, 80 GB (nvml)"; "unknown" before any worker or declaration."""
    gpu = node.get("gpu") or "unknown"
    return f"{gpu} ({node['gpu_source']})" if node.get("gpu_source") else gpu


def _breaker(row: dict[str, Any]) -> str:
    """A config's or node's breaker cell: `closed`, or in red `open, trial in 8m20s`."""
    cell = breaker_cell(row["breaker"], row.get("breaker_trial_in_s"))
    return cell if row["breaker"] == "closed" else f"[red]{cell}[/red]"


def breaker_cell(state: str, trial_in_s: float | None) -> str:
    """`closed`; `open, trial in 8m20s` (the next attempt after that closes it on success);
    `half_open (trial due)`."""
    if state == CLOSED:
        return CLOSED
    if trial_in_s:
        return f"{state}, trial in {duration(trial_in_s)}"
    return f"{state} (trial due)"


def _failures(status: dict[str, Any], fill: bool) -> Table:
    table = Table(title="recent failures", title_justify="left", expand=fill)
    for column in ("config", "job", "reason", "retry", "error"):
        table.add_column(column, no_wrap=column != "error")
    for f in status["failures"]:
        table.add_row(f["config_key"], f["job_id"], f["reason"], f["will_retry"], f["error"])
    return table


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
