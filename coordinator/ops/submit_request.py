"""`ringrift-train submit`: what an explicit request does, said out loud.

A config has at most one queued-or-running job. When it has none, the request creates one and it
is queued at once. When it has one, no second job is made: the export is recorded on the config
(a queued job moves to this file; a running one is followed, when it ends, by a new job on the
newest data). Job parameters (--epochs, --batch-size, --learning-rate) belong to the job they
create: with a job already there they are refused before anything is recorded, rather than
silently dropped. The job id alone goes to stdout (scripts read it); what happened, to stderr.
"""

from __future__ import annotations

import argparse
import sys

from coordinator.core.boards import make_config_key
from coordinator.core.errors import EventError, JobError
from coordinator.core.job_states import QUEUED
from coordinator.core.text import optional_text
from coordinator.service.orchestrator import TrainingOrchestrator

PARAMETERS = ("epochs", "batch_size", "learning_rate")


def submit(orchestrator: TrainingOrchestrator, args: argparse.Namespace) -> str | None:
    """Submit the request in `args`; the id of the job that covers it, or None (refused, said why)."""
    try:
        config_key = make_config_key(args.board_type, args.num_players)
    except EventError as exc:
        print(f"submit: {exc}", file=sys.stderr)
        return None
    before = optional_text(orchestrator.conn.hget(orchestrator.keys.active, config_key))
    given = [f"--{name.replace('_', '-')}" for name in PARAMETERS if getattr(args, name) is not None]
    if before and given:
        print(f"submit: refused: {config_key} already has job {before} ({_state(orchestrator, before)}); "
              f"{', '.join(given)} would apply only to a new job. Nothing was recorded. Submit without "
              f"them (the job after it uses the settings' values), or `ringrift-train cancel {before}` "
              "first.", file=sys.stderr)
        return None
    samples = args.samples if args.samples is not None else _samples_unsaid(orchestrator, args)
    try:
        job_id = orchestrator.submit_training_sync(
            args.board_type, args.num_players, args.npz_path, samples,
            **{name: getattr(args, name) for name in PARAMETERS})
    except (EventError, JobError) as exc:
        print(f"submit: {exc}", file=sys.stderr)
        return None
    print(_what_happened(orchestrator, config_key, job_id, job_id == before), file=sys.stderr)
    return job_id


def _samples_unsaid(orchestrator: TrainingOrchestrator, args: argparse.Namespace) -> int:
    """Without --samples: the NPZ's sample count from its array headers, or (not readable here)
    the scheduler's minimum, so that the request is never held back as "0 new samples"."""
    from coordinator.trainer.npz_data import check_npz

    try:
        return check_npz(args.npz_path, args.board_type)
    except (ValueError, KeyError, OSError):  # BadTrainingData is a ValueError; the worker checks it again
        return max(orchestrator.settings.scheduler.min_new_samples, 1)


def _state(orchestrator: TrainingOrchestrator, job_id: str) -> str:
    return optional_text(orchestrator.conn.hget(orchestrator.keys.job(job_id), "state")) or "?"


def _what_happened(orchestrator: TrainingOrchestrator, config_key: str, job_id: str, existed: bool) -> str:
    state = _state(orchestrator, job_id)
    if not existed:
        return f"{config_key}: job {job_id} created ({state})"
    if state == QUEUED:
        return f"{config_key} already has job {job_id} (queued): it now trains on this file; no second job"
    return (f"{config_key} is training (job {job_id}, {state}); this export is recorded and a new job "
            "follows it on the newest data when it ends")
