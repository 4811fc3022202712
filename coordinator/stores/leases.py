"""Training slots on leases in the one Redis (replacing the NFS file locks).

A worker that trains config C on node N holds two leases, taken together in one script or not
at all: C's training lease (one trainer per config) and one of N's GPU slots (at most `gpus`
trainings per node) — or, for a multi-GPU training (`gpus.boards`/`per_config` `gpus: k`), k of
N's slots, all at once or none (never a partial hold, so two such trainings cannot each hold half
of what they need). Each slot is a device of the node (`Keys.node_devices`: index -> owner
token): the lease says which (`Lease.devices`, what the trainer's CUDA_VISIBLE_DEVICES names),
chosen from the devices the caller offers, its own first. All of a lease's slots share one
expiry, one fencing token and one owner token: renewed, released and expired together.

Each acquisition returns a fencing token from C's counter, which only grows; a result is
published only if its token is still C's newest (see `job_finish.lua`), so a paused or
partitioned worker that lost its lease cannot overwrite a newer model.

Renewal and release compare the owner token (scripts), so nobody extends or frees a lease it
does not hold. The same scripts keep `Keys.lease_expiry` (job id -> the lease's expiry), so the
reaper reads only the leases past their time instead of every running job's each tick.
`LeaseKeeper` renews every TTL/3 while the trainer runs, without a cap, and
reports the lease lost when the owner changed or Redis was unreachable for a whole TTL.

One Redis, not a quorum (why: README, "One Redis, not a quorum"); fencing tokens cover what a
failover can lose.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as CallTimeout
from dataclasses import dataclass
from typing import TypeVar

import redis

from coordinator.core.clock import RedisClock
from coordinator.core.errors import LeaseUnavailable
from coordinator.core.keys import Keys
from coordinator.core.lua import script
from coordinator.core.settings import Settings
from coordinator.core.text import decode_hash
from coordinator.core.text import text as _text
from coordinator.stores.job_records import stop_reason

T = TypeVar("T")
# A keeper that could not renew stops its trainer this fraction of the TTL before the lease
# expires (1 s of 10 s): slow replies and the kill itself must fit in it.
GIVE_UP_FRACTION = 0.1


@dataclass(frozen=True)
class Renewal:
    """A renewal's reply: still `held`, and the `stop` its job was asked for ('cancelled',
    'node_notice' or 'preempted'), if any. Truthy when held."""

    held: bool
    stop: str | None = None

    def __bool__(self) -> bool:
        return self.held


@dataclass(frozen=True)
class Lease:
    config_key: str
    node: str
    token: str
    fence: int
    ttl_ms: int
    devices: tuple[int, ...] = ()  # the node's device indices it holds (one per GPU slot)

    @property
    def gpus(self) -> int:
        return max(1, len(self.devices))


class LeaseManager:
    def __init__(self, conn: redis.Redis, keys: Keys, ttl_s: float, default_slots: int) -> None:
        """`ttl_s` and `default_slots`: `leases.ttl_s` and `leases.default_node_slots` (from_settings)."""
        self.conn = conn
        self.keys = keys
        self.ttl_ms = int(ttl_s * 1000)
        self.default_slots = default_slots
        self.clock = RedisClock(conn)  # node health times and slot expiries are on Redis' clock
        self._acquire = script(conn, "lease_acquire.lua")
        self._renew = script(conn, "lease_renew.lua")
        self._release = script(conn, "lease_release.lua")

    @classmethod
    def from_settings(cls, conn: redis.Redis, keys: Keys, settings: Settings,
                      default_slots: int | None = None) -> LeaseManager:
        """`default_slots`: a worker's own GPU count (RINGRIFT_GPUS), instead of the setting."""
        lease = settings.leases
        return cls(conn, keys, lease.ttl_s, default_slots or lease.default_node_slots)

    def try_acquire(self, config_key: str, node: str, worker: str, job_id: str, gpus: int = 1,
                    devices: Sequence[int] = (), only_listed: bool = False) -> Lease:
        """One attempt at the config lease and `gpus` slots of `node` (all or none), on `devices`
        (the indices it prefers, best first), then on any of the node's, unless `only_listed` (the
        job needs something of a GPU that only those have); raises LeaseUnavailable with the
        reason (config, slots, node_down)."""
        token = uuid.uuid4().hex
        keys = [self.keys.lease(config_key), self.keys.fence(config_key), self.keys.node_slots(node),
                self.keys.node(node), self.keys.lease_expiry, self.keys.node_devices(node)]
        reply = self._acquire(keys=keys, args=[token, self.ttl_ms, self.default_slots, node, worker, job_id,
                                               max(1, gpus), "0" if only_listed else "1", *devices])
        if reply[0] == 1:
            # In index order, as CUDA_VISIBLE_DEVICES names them (the first is the trainer's cuda:0).
            return Lease(config_key, node, token, int(reply[1]), self.ttl_ms, tuple(sorted(int(d) for d in reply[2:])))
        reason, detail = _text(reply[1]), _text(reply[2])
        if reason == "config":
            detail = parse_holder(detail).get("job_id", detail)
        raise LeaseUnavailable(config_key, node, reason, detail)

    def acquire(self, config_key: str, node: str, worker: str, job_id: str, attempts: int,
                max_delay_s: float, gpus: int = 1, devices: Sequence[int] = (), only_listed: bool = False) -> Lease:
        """Up to `attempts` tries, a random pause (up to `max_delay_s`) between them: the settings'
        `leases.acquire_attempts` and `leases.acquire_max_delay_s`, which the caller passes."""
        for attempt in range(attempts):
            try:
                return self.try_acquire(config_key, node, worker, job_id, gpus, devices, only_listed)
            except LeaseUnavailable as exc:
                if exc.reason == "node_down" or attempt == attempts - 1:
                    raise
            time.sleep(random.uniform(0, max_delay_s))
        raise AssertionError("unreachable")

    def renew(self, lease: Lease, job_id: str | None = None, worker: str | None = None) -> Renewal:
        """Extend the config lease and every slot of it by the TTL (falsy when the caller no longer
        holds them all); with `job_id`, the same reply says whether the job was asked to stop
        (cancel, preemption), and with `worker` too, whether that worker got a termination notice
        (`Keys.worker_notice`: 'node_notice')."""
        keys = [self.keys.lease(lease.config_key), self.keys.node_slots(lease.node), self.keys.lease_expiry]
        if job_id is not None:
            keys.append(self.keys.job(job_id))
            if worker is not None:
                keys.append(self.keys.worker_notice(worker))
        held, *asked = self._renew(keys=keys, args=[lease.token, lease.ttl_ms, lease.gpus])
        return Renewal(bool(held), stop_reason(*asked) if held else None)

    def release(self, lease: Lease) -> bool:
        """Give back the config lease and all its slots at once (only the caller's)."""
        keys = [self.keys.lease(lease.config_key), self.keys.node_slots(lease.node), self.keys.lease_expiry,
                self.keys.node_devices(lease.node)]
        return bool(self._release(keys=keys, args=[lease.token, lease.gpus, *lease.devices]))

    def held_devices(self, node: str) -> set[int]:
        return held_devices(self.conn, self.keys, node)

    def newest_fence(self, config_key: str) -> int:
        return int(self.conn.get(self.keys.fence(config_key)) or 0)

    # -- nodes -----------------------------------------------------------------------------------
    def register_nodes(self, hosts: dict[str, int]) -> None:
        """Record the configured GPUs of each node (their health status is left as it is)."""
        with self.conn.pipeline(transaction=True) as pipe:
            for node, gpus in hosts.items():
                pipe.hset(self.keys.node(node), "gpus", int(gpus))  # a HostGpus entry: its count
                pipe.sadd(self.keys.nodes, node)
            pipe.execute()

    def set_node_health(self, node: str, status: str, gpus: int | None = None) -> None:
        fields: dict[str, str | int] = {"status": status, "status_at": f"{self.clock():.3f}"}
        if gpus is not None:
            fields["gpus"] = gpus
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.node(node), mapping=fields)
            pipe.sadd(self.keys.nodes, node)
            pipe.execute()

    def nodes(self) -> list[dict[str, str]]:
        """Every known node: gpus, status, slots in use (unexpired)."""
        names = sorted(n.decode() for n in self.conn.smembers(self.keys.nodes))
        now_ms = self.clock() * 1000  # the slots' expiries are Redis' time
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for name in names:
                pipe.hgetall(self.keys.node(name))
                pipe.zcount(self.keys.node_slots(name), now_ms, "+inf")
            replies = pipe.execute()
        out = []
        for i, name in enumerate(names):
            info = decode_hash(replies[2 * i])
            out.append({"node": name, "gpus": info.get("gpus", str(self.default_slots)),
                        "status": info.get("status", "healthy"), "in_use": str(replies[2 * i + 1])})
        return out

    def usable_slots(self) -> int:
        """GPU slots on nodes that are not down (1 when no node is known at all)."""
        nodes = self.nodes()
        return sum(int(n["gpus"]) for n in nodes if n["status"] != "down") if nodes else 1

    def held(self) -> list[dict[str, str]]:
        """Every held config lease with its holder, fencing token and TTL left."""
        names = sorted(self.conn.scan_iter(match=self.keys.lease_pattern, count=500))
        with self.conn.pipeline(transaction=False) as pipe:  # batched reads only
            for name in names:
                pipe.get(name)
                pipe.pttl(name)
            replies = pipe.execute()
        held = []
        for i, name in enumerate(names):
            if replies[2 * i]:
                resource = name.decode().rsplit(":", 1)[1]
                held.append({"config_key": resource, **parse_holder(replies[2 * i].decode()),
                             "ttl_left_ms": str(replies[2 * i + 1])})
        return held


class LeaseKeeper:
    """Renews a lease every TTL/3 in a thread; calls `on_lost(reason)` once when it is lost, or when
    the renewal's reply says the job (`job_id`) was asked to stop (reason 'cancelled' or
    'preempted'): a request reaches the worker within TTL/3, with no polling of its own; the
    renewals go on until the attempt ends.

    Every Redis call runs with a deadline (the TTL left since the last renewal): a client that
    retries across a failover (up to 30 s with Sentinel) must not keep the trainer going past the
    lease's TTL, when another worker may already hold it."""

    def __init__(self, manager: LeaseManager, lease: Lease, on_lost: Callable[[str], None],
                 job_id: str | None = None, clock: Callable[[], float] = time.monotonic,
                 worker: str | None = None) -> None:
        self.manager = manager
        self.lease = lease
        self.on_lost = on_lost
        self.job_id = job_id
        self.worker = worker  # whose termination notice the renewals read (with job_id)
        self.clock = clock
        self.lost_reason: str | None = None
        self._lost_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.config_key}", daemon=True)
        self._calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lease-call-{lease.config_key}")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._calls.shutdown(wait=False)  # a call still retrying ends by itself

    @property
    def give_up_s(self) -> float:
        """How long after the last renewal the trainer is stopped: GIVE_UP_FRACTION of the TTL
        before the lease can expire, so it is dead (killed at once) before anyone can take over."""
        return self.lease.ttl_ms / 1000.0 * (1.0 - GIVE_UP_FRACTION)

    def _left(self, last_ok: float) -> float:
        return self.give_up_s - (self.clock() - last_ok)

    def _call(self, fn: Callable[[], T], last_ok: float) -> T:
        """`fn()`, or CallTimeout once the time to give up since `last_ok` has run out."""
        return self._calls.submit(fn).result(timeout=max(0.0, self._left(last_ok)))

    def _run(self) -> None:
        renew_every = self.lease.ttl_ms / 3000.0
        last_ok = self.clock()
        # After failed renewals the next check falls exactly at the time to give up.
        while not self._stop.wait(max(0.0, min(renew_every, self._left(last_ok)))):
            if self._left(last_ok) <= 0:
                # Paused (SIGSTOP, VM freeze) or cut off until the lease is about to expire:
                # stop the trainer before asking anyone.
                self._lost("lease_lost: no renewal for nearly the lease TTL (paused or cut off)")
                return
            sent = self.clock()  # Redis sets the new expiry at most this late: count from here
            try:
                renewal = self._call(self._renew, last_ok)
            except CallTimeout:
                self._lost("lease_lost: Redis did not answer within the lease's TTL")
                return
            except redis.RedisError as exc:
                if self._left(last_ok) <= 0:
                    self._lost(f"lease_lost: Redis unreachable for a whole TTL ({exc})")
                    return
                continue
            if not renewal:
                self._lost("lease_lost: another holder took it over")
                return
            last_ok = sent
            if renewal.stop and self.lost_reason is None:
                # Keep renewing: the lease stays this attempt's while its trainer checkpoints and exits.
                self._lost(renewal.stop)

    def ask_stop(self, reason: str) -> None:
        """Stop for `reason` now, as if a renewal had said so (a termination notice found on the
        host: `workers/node_notice.py`); the renewals go on while the trainer checkpoints."""
        self._lost(reason)

    def _renew(self) -> Renewal:
        if self.worker is None:
            return self.manager.renew(self.lease, self.job_id)
        return self.manager.renew(self.lease, self.job_id, self.worker)

    def _lost(self, reason: str) -> None:
        """The first reason to stop is kept and reported; later ones (a lease lost while the
        trainer stops on request) only end the renewals."""
        with self._lost_lock:  # the renewal thread and a notice watcher may both report
            if self.lost_reason is not None:
                return
            self.lost_reason = reason
        self.on_lost(reason)


def held_devices(conn: redis.Redis, keys: Keys, node: str) -> set[int]:
    """The device indices of `node` an unexpired lease holds now (one round trip, one snapshot):
    what a worker whose own GPU is among them waits for before it takes another job."""
    with conn.pipeline(transaction=True) as pipe:
        pipe.time()
        pipe.hgetall(keys.node_devices(node))
        pipe.zrange(keys.node_slots(node), 0, -1, withscores=True)
        (seconds, micros), devices, slots = pipe.execute()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    live = {_text(member) for member, expiry in slots if expiry > now_ms}
    return {int(_text(d)) for d, owner in devices.items() if _text(owner) in live}


HOLDER_FIELDS = ("token", "fence", "node", "worker", "job_id")


def parse_holder(value: str) -> dict[str, str]:
    """A lease's value, "token|fence|node|worker|job_id", as a mapping."""
    return dict(zip(HOLDER_FIELDS, value.split("|", len(HOLDER_FIELDS) - 1)))

