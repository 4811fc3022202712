"""Issue 15's worked example end to end: `ringrift-train run` and real `rq worker training`
processes on a real redis-server, running `workers.ringrift_stand_in` (RingRift's command line and
output: progress on stderr through logging, the summary on stdout, its own checkpoint names; no
JSON) from a RingRift-style YAML, as the README's "Using your own trainer" section shows it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis

from coordinator.core.keys import Keys
from coordinator.stores.jobs import JobStore
from coordinator.trainer.checkpoints import RINGRIFT_CHECKPOINT_PATTERN
from coordinator.trainer.output import RINGRIFT_PROGRESS, RINGRIFT_SUMMARY
from tests.support.exports import cli_export
from tests.support.polling import wait_for
from tests.support.processes import kill_tree
from tests.support.streams import stream_events
from workers.ringrift_stand_in import COMMAND

pytestmark = pytest.mark.integration
KEYS = Keys("ringrift")


def ringrift_training(tmp_path: Path, epochs: int, epoch_seconds: float) -> dict:
    """The README's `training` section, with the stand-in in place of `app.training.train`."""
    return {
        "default_epochs": epochs, "batch_size": 64, "learning_rate": 0.0005, "early_stopping_patience": 5,
        "timeout_s": 300, "kill_grace_s": 2, "models_root": str(tmp_path / "models"),
        "data_roots": [str(tmp_path.resolve())], "check_npz": False, "working_dir": str(tmp_path),
        "command": [*COMMAND, "--epoch-seconds", str(epoch_seconds)],
        "progress_patterns": list(RINGRIFT_PROGRESS), "summary_pattern": RINGRIFT_SUMMARY,
        "checkpoint_pattern": RINGRIFT_CHECKPOINT_PATTERN, "warm_start": True,
    }


def events_of(conn, job_id: str, event_type: str | None = None):
    return [e for e in stream_events(conn, event_type) if e.fields.get("job_id") == job_id]


def test_second_export_warm_starts_from_the_first_runs_model(redis_server, real_conn, service, rq_workers, npz):
    service(COMMAND, training=ringrift_training(npz.parent, epochs=3, epoch_seconds=0.2))
    rq_workers(1)
    cli_export(redis_server, ("hex8", 2), npz, 100)
    [first] = wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=60)
    cli_export(redis_server, ("hex8", 2), npz, 200)
    second = wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE")[1:], timeout_s=60)[0]

    store = JobStore(real_conn, KEYS)
    one, two = store.get(first.fields["job_id"]), store.get(second.fields["job_id"])
    assert (one["state"], two["state"]) == ("complete", "complete")
    [started] = events_of(real_conn, two["job_id"], "TRAINING_STARTED")
    assert started.fields["init_weights"] == one["model_path"]  # what --init-weights named
    assert json.loads(Path(two["model_path"]).read_text())["init_weights"] == one["model_path"]
    assert json.loads(Path(one["model_path"]).read_text())["init_weights"] is None
    assert two["parent_model"] == second.fields["parent_model"] == one["model_path"]
    # Figures read from its stderr log lines and its stdout summary line.
    progress = events_of(real_conn, two["job_id"], "TRAINING_PROGRESS")
    assert [p.fields["epoch"] for p in progress] == ["1", "2", "3"]
    assert progress[0].fields["total_epochs"] == "3" and float(progress[0].fields["policy_accuracy_pct"]) == 32.0
    assert (second.fields["best_val_loss"], second.fields["epochs_completed"]) == ("0.525", "3")
    assert second.fields["samples"] == str(npz.stat().st_size)  # the summary's samples=
    for event in [*events_of(real_conn, one["job_id"]), *events_of(real_conn, two["job_id"])]:
        assert (event.fields["board_type"], event.fields["num_players"]) == ("hex8", "2"), event.type
    # The whole stream reads as text (issue 15 point 5).
    text = redis.Redis(port=real_conn.connection_pool.connection_kwargs["port"], decode_responses=True)
    assert len(text.xrange("ringrift:events")) == real_conn.xlen("ringrift:events")


def test_a_killed_workers_retry_resumes_from_the_trainers_own_checkpoint(redis_server, real_conn, service,
                                                                         rq_workers, npz):
    service(COMMAND, training=ringrift_training(npz.parent, epochs=6, epoch_seconds=1.0))  # lease TTL 10 s
    workers = rq_workers(2)
    cli_export(redis_server, ("hex8", 2), npz, 100)
    [started] = wait_for(lambda: stream_events(real_conn, "TRAINING_STARTED"), timeout_s=30)
    wait_for(lambda: [e for e in stream_events(real_conn, "TRAINING_PROGRESS") if e.fields["epoch"] == "2"])
    kill_tree(workers[int(started.fields["node"].split("-")[1])].pid)
    retry = wait_for(lambda: [e for e in stream_events(real_conn, "TRAINING_STARTED")
                              if e.fields["attempt"] == "2"], timeout_s=60)[0]
    [done] = wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=60)
    resumed = int(retry.fields["resumed_epoch"])
    assert resumed >= 2 and done.fields["attempt"] == "2"
    model = json.loads(Path(done.fields["model_path"]).read_text())
    # --resume named the stand-in's own checkpoint of attempt 1 (an emergency one only if the
    # trainer saw its parent's death before its own SIGKILL).
    found = re.search(r"/attempt-1/checkpoint_(?:emergency_)?epoch_(\d+)\.pth$", model["resumed_from"])
    assert found and int(found.group(1)) == resumed
    after = [int(e.fields["epoch"]) for e in stream_events(real_conn, "TRAINING_PROGRESS") if e.id > retry.id]
    assert after == list(range(resumed + 1, 7))  # it went on from there
