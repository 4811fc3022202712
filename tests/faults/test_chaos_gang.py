"""The chaos run's lease-state judge (bench/chaos_gang.py) on hand-made snapshots: it must see a
multi-GPU lease holding part of its GPUs, which the real run must never show."""

from __future__ import annotations

from bench.chaos_gang import judge
from bench.chaos_trainer import stub_argv

NOW = 1_000_000
NEEDS = {"square19_2p": 2, "hex8_2p": 1}
GPUS = {"duo": 2, "solo": 1}


def lease(token: str, node: str, pttl: int = 5000) -> tuple[str, int]:
    return f"{token}|7|{node}|w|job-{token}", pttl


def test_a_whole_gang_and_a_one_gpu_lease_are_no_partial_hold():
    seen = judge(NOW, {"square19_2p": lease("t1", "duo"), "hex8_2p": lease("t2", "solo")},
                 {"duo": [("t1", NOW + 5000), ("t1+2", NOW + 5000)], "solo": [("t2", NOW + 5000)]},
                 {"duo": {"0": "t1", "1": "t1"}, "solo": {"0": "t2"}}, NEEDS, GPUS)
    assert (seen.partial, seen.whole, seen.oversubscribed) == ([], 1, [])


def test_a_gang_lease_with_one_expired_slot_or_one_device_is_partial():
    expired = judge(NOW, {"square19_2p": lease("t1", "duo")}, {"duo": [("t1", NOW + 5000), ("t1+2", NOW - 1)]},
                    {"duo": {"0": "t1", "1": "t1"}}, NEEDS, GPUS)
    assert expired.partial == ["square19_2p on duo: 1 slots / 2 devices of 2"]
    one_device = judge(NOW, {"square19_2p": lease("t1", "duo")}, {"duo": [("t1", NOW + 5000), ("t1+2", NOW + 5000)]},
                       {"duo": {"0": "t1", "1": "other"}}, NEEDS, GPUS)
    assert one_device.partial == ["square19_2p on duo: 2 slots / 1 devices of 2"]


def test_a_lease_at_its_expiry_or_gone_is_not_judged_and_a_full_node_over_its_gpus_is_seen():
    seen = judge(NOW, {"square19_2p": lease("t1", "duo", pttl=3), "hex8_2p": (None, -2)},
                 {"duo": [("t1", NOW + 3)], "solo": [("a", NOW + 10), ("b", NOW + 10)]}, {}, NEEDS, GPUS)
    assert seen.partial == [] and seen.oversubscribed == ["solo: 2 slots of 1"]


def test_the_chaos_trainer_sets_the_nodes_epoch_length():
    assert stub_argv(["--epochs", "4", "--epoch-seconds", "0.5"], "1.5")[-4:] == ["--epochs", "4", "--epoch-seconds",
                                                                                  "1.5"]
    assert stub_argv(["--epochs", "4"], None)[-2:] == ["--epochs", "4"]
    assert stub_argv(["--epochs", "4"], "2")[-2:] == ["--epoch-seconds", "2"]
