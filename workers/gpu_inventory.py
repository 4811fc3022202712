"""What GPU(s) this worker has, found once when it starts and written to Redis (`GpuStore`).

In this order:
1. NVML (`nvidia-ml-py`, module `pynvml`): every device's model name, total memory and index.
   Without the library or a driver (`NVMLError`), or with no device, the next source is used.
2. The worker's environment: `RINGRIFT_GPU` (model), `RINGRIFT_GPU_MEMORY_GB` (per GPU),
   `RINGRIFT_GPUS` (count, also the node's slot count), `RINGRIFT_GPU_COST_PER_HOUR`,
   `RINGRIFT_EPHEMERAL` (1/true).
3. The node's `hosts` entry, as `ringrift-train run` wrote it to Redis (`gpu`, `gpu_memory_gb`,
   `gpus`, `cost_per_hour`, `ephemeral`).
4. Nothing known: `RINGRIFT_GPUS` (else 1) GPUs of unknown model and memory.

The worker's own GPUs (its slot) are those `CUDA_VISIBLE_DEVICES` names (indices, or NVML UUIDs
`GPU-...`), else all of the node's. `RINGRIFT_PREFIX` names the key prefix (`redis.prefix`) when it
is not the default; a job of another prefix registers the slot under its own when it starts.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import redis

from coordinator.core.clock import RedisClock
from coordinator.core.gpu_requirements import Gpu
from coordinator.core.keys import Keys
from coordinator.core.settings import RedisSettings
from coordinator.ops.status import WORKER_GPU_FIELDS
from coordinator.stores.gpus import ENV, HOSTS, NVML, GpuStore, NodeInventory, Slot, slot_of

log = logging.getLogger(__name__)
NODE_ENV, GPUS_ENV, PREFIX_ENV = "RINGRIFT_NODE", "RINGRIFT_GPUS", "RINGRIFT_PREFIX"
GPU_ENV, GPU_MEMORY_ENV = "RINGRIFT_GPU", "RINGRIFT_GPU_MEMORY_GB"
COST_ENV, EPHEMERAL_ENV = "RINGRIFT_GPU_COST_PER_HOUR", "RINGRIFT_EPHEMERAL"
UNKNOWN = "unknown"
GIB = 1024 ** 3  # NVML's bytes -> GB as the cards are sold: an "80GB" H100 reports 80 GiB


@dataclass(frozen=True)
class Registered:
    """This worker's inventory and slot, and the key prefix they were written under."""

    inventory: NodeInventory
    slot: Slot
    prefix: str
    whole_node: bool = False  # no CUDA_VISIBLE_DEVICES: any of the node's devices is the worker's


_current: Registered | None = None  # set in the worker's main process: its forked work horses inherit it


def node_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get(NODE_ENV) or socket.gethostname()


def nvml_devices(node: str, nvml: ModuleType | None = None) -> tuple[tuple[Gpu, ...], dict[str, int]] | None:
    """Every device NVML reports (and UUID -> index), or None without NVML, a driver or a device."""
    try:
        if nvml is None:
            import pynvml as nvml  # nvidia-ml-py
        nvml.nvmlInit()
    except Exception as exc:  # ImportError, NVMLError_LibraryNotFound / DriverNotLoaded, ...
        log.info("no NVML (%s): GPUs from the environment or the node's hosts entry", exc)
        return None
    try:
        devices, uuids = [], {}
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle).total
            devices.append(Gpu(_text(name), round(memory / GIB, 1), index, node))
            try:
                uuids[_text(nvml.nvmlDeviceGetUUID(handle))] = index
            except Exception:  # noqa: BLE001 - a UUID only serves CUDA_VISIBLE_DEVICES=GPU-...
                pass
        return (tuple(devices), uuids) if devices else None
    except Exception as exc:
        log.warning("NVML failed while listing devices (%s): GPUs from the environment or hosts", exc)
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def visible_devices(env: Mapping[str, str], uuids: Mapping[str, int]) -> tuple[int, ...] | None:
    """The device indices CUDA_VISIBLE_DEVICES names (indices or UUIDs), None when unset or unreadable."""
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None or not raw.strip():
        return None
    indices = []
    for item in (part.strip() for part in raw.split(",")):
        if item.isdigit():
            indices.append(int(item))
        elif item in uuids:
            indices.append(uuids[item])
        else:
            return None
    return tuple(indices)


def detect(node: str, env: Mapping[str, str], declared: NodeInventory | None = None,
           nvml: ModuleType | None = None) -> tuple[NodeInventory, tuple[int, ...] | None]:
    """This node's inventory (module docstring: the order of sources) and the worker's device
    indices (None: all). `declared`: the node's `hosts` entry as stored in Redis, if any."""
    found = nvml_devices(node, nvml)
    cost = _float(env.get(COST_ENV))
    ephemeral = env.get(EPHEMERAL_ENV, "").lower() in ("1", "true", "yes")
    if declared is not None:
        cost = declared.cost_per_hour if cost is None else cost
        ephemeral = ephemeral or declared.ephemeral
    if found:
        devices, uuids = found
        return NodeInventory(node, NVML, devices, cost, ephemeral), visible_devices(env, uuids)
    visible = visible_devices(env, {})
    count = int(env.get(GPUS_ENV) or 0) or (len(declared.devices) if declared else 0) or 1
    if env.get(GPU_ENV) or env.get(GPU_MEMORY_ENV):
        gpu = Gpu(env.get(GPU_ENV, ""), _float(env.get(GPU_MEMORY_ENV)) or 0.0)
        devices = tuple(Gpu(gpu.model, gpu.memory_gb, i, node) for i in range(count))
        return NodeInventory(node, ENV, devices, cost, ephemeral), visible
    if declared is not None and declared.source == HOSTS and declared.devices:
        return NodeInventory(node, HOSTS, declared.devices, cost, ephemeral), visible
    devices = tuple(Gpu("", 0.0, i, node) for i in range(count))
    return NodeInventory(node, UNKNOWN, devices, cost, ephemeral), visible


def register(conn: redis.Redis, worker: str, prefix: str | None = None, env: Mapping[str, str] | None = None,
             nvml: ModuleType | None = None) -> Registered:
    """Detect this worker's GPUs and write its node's inventory and its slot (`GpuStore`); kept
    for the work horses (`current`)."""
    global _current
    env = os.environ if env is None else env
    prefix = prefix or env.get(PREFIX_ENV) or RedisSettings.prefix
    store = GpuStore(conn, Keys(prefix))
    node = node_name(env)
    inventory, visible = detect(node, env, store.node(node), nvml)
    slot = slot_of(inventory, visible, worker)
    store.register_worker(inventory, slot, RedisClock(conn)())
    _current = Registered(inventory, slot, prefix, whole_node=visible is None)
    log.info("GPU slot %s of %s: %s (%s)", slot.name, node,
             ", ".join(g.describe() for g in slot.gpus) or "unknown GPU", inventory.source)
    return _current


def for_job(conn: redis.Redis, worker: str, prefix: str, made: Registered | None = None) -> Registered:
    """This worker's registration under the job's key prefix: the one made at start (`made`, else
    this process's: `current()`), or made now (another prefix, or a worker class that did not
    register at start)."""
    made = made if made is not None else _current
    if made is not None and made.prefix == prefix:
        return made
    return register(conn, worker, prefix)


def current() -> Registered | None:
    return _current


def slot_fields(registered: Registered | None) -> dict[str, str]:
    """What RQ's worker hash carries of the worker's GPU (`status` reads it)."""
    if registered is None:
        return {}
    gpu = registered.slot.gpus[0] if registered.slot.gpus else None
    values = (registered.slot.name, gpu.describe() if gpu and (gpu.model or gpu.memory_gb) else UNKNOWN)
    return dict(zip(WORKER_GPU_FIELDS, values))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        log.warning("not a number: %r (ignored)", value)
        return None
