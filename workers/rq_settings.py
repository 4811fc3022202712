"""RQ settings for `rq worker training -c workers.rq_settings`: the worker's Redis from the
`REDIS_URL` environment variable, Sentinel included (RQ reads Sentinel only from a settings
module, not from --url):

    REDIS_URL=redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0 rq worker training -c workers.rq_settings
"""

from __future__ import annotations

import os

from coordinator.core.connection import SENTINEL_SCHEME, SOCKET_TIMEOUT_S, failover_retry, parse_sentinel_url

_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
if _url.startswith(f"{SENTINEL_SCHEME}://"):
    _target = parse_sentinel_url(_url)
    SENTINEL = {"INSTANCES": _target.instances, "MASTER_NAME": _target.master_name, "DB": _target.db,
                "USERNAME": _target.username, "PASSWORD": _target.password, "SOCKET_TIMEOUT": SOCKET_TIMEOUT_S,
                # RQ's main loop quits on a Redis error while a job runs: retry across a failover.
                "CONNECTION_KWARGS": failover_retry()}
else:
    REDIS_URL = _url
