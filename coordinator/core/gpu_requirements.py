"""GPUs against what a training needs of them: a GPU's class, whether it meets a config's
requirement (and why not, in words), and the batch size a job gets on it. Pure: no Redis, no NVML.

- A GPU is of the first class in `gpus.classes` one of whose `models` it matches, and whose
  `min_memory_gb` (if any) it has. A model matches as whole words, case-insensitive: `A100`
  matches "NVIDIA A100-SXM4-80GB" but `A10` does not (RingRift's substring match does), and
  `RTX 4090` matches "NVIDIA GeForce RTX 4090".
- `meets(gpu, requirement, classes)`: memory first (`min_memory_gb`), then `allowed` classes.
  `preferred` never refuses a GPU; `preference_rank` orders the GPUs that meet it.
- `gpus_needed(requirement)`: how many GPUs of one node a training takes at once (`gpus`, else 1);
  `node_meets(gpu, node_devices, ...)`: a worker's GPU meets it and its node has that many GPUs
  that meet it (a multi-GPU training's lease takes them all at once: `stores/leases.py`).
- `batch_size_for`: a batch size the submission named wins on any GPU; an attempt that resumes
  keeps the batch size its job started with unless its GPU's class cannot hold it (the class's
  batch size is smaller); otherwise the class's batch size, else the job's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coordinator.core.keys import TRAINING_QUEUE
from coordinator.core.settings import GpuClass, GpuRequirement

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Gpu:
    """One GPU as a worker knows it: its model name, memory (GB) and device index on its node."""

    model: str
    memory_gb: float
    index: int = 0
    node: str = ""

    def describe(self) -> str:
        """"H100 80GB HBM3, 80 GB" (the vendor's prefix dropped)."""
        model = self.model.removeprefix("NVIDIA ").strip() or "unknown GPU"
        return f"{model}, {self.memory_gb:g} GB" if self.memory_gb else model


@dataclass(frozen=True)
class Verdict:
    """`meets`' answer: truthy when the GPU meets the requirement, else `why` says what it lacks."""

    ok: bool
    why: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class BatchSize:
    """`batch_size_for`'s answer: the batch size and why it is that one (for the job record)."""

    value: int
    why: str


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def model_matches(pattern: str, model: str) -> bool:
    """`pattern`'s words appear in `model`'s, in order and next to each other."""
    want, have = _words(pattern), _words(model)
    return bool(want) and any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1))


def gpu_class(gpu: Gpu, classes: Mapping[str, GpuClass]) -> str | None:
    """The name of the first class `gpu` belongs to, or None (no class matches)."""
    for name, cls in classes.items():
        if any(model_matches(m, gpu.model) for m in cls.models) and (
                cls.min_memory_gb is None or gpu.memory_gb >= cls.min_memory_gb):
            return name
    return None


def meets(gpu: Gpu, requirement: GpuRequirement, classes: Mapping[str, GpuClass]) -> Verdict:
    """Whether `gpu` meets `requirement`, and if not why, naming the GPU's node and what it has:
    "needs >= 40 GB; gpu-node-3 has 24 GB (RTX 4090)"."""
    where = gpu.node or f"GPU {gpu.index}"
    need = requirement.min_memory_gb
    if need is not None and gpu.memory_gb < need:
        has = f"{gpu.memory_gb:g} GB" if gpu.memory_gb else "an unknown amount of memory"
        return Verdict(False, f"needs >= {need:g} GB; {where} has {has} ({gpu.describe()})")
    if requirement.allowed is not None:
        cls = gpu_class(gpu, classes)
        if cls not in requirement.allowed:
            what = f"class {cls}" if cls else "no known class"
            return Verdict(False, f"needs one of {', '.join(requirement.allowed)}; {where} has {gpu.describe()} "
                                  f"({what})")
    return Verdict(True)


def gpus_needed(requirement: GpuRequirement) -> int:
    """How many GPUs of one node a training of `requirement` takes at once (unset: 1)."""
    return max(1, requirement.gpus or 1)


def node_meets(gpu: Gpu, node_devices: Sequence[Gpu], requirement: GpuRequirement,
               classes: Mapping[str, GpuClass]) -> Verdict:
    """Whether a worker whose GPU is `gpu`, on a node with `node_devices`, may take a job of
    `requirement`: its GPU meets it, and (a multi-GPU training) the node has `gpus_needed` GPUs that
    meet it (its own among them)."""
    verdict = meets(gpu, requirement, classes)
    needed = gpus_needed(requirement)
    if not verdict or needed == 1:
        return verdict
    fitting = sum(1 for d in node_devices if meets(d, requirement, classes))
    if fitting < needed:
        where = gpu.node or "this node"
        return Verdict(False, f"needs {needed} GPUs on one node; {where} has {fitting} that fit")
    return Verdict(True)


def preference_rank(gpu: Gpu, requirement: GpuRequirement, classes: Mapping[str, GpuClass]) -> int:
    """0 for the GPU of the first `preferred` class, 1 for the second, ...; len(preferred) for a
    GPU of no preferred class (every GPU ranks 0 when nothing is preferred)."""
    preferred = requirement.preferred or ()
    cls = gpu_class(gpu, classes)
    return preferred.index(cls) if cls in preferred else len(preferred)


def batch_size_for(gpu: Gpu | None, classes: Mapping[str, GpuClass], job_batch_size: int,
                   submitted: int | None = None, started_with: int | None = None) -> BatchSize:
    """The batch size of an attempt on `gpu` (None: unknown GPU). `job_batch_size`: the record's
    (the default where nothing was submitted); `submitted`: what the submission named;
    `started_with`: what an earlier attempt of the job used (a resume)."""
    if submitted is not None:
        return BatchSize(submitted, "named at submit")
    cls = gpu_class(gpu, classes) if gpu is not None else None
    class_size = classes[cls].batch_size if cls is not None else None
    if started_with is not None:
        if class_size is not None and class_size < started_with:
            return BatchSize(class_size, f"{cls} class (cannot hold {started_with}, which the job started with)")
        return BatchSize(started_with, "kept from the job's first attempt")
    if class_size is not None:
        return BatchSize(class_size, f"{cls} class")
    return BatchSize(job_batch_size, "the job's (no class batch size for this GPU)")


# -- placement: which RQ queue carries a job of a requirement, and what a worker listens to ------------
def restricts(requirement: GpuRequirement) -> bool:
    """Whether the requirement refuses some GPU (`preferred` alone refuses none; a multi-GPU one
    refuses the nodes with fewer GPUs)."""
    return requirement.min_memory_gb is not None or requirement.allowed is not None or gpus_needed(requirement) > 1


def queue_name(requirement: GpuRequirement) -> str:
    """The RQ queue of a job with `requirement`: `training` when it runs anywhere, else one named by
    what it needs, e.g. `training-ge40gb`, `training-only-GH200-H100`, `training-ge80gb-only-H100`,
    `training-x2gpus` (only workers whose GPU, and node, meet it listen to it)."""
    if not restricts(requirement):
        return TRAINING_QUEUE
    parts = [TRAINING_QUEUE]
    if requirement.min_memory_gb is not None:
        parts.append(f"ge{requirement.min_memory_gb:g}gb")
    if requirement.allowed is not None:
        parts.append("only-" + "-".join(sorted(re.sub(r"[^A-Za-z0-9_.]+", "_", a) for a in requirement.allowed)))
    if gpus_needed(requirement) > 1:
        parts.append(f"x{gpus_needed(requirement)}gpus")
    return "-".join(parts)


def requirement_spec(requirement: GpuRequirement, classes: Mapping[str, GpuClass]) -> dict:
    """What a worker needs to tell whether its GPU meets `requirement`, as JSON-able data: the
    requirement and the definitions of the classes it allows (a worker has no settings of its own)."""
    allowed = list(requirement.allowed) if requirement.allowed is not None else None
    gang = {"gpus": gpus_needed(requirement)} if gpus_needed(requirement) > 1 else {}
    return {"min_memory_gb": requirement.min_memory_gb, "allowed": allowed, **gang,
            "classes": {name: {"models": list(c.models), "min_memory_gb": c.min_memory_gb}
                        for name, c in classes.items()} if allowed is not None else {}}


def from_spec(spec: Mapping) -> tuple[GpuRequirement, dict[str, GpuClass]]:
    """`requirement_spec`'s data back as a requirement and its classes."""
    allowed = spec.get("allowed")
    classes = {name: GpuClass(tuple(c["models"]), c.get("min_memory_gb")) for name, c in
               (spec.get("classes") or {}).items()}
    return GpuRequirement(spec.get("min_memory_gb"), tuple(allowed) if allowed is not None else None,
                          gpus=spec.get("gpus")), classes


def need_text(requirement: GpuRequirement) -> str:
    """What a GPU must have, in words: ">= 40 GB", "class H100 or GH200", ">= 80 GB of class H100"."""
    parts = []
    if requirement.min_memory_gb is not None:
        parts.append(f">= {requirement.min_memory_gb:g} GB")
    if requirement.allowed is not None:
        parts.append(("of " if parts else "") + "class " + " or ".join(requirement.allowed))
    if gpus_needed(requirement) > 1:
        parts.insert(0, f"{gpus_needed(requirement)} GPUs on one node" + (", each" if parts else ""))
    return " ".join(parts) or "any GPU"
