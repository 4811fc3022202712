"""Preemption end to end on a real redis-server with real `rq worker`s and the stub trainer: a
starving config preempts a running training at a checkpoint; that training resumes from its
checkpoint on the next free slot. Nothing is lost, never two attempts at once, the preempted job's
model is published once.

Nothing here waits for time: the running training pauses after an epoch until it is preempted
(tests/support/gated_train.py), and the waiting config starves because the test moves the start of its
wait back (`waiting_since`), not because the test waits that long.
tests/test_preemption_reference.py runs the same with the reference trainer (torch), slower."""

from __future__ import annotations

from tests.support.preemption import (
    EPOCHS_LONG,
    PREEMPTION,
    assert_preempted_once_then_resumed,
    preempt_a_held_training,
)
from tests.support.races import GATED_STUB


def test_a_starving_config_preempts_a_running_training_that_resumes_from_its_checkpoint(
        redis_server, real_conn, service, rq_workers, tmp_path):
    long_npz, short_npz = tmp_path / "long.npz", tmp_path / "short.npz"
    for npz in (long_npz, short_npz):
        npz.write_bytes(b"stub")
    # One GPU, two workers (so the resume may land on either).
    service(GATED_STUB, epochs=4, hosts={"node-0": 1}, scheduler={"prefetch": 0, "rescore_interval_s": 0.5},
            preemption=PREEMPTION)
    rq_workers(2, {"RINGRIFT_NODE": "node-0"})  # both on the one GPU's node
    long_job = preempt_a_held_training(redis_server, real_conn, tmp_path, "hexagonal", long_npz,
                                       "square8_2p", short_npz, EPOCHS_LONG, samples=10)
    order = assert_preempted_once_then_resumed(real_conn, long_job, "hexagonal_2p", "square8_2p", EPOCHS_LONG)
    # The starving config ran in between, on the freed GPU.
    assert order.index(("TRAINING_STARTED", "square8_2p")) > order.index(("TRAINING_PREEMPTED", "hexagonal_2p"))
