"""The scheduling simulator's heterogeneous clusters: GPUs shaped like RingRift's, what each GPU class
truly does with each board (the world's truth, hidden from the coordinator), ephemeral hosts that
vanish, and the placement policies compared on them (each is settings, nothing else).

Hosts come from RingRift's committed snapshots (`ai-service/config/.config_backups/
distributed_hosts_20260101_222705.yaml`, `distributed_hosts.template.yaml` in synaptent/RingRift):
lambda GH200 96 GB, nebius H100 SXM 80, runpod A100 PCIe 80, nebius L40S 48, vast.ai (ephemeral)
8x RTX 4090 / 8x RTX 3090 / RTX 5090 32 / A40 46, vultr "A100D-20C" vGPUs of 20 GB; costs per hour
from its `GPU_COST_PER_HOUR`. Each host is a `hosts` entry (`HostGpus`: gpu, gpu_memory_gb per
GPU, cost_per_hour, ephemeral) that `ringrift-train run` declares and each simulated worker finds
as a real worker without NVML does (`workers.gpu_inventory.register`).

- `ringrift-contended`: 9 GPUs for 12 configs, 3 of them >= 40 GB (GH200, H100, A100-80), six
  of 20-32 GB (a 4x RTX 4090 vast.ai host and an RTX 5090, both ephemeral; a 20 GB vGPU).
- `ringrift-roomy`: 28 GPUs, 8 of them >= 40 GB.
- `ringrift-gang`: 19 GPUs on multi-GPU hosts (4x H100, 2x A100-80, 2x L40S, a GH200; 4x RTX 4090,
  4x RTX 3090 and an RTX 5090 on ephemeral vast.ai hosts; a 20 GB vGPU), for multi-GPU trainings:
  its placements (`gang-backfill`, `gang-hold`, `gang-off`) make hexagonal a 2-GPU training (>= 40
  GB each) and hexagonal_4p a 4-GPU one (>= 80 GB: only the H100 host), and differ only in
  `gpus.backfill`. A gang of N trains `GANG_EFFICIENCY` x N times as fast as one GPU of its class
  (an assumption: data-parallel scaling at 90%), and needs the board's memory on each GPU.

Truth (`GPU_KINDS`, `MEMORY_NEED_GB`): speed relative to an H100 on the small boards (square8,
hex8: small models, a big GPU is barely faster) and on the large ones (square19, hexagonal); the
world's training hours (`World.training_hours`: the board's cost per sample x the export's samples)
are an H100's. A training needs `MEMORY_NEED_GB` of its board (hexagonal
4p more); on a GPU with less it dies of out-of-memory `OOM_AFTER_H` after its start (data loaded,
model built, first batches): a failed attempt (`trainer_error`, which the real worker also records
on the config's and the node's circuit breakers). An ephemeral host is up for an exponential time
(mean `EPHEMERAL_UP_MEAN_H`), then gone for `EPHEMERAL_GONE_H` (its attempts lose the work since
their newest checkpoint; their leases expire and the reaper retries them), then a fresh instance
under the same name registers again. RingRift's health monitor reports the host down
`HEALTH_DELAY_S` after it vanished and healthy when it is back (CLUSTER_HEALTH_CHANGED).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from coordinator.core.settings import BACKFILL_MODES, GpuClass, GpuRequirement, GpuSettings, HostGpus, Settings

CLUSTERS = ("uniform", "ringrift-contended", "ringrift-roomy", "ringrift-gang")
SMALL_BOARDS = frozenset({"square8", "hex8"})
BIG_GPU_GB = 40.0  # "big GPU": one that can hold a large board
OOM_AFTER_H = 0.1
EPHEMERAL_UP_MEAN_H = 20.0
EPHEMERAL_GONE_H = (1.0, 4.0)
HEALTH_DELAY_S = 60.0
GANG_EFFICIENCY = 0.9  # a gang of N GPUs trains N x this as fast as one GPU of its class


@dataclass(frozen=True)
class GpuKind:
    """One GPU model as the world knows it: NVML-style name, memory, true speeds, cost per hour."""

    model: str
    memory_gb: float
    speed_small: float  # x an H100 on square8/hex8
    speed_large: float  # x an H100 on square19/hexagonal
    cost_per_hour: float


GPU_KINDS = {
    "GH200": GpuKind("NVIDIA GH200 480GB", 96, 1.05, 1.30, 0.70),
    "H100": GpuKind("NVIDIA H100 80GB HBM3", 80, 1.00, 1.00, 2.50),
    "A100-80": GpuKind("NVIDIA A100 80GB PCIe", 80, 0.85, 0.65, 1.80),
    "L40S": GpuKind("NVIDIA L40S", 48, 0.90, 0.60, 1.20),
    "A40": GpuKind("NVIDIA A40", 46, 0.75, 0.45, 0.50),
    "RTX 5090": GpuKind("NVIDIA GeForce RTX 5090", 32, 1.00, 0.70, 0.80),
    "RTX 4090": GpuKind("NVIDIA GeForce RTX 4090", 24, 0.90, 0.50, 0.45),
    "RTX 3090": GpuKind("NVIDIA GeForce RTX 3090", 24, 0.65, 0.33, 0.30),
    "A100D-20C": GpuKind("NVIDIA A100D-20C", 20, 0.45, 0.30, 0.80),  # a vGPU slice: an "A100" of 20 GB
}
# The truth: GB a training of the board needs (hexagonal_4p: `MEMORY_NEED_4P_HEX_GB`).
MEMORY_NEED_GB = {"square8": 6.0, "hex8": 6.0, "square19": 36.0, "hexagonal": 38.0}
MEMORY_NEED_4P_HEX_GB = 60.0


@dataclass(frozen=True)
class Host:
    name: str
    kind: str
    gpus: int = 1
    ephemeral: bool = False

    def entry(self) -> HostGpus:
        k = GPU_KINDS[self.kind]
        return HostGpus(self.gpus, k.model, k.memory_gb, k.cost_per_hour, self.ephemeral)


HOSTS = {
    "ringrift-contended": (
        Host("lambda-gh200-1", "GH200"), Host("nebius-h100-1", "H100"), Host("runpod-a100-1", "A100-80"),
        Host("vast-29129529", "RTX 4090", 4, ephemeral=True), Host("vast-29118472", "RTX 5090", ephemeral=True),
        Host("vultr-a100-20gb", "A100D-20C"),
    ),
    "ringrift-roomy": (
        Host("lambda-gh200-1", "GH200"), Host("lambda-gh200-2", "GH200"), Host("lambda-gh200-3", "GH200"),
        Host("nebius-h100-1", "H100"), Host("nebius-h100-3", "H100"), Host("runpod-a100-1", "A100-80"),
        Host("nebius-backbone-1", "L40S"), Host("vast-28918742", "A40", ephemeral=True),
        Host("vast-29129529", "RTX 4090", 8, ephemeral=True), Host("vast-29118471", "RTX 3090", 8, ephemeral=True),
        Host("vast-29128352", "RTX 5090", 2, ephemeral=True),
        Host("vultr-a100-20gb", "A100D-20C"), Host("vultr-a100-20gb-2", "A100D-20C"),
    ),
    # Multi-GPU hosts for multi-GPU ("gang") trainings: a 4x H100 host, two 2-GPU hosts, one GH200,
    # 24-32 GB cards on ephemeral vast.ai hosts, a 20 GB vGPU (19 GPUs, 9 of them >= 40 GB).
    "ringrift-gang": (
        Host("nebius-h100x4-1", "H100", 4), Host("runpod-a100x2-1", "A100-80", 2),
        Host("nebius-l40sx2-1", "L40S", 2), Host("lambda-gh200-1", "GH200"),
        Host("vast-29129529", "RTX 4090", 4, ephemeral=True), Host("vast-29118471", "RTX 3090", 4, ephemeral=True),
        Host("vast-29118472", "RTX 5090", ephemeral=True), Host("vultr-a100-20gb", "A100D-20C"),
    ),
}


@dataclass(frozen=True)
class SimGpu:
    """One GPU slot: one simulated `rq worker training` (`CUDA_VISIBLE_DEVICES=<index>`)."""

    worker: str
    node: str
    index: int = 0
    kind: str | None = None  # None: the uniform cluster (every GPU the same, nothing declared)
    ephemeral: bool = False

    @property
    def memory_gb(self) -> float:
        return GPU_KINDS[self.kind].memory_gb if self.kind else float("inf")

    @property
    def big(self) -> bool:
        return self.memory_gb >= BIG_GPU_GB


def memory_need_gb(config_key: str) -> float:
    board = config_key.rsplit("_", 1)[0]
    return MEMORY_NEED_4P_HEX_GB if config_key == "hexagonal_4p" else MEMORY_NEED_GB[board]


def speed(gpu: SimGpu, config_key: str) -> float:
    """How many times an H100's speed `gpu` trains the config at (1 on the uniform cluster)."""
    if gpu.kind is None:
        return 1.0
    k = GPU_KINDS[gpu.kind]
    return k.speed_small if config_key.rsplit("_", 1)[0] in SMALL_BOARDS else k.speed_large


def gang_speedup(gpus: int) -> float:
    """How many times one GPU's speed a training on `gpus` GPUs of one node runs at."""
    return 1.0 if gpus <= 1 else GANG_EFFICIENCY * gpus


def fits(gpu: SimGpu, config_key: str) -> bool:
    """The truth: whether the training fits in the GPU's memory."""
    return gpu.memory_gb >= memory_need_gb(config_key)


def gpus_of(cluster: str, count: int) -> list[SimGpu]:
    """The GPU slots of `cluster` (`uniform`: `count` 1-GPU nodes, as before heterogeneous clusters)."""
    if cluster == "uniform":
        return [SimGpu(f"node-{i}", f"node-{i}") for i in range(count)]
    return [SimGpu(f"{h.name}:{i}" if h.gpus > 1 else h.name, h.name, i, h.kind, h.ephemeral)
            for h in HOSTS[cluster] for i in range(h.gpus)]


def hosts_of(cluster: str, count: int) -> dict[str, int]:
    if cluster == "uniform":
        return {f"node-{i}": 1 for i in range(count)}
    return {h.name: h.entry() for h in HOSTS[cluster]}


def outages(cluster: str, seed: int, hours: float) -> list[tuple[float, str, float]]:
    """(hour it vanishes, host, hour it is back) for each ephemeral host: the same for every policy."""
    if cluster == "uniform":
        return []
    out = []
    for n, host in enumerate(HOSTS[cluster]):
        if not host.ephemeral:
            continue
        rng = random.Random(seed * 7057 + n * 131 + 11)
        t = rng.expovariate(1.0 / EPHEMERAL_UP_MEAN_H)
        while t < hours:
            back = t + rng.uniform(*EPHEMERAL_GONE_H)
            out.append((t, host.name, back))
            t = back + rng.expovariate(1.0 / EPHEMERAL_UP_MEAN_H)
    return sorted(out)


# -- placement policies: settings only ----------------------------------------------------------------
# The README's "Heterogeneous GPUs" example (RingRift's classes and its large boards' needs).
README_CLASSES = {
    "GH200": GpuClass(("GH200",), batch_size=2048),
    "H100": GpuClass(("H100", "H200"), batch_size=1536),
    "A100-80": GpuClass(("A100",), min_memory_gb=70, batch_size=1024),
    "A100": GpuClass(("A100",), batch_size=512),
    "24GB": GpuClass(("A10", "RTX 4090", "RTX 3090"), batch_size=256),
}
README_BOARDS = {"hexagonal": GpuRequirement(40, preferred=("H100", "GH200")), "square19": GpuRequirement(40)}
README_PER_CONFIG = {"hexagonal_4p": GpuRequirement(80)}


@dataclass(frozen=True)
class PlacementPolicy:
    """A way to place trainings on GPUs: the settings it changes (a later policy may add a flag)."""

    name: str
    configure: Callable[[Settings], Settings]


def _class_blind(s: Settings) -> Settings:
    """Today's default: no `gpus` requirements, every job on `training`, any GPU takes it."""
    return replace(s, gpus=GpuSettings())


# No setting turns the worker's hand-back off: a `faster_margin` no GPU can beat drops its speed
# clause only; a preferred class free now, or an equally fast free GPU with a cheaper hour, still
# takes a job from the worker that dequeued it (`placement.better_elsewhere`).
NO_SPEED_MARGIN = 1e9


def _memory_aware(s: Settings) -> Settings:
    """The README's example (classes, `gpus.boards` and `gpus.per_config`), with the speed preference
    off: `gpus.faster_margin` at NO_SPEED_MARGIN."""
    return replace(s, gpus=GpuSettings(README_CLASSES, README_BOARDS, README_PER_CONFIG,
                                       faster_margin=NO_SPEED_MARGIN))


def _speed_aware(s: Settings) -> Settings:
    """The README's example as shipped: memory needs, and the GPU expected to finish first by the
    learned speeds (`gpus.faster_margin` at its default)."""
    return replace(s, gpus=GpuSettings(README_CLASSES, README_BOARDS, README_PER_CONFIG))


# Multi-GPU trainings (issue 27): hexagonal on 2 GPUs of one node, hexagonal_4p on 4 of 80 GB.
GANG_BOARDS = {**README_BOARDS, "hexagonal": replace(README_BOARDS["hexagonal"], gpus=2)}
GANG_PER_CONFIG = {"hexagonal_4p": GpuRequirement(80, gpus=4)}


def _gang(mode: str) -> Callable[[Settings], Settings]:
    """The speed-aware settings with the multi-GPU boards, and `gpus.backfill` at `mode`."""
    def configure(s: Settings) -> Settings:
        return replace(s, gpus=GpuSettings(README_CLASSES, GANG_BOARDS, GANG_PER_CONFIG, backfill=mode))
    return configure


PLACEMENTS = {p.name: p for p in (PlacementPolicy("class-blind", _class_blind),
                                  PlacementPolicy("memory-aware", _memory_aware),
                                  PlacementPolicy("speed-aware", _speed_aware),
                                  *(PlacementPolicy(f"gang-{mode}", _gang(mode)) for mode in BACKFILL_MODES))}
GANG_PLACEMENTS = tuple(f"gang-{mode}" for mode in BACKFILL_MODES)
