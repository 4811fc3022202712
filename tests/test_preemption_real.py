"""Preemption end to end on a real redis-server with real `rq worker`s and the stub trainer: a
starving config preempts a running training at a checkpoint; that training resumes from its
checkpoint on the next free slot. Nothing is lost, never two attempts at once, the preempted job's
model is published once. tests/test_preemption_reference.py runs the same with the reference
trainer (torch), slower."""

from __future__ import annotations

from pathlib import Path

from coordinator.core.settings import load_settings
from tests.conftest import stream_events, wait_for, xadd_like_an_exporter

EPOCHS_LONG = 30  # the running training: ~15 s of epochs
EPOCH_S = 0.5


def test_a_starving_config_preempts_a_running_training_that_resumes_from_its_checkpoint(
        redis_server, real_conn, service, rq_workers, tmp_path):
    from coordinator import TrainingOrchestrator

    npz = tmp_path / "x.npz"
    npz.write_bytes(b"stub")
    # One GPU, two workers (so the resume may land on either). A config starves after waiting
    # max_wait_hours - min_run_minutes = 10.8 s - 3 s; a job may yield after 3 s of its attempt.
    service(["{python}", "-m", "workers.stub_train", "--epoch-seconds", str(EPOCH_S)], epochs=4,
            hosts={"node-0": 1}, scheduler={"prefetch": 0, "rescore_interval_s": 0.5},
            preemption={"min_run_minutes": 0.05, "max_wait_hours": 0.003})
    rq_workers(2)
    api = TrainingOrchestrator(load_settings(tmp_path / "coordinator.yaml"), real_conn, consumer_name="api")
    long_job = api.submit_training_sync("hexagonal", 2, str(npz), samples=10, epochs=EPOCHS_LONG)
    wait_for(lambda: stream_events(real_conn, "TRAINING_STARTED"), timeout_s=30)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", "square8_2p",
                          "npz_path", str(npz), "samples", "1000")
    wait_for(lambda: len(stream_events(real_conn, "TRAINING_COMPLETE")) == 2, timeout_s=90)

    order = assert_preempted_once_then_resumed(real_conn, long_job, "hexagonal_2p", "square8_2p", EPOCHS_LONG)
    # The starving config ran in between, on the freed GPU.
    assert order.index(("TRAINING_STARTED", "square8_2p")) > order.index(("TRAINING_PREEMPTED", "hexagonal_2p"))


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
    assert 1 <= reached < epochs
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
