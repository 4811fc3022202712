"""Multi-GPU trainings (issue 27, step 1) outside the lease: the `gpus` requirement in the settings,
its RQ queue, which workers listen to it (only those on a node with that many fitting GPUs),
dispatch's count, and the placeholders and environment the trainer gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from coordinator.core.errors import ConfigError
from coordinator.core.gpu_requirements import (
    Gpu,
    from_spec,
    gpus_needed,
    need_text,
    node_meets,
    queue_name,
    requirement_spec,
    restricts,
)
from coordinator.core.settings import GpuRequirement, gpu_problems, parse_settings
from coordinator.scheduling.placement import Placement, SlotGpu, better_elsewhere
from coordinator.scheduling.speeds import table_from
from coordinator.trainer.command import PLACEHOLDERS, build_argv, gpu_values, template_problems, visible_devices_env
from workers.worker import fitting_queues

H100 = "NVIDIA H100 80GB HBM3"
RTX = "NVIDIA GeForce RTX 4090"


def node(name: str, count: int, model: str = RTX, memory: float = 24.0) -> tuple[Gpu, ...]:
    return tuple(Gpu(model, memory, i, name) for i in range(count))


def test_the_gpus_setting_is_per_board_and_overridden_per_config():
    settings = parse_settings({"training": {"data_roots": ["/d"]}, "hosts": {"n": 8},
                               "gpus": {"boards": {"square19": {"gpus": 2, "min_memory_gb": 20}},
                                        "per_config": {"square19_4p": {"gpus": 4}}}})
    assert settings.gpus.requirement_for("square19_2p") == GpuRequirement(min_memory_gb=20, gpus=2)
    assert settings.gpus.requirement_for("square19_4p") == GpuRequirement(min_memory_gb=20, gpus=4)
    assert gpus_needed(settings.gpus.requirement_for("hex8_2p")) == 1


def test_a_gpus_setting_must_be_a_positive_count_and_fit_some_host():
    with pytest.raises(Exception, match="gpus"):
        parse_settings({"training": {"data_roots": ["/d"]}, "gpus": {"boards": {"square19": {"gpus": 0}}}})
    with pytest.raises(ConfigError) as info:
        parse_settings({"training": {"data_roots": ["/d"]}, "hosts": {"a": 2, "b": 4},
                        "gpus": {"per_config": {"square19_2p": {"gpus": 8}}}})
    assert info.value.problems == [
        "gpus.per_config.square19_2p.gpus: 8 GPUs on one node, more than any host has (most: b, 4): "
        "it could never train"]
    fits = parse_settings({"training": {"data_roots": ["/d"]}, "hosts": {"a": 2, "b": 4},
                           "gpus": {"per_config": {"square19_2p": {"gpus": 4}}}})
    assert gpu_problems(fits.gpus, fits.hosts) == []


def test_a_multi_gpu_requirement_has_its_own_queue_and_round_trips():
    two = GpuRequirement(gpus=2)
    assert restricts(two) and not restricts(GpuRequirement(gpus=1))
    assert queue_name(two) == "training-x2gpus"
    assert queue_name(GpuRequirement(40, gpus=4)) == "training-ge40gb-x4gpus"
    assert need_text(GpuRequirement(40, gpus=4)) == "4 GPUs on one node, each >= 40 GB"
    assert from_spec(requirement_spec(GpuRequirement(40, gpus=4), {}))[0] == GpuRequirement(40, gpus=4)
    assert "gpus" not in requirement_spec(GpuRequirement(40), {})  # one-GPU specs are unchanged


def test_only_a_node_with_enough_fitting_gpus_meets_a_multi_gpu_requirement():
    two_big = GpuRequirement(40, gpus=2)
    assert node_meets(node("n2", 2, H100, 80)[0], node("n2", 2, H100, 80), two_big, {})
    mixed = (Gpu(H100, 80, 0, "mix"), Gpu(RTX, 24, 1, "mix"))
    verdict = node_meets(mixed[0], mixed, two_big, {})
    assert not verdict and verdict.why == "needs 2 GPUs on one node; mix has 1 that fit"
    assert not node_meets(node("n1", 1)[0], node("n1", 1), GpuRequirement(gpus=2), {})


def test_a_worker_listens_to_a_multi_gpu_queue_only_on_a_node_that_has_the_gpus():
    registered = {"training-x2gpus": '{"gpus": 2, "min_memory_gb": null, "allowed": null, "classes": {}}',
                  "training-ge40gb": '{"min_memory_gb": 40, "allowed": null, "classes": {}}'}
    assert fitting_queues(registered, node("n2", 2)[1], node("n2", 2)) == ["training-x2gpus"]
    assert fitting_queues(registered, node("n1", 1)[0], node("n1", 1)) == []
    big = node("n3", 3, H100, 80)
    assert fitting_queues(registered, big[2], big) == ["training-ge40gb", "training-x2gpus"]


def test_dispatch_counts_a_multi_gpu_job_only_where_a_node_has_its_gpus():
    slots = [SlotGpu(g) for g in (*node("two", 2), *node("one", 1))]
    placement = Placement(slots, list(slots), {})
    assert placement.known(GpuRequirement(gpus=2)) and not placement.known(GpuRequirement(gpus=3))
    only_single = Placement(slots, [slots[2]], {})  # node "two" busy: the free GPU is on "one"
    assert not only_single.admits(GpuRequirement(gpus=2), prefetch=0)
    assert only_single.admits(GpuRequirement(), prefetch=0)


def test_a_multi_gpu_job_is_never_handed_to_a_single_better_gpu():
    me, faster = SlotGpu(Gpu(RTX, 24, 0, "a")), SlotGpu(Gpu(H100, 80, 0, "b"))
    from coordinator.scheduling.placement import Workload
    from coordinator.scheduling.speeds import class_key

    timed = {("hex8", class_key(me.gpu, {})): (4e-3, 5), ("hex8", class_key(faster.gpu, {})): (1e-3, 5)}
    table = table_from(timed, {}, parse_settings({"training": {"data_roots": ["/d"]}}).gpus.speed_priors)

    job = Workload("hex8")
    assert better_elsewhere(me, [faster], GpuRequirement(), {}, table, job, 1.2) == [faster]
    assert better_elsewhere(me, [faster], GpuRequirement(gpus=2), {}, table, job, 1.2) == []


def test_torchrun_placeholders_come_from_the_devices_the_lease_holds():
    assert {"gpus", "nproc_per_node", "devices", "master_port"} <= PLACEHOLDERS
    template = ["torchrun", "--standalone", "--nproc_per_node={nproc_per_node}", "--master_port={master_port}",
                "train.py", "--distributed", "--devices", "{devices}"]
    assert template_problems(template) == []
    argv = build_argv(template, gpu_values((2, 3), 29500))
    assert argv == ["torchrun", "--standalone", "--nproc_per_node=2", "--master_port=29502", "train.py",
                    "--distributed", "--devices", "2,3"]
    assert visible_devices_env((2, 3)) == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert visible_devices_env(()) == {}  # unknown: the worker's own environment stays
    # Two trainings running at once on a node hold different devices, so different ports.
    ports = {gpu_values(devices, 29500)["master_port"] for devices in ((0, 1), (2,), (3, 4, 5, 6), (7,))}
    assert len(ports) == 4


def test_the_readmes_multi_gpu_examples_are_valid_settings():
    """README "Multi-GPU trainings": both YAML examples parse, and the torchrun template is a valid one."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text.split("## Multi-GPU trainings", 1)[1].split("\n## ", 1)[0]
    first, second = (yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S))
    settings = parse_settings({"training": {"data_roots": ["/d"]}, "hosts": {"n": 8}, **first})
    assert settings.gpus.requirement_for("square19_3p") == GpuRequirement(min_memory_gb=40, gpus=2)
    assert settings.gpus.requirement_for("hexagonal_4p").gpus == 4
    example = parse_settings({"hosts": {"n": 8}, **second,
                              "training": {**second["training"], "data_roots": ["/d"]}})
    command = example.training.command_for("square19_2p")
    assert template_problems(command) == [] and "--master_port={master_port}" in command
    argv = build_argv(command, {**gpu_values((0, 1), example.gpus.master_port_base), "board_type": "square19"})
    assert argv[:4] == ["/shared/ringrift/venv/bin/torchrun", "--nproc_per_node=2", "--master_addr=localhost",
                        "--master_port=29500"]


def test_a_multi_gpu_attempts_epochs_are_timed_apart_from_one_gpus():
    from workers.tasks import speed_class

    assert speed_class({"gpu_class": "H100"}, 1) == "H100"
    assert speed_class({"gpu_class": "H100"}, 2) == "H100 x2"  # never learned as one H100's speed
    assert speed_class({"gpu_model": "NVIDIA GeForce RTX 4090"}, 1) == "GeForce RTX 4090"
    assert speed_class({}, 4) == ""
