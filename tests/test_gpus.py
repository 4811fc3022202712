"""Issue 26, step 1 (inventory and requirements): GPU classes and requirements in the settings and
check-config, the pure "does this GPU meet the job" rule and the batch size per GPU class, the
worker's GPU detection with a faked NVML, and the GPU store (fakeredis)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import fakeredis
import pytest
import yaml

from coordinator.core.errors import ConfigError
from coordinator.core.gpu_requirements import Gpu, batch_size_for, gpu_class, meets, model_matches, preference_rank
from coordinator.core.keys import Keys
from coordinator.core.settings import (
    GpuClass,
    GpuRequirement,
    HostGpus,
    load_settings,
    parse_settings,
    submitted_batch_size,
    worker_settings,
    worker_settings_json,
)
from coordinator.ops import cli
from coordinator.stores.gpus import ENV, HOSTS, NVML, GpuStore, NodeInventory, slot_of
from coordinator.trainer.command import attempt_paths, build_argv, record_values
from workers import gpu_inventory
from workers.tasks import attempt_gpu

# RingRift's TRAINING_BATCH_SIZE_BY_GPU (ai-service/app/config/thresholds.py) as classes.
RINGRIFT_GPUS = {
    "classes": {
        "GH200": {"models": ["GH200"], "batch_size": 2048, "cost_per_hour": 0.7},
        "H100": {"models": ["H100", "H200"], "batch_size": 1536, "cost_per_hour": 2.5},
        "A100-80": {"models": ["A100"], "min_memory_gb": 70, "batch_size": 1024, "cost_per_hour": 1.8},
        "A100": {"models": ["A100"], "batch_size": 512, "cost_per_hour": 1.1},
        "24GB": {"models": ["A10", "RTX 4090", "RTX 3090"], "batch_size": 256},
    },
    "boards": {"hexagonal": {"min_memory_gb": 40, "preferred": ["H100", "GH200"]},
               "square19": {"min_memory_gb": 40}},
    "per_config": {"hexagonal_4p": {"min_memory_gb": 80, "allowed": ["H100", "GH200"]}},
}
H100 = Gpu("NVIDIA H100 80GB HBM3", 80.0, 0, "gpu-node-1")
A100_80 = Gpu("NVIDIA A100-SXM4-80GB", 80.0, 0, "gpu-node-2")
A100_40 = Gpu("NVIDIA A100-PCIE-40GB", 40.0, 0, "gpu-node-4")
A10 = Gpu("NVIDIA A10", 24.0, 0, "gpu-node-5")
RTX4090 = Gpu("NVIDIA GeForce RTX 4090", 24.0, 2, "gpu-node-3")


def settings_with(**sections):
    return parse_settings({"training": {"data_roots": ["/data"]}, "gpus": RINGRIFT_GPUS, **sections})


@pytest.fixture
def gpus():
    return settings_with().gpus


# -- classes and requirements (pure) -----------------------------------------------------------------
def test_models_match_as_whole_words_so_a10_is_not_an_a100():
    assert model_matches("A100", "NVIDIA A100-SXM4-80GB")
    assert not model_matches("A10", "NVIDIA A100-SXM4-80GB")  # RingRift's substring match says yes
    assert model_matches("RTX 4090", "NVIDIA GeForce RTX 4090") and not model_matches("RTX 4090", "NVIDIA RTX 4080")


def test_a_gpu_is_of_the_first_class_it_matches_memory_included(gpus):
    assert [gpu_class(g, gpus.classes) for g in (H100, A100_80, A100_40, A10, RTX4090)] == [
        "H100", "A100-80", "A100", "24GB", "24GB"]
    assert gpu_class(Gpu("Apple M3 Max", 48.0), gpus.classes) is None


def test_meets_says_what_the_gpu_lacks(gpus):
    hexagonal = gpus.requirement_for("hexagonal_2p")
    assert meets(H100, hexagonal, gpus.classes)
    verdict = meets(RTX4090, hexagonal, gpus.classes)
    assert not verdict and verdict.why == "needs >= 40 GB; gpu-node-3 has 24 GB (GeForce RTX 4090, 24 GB)"
    four = gpus.requirement_for("hexagonal_4p")  # its override: 80 GB, and only H100 or GH200
    assert not meets(A100_40, four, gpus.classes)
    assert meets(A100_80, four, gpus.classes).why == (
        "needs one of H100, GH200; gpu-node-2 has A100-SXM4-80GB, 80 GB (class A100-80)")
    assert meets(RTX4090, gpus.requirement_for("hex8_2p"), gpus.classes)  # no requirement
    unknown = meets(Gpu("", 0.0, 0, "n"), hexagonal, gpus.classes)
    assert unknown.why == "needs >= 40 GB; n has an unknown amount of memory (unknown GPU)"


def test_per_config_overrides_field_by_field_over_the_board(gpus):
    four = gpus.requirement_for("hexagonal_4p")
    assert four == GpuRequirement(min_memory_gb=80.0, allowed=("H100", "GH200"), preferred=("H100", "GH200"))
    assert [preference_rank(g, four, gpus.classes) for g in (H100, A100_80)] == [0, 2]


def test_batch_size_by_class_submitted_wins_resume_keeps_unless_it_cannot_hold(gpus):
    c = gpus.classes
    assert batch_size_for(H100, c, 512).value == 1536
    assert batch_size_for(Gpu("Apple M3 Max", 48.0), c, 512).value == 512  # no class: the job's
    assert batch_size_for(None, c, 512).value == 512
    assert batch_size_for(RTX4090, c, 512, submitted=4096).value == 4096  # named at submit: on any GPU
    assert batch_size_for(H100, c, 512, started_with=1536).value == 1536
    kept = batch_size_for(A100_80, c, 512, started_with=256)
    assert (kept.value, kept.why) == (256, "kept from the job's first attempt")  # a bigger GPU keeps it
    cut = batch_size_for(RTX4090, c, 512, started_with=1536)
    assert cut.value == 256 and "cannot hold 1536" in cut.why  # a smaller GPU cannot hold it


# -- settings and check-config ---------------------------------------------------------------------
def test_hosts_entries_are_gpu_counts_or_declarations():
    s = settings_with(hosts={"gpu-node-1": 8, "vast-4090": {"gpus": 8, "gpu": "RTX 4090", "gpu_memory_gb": 24,
                                                            "cost_per_hour": 0.45, "ephemeral": True}})
    assert s.hosts["gpu-node-1"] == 8 and sum(s.hosts.values()) == 16  # every reader of hosts: counts
    entry = s.hosts["vast-4090"]
    assert isinstance(entry, HostGpus) and (entry.gpu, entry.gpu_memory_gb, entry.ephemeral) == ("RTX 4090", 24.0, True)
    assert entry != 8 and entry == HostGpus(8, "RTX 4090", 24.0, 0.45, True)


def test_check_config_names_file_and_key_of_each_gpu_problem(tmp_path: Path, capsys):
    bad = {"training": {"data_roots": ["/data"]},
           "hosts": {"lambda-gh200": {"gpu": "GH200", "gpu_vram_gb": 96}, "small": {"gpus": 1, "gpu_memory_gb": 24}},
           "gpus": {"classes": {"H100": {"models": ["H100"], "batch_size": "big"}, "empty": {}},
                    "boards": {"hex9": {"min_memory_gb": 40}, "hexagonal": {"preferred": ["H200"]}},
                    "per_config": {"square19_5p": {}, "square19_2p": {"min_memory_gb": 0}}}}
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert cli.main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out
    for line in (
        "gpus.classes.H100.batch_size: expected an integer > 0, got 'big' (str)",
        "gpus.classes.empty: models: name at least one GPU model (e.g. [H100, H200])",
        "gpus.boards.hex9: unknown board (known: square8, square19, hex8, hexagonal)",
        "gpus.boards.hexagonal.preferred: unknown GPU class 'H200' (known: H100, empty)",
        "gpus.per_config.square19_2p.min_memory_gb: expected a number > 0, got 0 (int)",
        "hosts.lambda-gh200.gpu_vram_gb: unknown key (expected one of: gpus, gpu, gpu_memory_gb, cost_per_hour, "
        "ephemeral); RingRift's gpu_vram_gb is the host's total: write gpu_memory_gb (per GPU) = gpu_vram_gb / gpus",
    ):
        assert f"{path}: {line}" in out.splitlines(), out
    assert any(ln.startswith(f"{path}: gpus.per_config.square19_5p: ") for ln in out.splitlines())


def test_check_config_refuses_a_memory_need_no_declared_gpu_has(tmp_path: Path):
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"training": {"data_roots": ["/data"]},
                                    "hosts": {"a": {"gpu": "RTX 4090", "gpu_memory_gb": 24}},
                                    "gpus": {"boards": {"hexagonal": {"min_memory_gb": 40}}}}))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems == [
        "gpus.boards.hexagonal.min_memory_gb: 40 GB is more than any host's GPU (largest: a, 24 GB): it could "
        "never train"]


def test_the_job_record_carries_the_gpus_section_and_the_default_batch_size():
    s = settings_with()
    record = {"job_id": "j", "settings": worker_settings_json(s), "batch_size": str(s.training.batch_size)}
    assert worker_settings(record).gpus == s.gpus
    assert submitted_batch_size(record) is None  # the default: the GPU's class decides
    assert submitted_batch_size({**record, "batch_size": "64"}) == 64
    assert submitted_batch_size({"batch_size": "64"}) == 64  # an older record: as submitted


# -- the worker's GPUs --------------------------------------------------------------------------------
class FakeNvml:
    """A `pynvml` with the given devices (name, bytes); `fail` makes nvmlInit raise as without a driver."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: list[tuple[str, int]], fail: bool = False) -> None:
        self.devices, self.fail, self.shut = devices, fail, False

    def nvmlInit(self):
        if self.fail:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return self.devices[h][0].encode()  # older bindings return bytes

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=self.devices[h][1])

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-{h:04d}"


GIB = 1024 ** 3


def test_nvml_devices_are_the_nodes_and_cuda_visible_devices_the_slot():
    nvml = FakeNvml([("NVIDIA H100 80GB HBM3", 80 * GIB), ("NVIDIA GeForce RTX 4090", 25757220864)])
    inventory, visible = gpu_inventory.detect("n1", {"CUDA_VISIBLE_DEVICES": "GPU-0001"}, nvml=nvml)
    assert inventory.source == NVML and nvml.shut
    assert [(d.model, d.memory_gb, d.index) for d in inventory.devices] == [
        ("NVIDIA H100 80GB HBM3", 80.0, 0), ("NVIDIA GeForce RTX 4090", 24.0, 1)]
    slot = slot_of(inventory, visible, "w")
    assert slot.name == "1" and slot.gpus[0].model == "NVIDIA GeForce RTX 4090"


def test_without_nvml_the_environment_then_the_hosts_entry_then_unknown():
    no_driver = FakeNvml([], fail=True)
    env = {"RINGRIFT_GPU": "NVIDIA A10", "RINGRIFT_GPU_MEMORY_GB": "24", "RINGRIFT_GPUS": "2",
           "RINGRIFT_EPHEMERAL": "true", "CUDA_VISIBLE_DEVICES": "1"}
    inventory, visible = gpu_inventory.detect("n", env, nvml=no_driver)
    assert (inventory.source, len(inventory.devices), inventory.ephemeral, visible) == (ENV, 2, True, (1,))
    declared = NodeInventory.declared("n", HostGpus(4, "RTX 4090", 24.0, 0.45, True))
    inventory, _ = gpu_inventory.detect("n", {}, declared, nvml=no_driver)
    assert inventory.source == HOSTS and [d.model for d in inventory.devices] == ["RTX 4090"] * 4
    assert inventory.cost_per_hour == 0.45
    inventory, visible = gpu_inventory.detect("n", {}, nvml=FakeNvml([]))  # NVML but no device
    assert inventory.source == "unknown" and inventory.devices[0].memory_gb == 0 and visible is None


def test_the_store_keeps_a_detected_node_over_a_declaration_and_fills_slots_from_the_node():
    conn = fakeredis.FakeRedis()
    store = GpuStore(conn, Keys("t"))
    assert store.declare_hosts({"decl": HostGpus(2, "RTX 4090", 24.0), "seen": HostGpus(1, "A10", 24.0),
                                "plain": 4}, 1.0) == ["decl", "seen"]
    detected = NodeInventory("seen", NVML, (Gpu("NVIDIA H100 80GB HBM3", 80.0, 0, "seen"),))
    store.register_worker(detected, slot_of(detected, None, "w-seen"), 2.0)
    assert store.declare_hosts({"seen": HostGpus(1, "A10", 24.0)}, 3.0) == []  # detection wins
    declared = store.node("decl")
    store.register_worker(declared, slot_of(declared, (1,), "w-decl"), 4.0)
    found = store.inventory()
    assert found["seen"]["gpu"] == "H100 80GB HBM3, 80 GB" and found["seen"]["source"] == NVML
    assert [(s["slot"], s["gpu"], s["worker"]) for s in found["seen"]["slots"]] == [
        ("0", "H100 80GB HBM3, 80 GB", "w-seen")]
    assert [(s["slot"], s["gpu"]) for s in found["decl"]["slots"]] == [("1", "RTX 4090, 24 GB")]
    raw = conn.hgetall("t:{lease}:gpu:decl:1")  # plain UTF-8 fields
    assert raw[b"model"] == b"RTX 4090" and raw[b"memory_gb"] == b"24" and raw[b"source"] == b"hosts"


# -- the trainer gets the batch size of the GPU the attempt got ----------------------------------------
def test_the_attempts_gpu_fills_batch_size_and_gpu_placeholders(tmp_path: Path):
    s = settings_with()
    inventory = NodeInventory("n", NVML, (H100,))
    registered = gpu_inventory.Registered(inventory, slot_of(inventory, None, "w"), "ringrift")
    record = {"job_id": "j", "config_key": "hexagonal_2p", "board_type": "hexagonal", "num_players": "2",
              "npz_path": "/d.npz", "epochs": "3", "batch_size": str(s.training.batch_size), "learning_rate": "0.001",
              "early_stopping_patience": "5", "settings": worker_settings_json(s)}
    fields, size = attempt_gpu(registered, s, record, resumes=False)
    assert size.value == 1536 and fields["gpu_class"] == "H100" and fields["gpu_slot"] == "0"
    filled = {**record, **fields, "batch_size_used": str(size.value)}
    argv = build_argv(("{python}", "t.py", "--bs={batch_size}", "--gpu={gpu_class}"),
                      record_values(filled, attempt_paths(tmp_path, 1), 1))
    assert argv[-2:] == ["--bs=1536", "--gpu=H100"]
    small = NodeInventory("m", NVML, (RTX4090,))
    on_small = gpu_inventory.Registered(small, slot_of(small, None, "w"), "ringrift")
    started = {**record, "batch_size_started": "1536"}
    assert attempt_gpu(on_small, s, started, resumes=True)[1].value == 256  # cannot hold 1536
    assert attempt_gpu(registered, s, {**started, "batch_size_started": "256"}, resumes=True)[1].value == 256
    assert attempt_gpu(on_small, s, {**record, "batch_size": "2048"}, resumes=False)[1].value == 2048  # submitted
    assert json.loads(record["settings"])["default_batch_size"] == s.training.batch_size


def test_gpu_classes_round_trip_through_the_job_record():
    s = settings_with()
    assert worker_settings({"settings": worker_settings_json(s)}).gpus.classes["A100-80"] == GpuClass(
        models=("A100",), min_memory_gb=70.0, batch_size=1024, cost_per_hour=1.8)
