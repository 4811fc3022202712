"""The dashboard's command line, light to import (the web server loads only when it runs):

    ringrift-train dashboard [--host 127.0.0.1] [--port 8080] [--token T] [--redis-url URL]

`add_dashboard_parser(subparsers)` adds the command to `ringrift-train`; `run_dashboard(args,
settings)` serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from coordinator.core.errors import ConfigError
from coordinator.core.settings import Settings, redact_url
from coordinator.ops.dashboard import DEFAULT_HOST, DEFAULT_PORT


def add_dashboard_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("dashboard", help="a live web page: configs, loss curves, Elo, GPU timeline, trouble")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--token", help="required on every request (?token=T once, then a cookie)")
    p.add_argument("--redis-url", help="read Redis as this URL (e.g. the viewer user's) instead of redis.url")
    p.set_defaults(func=run_dashboard)
    return p


def run_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from coordinator.ops.dashboard.server import build_server, is_loopback

    if args.redis_url:
        settings = dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, url=args.redis_url))
    try:
        server = build_server(settings, args.host, args.port, args.token)
    except ConfigError as exc:
        print(exc.problems[0], file=sys.stderr)
        return 2
    shown = "localhost" if is_loopback(args.host) else args.host
    print(f"dashboard on http://{shown}:{args.port}/{'?token=...' if args.token else ''} reading "
          f"{redact_url(settings.redis.url)}", flush=True)
    server.run()
    return 0
