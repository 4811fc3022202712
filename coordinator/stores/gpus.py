"""The GPU inventory in Redis: each node's GPUs and each worker slot's, as the workers found them.

A worker writes its node's inventory and its own slot when it starts (`register_worker`): the
GPUs NVML reports, else those its environment or its node's `hosts` entry declares (`source`
says which). `ringrift-train run` writes what `hosts` declares (`declare_hosts`) for nodes no
worker has detected, so a worker without NVML or environment finds its node's declaration, and
`status` shows a declared node before its workers start. A node's detected inventory is never
replaced by a declaration. Plain UTF-8 fields (keys in `coordinator/core/keys.py`):

    HGETALL 'ringrift:{lease}:gpus:gpu-node-1'      # source, gpus, model, memory_gb, devices (JSON), ...
    HGETALL 'ringrift:{lease}:gpu:gpu-node-1:0'     # slot "0": devices, model, memory_gb, source, worker

A slot is named by the device indices its worker uses (CUDA_VISIBLE_DEVICES, e.g. "0" or "0,1").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from coordinator.core.gpu_requirements import Gpu
from coordinator.core.keys import Keys
from coordinator.core.lua import script
from coordinator.core.settings import HostGpus
from coordinator.core.text import decode_hash

NVML, ENV, HOSTS = "nvml", "env", "hosts"  # where an inventory came from, most trusted first
DETECTED = frozenset({NVML, ENV})
LIFETIME_WEIGHT = 0.3  # the newest lifetime's weight in the observed mean


@dataclass(frozen=True)
class NodeInventory:
    """A node's GPUs (`devices`, by index), where they came from, and what the node declares."""

    node: str
    source: str
    devices: tuple[Gpu, ...]
    cost_per_hour: float | None = None
    ephemeral: bool = False

    def fields(self) -> dict[str, str]:
        models = {d.model for d in self.devices}
        return {
            "source": self.source, "gpus": str(len(self.devices)),
            "model": models.pop() if len(models) == 1 else ("mixed" if models else ""),
            "memory_gb": f"{min((d.memory_gb for d in self.devices), default=0):g}",
            "devices": json.dumps([{"index": d.index, "model": d.model, "memory_gb": d.memory_gb}
                                   for d in self.devices]),
            "cost_per_hour": "" if self.cost_per_hour is None else f"{self.cost_per_hour:g}",
            "ephemeral": "1" if self.ephemeral else "0",
        }

    @classmethod
    def declared(cls, node: str, entry: HostGpus) -> NodeInventory:
        """What a `hosts` entry declares: `int(entry)` GPUs of its model and memory."""
        devices = tuple(Gpu(entry.gpu or "", entry.gpu_memory_gb or 0.0, i, node) for i in range(int(entry)))
        return cls(node, HOSTS, devices, entry.cost_per_hour, entry.ephemeral)


@dataclass(frozen=True)
class Slot:
    """One worker's GPUs: `devices` are indices into its node's inventory."""

    node: str
    devices: tuple[int, ...]
    worker: str = ""
    gpus: tuple[Gpu, ...] = field(default=())

    @property
    def name(self) -> str:
        return ",".join(str(i) for i in self.devices)


def slot_of(inventory: NodeInventory, devices: Sequence[int] | None, worker: str) -> Slot:
    """The slot of a worker using `devices` (None: all of the node's) of `inventory`."""
    chosen = [d for d in inventory.devices if devices is None or d.index in devices]
    indices = tuple(devices) if devices is not None else tuple(d.index for d in inventory.devices)
    return Slot(inventory.node, indices or (0,), worker, tuple(chosen))


class GpuStore:
    """Every write of the GPU inventory; the reads `status`, `locks`, the dashboard and the metrics use."""

    def __init__(self, conn: redis.Redis, keys: Keys) -> None:
        self.conn = conn
        self.keys = keys
        self._end_of_life = script(conn, "node_lifetime.lua")

    def register_worker(self, inventory: NodeInventory, slot: Slot, now: float) -> None:
        """A starting worker's node inventory (unless it only has a declaration and the node has a
        detected one) and its slot, in one transaction."""
        node_key = self.keys.gpu_node(inventory.node)
        keep_node = inventory.source not in DETECTED and self._detected(node_key)
        first = slot.gpus[0] if slot.gpus else None
        slot_fields = {"node": slot.node, "slot": slot.name, "devices": slot.name, "worker": slot.worker,
                       "source": inventory.source, "model": first.model if first else "",
                       "memory_gb": f"{first.memory_gb:g}" if first else "0", "updated_at": f"{now:.3f}"}
        with self.conn.pipeline(transaction=True) as pipe:
            if not keep_node:
                pipe.hset(node_key, mapping={**inventory.fields(), "updated_at": f"{now:.3f}"})
            pipe.sadd(self.keys.gpu_nodes, inventory.node)
            pipe.hsetnx(node_key, "up_since", f"{now:.3f}")  # this life of the host (`end_of_life`)
            pipe.hset(self.keys.gpu_slot(slot.node, slot.name), mapping=slot_fields)
            pipe.sadd(self.keys.gpu_slots(slot.node), slot.name)
            pipe.execute()

    def declare_hosts(self, hosts: Mapping[str, int], now: float) -> list[str]:
        """Write what `hosts` declares for each node with GPU fields whose inventory no worker
        detected; the nodes written."""
        declared = {node: e for node, e in hosts.items() if isinstance(e, HostGpus) and (e.gpu or e.gpu_memory_gb)}
        with self.conn.pipeline(transaction=False) as pipe:
            for node in declared:
                pipe.hget(self.keys.gpu_node(node), "source")
            sources = [v.decode() if v else None for v in pipe.execute()]
        written = [node for node, source in zip(declared, sources) if source not in DETECTED]
        with self.conn.pipeline(transaction=True) as pipe:
            for node in written:
                fields = NodeInventory.declared(node, declared[node]).fields()
                pipe.hset(self.keys.gpu_node(node), mapping={**fields, "updated_at": f"{now:.3f}"})
                pipe.sadd(self.keys.gpu_nodes, node)
            pipe.execute()
        return written

    # -- ephemeral hosts' lifetimes (placement: long trainings prefer stable hosts) -----------------
    def end_of_life(self, node: str, now: float, weight: float = LIFETIME_WEIGHT) -> float | None:
        """`node` got its termination notice: its life (since its first worker of this life
        registered) joins the observed lifetimes; the hours, None when counted already."""
        hours = self._end_of_life(keys=[self.keys.gpu_node(node), self.keys.ephemeral_lifetime],
                                  args=[f"{now:.3f}", repr(weight)])
        return float(hours) if hours else None

    def lifetime_hours(self, prior_hours: float) -> float:
        """Ephemeral hosts' expected lifetime: the observed mean, else `prior_hours`."""
        mean = self.conn.hget(self.keys.ephemeral_lifetime, "mean_h")
        return float(mean) if mean else prior_hours

    # -- idle GPUs (placement: a slower free GPU leaves a job to a faster idle one) ------------------
    def mark_idle(self, gpu: Gpu, cost_per_hour: float | None, worker: str, now: float, max_age_s: float) -> None:
        """This worker's GPU is free and listening (refreshed while idle); entries older than
        `max_age_s` (a worker that died idle) are dropped."""
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.gpu_idle, {idle_member(gpu, cost_per_hour, worker): now})
            pipe.zremrangebyscore(self.keys.gpu_idle, "-inf", now - max_age_s)
            pipe.execute()

    def mark_busy(self, gpu: Gpu, cost_per_hour: float | None, worker: str) -> None:
        self.conn.zrem(self.keys.gpu_idle, idle_member(gpu, cost_per_hour, worker))

    def idle(self, now: float, max_age_s: float) -> list[tuple[str, Gpu, float | None]]:
        """(worker, GPU, cost per hour) of every worker idle within `max_age_s`."""
        out = []
        for raw in self.conn.zrangebyscore(self.keys.gpu_idle, now - max_age_s, "+inf"):
            try:
                m = json.loads(raw)
                out.append((m["worker"], Gpu(m["model"], float(m["memory_gb"]), int(m["index"]), m["node"]),
                            m["cost_per_hour"]))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def all_gpus(self) -> list[Gpu]:
        """Every GPU of every node with an inventory (detected or declared)."""
        inventories = [self.node(n.decode()) for n in sorted(self.conn.smembers(self.keys.gpu_nodes))]
        return [d for inventory in inventories if inventory for d in inventory.devices]

    def _detected(self, node_key: str) -> bool:
        source = self.conn.hget(node_key, "source")
        return bool(source) and source.decode() in DETECTED

    def node(self, node: str) -> NodeInventory | None:
        """A node's stored inventory, None when it has none."""
        raw = decode_hash(self.conn.hgetall(self.keys.gpu_node(node)))
        return _inventory(node, raw) if raw else None

    def inventory(self) -> dict[str, dict[str, Any]]:
        """Node -> {source, gpus, model, memory_gb, cost_per_hour, ephemeral, devices, slots}: every
        node with an inventory, each slot's GPU filled from its node's where the slot knows none."""
        names = sorted(n.decode() for n in self.conn.smembers(self.keys.gpu_nodes))
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for name in names:
                pipe.hgetall(self.keys.gpu_node(name))
                pipe.smembers(self.keys.gpu_slots(name))
            replies = pipe.execute()
        slot_names = {name: sorted(s.decode() for s in replies[2 * i + 1]) for i, name in enumerate(names)}
        with self.conn.pipeline(transaction=False) as pipe:
            for name in names:
                for slot in slot_names[name]:
                    pipe.hgetall(self.keys.gpu_slot(name, slot))
            slot_replies = iter(pipe.execute())
        out = {}
        for i, name in enumerate(names):
            node = decode_hash(replies[2 * i])
            out[name] = {**_node_row(node), "slots": [
                _slot_row(decode_hash(next(slot_replies)), node, slot) for slot in slot_names[name]]}
        return out


def idle_member(gpu: Gpu, cost_per_hour: float | None, worker: str) -> str:
    """The idle set's member for a worker's GPU (stable for the worker's life)."""
    return json.dumps({"worker": worker, "node": gpu.node, "index": gpu.index, "model": gpu.model,
                       "memory_gb": gpu.memory_gb, "cost_per_hour": cost_per_hour}, sort_keys=True)


def gpu_label(model: str, memory_gb: str | float) -> str:
    """A GPU as the views show it: "H100 80GB HBM3, 80 GB"; "unknown" without a model or memory."""
    memory = float(memory_gb or 0)
    if not model and not memory:
        return "unknown"
    return Gpu(model, memory).describe()


def _node_row(node: Mapping[str, str]) -> dict[str, Any]:
    return {"source": node.get("source", ""), "gpus": int(node.get("gpus") or 0), "model": node.get("model", ""),
            "memory_gb": float(node.get("memory_gb") or 0),
            "cost_per_hour": float(node["cost_per_hour"]) if node.get("cost_per_hour") else None,
            "ephemeral": node.get("ephemeral") == "1", "devices": json.loads(node.get("devices") or "[]"),
            "gpu": gpu_label(node.get("model", ""), node.get("memory_gb", 0))}


def _slot_row(slot: Mapping[str, str], node: Mapping[str, str], name: str) -> dict[str, Any]:
    """A slot's GPU; its node's (by device index, else the node's model) where the slot has none."""
    model, memory = slot.get("model", ""), float(slot.get("memory_gb") or 0)
    if not model and not memory:
        devices = {str(d["index"]): d for d in json.loads(node.get("devices") or "[]")}
        device = devices.get(name.split(",")[0])
        model = device["model"] if device else node.get("model", "")
        memory = float(device["memory_gb"] if device else node.get("memory_gb") or 0)
    return {"slot": name, "devices": slot.get("devices", name), "worker": slot.get("worker", ""),
            "source": slot.get("source", ""), "model": model, "memory_gb": memory, "gpu": gpu_label(model, memory)}


def _inventory(node: str, raw: Mapping[str, str]) -> NodeInventory:
    devices = tuple(Gpu(d["model"], float(d["memory_gb"]), int(d["index"]), node)
                    for d in json.loads(raw.get("devices") or "[]"))
    cost = float(raw["cost_per_hour"]) if raw.get("cost_per_hour") else None
    return NodeInventory(node, raw.get("source", HOSTS), devices, cost, raw.get("ephemeral") == "1")
