"""RingRift's trainer shape through the worker: a real `rq worker training` process running
`workers.tasks.run_training` with the stand-in as `training.command`, then the worker's building
blocks one by one: the command template, run_trainer reading progress from stderr and the summary
from stdout, warm start, kill and resume."""

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rq.job import Job, JobStatus

from coordinator.service.orchestrator import TrainingOrchestrator
from coordinator.trainer.checkpoints import RINGRIFT_CHECKPOINT_PATTERN, newest_checkpoint
from coordinator.trainer.command import attempt_paths, build_argv, record_values
from coordinator.trainer.output import RINGRIFT_PROGRESS, RINGRIFT_SUMMARY, OutputParser
from tests.support.polling import wait_for
from tests.support.streams import stream_events
from workers import ringrift_stand_in
from workers.trainer_process import run_trainer


@pytest.fixture
def record(tmp_path):
    npz = tmp_path / "data" / "hex8_2p.npz"
    npz.parent.mkdir()
    npz.write_bytes(b"x" * 100)
    return {"job_id": "j1", "config_key": "hex8_2p", "board_type": "hex8", "num_players": "2", "npz_path": str(npz),
            "epochs": "3", "batch_size": "256", "learning_rate": "0.001", "early_stopping_patience": "5",
            "samples": "100"}


def test_a_real_rq_worker_runs_the_stand_in_as_training_command(redis_server, real_conn, rq_workers, make_settings,
                                                                tmp_path):
    """The job the orchestrator enqueues, run by `rq worker training` (workers.tasks.run_training in
    RQ's work horse): what the stand-in printed and wrote is what the job record and the events carry."""
    npz = tmp_path / "hex8_2p.npz"
    npz.write_bytes(b"x" * 1234)  # the stand-in reports the file's size as its samples
    settings = make_settings(redis_server.url, command=ringrift_stand_in.COMMAND, progress_patterns=RINGRIFT_PROGRESS,
                             summary_pattern=RINGRIFT_SUMMARY, checkpoint_pattern=RINGRIFT_CHECKPOINT_PATTERN)
    orch = TrainingOrchestrator(settings, real_conn, consumer_name="t")
    job_id = orch.submit_training_sync("hex8", 2, str(npz), samples=7)
    rq_workers(1)
    record = wait_for(lambda: orch.jobs.get(job_id)["state"] in ("complete", "failed") and orch.jobs.get(job_id),
                      timeout_s=60)
    assert record["state"] == "complete", record.get("error")
    started, *progress, done = [e for e in stream_events(real_conn) if e.fields.get("job_id") == job_id]
    assert (started.type, started.fields["worker"], started.fields["node"]) == (
        "TRAINING_STARTED", "test-worker-0", "node-0")
    # Its stderr log lines, one TRAINING_PROGRESS each; its stdout summary on TRAINING_COMPLETE and the record.
    assert [(p.type, p.fields["epoch"], p.fields["policy_accuracy_pct"]) for p in progress] == [
        ("TRAINING_PROGRESS", "1", "32.0"), ("TRAINING_PROGRESS", "2", "34.0"), ("TRAINING_PROGRESS", "3", "36.0")]
    assert done.type == "TRAINING_COMPLETE"
    for fields in (done.fields, record):
        assert (fields["final_loss"], fields["epochs_completed"], fields["samples"]) == ("0.5", "3", "1234")
        assert (fields["best_val_loss"], fields["best_epoch"], fields["early_stopped"]) == ("0.525", "3", "false")
    assert done.fields["model_path"] == record["model_path"]
    model = json.loads(Path(record["model_path"]).read_text())  # written by the stand-in at --save-path
    assert (model["init_weights"], model["resumed_from"]) == (None, None)
    checkpoints = sorted(p.name for p in Path(record["output_dir"]).rglob("checkpoint_*.pth"))
    assert checkpoints == ["checkpoint_epoch_1.pth", "checkpoint_epoch_2.pth", "checkpoint_epoch_3.pth",
                           "checkpoint_final_epoch_3.pth"]
    rq_job = Job.fetch(job_id, connection=real_conn)
    wait_for(lambda: rq_job.get_status(refresh=True) == JobStatus.FINISHED, timeout_s=30)  # RQ records it after
    assert rq_job.return_value()["model_path"] == record["model_path"]


def _attempt(record, job_dir, attempt, command=ringrift_stand_in.COMMAND, resume=None, init_weights=None,
             stop=None, on_progress=None):
    paths = attempt_paths(job_dir, attempt)
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    argv = build_argv(command, record_values(record, paths, attempt, resume, init_weights))
    result = run_trainer(argv, timeout_s=60, kill_grace_s=10, on_progress=on_progress or (lambda _f: None),
                         stop=stop, parser=OutputParser(RINGRIFT_PROGRESS, RINGRIFT_SUMMARY),
                         model_path=paths.model_path)
    return result, paths


def test_progress_from_stderr_summary_from_stdout_and_a_warm_start(record, tmp_path):
    first, paths = _attempt(record, tmp_path / "j1", 1)
    assert first.returncode == 0 and not first.model_missing
    assert [h["epoch"] for h in first.history] == [1, 2, 3]
    assert first.history[-1] == {"epoch": 3, "total_epochs": 3, "train_loss": 0.5, "val_loss": 0.525,
                                 "policy_accuracy_pct": 36.0}
    assert first.summary == {"best_val_loss": 0.525, "samples": 100, "games": 1, "total_epochs": 3}
    assert "app.training.train - INFO - Epoch [3/3]" in first.stderr_tail  # the tail still holds stderr
    model = json.loads(paths.model_path.read_text())
    assert model["init_weights"] is None and model["resumed_from"] is None
    assert sorted(p.name for p in paths.checkpoint_dir.glob("checkpoint_*")) == [
        "checkpoint_epoch_1.pth", "checkpoint_epoch_2.pth", "checkpoint_epoch_3.pth", "checkpoint_final_epoch_3.pth"]

    second, paths2 = _attempt({**record, "job_id": "j2"}, tmp_path / "j2", 1, init_weights=str(paths.model_path))
    assert second.returncode == 0
    assert json.loads(paths2.model_path.read_text())["init_weights"] == str(paths.model_path.resolve())
    assert f"Loaded initial weights from {paths.model_path}" in second.stderr_tail


def test_a_stopped_attempt_leaves_an_emergency_checkpoint_that_the_next_one_resumes(record, tmp_path):
    record = {**record, "epochs": "30"}
    slow = [*ringrift_stand_in.COMMAND, "--epoch-seconds", "0.2"]
    stop = threading.Event()

    def stop_after_epoch_2(figures):
        if figures["epoch"] >= 2:
            stop.set()

    job = tmp_path / "j1"
    first, _ = _attempt(record, job, 1, command=slow, stop=stop, on_progress=stop_after_epoch_2)
    assert first.stopped and first.returncode == -signal.SIGTERM  # RingRift dies by the signal it got
    assert "Emergency checkpoint saved successfully" in first.stderr_tail
    resume, epoch = newest_checkpoint(job, RINGRIFT_CHECKPOINT_PATTERN)
    assert epoch >= 2 and resume.endswith(f"checkpoint_emergency_epoch_{epoch}.pth")

    second, paths = _attempt({**record, "epochs": str(epoch + 2)}, job, 2, resume=resume)
    assert second.returncode == 0
    assert [h["epoch"] for h in second.history] == [epoch + 1, epoch + 2]
    assert json.loads(paths.model_path.read_text())["resumed_from"] == resume


def test_exit_0_without_the_model_where_the_command_said_is_model_missing(record, tmp_path):
    elsewhere = ["{output_dir}/elsewhere.pth" if part == "{model_path}" else part for part in ringrift_stand_in.COMMAND]
    result, paths = _attempt(record, tmp_path / "j1", 1, command=elsewhere)
    assert result.returncode == 0 and result.model_missing
    assert (paths.output_dir / "elsewhere.pth").exists()


def test_missing_data_and_unknown_flags_fail():
    proc = subprocess.run([sys.executable, "-m", "workers.ringrift_stand_in", "--data-path", "/nonexistent.npz",
                           "--save-path", "/tmp/x.pth", "--epochs", "1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Training data not found: /nonexistent.npz" in proc.stderr
    with pytest.raises(SystemExit):
        ringrift_stand_in.parse_args(["--output-dir", "x"])  # the reference trainer's flag is not RingRift's


def test_the_trainer_runs_in_its_working_directory(tmp_path):
    """RingRift's trainer reads paths relative to ai-service/: `training.working_dir` sets them."""
    argv = [sys.executable, "-c", "open('model.pth', 'w').write('m')"]
    result = run_trainer(argv, timeout_s=60, kill_grace_s=5, on_progress=lambda _f: None, cwd=tmp_path,
                         model_path=tmp_path / "model.pth")
    assert result.returncode == 0 and not result.model_missing
