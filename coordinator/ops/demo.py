"""`ringrift-train demo`: the whole loop on one machine, from exports to trained checkpoints.

Starts a private Redis (unless given one), the orchestrator and two real `rq worker training`
processes; writes synthetic NPZ exports for three configs and XADDs their events with plain
fields, as an exporter would; then a second export of one config, whose training warm-starts
from the first round's model (the tables' "starts from" column); shows live progress, then a
summary table; stops all it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from pathlib import Path

import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from coordinator.bus.events import NPZ_EXPORT_COMPLETE, publish
from coordinator.core.job_states import FINAL_STATES
from coordinator.core.keys import Keys
from coordinator.core.settings import Settings, redact_url
from coordinator.ops.local_redis import LocalRedis
from coordinator.ops.priorities_view import priorities_table
from coordinator.ops.status_view import wide_console
from coordinator.ops.workers_pool import start_worker, stop_workers
from coordinator.service.orchestrator import TrainingOrchestrator
from coordinator.stores.jobs import JobStore

# (board type, players, samples): three configs, two boards, small enough for two CPU cores.
DEMO_CONFIGS = (("hex8", 2, 1536), ("square8", 2, 1536), ("hex8", 4, 1024))
# A second export of this config after the first round: its job starts from the first's model.
SECOND_ROUND = DEMO_CONFIGS[:1]
REFRESH_S = 0.25


async def run_demo(settings: Settings, output: Path, redis_url: str | None, epochs: int, timeout_s: float,
                   dashboard_port: int | None = None) -> int:
    """The demo; with `dashboard_port`, the web dashboard serves on 127.0.0.1 during it and after
    it (Redis kept up) until Ctrl-C."""
    console = wide_console()
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    settings = replace(settings, hosts={f"demo-node-{i}": 1 for i in (1, 2)}, training=replace(
        settings.training, default_epochs=epochs, batch_size=128, models_root=str(output / "models"),
        data_roots=(str(output / "data"),)))
    with contextlib.ExitStack() as stack:
        if redis_url is None:
            server = stack.enter_context(LocalRedis())
            redis_url = server.url
            console.print(f"[dim]embedded redis-server on {redact_url(redis_url)}[/dim]")
        settings = replace(settings, redis=replace(settings.redis, url=redis_url))
        if dashboard_port:
            from coordinator.ops.dashboard.server import serve_in_thread

            serve_in_thread(settings, dashboard_port)
            console.print(f"[dim]dashboard on http://localhost:{dashboard_port}/[/dim]")
        conn = redis.Redis.from_url(redis_url)
        orchestrator = TrainingOrchestrator(settings, conn, consumer_name="demo")
        await orchestrator.start()
        workers = []
        try:
            for i in (1, 2):
                workers.append(start_worker(redis_url, f"demo-worker-{i}", f"demo-node-{i}",
                                            {"OMP_NUM_THREADS": "1"}, log_path=output / f"worker-{i}.log"))
            console.print(f"[dim]2 x `rq worker training` started (logs in {output})[/dim]")
            jobs: list[dict[str, str]] = []
            for round_no, configs in enumerate((DEMO_CONFIGS, SECOND_ROUND)):
                job_ids = await asyncio.to_thread(_export_all, conn, orchestrator.keys, output / "data", configs,
                                                  round_no, settings.events.stream_maxlen)
                jobs += await _follow(orchestrator.jobs, job_ids, console, timeout_s)
            ranked = await asyncio.to_thread(orchestrator.scheduler.ranked)
        finally:
            await orchestrator.stop()
            await asyncio.to_thread(stop_workers, workers)
        failed = _report(console, jobs, ranked, settings)
        if dashboard_port:
            console.print(f"dashboard still on http://localhost:{dashboard_port}/ - Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
                await asyncio.Event().wait()
    return 1 if failed else 0


def _report(console: Console, jobs: list[dict[str, str]], ranked: list, settings: Settings) -> bool:
    """The summary and the ranking; True when a job did not complete (each shown with its error)."""
    console.print()
    console.print(_summary(jobs))
    console.print()
    console.print(priorities_table(ranked, settings.scheduler))
    failed = [j for j in jobs if j.get("state") != "complete"]
    for job in failed:
        console.print(f"[red]{job.get('config_key')}: {job.get('state')} {job.get('error', '')}[/red]")
        console.print(job.get("stderr_tail", ""))
    return bool(failed)


def _export_all(conn: redis.Redis, keys: Keys, data_dir: Path, configs: tuple[tuple[str, int, int], ...],
                round_no: int, stream_maxlen: int) -> list[str]:
    """Write each config's NPZ, XADD its export event, and wait for the orchestrator's job."""
    from coordinator.trainer.npz_data import write_synthetic_npz  # numpy-only; imported late to keep the CLI light

    config_keys = []
    for seed, (board, players, samples) in enumerate(configs, start=10 * round_no):
        path = write_synthetic_npz(data_dir / f"{board}_{players}p-{round_no + 1}.npz", board, players, samples,
                                   seed=seed)
        publish(conn, keys, NPZ_EXPORT_COMPLETE,
                {"board_type": board, "num_players": players, "npz_path": str(path), "samples": samples},
                maxlen=stream_maxlen)
        config_keys.append(f"{board}_{players}p")
    job_ids: list[str] = []
    deadline = time.monotonic() + 30
    while len(job_ids) < len(config_keys) and time.monotonic() < deadline:
        job_ids = [j.decode() for j in conn.hmget(keys.active, config_keys) if j]
        time.sleep(0.05)
    return job_ids


async def _follow(store: JobStore, job_ids: list[str], console: Console, timeout_s: float) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout_s
    console.print()  # a blank line between a round's table and what came before it
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            jobs = [await asyncio.to_thread(store.get, job_id) for job_id in job_ids]
            live.update(_progress_table(jobs))
            if all(j["state"] in FINAL_STATES for j in jobs) or time.monotonic() > deadline:
                break
            await asyncio.sleep(REFRESH_S)
    if not console.is_terminal:
        console.print()  # on a pipe Live leaves the table's last line (its border) unended
    return jobs


def _progress_table(jobs: list[dict[str, str]]) -> Table:
    table = Table(title="training", expand=False)
    for column in ("config", "state", "node", "epoch", "train loss", "val loss", "starts from"):
        table.add_column(column)
    for job in jobs:
        bar = _bar(int(job.get("epoch", 0)), int(job["epochs"]))
        table.add_row(job["config_key"], job["state"], job.get("node", "-"), bar,
                      job.get("train_loss", "-"), job.get("val_loss", "-"), _parent(job))
    return table


def _bar(done: int, total: int, width: int = 10) -> str:
    filled = int(width * done / max(total, 1))
    return f"{'#' * filled}{'.' * (width - filled)} {done}/{total}"


def _summary(jobs: list[dict[str, str]]) -> Table:
    table = Table(title="summary", caption="checkpoints: " + ", ".join(_short(j.get("model_path")) for j in jobs))
    for column in ("config", "job", "node", "state", "epochs", "first loss", "final loss", "duration s",
                   "starts from"):
        table.add_column(column)
    for job in jobs:
        table.add_row(job["config_key"], job["job_id"], job.get("node", "-"), job["state"],
                      job.get("epochs_completed", "-"), job.get("first_loss", "-"), job.get("final_loss", "-"),
                      job.get("duration_s", "-"), _parent(job))
    return table


def _parent(job: dict[str, str]) -> str:
    """The model a job warm-starts from, by the job that wrote it; "scratch" without one."""
    parent = job.get("parent_model")
    if not parent:
        return "scratch" if job.get("state") not in ("queued", None) else "-"
    return "model of " + Path(parent).parent.parent.name


def _short(path: str | None) -> str:
    if not path:
        return "-"
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(Path.cwd()))
    return path
