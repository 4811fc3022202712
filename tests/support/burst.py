"""Run every queued RQ job in this process, as `rq worker training` runs one (RQ's SimpleWorker in
burst mode), with the shipped worker's bounded unsubscribe: RQ's own teardown may wait up to 60 s
on redis-py's pubsub thread against a real Redis (seen: 135 s for one test of three bursts)."""

from __future__ import annotations

import redis
from rq import Queue, SimpleWorker

from coordinator.core.keys import TRAINING_QUEUE
from workers.worker import TrainingWorker


class BurstWorker(SimpleWorker):
    unsubscribe = TrainingWorker.unsubscribe


def work(conn: redis.Redis, queue: str = TRAINING_QUEUE) -> None:
    BurstWorker([Queue(queue, connection=conn)], connection=conn).work(burst=True)
