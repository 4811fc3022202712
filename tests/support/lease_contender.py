"""A process that competes for one config's lease (tests/test_leases_real.py starts eight).

    python -m tests.support.lease_contender REDIS_URL ROUNDS NAME

Each round: take the lease (retrying), log "start <fence> <name>" then "end <fence> <name>" to a
Redis list while holding it, release it. The list's order is the server's order.
"""

from __future__ import annotations

import random
import sys
import time

import redis

from coordinator.core.errors import LeaseUnavailable
from coordinator.core.keys import Keys
from coordinator.stores.leases import LeaseManager

LOG = "contention:log"
# Every round releases its lease: the TTL only has to outlast a contender descheduled mid-round on
# a loaded machine (a lease expiring mid-round would be an overlap the test reports, not a bug).
TTL_S = 300.0


def main(url: str, rounds: int, name: str) -> int:
    conn = redis.Redis.from_url(url)
    leases = LeaseManager(conn, Keys("ringrift"), ttl_s=TTL_S, default_slots=1)
    done = 0
    while done < rounds:
        try:
            lease = leases.try_acquire("hex8_2p", f"node-{name}", name, f"job-{name}")
        except LeaseUnavailable:
            time.sleep(random.uniform(0, 0.002))
            continue
        conn.rpush(LOG, f"start {lease.fence} {name}")
        time.sleep(random.uniform(0.0005, 0.003))
        conn.rpush(LOG, f"end {lease.fence} {name}")
        assert leases.release(lease), "lost a lease mid-round"
        done += 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
