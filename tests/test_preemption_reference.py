"""Preemption end to end with the reference trainer (workers.train, torch) on a real redis-server
with real `rq worker`s: a starving config preempts a running training mid-epoch (SIGTERM: the
trainer saves its weights and `checkpoint.json` keeps the last completed epoch); the training
resumes from that checkpoint in a new attempt on the next free slot and publishes its model once.
tests/test_preemption_real.py is the same scenario with the stub trainer.

However fast or slow the machine: the reference trainer runs under tests/support/gated_train.py, which
pauses it after an epoch until it is preempted, and the config starves because the test moves the
start of its wait (`waiting_since`), not because time passes."""

from __future__ import annotations

from coordinator.trainer.npz_data import write_synthetic_npz
from tests.support.preemption import PREEMPTION, assert_preempted_once_then_resumed, preempt_a_held_training
from tests.support.races import GATED_REFERENCE

EPOCHS_LONG = 4
LONG_SAMPLES = 384


def test_a_starving_config_preempts_a_reference_training_that_resumes_from_its_checkpoint(
        redis_server, real_conn, service, rq_workers, tmp_path):
    long_npz = write_synthetic_npz(tmp_path / "data" / "hex8_2p.npz", "hex8", 2, samples=LONG_SAMPLES)
    short_npz = write_synthetic_npz(tmp_path / "data" / "square8_2p.npz", "square8", 2, samples=64)
    # One GPU, two workers (so the resume may land on either).
    service(GATED_REFERENCE, epochs=1, hosts={"node-0": 1}, scheduler={"prefetch": 0, "rescore_interval_s": 0.5},
            preemption=PREEMPTION)
    rq_workers(2, {"RINGRIFT_NODE": "node-0"})  # both on the one GPU's node
    # Patience as long as the training: no early stop, so every epoch runs.
    long_job = preempt_a_held_training(redis_server, real_conn, tmp_path, "hex8", long_npz, "square8_2p", short_npz,
                                       EPOCHS_LONG, samples=LONG_SAMPLES, early_stopping_patience=EPOCHS_LONG)
    order = assert_preempted_once_then_resumed(real_conn, long_job, "hex8_2p", "square8_2p", EPOCHS_LONG)
    # The starving config ran in between, on the freed GPU, and was not preempted in turn.
    assert order == [("TRAINING_STARTED", "hex8_2p"), ("TRAINING_PREEMPTED", "hex8_2p"),
                     ("TRAINING_STARTED", "square8_2p"), ("TRAINING_COMPLETE", "square8_2p"),
                     ("TRAINING_STARTED", "hex8_2p"), ("TRAINING_COMPLETE", "hex8_2p")], order
