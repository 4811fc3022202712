"""`ringrift-train submit --wait`: follow one job to its end with a progress bar."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from coordinator.core.job_states import COMPLETE, FINAL_STATES
from coordinator.stores.jobs import JobStore

POLL_S = 0.5


def follow_job(store: JobStore, job_id: str, timeout_s: float | None = None) -> int:
    """0 when the job completes, 1 when it ends any other way (failed, cancelled, stale) or times out."""
    console = Console(stderr=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        record = store.get(job_id)
        task = progress.add_task(record["config_key"], total=int(record.get("epochs", 1)), detail="queued")
        while record["state"] not in FINAL_STATES:
            if deadline is not None and time.monotonic() > deadline:
                console.print(f"{job_id}: still {record['state']} after {timeout_s} s", soft_wrap=True)
                return 1
            time.sleep(POLL_S)
            record = store.get(job_id)
            detail = f"{record['state']} try {record.get('attempts', '0')} loss {record.get('train_loss', '-')}"
            progress.update(task, completed=int(record.get("epoch", 0) or 0), detail=detail)
    if record["state"] == COMPLETE:
        # soft_wrap: the last line whole (on a pipe rich would wrap it at 80 columns, inside the model path)
        console.print(f"{job_id}: complete, final loss {record.get('final_loss')}, model {record.get('model_path')}",
                      soft_wrap=True)
        return 0
    console.print(f"{job_id}: {record['state']} ({record.get('reason', '')}) {record.get('error', '')}",
                  soft_wrap=True)
    return 1
