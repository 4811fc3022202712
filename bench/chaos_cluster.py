"""The chaos run's cluster, all started here: Redis HA (a primary, a replica, three sentinels), the
fault proxy in front of it, `ringrift-train run` and six `rq worker training` processes on five
nodes:

- node-0, node-1, node-2: one GPU each (`hosts: 1`), one worker each;
- node-3: an ephemeral host (`hosts` entry `ephemeral: true`, and RINGRIFT_EPHEMERAL=1 for its
  worker, which may register before the orchestrator has written `hosts`): SIGTERM to its worker is
  a termination notice. Its GPU is slower (RINGRIFT_CHAOS_EPOCH_S, `bench/chaos_trainer.py`), so a
  notice finds its training still running, as a real training's hours would;
- node-4: two GPUs, one worker per GPU (CUDA_VISIBLE_DEVICES=0 and 1, RINGRIFT_GPUS=2: the README's
  node set-up), the only node a multi-GPU training (`gpus.boards.square19.gpus: 2`) fits.

The orchestrator and the workers of node-0, node-1, node-3 and node-4 reach Redis through their own
proxy routes (one per node) with a plain `redis://` URL (what the README's node command uses); the
proxy follows the primary that the sentinels name, as an HAProxy in front of Sentinel would, so those
processes see a failover as a dropped connection. node-2 uses the Sentinel URL
(`-c workers.rq_settings`), not the proxy.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import redis
import yaml

from bench import common
from bench.chaos_trainer import EPOCH_ENV
from bench.common import start_orchestrator
from bench.proxy import FaultProxy
from coordinator.ops.local_redis import LocalRedis, free_port, redis_server_binary
from coordinator.ops.workers_pool import start_worker, stop_workers

MASTER = "chaos"
SENTINELS = 3
# Longer than a restart_redis fault's 1 s outage (no failover then), short enough for a quick one.
SENTINEL_DOWN_AFTER_MS = 4000
SENTINEL_FAILOVER_TIMEOUT_MS = 3000
FOLLOW_INTERVAL_S = 0.1
READY_TIMEOUT_S = 60.0
PROXIED_NODES = ("node-0", "node-1")  # what the partition and slow-link faults aim at
SENTINEL_NODE = "node-2"
EPHEMERAL_NODE = "node-3"
GANG_NODE = "node-4"
NODE_GPUS = {GANG_NODE: 2}  # one worker per GPU; the others have one
EPHEMERAL_EPOCH_S = 1.5  # the ephemeral node's epochs (the others': the command's 0.5 s)
GANG_GPUS = {"boards": {"square19": {"gpus": 2}}}  # the `gpus` section: square19 trains on 2 GPUs of one node
ORCHESTRATOR = "orchestrator"


def _quiet(call, default=None):
    try:
        return call()
    except (redis.RedisError, OSError):
        return default


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05):
    """bench.common.wait_until through faults: a Redis or socket error counts as "not yet", and a
    timeout returns None instead of raising."""
    try:
        return common.wait_until(lambda: _quiet(predicate), timeout_s, interval_s)
    except TimeoutError:
        return None


class RedisHA:
    """A primary and a replica (AOF each) and three sentinels watching them, on loopback."""

    def __init__(self, root: Path) -> None:
        self.root = root
        args = ("--repl-diskless-sync-delay", "0")
        self.servers = [LocalRedis(appendonly=True, extra_args=args) for _ in range(2)]
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def sentinel_url(self) -> str:
        return f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in self.sentinel_ports)}/{MASTER}/0"

    def start(self) -> RedisHA:
        for server in self.servers:
            server.start()
        redis.Redis(port=self.servers[1].port).replicaof("127.0.0.1", self.servers[0].port)
        for i, port in enumerate(self.sentinel_ports):
            conf = self.root / f"sentinel-{i}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.root}\n"
                            f"sentinel monitor {MASTER} 127.0.0.1 {self.servers[0].port} 2\n"
                            f"sentinel down-after-milliseconds {MASTER} {SENTINEL_DOWN_AFTER_MS}\n"
                            f"sentinel failover-timeout {MASTER} {SENTINEL_FAILOVER_TIMEOUT_MS}\n"
                            f"sentinel parallel-syncs {MASTER} 1\n")
            with open(self.root / f"sentinel-{i}.log", "ab") as log:
                self.sentinels.append(subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                                                       stdout=log, stderr=subprocess.STDOUT))
        if not self.wait_replica_ready(READY_TIMEOUT_S):
            raise RuntimeError("the replica did not sync or the sentinels did not see it")
        return self

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels name it (the first that answers)."""
        for port in self.sentinel_ports:
            addr = _quiet(lambda p=port: redis.Redis(port=p, socket_timeout=1).sentinel_get_master_addr_by_name(MASTER))
            if addr:
                return int(addr[1])
        return None

    def server(self, port: int | None) -> LocalRedis | None:
        return next((s for s in self.servers if s.port == port), None)

    def primary(self) -> LocalRedis | None:
        return self.server(self.primary_port())

    def replica_ready(self) -> bool:
        """The other server replicates the primary and every sentinel counts it as a healthy replica."""
        primary = self.primary()
        replica = next((s for s in self.servers if s is not primary), None)
        if primary is None or replica is None or replica.proc is None:
            return False
        info = _quiet(lambda: redis.Redis(port=replica.port, socket_timeout=1).info("replication"), {})
        if info.get("role") != "slave" or info.get("master_port") != primary.port \
                or info.get("master_link_status") != "up":
            return False
        for port in self.sentinel_ports:
            replicas = _quiet(lambda p=port: redis.Redis(port=p, socket_timeout=1).sentinel_slaves(MASTER), [])
            if not any(int(r["port"]) == replica.port and r.get("is_slave") and not r.get("is_sdown")
                       and not r.get("is_disconnected") for r in replicas):
                return False
        return True

    def wait_replica_ready(self, timeout_s: float) -> bool:
        return bool(wait_until(self.replica_ready, timeout_s, 0.2))

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.terminate()
        for proc in self.sentinels:
            proc.wait(timeout=10)
        for server in self.servers:
            server.stop()


class PrimaryFollower(threading.Thread):
    """Points the proxy at the primary the sentinels name, within FOLLOW_INTERVAL_S of a change."""

    def __init__(self, ha: RedisHA, proxy: FaultProxy) -> None:
        super().__init__(name="primary-follower", daemon=True)
        self.ha, self.proxy = ha, proxy
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(FOLLOW_INTERVAL_S):
            port = self.ha.primary_port()
            if port and ("127.0.0.1", port) != self.proxy.upstream:
                self.proxy.set_upstream(("127.0.0.1", port))


class Cluster:
    def __init__(self, root: Path, ha: RedisHA, settings: dict) -> None:
        self.root, self.ha = root, ha
        port = ha.primary_port()
        assert port is not None
        self.proxy = FaultProxy(("127.0.0.1", port)).start()
        self.follower = PrimaryFollower(ha, self.proxy)
        self.follower.start()
        self.urls = {name: self.proxy.add(name) for name in (ORCHESTRATOR, *PROXIED_NODES, EPHEMERAL_NODE,
                                                                GANG_NODE)}
        self.urls[SENTINEL_NODE] = ha.sentinel_url
        self.config = root / "chaos.yaml"
        hosts: dict[str, object] = {n: NODE_GPUS.get(n, 1) for n in self.nodes}
        hosts[EPHEMERAL_NODE] = {"gpus": 1, "ephemeral": True}
        self.config.write_text(yaml.safe_dump({**settings, "redis": {"url": self.urls[ORCHESTRATOR]},
                                               "hosts": hosts, "gpus": GANG_GPUS}))
        self.orchestrator: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}  # worker slot (node, or node/gpuN) -> process
        self.generation = 0
        self.quit_unasked = 0  # workers that exited although nobody stopped them

    @property
    def nodes(self) -> tuple[str, ...]:
        return (*PROXIED_NODES, SENTINEL_NODE, EPHEMERAL_NODE, GANG_NODE)

    @staticmethod
    def slots(node: str) -> list[str]:
        """The node's worker slots: the node itself, or one per GPU (`node/gpu<i>`)."""
        gpus = NODE_GPUS.get(node, 1)
        return [node] if gpus == 1 else [f"{node}/gpu{i}" for i in range(gpus)]

    def node_workers(self, node: str) -> list[subprocess.Popen[bytes]]:
        return [self.workers[slot] for slot in self.slots(node) if slot in self.workers]

    def start_orchestrator(self) -> None:
        with open(self.root / "orchestrator.log", "ab") as log:
            self.orchestrator = start_orchestrator(self.config, log, {"RINGRIFT_CONSUMER": "chaos"})

    def start_node(self, node: str) -> None:
        """Every worker of the node (a fresh instance of it)."""
        for slot in self.slots(node):
            self.start_worker(slot)

    def start_worker(self, slot: str) -> None:
        node, _, gpu = slot.partition("/")
        env = {"OMP_NUM_THREADS": "1"}
        if node == EPHEMERAL_NODE:
            env.update({"RINGRIFT_EPHEMERAL": "1", EPOCH_ENV: str(EPHEMERAL_EPOCH_S)})
        if gpu:
            env.update({"RINGRIFT_GPUS": str(NODE_GPUS[node]), "CUDA_VISIBLE_DEVICES": gpu.removeprefix("gpu")})
        self.generation += 1
        name = f"chaos-{slot.replace('/', '-')}-{self.generation}"
        self.workers[slot] = start_worker(self.urls[node], name, node, env,
                                          log_path=self.root / f"{slot.replace('/', '-')}.log")

    def replace_quit_workers(self) -> list[str]:
        """Workers that exited on their own (a Redis error they did not ride out): counted, restarted."""
        gone = [slot for slot, proc in self.workers.items() if proc.poll() is not None]
        for slot in gone:
            self.quit_unasked += 1
            self.start_worker(slot)
        return gone

    def stop(self) -> None:
        stop_workers(list(self.workers.values()))
        if self.orchestrator:
            stop_workers([self.orchestrator])  # SIGTERM, then SIGKILL after the same grace
        self.follower.done.set()
        self.follower.join(timeout=5)
        self.proxy.close()
