"""The stored reservations of nodes for waiting multi-GPU jobs (`Keys.reservations`: node -> JSON,
readable with `redis-cli HGETALL`): the preempter replaces them all each tick; a worker asks
whether a job may start on its node (`admit`, atomic with taking a spare GPU) and drops its job's
reservation once it holds the GPUs. The rules are `coordinator/scheduling/reservations.py`'s."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import redis

from coordinator.core.keys import Keys
from coordinator.core.lua import script
from coordinator.core.settings import BACKFILL_MODES

BACKFILL, HOLD, OFF = BACKFILL_MODES  # `gpus.backfill`


@dataclass(frozen=True)
class Reservation:
    """`gpus` GPUs of `node` set aside for the waiting job `job_id` from `start_at` (unix s)."""

    job_id: str
    config_key: str
    node: str
    gpus: int
    start_at: float
    spare: int  # the node's other GPUs expected free by start_at: other jobs may still take these
    mode: str = BACKFILL  # BACKFILL: a job that ends before promised_at may also start there; HOLD: not
    # The start first expected when the job reserved this node: kept while it waits for it (the
    # bound: estimates that slip never move it), so trainings running late are asked to yield.
    promised_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.promised_at:
            object.__setattr__(self, "promised_at", self.start_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Reservation:
        return cls(**json.loads(raw))


class ReservationStore:
    def __init__(self, conn: redis.Redis, keys: Keys) -> None:
        self.conn = conn
        self.keys = keys
        self._admit = script(conn, "reservation_admit.lua")
        self._drop = script(conn, "reservation_drop.lua")

    def replace(self, reservations: Iterable[Reservation]) -> None:
        """These and no others, in one transaction."""
        mapping = {r.node: r.to_json() for r in reservations}
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.reservations)
            if mapping:
                pipe.hset(self.keys.reservations, mapping=mapping)
            pipe.execute()

    def all(self) -> dict[str, Reservation]:
        return {(n.decode() if isinstance(n, bytes) else n): Reservation.from_json(v)
                for n, v in self.conn.hgetall(self.keys.reservations).items()}

    def admit(self, node: str, job_id: str, ends_at: float | None, gpus: int = 1) -> Reservation | None:
        """None when `job_id` (taking `gpus` GPUs) may start on `node` (taking that many spare GPUs if
        it needs them), else the reservation that keeps it off."""
        raw = self._admit(keys=[self.keys.reservations],
                          args=[node, job_id, "" if ends_at is None else repr(ends_at), gpus])
        return Reservation.from_json(raw) if raw else None

    def drop(self, job_id: str) -> bool:
        """The job started: its reservation goes, whichever node it reserved."""
        return bool(self._drop(keys=[self.keys.reservations], args=[job_id]))
