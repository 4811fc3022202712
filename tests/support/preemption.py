"""The preemption scenario the real-process tests share (tests/test_preemption_real.py with the stub
trainer, tests/test_preemption_reference.py with the reference trainer): a training held after an
epoch (tests/support/gated_train.py) is preempted for a config made to starve by its record, then
resumes from its checkpoint."""

from __future__ import annotations

from pathlib import Path

from coordinator.core.settings import load_settings
from tests.support.exports import xadd_like_an_exporter
from tests.support.gated_train import hold, release
from tests.support.polling import wait_for
from tests.support.races import starve
from tests.support.streams import stream_events

EPOCHS_LONG = 6
HELD_AFTER = 2  # the running training pauses after this epoch (its checkpoint) until it is preempted
MAX_WAIT_HOURS = 1.0  # nobody starves by waiting here: the test moves the start of the wait
# No minimum run and no value preemption (a margin no score reaches): the wait bound alone acts.
PREEMPTION = {"min_run_minutes": 0, "max_wait_hours": MAX_WAIT_HOURS, "margin": 1000}


def preempt_a_held_training(redis_server, conn, tmp_path: Path, board: str, long_npz: Path, starving: str,
                            short_npz: Path, epochs: int, **submit: object) -> str:
    """The scenario, on a service started with PREEMPTION and the gated trainer: a `board` 2p job
    trains `epochs` epochs on `long_npz` and pauses after HELD_AFTER; `starving` gets an export of
    `short_npz` and is made to starve; once the paused job is preempted it is let go, and both
    trainings complete. Returns the long job's id."""
    from coordinator import TrainingOrchestrator

    hold(long_npz, HELD_AFTER)
    api = TrainingOrchestrator(load_settings(tmp_path / "coordinator.yaml"), conn, consumer_name="api")
    long_job = api.submit_training_sync(board, 2, str(long_npz), epochs=epochs, **submit)
    wait_for(lambda: [e for e in stream_events(conn, "TRAINING_PROGRESS")
                      if e.fields["job_id"] == long_job and e.fields["epoch"] == str(HELD_AFTER)], timeout_s=120)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", starving,
                          "npz_path", str(short_npz), "samples", "1000")
    starve(conn, starving, MAX_WAIT_HOURS)
    wait_for(lambda: stream_events(conn, "TRAINING_PREEMPTED"), timeout_s=120)
    release(long_npz)
    wait_for(lambda: len(stream_events(conn, "TRAINING_COMPLETE")) == 2, timeout_s=240)
    return long_job


def assert_preempted_once_then_resumed(conn, long_job: str, config: str, for_config: str,
                                       epochs: int) -> list[tuple[str, str]]:
    """The preempted job's whole story on the stream and its record: preempted once for
    `for_config`, never two attempts at once, resumed from its checkpoint with the next fencing
    token, every epoch trained once, one completion, its model published. Returns the order of the
    STARTED/PREEMPTED/COMPLETE events (type, config) for the caller's own checks."""
    [preempted] = stream_events(conn, "TRAINING_PREEMPTED")
    assert preempted.fields["job_id"] == long_job and preempted.fields["preempted_for"] == for_config
    assert preempted.fields["kind"] == "wait"
    reached = int(preempted.fields["epoch"])  # the last completed epoch: the checkpoint's
    assert reached == HELD_AFTER  # where it was held: preempted there, not after it went on
    events = [e for e in stream_events(conn) if e.fields.get("job_id") == long_job]
    kinds = [e.type for e in events if e.type != "TRAINING_PROGRESS"]
    # Never two attempts at once: the second starts only after the first yielded.
    assert kinds == ["TRAINING_STARTED", "TRAINING_PREEMPTED", "TRAINING_STARTED", "TRAINING_COMPLETE"], kinds
    first, second = [e for e in events if e.type == "TRAINING_STARTED"]
    assert int(second.fields["fence"]) > int(first.fields["fence"])  # a new attempt, the next token
    assert int(second.fields["resumed_epoch"]) == reached  # from its checkpoint
    # Nothing lost: every epoch trained to completion exactly once across the two attempts.
    trained = [int(e.fields["epoch"]) for e in events if e.type == "TRAINING_PROGRESS"]
    assert sorted(trained) == list(range(1, epochs + 1)), trained
    # Published once: one completion, its model on the config.
    [done] = [e for e in stream_events(conn, "TRAINING_COMPLETE") if e.fields["job_id"] == long_job]
    assert Path(done.fields["model_path"]).is_file()
    assert conn.hget(f"ringrift:config:{config}", "latest_model").decode() == done.fields["model_path"]
    record = {k.decode(): v.decode() for k, v in conn.hgetall(f"ringrift:job:{long_job}").items()}
    assert record["state"] == "complete" and record["preemptions"] == "1" and record["attempts"] == "2"
    return [(e.type, e.fields["config_key"]) for e in stream_events(conn)
            if e.type in ("TRAINING_STARTED", "TRAINING_PREEMPTED", "TRAINING_COMPLETE")]
