"""The chaos run's lease-state watch: is a multi-GPU training ever seen holding part of its GPUs?

Every SAMPLE_EVERY_S it reads, in one MULTI (one snapshot, as any reader sees Redis between two
scripts), Redis' TIME, every config's training lease (value and PTTL) and every node's slots zset
(`Keys.node_slots`: owner token, `token+i` for a lease's i-th GPU -> expiry ms) and device hash
(`Keys.node_devices`: device index -> owner token). For each live lease (PTTL above a few ms: the
lease key and its slots share one expiry, written in the same script, so the last milliseconds are
left out rather than judged on Redis' rounding) it counts the slots of its owner token on its node
that have not expired, and the devices naming that token:

- partial: fewer of either than the GPUs its config needs (never expected: acquire, renew, release
  and expiry each move all of a lease's slots in one script);
- whole: a multi-GPU lease seen holding all of them (the control: the watch did see gangs);
- oversubscribed: a node with more unexpired slots than its GPUs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import redis

from coordinator.core.keys import Keys
from coordinator.stores.leases import parse_holder

SAMPLE_EVERY_S = 0.1
LIVE_MARGIN_MS = 5  # a lease this close to its expiry is not judged (ms rounding between key and score)


@dataclass
class GangSample:
    """What one snapshot showed."""

    partial: list[str] = field(default_factory=list)  # "config on node: held k slots / d devices of n"
    whole: int = 0  # multi-GPU leases holding all their GPUs
    oversubscribed: list[str] = field(default_factory=list)  # "node: k slots of n"


def judge(now_ms: int, leases: Mapping[str, tuple[str | None, int]],
          slots: Mapping[str, Sequence[tuple[str, float]]], devices: Mapping[str, Mapping[str, str]],
          needs: Mapping[str, int], node_gpus: Mapping[str, int]) -> GangSample:
    """One snapshot judged. `leases`: config -> (lease value or None, PTTL ms); `slots`: node ->
    (member, expiry ms); `devices`: node -> device -> owner token; `needs`: config -> GPUs (1 when
    absent); `node_gpus`: node -> its GPUs."""
    out = GangSample()
    live_slots = {node: [m for m, expiry in members if expiry > now_ms] for node, members in slots.items()}
    for config, (value, pttl) in leases.items():
        if value is None or pttl <= LIVE_MARGIN_MS:
            continue
        holder = parse_holder(value)
        node, token, need = holder.get("node", ""), holder.get("token", ""), needs.get(config, 1)
        held = sum(1 for m in live_slots.get(node, []) if m.split("+", 1)[0] == token)
        named = sum(1 for owner in devices.get(node, {}).values() if owner == token)
        if held < need or named < need:
            out.partial.append(f"{config} on {node}: {held} slots / {named} devices of {need}")
        elif need > 1:
            out.whole += 1
    for node, members in live_slots.items():
        if len(members) > node_gpus.get(node, 1):
            out.oversubscribed.append(f"{node}: {len(members)} slots of {node_gpus.get(node, 1)}")
    return out


def snapshot(conn: redis.Redis, keys: Keys, configs: Sequence[str], nodes: Sequence[str]) -> tuple[
        int, dict[str, tuple[str | None, int]], dict[str, list[tuple[str, float]]], dict[str, dict[str, str]]]:
    """Redis' time (ms), the configs' leases, the nodes' slots and devices: one MULTI."""
    with conn.pipeline(transaction=True) as pipe:
        pipe.time()
        for config in configs:
            pipe.get(keys.lease(config))
            pipe.pttl(keys.lease(config))
        for node in nodes:
            pipe.zrange(keys.node_slots(node), 0, -1, withscores=True)
            pipe.hgetall(keys.node_devices(node))
        replies = pipe.execute()
    (seconds, micros), rest = replies[0], replies[1:]
    leases = {}
    for i, config in enumerate(configs):
        value, pttl = rest[2 * i], rest[2 * i + 1]
        leases[config] = (value.decode() if value else None, int(pttl))
    rest = rest[2 * len(configs):]
    slots, devices = {}, {}
    for i, node in enumerate(nodes):
        slots[node] = [(m.decode(), float(score)) for m, score in rest[2 * i]]
        devices[node] = {d.decode(): o.decode() for d, o in rest[2 * i + 1].items()}
    return int(seconds) * 1000 + int(micros) // 1000, leases, slots, devices


class GangWatch(threading.Thread):
    """Samples the lease state every SAMPLE_EVERY_S until `done` is set (module docstring)."""

    def __init__(self, conn: redis.Redis, keys: Keys, needs: Mapping[str, int], node_gpus: Mapping[str, int]) -> None:
        super().__init__(name="gang-watch", daemon=True)
        self.conn, self.keys = conn, keys
        self.needs, self.node_gpus = dict(needs), dict(node_gpus)
        self.samples = self.unread = self.whole = 0
        self.partial: list[str] = []  # every partial hold seen, with its time
        self.oversubscribed: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        configs, nodes = list(self.needs), list(self.node_gpus)
        while not self.done.wait(SAMPLE_EVERY_S):
            try:
                seen = judge(*snapshot(self.conn, self.keys, configs, nodes), self.needs, self.node_gpus)
            except redis.RedisError:  # a failover or restart at this moment: the next sample counts
                self.unread += 1
                continue
            self.samples += 1
            self.whole += seen.whole
            stamp = time.strftime("%H:%M:%S")
            self.partial += [f"{stamp} {p}" for p in seen.partial]
            self.oversubscribed += [f"{stamp} {o}" for o in seen.oversubscribed]
