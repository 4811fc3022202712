"""Preemption end to end with the reference trainer (workers.train, torch) on a real redis-server
with real `rq worker`s: a starving config preempts a running training mid-epoch (SIGTERM: the
trainer saves its weights and `checkpoint.json` keeps the last completed epoch); the training
resumes from that checkpoint in a new attempt on the next free slot and publishes its model once.
tests/test_preemption_real.py is the same scenario with the stub trainer.

Timing, with every attempt paying several seconds of torch import on a loaded machine: a config
starves after waiting max_wait_hours - min_run_minutes = 17 s - 3 s = 14 s. The long training
(EPOCHS_LONG short epochs) is still running then, several epochs in; the starving config trains
one small epoch, well within the 14 s the preempted job may wait before it would starve in turn."""

from __future__ import annotations

from coordinator.core.settings import load_settings
from coordinator.trainer.npz_data import write_synthetic_npz
from tests.conftest import stream_events, wait_for, xadd_like_an_exporter
from tests.test_preemption_real import assert_preempted_once_then_resumed

EPOCHS_LONG = 60
# ~0.7-1.2 s an epoch on a loaded 2-core machine (less idle): the preemption (~18 s in) comes mid-training.
LONG_SAMPLES = 384
MIN_RUN_MINUTES = 3 / 60
MAX_WAIT_HOURS = 17 / 3600


def test_a_starving_config_preempts_a_reference_training_that_resumes_from_its_checkpoint(
        redis_server, real_conn, service, rq_workers, tmp_path):
    from coordinator import TrainingOrchestrator

    long_npz = write_synthetic_npz(tmp_path / "data" / "hex8_2p.npz", "hex8", 2, samples=LONG_SAMPLES)
    short_npz = write_synthetic_npz(tmp_path / "data" / "square8_2p.npz", "square8", 2, samples=64)
    # One GPU, two workers (so the resume may land on either).
    service(["{python}", "-m", "workers.train"], epochs=1, hosts={"node-0": 1},
            scheduler={"prefetch": 0, "rescore_interval_s": 0.5},
            preemption={"min_run_minutes": MIN_RUN_MINUTES, "max_wait_hours": MAX_WAIT_HOURS})
    rq_workers(2)
    api = TrainingOrchestrator(load_settings(tmp_path / "coordinator.yaml"), real_conn, consumer_name="api")
    # Patience as long as the training: no early stop, so every epoch runs.
    long_job = api.submit_training_sync("hex8", 2, str(long_npz), samples=LONG_SAMPLES, epochs=EPOCHS_LONG,
                                        early_stopping_patience=EPOCHS_LONG)
    wait_for(lambda: stream_events(real_conn, "TRAINING_STARTED"), timeout_s=60)
    xadd_like_an_exporter(redis_server, "type", "NPZ_EXPORT_COMPLETE", "config_key", "square8_2p",
                          "npz_path", str(short_npz), "samples", "64")
    wait_for(lambda: len(stream_events(real_conn, "TRAINING_COMPLETE")) == 2, timeout_s=240)

    order = assert_preempted_once_then_resumed(real_conn, long_job, "hex8_2p", "square8_2p", EPOCHS_LONG)
    # The starving config ran in between, on the freed GPU, and was not preempted in turn.
    assert order == [("TRAINING_STARTED", "hex8_2p"), ("TRAINING_PREEMPTED", "hex8_2p"),
                     ("TRAINING_STARTED", "square8_2p"), ("TRAINING_COMPLETE", "square8_2p"),
                     ("TRAINING_STARTED", "hex8_2p"), ("TRAINING_COMPLETE", "hex8_2p")], order
