"""`ringrift-train`: the one command for people (run the service, demo, inspect priorities, locks, jobs; cancel)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import redis

from coordinator.bus.events import EventConsumer
from coordinator.core.boards import BOARDS, MAX_PLAYERS, MIN_PLAYERS
from coordinator.core.connection import connect
from coordinator.core.errors import ConfigError, CoordinatorError, EventError, JobError
from coordinator.core.inputs import check_identifier
from coordinator.core.keys import Keys, rq_worker_key
from coordinator.core.logs import configure as configure_logging
from coordinator.core.settings import (
    BUILT_IN,
    REDIS_URL_ENV,
    Settings,
    data_roots_problem,
    load_settings,
    redact_url,
)
from coordinator.ops.dashboard import DEFAULT_PORT
from coordinator.ops.dashboard.command import add_dashboard_parser
from coordinator.scheduling import placement
from coordinator.scheduling.scheduler import TrainingScheduler
from coordinator.stores.jobs import JobStore
from coordinator.stores.leases import LeaseManager

# RQ refreshes rq:worker:<name>'s last_heartbeat every --worker-ttl - 15 s while idle (default TTL 420 s)
# and every 30 s while it runs a job, and lets the key expire --worker-ttl + 60 s after the last one.
DEFAULT_HEARTBEAT_MAX_AGE_S = 480.0
SIGPIPE_EXIT = 128 + 13
SOURCE_LOG = logging.getLogger("ringrift-train")  # what a shell reports for a process killed by SIGPIPE


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(logging.INFO if args.verbose else logging.WARNING, args.log_format)
    if args.func is _check_config:
        return _check_config(args)
    try:
        settings = load_settings(args.config_path)  # every command, services included, refuses a bad file
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    say_source(settings, args)
    return _until_pipe_closes(args.func, args, settings)


def say_source(settings, args: argparse.Namespace | None = None) -> None:
    """Which config file and which Redis a command uses: one line on stderr (a log line, so that
    `--log-format json` keeps one object per line and `--json` output stays clean), password masked."""
    SOURCE_LOG.setLevel(logging.INFO)  # said whatever the log level: it is what the command acts on
    url = getattr(args, "redis_url", None)  # demo and dashboard take --redis-url
    if url:
        redis_said = f"{redact_url(url)} (--redis-url)"
    elif getattr(args, "func", None) is _demo:
        redis_said = "an embedded redis-server (no --redis-url)"
    else:
        redis_said = redact_url(settings.redis.url) + (f" (from ${REDIS_URL_ENV})" if os.environ.get(REDIS_URL_ENV)
                                                       else "")
    source = "none found: built-in defaults" if settings.source == BUILT_IN else settings.source
    SOURCE_LOG.info("config %s; redis %s, prefix %s", source, redis_said, settings.redis.prefix)


def _until_pipe_closes(func, *args: object) -> int:
    """Run a command; if its reader goes away (`| head`), end quietly as a Unix tool killed by SIGPIPE
    would (exit status 141, nothing on stderr) rather than with a BrokenPipeError traceback."""
    try:
        status = func(*args)
        sys.stdout.flush()  # the rest of the output, inside the try: it can be the write that fails
        return status
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would hit the closed pipe again
        return SIGPIPE_EXIT


def _check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.path or args.config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}")
        print(f"{len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    say_source(settings)
    confinement = data_roots_problem(settings)  # a file was checked as it loaded; the built-in defaults here
    if confinement:
        print(f"{settings.source}: {confinement}")
        print("1 problem(s)", file=sys.stderr)
        return 1
    print(f"{settings.source}: OK ({len(settings.hosts)} hosts, {sum(settings.hosts.values())} GPUs, "
          f"{len(settings.gpus.classes)} GPU classes, "
          f"redis {redact_url(settings.redis.url)}, prefix {settings.redis.prefix})")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringrift-train", description="RingRift training coordinator")
    parser.add_argument("--config", dest="config_path",
                        help="YAML settings (default: $RINGRIFT_CONFIG, else ./config/distributed_hosts.yaml, "
                             "else /etc/ringrift/distributed_hosts.yaml); every command says which it read")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO (default: warnings only)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="json: one object per line, for log shippers")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    check = sub.add_parser("check-config", help="validate a YAML config; every problem, exit status 1 if any")
    check.add_argument("path", nargs="?", help="default: --config, $RINGRIFT_CONFIG, ./config/distributed_hosts.yaml "
                                               "or /etc/ringrift/distributed_hosts.yaml")
    check.set_defaults(func=_check_config)

    dead = sub.add_parser("dead-letters", help="events that could not be handled, with the reason")
    dead.add_argument("--replay", metavar="ID", help="put this dead letter back on the event stream")
    dead.add_argument("--limit", type=int, default=50, help="the newest this many (default %(default)s)")
    dead.add_argument("--json", action="store_true", help="print the letters as JSON")
    dead.set_defaults(func=_dead_letters)

    run = sub.add_parser("run", help="run the orchestrator service (consume events, enqueue training)")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (e.g. 9108)")
    run.add_argument("--dashboard-port", type=int,
                     help="also serve the web dashboard on 127.0.0.1:PORT (`dashboard` for other addresses)")
    run.set_defaults(func=_run, verbose=True)

    demo = sub.add_parser("demo", help="exports -> trained checkpoints on one machine, with an embedded Redis")
    demo.add_argument("--redis-url", help="use this Redis instead of starting an embedded one")
    demo.add_argument("--output", default="demo-output", help="where data, models and worker logs go")
    demo.add_argument("--epochs", type=int, default=6, help="epochs of each demo training (default %(default)s)")
    demo.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    demo.add_argument("--dashboard", type=int, nargs="?", const=DEFAULT_PORT, metavar="PORT",
                      help=f"serve the web dashboard on 127.0.0.1:PORT (default {DEFAULT_PORT}) during the demo "
                           "and after it, until Ctrl-C")
    demo.set_defaults(func=_demo)

    prio = sub.add_parser("priorities", help="the configs ranked, with each factor's contribution (like sprio)")
    prio.add_argument("--json", action="store_true", help="print the ranking as JSON")
    prio.add_argument("--weights", help="curriculum weights to try, e.g. hex8_2p=1.5,square8_2p=0.5 (not stored)")
    prio.set_defaults(func=_priorities)

    status = sub.add_parser("status", help="one screen: configs, running jobs, queue, nodes, failures")
    status.add_argument("--json", action="store_true", help="print the same data as JSON")
    status.add_argument("--watch", action="store_true", help="refresh in place")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between --watch refreshes")
    status.add_argument("--configs", type=int, default=15, help="configs to list (the highest priority first)")
    status.set_defaults(func=_status)

    events = sub.add_parser("events", help="the event stream, one line per event")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--type", action="append", default=[], help="only this type (repeatable)")
    events.add_argument("--config", dest="config_key", help="only this config, e.g. hex8_2p")
    events.add_argument("--count", type=int, default=50, help="how many of the newest to start with")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(func=_events)

    submit = sub.add_parser("submit", help="queue a training job now (the CLI face of submit_training); "
                                           "a config already queued or training gets no second job")
    submit.add_argument("--board-type", required=True, help=f"one of {', '.join(BOARDS)}")
    submit.add_argument("--num-players", required=True, type=int, help=f"{MIN_PLAYERS} to {MAX_PLAYERS}")
    submit.add_argument("--npz-path", required=True, help="the training data, inside training.data_roots")
    submit.add_argument("--samples", type=int,
                        help="new samples this file brings (default: read from the NPZ's headers, else "
                             "scheduler.min_new_samples): how much new data the next job is for")
    submit.add_argument("--epochs", type=int, help="for the new job (default training.default_epochs); "
                                                   "refused when the config already has a job")
    submit.add_argument("--batch-size", type=int, help="for the new job (default training.batch_size); "
                                                       "refused when the config already has a job")
    submit.add_argument("--learning-rate", type=float, help="for the new job (default training.learning_rate); "
                                                            "refused when the config already has a job")
    submit.add_argument("--wait", action="store_true", help="follow the job to its end; non-zero exit if it fails")
    submit.set_defaults(func=_submit)

    locks = sub.add_parser("locks", help="held training leases and each node's GPU slots and breaker")
    locks.add_argument("--json", action="store_true", help="print the leases and nodes as JSON")
    locks.set_defaults(func=_locks)

    breakers = sub.add_parser("breakers", help="circuit breakers of configs and nodes: state, failures, when the "
                                               "trial goes through; --reset closes one")
    breakers.add_argument("--reset", metavar="NAME",
                          help="close this breaker now and forget its failures: kind:name as in its Redis key "
                               "(node:gpu-node-1, config:hex8_2p), or a bare name only one breaker has; "
                               "needs a Redis user with write access (the coordinator role)")
    breakers.add_argument("--json", action="store_true", help="print the breakers as JSON")
    breakers.set_defaults(func=_breakers)

    cancel = sub.add_parser("cancel", help="cancel a queued or running job (its worker stops the trainer)")
    cancel.add_argument("job_id", help="the whole job id, as `jobs` and `status` print it "
                                       "(e.g. hex8_2p-20261207T142640-a4fc89)")
    cancel.set_defaults(func=_cancel)

    alive = sub.add_parser("worker-alive", help="exit 0 if the rq worker NAME sent a heartbeat recently "
                                                "(a liveness probe), 1 otherwise")
    alive.add_argument("name", help="the worker's name (rq worker --name)")
    alive.add_argument("--max-age", type=float, default=DEFAULT_HEARTBEAT_MAX_AGE_S, metavar="S",
                       help="oldest acceptable heartbeat, seconds (default %(default)s: RQ's default worker TTL "
                            "+ 60; an idle worker heartbeats every --worker-ttl - 15 s, a busy one every 30 s)")
    alive.set_defaults(func=_worker_alive)

    add_dashboard_parser(sub)

    jobs = sub.add_parser("jobs", help="list the newest job records")
    jobs.add_argument("--limit", type=int, default=20, help="the newest this many (default %(default)s)")
    jobs.add_argument("--json", action="store_true", help="print the records as JSON")
    jobs.set_defaults(func=_jobs)
    return parser


def _run(args: argparse.Namespace, settings) -> int:
    from coordinator.service.orchestrator import TrainingOrchestrator

    confinement = data_roots_problem(settings)  # a file was checked as it loaded; the built-in defaults here
    if confinement:
        print(f"{settings.source}: {confinement}", file=sys.stderr)
        return 1
    if args.dashboard_port:
        from coordinator.ops.dashboard.server import serve_in_thread

        serve_in_thread(settings, args.dashboard_port)
    try:
        orchestrator = TrainingOrchestrator(settings)
        _declare_gpus(settings)
        asyncio.run(orchestrator.run_until_signal(args.metrics_port))
    except CoordinatorError as exc:  # e.g. ConsumerDied: the event consumer thread ended
        logging.getLogger(__name__).error("ringrift-train run stopped: %s", exc)
        return 1
    return 0


def _declare_gpus(settings: Settings) -> None:
    """What `hosts` declares of each node's GPUs, into the GPU inventory (a worker without NVML
    reads it; a node a worker detected keeps its own). Nothing to do where no entry declares a
    GPU; a Redis error is logged (the workers then detect or report an unknown GPU)."""
    from coordinator.core.clock import RedisClock
    from coordinator.core.settings import HostGpus
    from coordinator.stores.gpus import GpuStore

    if not any(isinstance(entry, HostGpus) for entry in settings.hosts.values()):
        return
    conn = connect(settings.redis.url)
    try:
        written = GpuStore(conn, Keys(settings.redis.prefix)).declare_hosts(settings.hosts, RedisClock(conn)())
    except redis.RedisError as exc:
        logging.getLogger(__name__).warning("GPUs declared in hosts not recorded: %s", exc)
        return
    finally:
        conn.close()
    if written:
        logging.getLogger(__name__).info("GPUs declared in hosts recorded for %s", ", ".join(written))


def _demo(args: argparse.Namespace, settings) -> int:
    from coordinator.ops.demo import run_demo

    try:
        return asyncio.run(run_demo(settings, Path(args.output), args.redis_url, args.epochs, args.timeout,
                                    args.dashboard))
    except KeyboardInterrupt:  # the way out of `demo --dashboard`
        return 130


def _events(args: argparse.Namespace, settings) -> int:
    from coordinator.ops.event_tail import print_events

    conn = connect(settings.redis.url)
    try:
        print_events(conn, Keys(settings.redis.prefix), set(args.type), args.config_key, args.count, args.follow,
                     args.json)
    except KeyboardInterrupt:
        pass
    return 0


def _submit(args: argparse.Namespace, settings) -> int:
    from coordinator.ops.submit_request import submit
    from coordinator.ops.submit_wait import follow_job
    from coordinator.service.orchestrator import TrainingOrchestrator

    orchestrator = TrainingOrchestrator(settings, connect(settings.redis.url), consumer_name="cli-submit")
    job_id = submit(orchestrator, args)
    if job_id is None:
        return 2
    print(job_id, flush=True)
    return follow_job(orchestrator.jobs, job_id) if args.wait else 0


def _status(args: argparse.Namespace, settings) -> int:
    import time

    from rich.live import Live

    from coordinator.ops.status import gather
    from coordinator.ops.status_view import print_status, render, wide_console

    conn = connect(settings.redis.url)
    if args.json:
        print(json.dumps(gather(conn, settings), indent=1))
        return 0
    console = wide_console()
    if not args.watch:
        print_status(gather(conn, settings), args.configs, console)
        return 0
    with Live(render(gather(conn, settings), args.configs), console=console, screen=False,
              auto_refresh=False) as live:
        try:
            while True:
                time.sleep(args.interval)
                live.update(render(gather(conn, settings), args.configs), refresh=True)
        except KeyboardInterrupt:
            return 0


def _priorities(args: argparse.Namespace, settings) -> int:
    from coordinator.ops.priorities_view import print_priorities

    conn = connect(settings.redis.url)
    scheduler = TrainingScheduler.from_settings(conn, Keys(settings.redis.prefix), settings)
    try:
        weights = _parse_weights(args.weights) if args.weights else None
    except ValueError as exc:
        print(f"--weights: {exc}", file=sys.stderr)
        return 2
    ranked = scheduler.ranked(weights)
    keys = Keys(settings.redis.prefix)
    config_keys = [p.config_key for p in ranked]
    waits = placement.notes(conn, keys, LeaseManager.from_settings(conn, keys, settings), settings.gpus, config_keys)
    if args.json:
        print(json.dumps([{**p.as_dict(), "placement": waits.get(p.config_key, "")} for p in ranked], indent=1))
    else:
        from coordinator.ops.status import last_trained

        print_priorities(ranked, settings.scheduler, last_trained(conn, keys, config_keys), waits)
    return 0


def _parse_weights(text: str) -> dict[str, float]:
    weights = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected config=weight, got {item!r}")
        weights[key.strip()] = float(value)
    return weights


def _breakers(args: argparse.Namespace, settings) -> int:
    from coordinator.ops import breakers_view

    conn = connect(settings.redis.url)
    if args.reset:
        return breakers_view.reset(conn, settings, args.reset)
    return breakers_view.show(conn, settings, args.json)


def _locks(args: argparse.Namespace, settings) -> int:
    from coordinator.ops.locks_view import print_locks

    print_locks(connect(settings.redis.url), settings, args.json)
    return 0


def _dead_letters(args: argparse.Namespace, settings) -> int:
    conn = connect(settings.redis.url)
    consumer = EventConsumer(conn, Keys(settings.redis.prefix), settings.events.group, "cli")
    if args.replay:
        try:
            new_id = consumer.replay(args.replay)
        except EventError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{args.replay} replayed as {new_id}")
        return 0
    letters = consumer.dead_letters(args.limit)
    if args.json:
        print(json.dumps([{"id": e.id, **e.fields} for e in letters], indent=1))
        return 0
    print(f"{'dead letter id':20} {'type':28} {'original id':20} reason")
    for e in letters:
        print(f"{e.id:20} {e.type[:28]:28} {e.fields.get('dead_original_id', ''):20} {e.fields.get('dead_reason', '')}")
    return 0


def _bad_identifier(command: str, field: str, value: str) -> bool:
    """True (and why, on stderr) when `value` is not a well-formed identifier: checked before Redis."""
    try:
        check_identifier(field, value)
    except EventError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return True
    return False


def _cancel(args: argparse.Namespace, settings) -> int:
    if _bad_identifier("cancel", "job_id", args.job_id):
        return 1
    conn = connect(settings.redis.url)
    try:
        outcome = JobStore.from_settings(conn, Keys(settings.redis.prefix), settings).cancel(args.job_id)
    except JobError as exc:
        print(exc, file=sys.stderr)
        return 1
    print({"cancelled": f"{args.job_id}: cancelled",
           "requested": f"{args.job_id}: running; its worker stops the trainer and frees its leases",
           "ended": f"{args.job_id}: already ended, nothing to cancel"}[outcome])
    return 0 if outcome != "ended" else 1


def _worker_alive(args: argparse.Namespace, settings) -> int:
    """Liveness of one rq worker from its own heartbeat: 0 alive; 1 missing, stopped, stale, or
    Redis unreachable."""
    if _bad_identifier("worker-alive", "worker", args.name):
        return 1
    try:
        alive, why = worker_liveness(connect(settings.redis.url), args.name, args.max_age)
    except redis.RedisError as exc:
        alive, why = False, f"cannot read its heartbeat from {redact_url(settings.redis.url)}: {exc}"
    print(f"worker {args.name}: {why}", file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


def worker_liveness(conn: redis.Redis, name: str, max_age_s: float) -> tuple[bool, str]:
    """(alive, why) from RQ's hash rq:worker:<name>: its `last_heartbeat` (UTC) at most `max_age_s`
    old and no `death` (RQ keeps a stopped worker's hash for 60 s). Reads only: any role may ask."""
    from rq.utils import utcparse

    beat, death, state = (v.decode() if isinstance(v, bytes) else v
                          for v in conn.hmget(rq_worker_key(name), "last_heartbeat", "death", "state"))
    if beat is None:
        return False, (f"not registered (no {rq_worker_key(name)}): not started, or stopped or silent "
                       "past its TTL")
    if death:
        return False, f"stopped at {death} UTC"
    age = max(0.0, (datetime.now(timezone.utc) - utcparse(beat)).total_seconds())
    if age > max_age_s:
        return False, f"last heartbeat {age:.0f} s ago, older than --max-age {max_age_s:g} s"
    return True, f"alive ({state}), last heartbeat {age:.1f} s ago"


def _jobs(args: argparse.Namespace, settings) -> int:
    conn = connect(settings.redis.url)
    records = JobStore.from_settings(conn, Keys(settings.redis.prefix), settings).list(args.limit)
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    print(f"{'job':44} {'state':9} {'node':14} {'try':>3} {'epoch':>7} {'final loss':>10} {'best val':>10} "
          f"{'best@':>5} {'early':>5} {'parent':44}  reason / error")
    for r in records:
        epoch = f"{r.get('epoch', 0)}/{r.get('epochs', '?')}"
        why = f"{r.get('reason', '')} {r.get('error', '')}".strip()
        print(f"{r['job_id']:44} {r['state']:9} {r.get('node', '-'):14} {r.get('attempts', '0'):>3} {epoch:>7} "
              f"{_loss(r.get('final_loss')):>10} {_loss(r.get('best_val_loss')):>10} {r.get('best_epoch', '-'):>5} "
              f"{_EARLY.get(r.get('early_stopped', ''), '-'):>5} {_parent(r):44}  {why}")
    return 0


# `early_stopped` as the jobs table shows it (the published model is the best epoch's, not the last's).
_EARLY = {"true": "yes", "false": "no"}


def _loss(text: str | None) -> str:
    """A loss of the record, to 4 decimals (a float's repr, 1.9234567890123, would push the columns
    after it out of line); "-" when absent."""
    try:
        return f"{float(text):.4f}" if text else "-"
    except ValueError:
        return (text or "-")[:10]


def _parent(record: dict[str, str]) -> str:
    """The model a job started from, as `<its job>/<attempt>/<file>` (the path under models_root
    names the job that wrote it); "-" from scratch."""
    parent = record.get("parent_model")
    return "/".join(Path(parent).parts[-3:]) if parent else "-"


if __name__ == "__main__":
    sys.exit(main())
