"""The chaos run, short (CI): every fault kind once (`bench.chaos --every-kind`, a shorter lease TTL),
then its checks: nothing lost, no config trained twice at once, no stale publish accepted, no
worker gave up, the partition healed after the lease TTL reached the fencing path (the cut-off
worker's publish was refused), the spot notice checkpointed the training (TRAINING_PREEMPTED
node_notice) before its node went, and no lease-state sample saw a multi-GPU training holding part
of its GPUs (while the same samples did see one holding both: the watch looked at gangs)."""

from __future__ import annotations

from bench.chaos import FAULTS, parser, run


def test_every_fault_kind_once_loses_nothing_and_fences_the_stale_publish(tmp_path):
    args = parser().parse_args(["--rounds", str(len(FAULTS)), "--every-kind", "--seed", "1", "--lease-ttl", "6",
                                "--workdir", str(tmp_path)])
    result = run(args)
    assert [o.fault for o in result.outcomes] == list(FAULTS)
    assert [o.fault for o in result.outcomes if o.skipped] == []  # each fault found its target
    assert result.drained
    assert result.report["lost"] == 0
    assert result.overlaps == 0, result.overlap_examples
    assert result.report["stale"] == 0
    assert result.quit_unasked == 0
    assert result.report["fenced"] > 0
    [notice] = [o for o in result.outcomes if o.fault == "spot_notice"]
    assert notice.checkpointed and notice.lost_gpu_hours is not None, notice.note
    assert not notice.outlived_grace, notice.note  # the noticed worker left within the grace
    assert all(o.recovery_s is not None for o in result.outcomes if o.fault in ("spot_notice", "vanish",
                                                                                 "gang_node_kill"))
    assert result.partial_holds == [] and result.oversubscribed == []
    assert result.gang_whole > 0
