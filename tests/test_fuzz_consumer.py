"""Issue 14 point 8: fuzz the running consumer on a real redis-server with the classes of input
that stopped it (trailing newlines, symlink loops, repeated field names, huge fields, non-ASCII
digits, the coordinator's own event types with junk), mixed with valid events. Afterwards the
consumer is alive and handles a new valid event, every entry was handled or dead-lettered with a
specific reason, no valid event was dead-lettered, and a restart succeeds.

Seeded and reproducible; its size follows the Hypothesis profile (conftest: "dev" 20 -> 500
events, "ci" 200 -> 5,000). `-s` prints the figures."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import msgpack
from hypothesis import settings as hypothesis_settings

from coordinator import TrainingOrchestrator
from tests.support.exports import xadd_export
from tests.support.polling import wait_for
from tests.support.streams import dead_letters

EVENTS_PER_EXAMPLE = 25
SEED = 14
CONFIGS = ("hex8_2p", "square8_3p", "square19_4p", "hexagonal_2p")
NODES = ("node-0", "node-1")

Fields = list[tuple[bytes | str, bytes | str]]


def _valid(rng: random.Random, root: Path) -> Fields:
    config = rng.choice(CONFIGS)
    kind = rng.randrange(8)
    if kind <= 2:
        return [("type", "NPZ_EXPORT_COMPLETE"), ("config_key", config), ("npz_path", str(root / f"{config}.npz")),
                ("samples", rng.choice(["40000", "5.0", "1e3", "+12"])), ("note", "a"), ("note", "b")]
    if kind == 3:
        return [("type", "EVALUATION_COMPLETED"), ("config_key", config), ("elo", rng.choice(["1500", "1.5e3"]))]
    if kind == 4:
        return [("type", "CURRICULUM_WEIGHTS_UPDATED"), (config, "1.5"), ("updated_at", "2026-12-01T00:00:00Z")]
    if kind == 5:
        return [("type", "CLUSTER_HEALTH_CHANGED"), ("node", rng.choice(NODES)), ("status", "healthy")]
    if kind == 6:
        return [("type", "CLUSTER_HEALTH_CHANGED"), ("overall_health", "ok"), ("overall_score", "0.9"),
                ("alive_peers", json.dumps(list(NODES)))]
    return [("type", "TRAINING_PROGRESS"), ("job_id", f"{config}-1"), ("config_key", config), ("epoch", "3"),
            ("train_loss", "0.5")]


def _junk(rng: random.Random, root: Path) -> Fields:
    config = rng.choice(CONFIGS)
    export = [("type", "NPZ_EXPORT_COMPLETE"), ("config_key", config), ("npz_path", str(root / "x.npz")),
              ("samples", "10")]
    kind = rng.randrange(14)
    if kind == 0:  # trailing newline in a name
        return [(k, v + "\n" if k == "config_key" else v) for k, v in export]
    if kind == 1:
        return [("type", "NPZ_EXPORT_COMPLETE"), ("board_type", "hex8\n"), ("num_players", "2"),
                ("npz_path", str(root / "x.npz"))]
    if kind == 2:  # a symlink loop inside the data root
        return [(k, str(root / "loop-a" / "x.npz") if k == "npz_path" else v) for k, v in export]
    if kind == 3:  # a meaningful field repeated
        return export + [("npz_path", str(root / "other.npz"))]
    if kind == 4:  # huge value, huge name, too many fields, huge payload
        return export + [("note", "x" * rng.choice([5000, 100_000]))]
    if kind == 5:
        return export + [("n" * 300, "1")]
    if kind == 6:
        return export + [(f"f{i}", "v") for i in range(70)]
    if kind == 7:
        return export + [("payload", msgpack.packb("x" * 300_000))]
    if kind == 8:  # non-ASCII digits and other number junk
        return [(k, rng.choice(["٣", "1_000", " 5", "nan", "1e400", "5.5"]) if k == "samples" else v)
                for k, v in export]
    if kind == 9:  # the coordinator's own types with junk
        return [("type", "TRAINING_STARTED"), ("job_id", f"{config}-1"), ("config_key", config),
                ("source_event", rng.choice(["junk", "-", "١٢-٣"]))]
    if kind == 10:
        return [("type", "TRAINING_COMPLETE"), ("job_id", f"{config}-1"), ("config_key", config),
                ("duration_s", rng.choice(["nan", "inf", "soon", "-1"]))]
    if kind == 11:
        return [("type", rng.choice(["TRAINING_FAILED", "TRAINING_CANCELLED"])), ("job_id", "a b"),
                ("config_key", config)]
    if kind == 12:  # invalid UTF-8
        return export + [(b"note", b"\xff\xfe")]
    return [("type", "CLUSTER_HEALTH_CHANGED"), ("alive_peers", rng.choice(['["node-0", ', "[1]", "a;b"]))]


def _flat(fields: Fields) -> list[bytes | str]:
    return [part for pair in fields for part in pair]


def test_fuzzing_the_running_consumer_on_real_redis(redis_server, real_conn, make_settings, looped_data_root):
    root = looped_data_root
    settings = make_settings(redis_server.url, data_roots=(str(root),))
    orch = TrainingOrchestrator(settings, real_conn, consumer_name="fuzz")
    orch.prepare()
    rng = random.Random(SEED)
    total = hypothesis_settings().max_examples * EVENTS_PER_EXAMPLE
    memory_before = real_conn.info("memory")["used_memory"]
    with real_conn.pipeline(transaction=False) as pipe:
        plan = [rng.random() < 0.5 for _ in range(total)]
        for valid in plan:
            fields = _valid(rng, root) if valid else _junk(rng, root)
            pipe.execute_command("XADD", orch.keys.events, "*", *_flat(fields))
        ids = pipe.execute()
    expected_valid = {entry_id.decode(): valid for entry_id, valid in zip(ids, plan)}

    consumer = threading.Thread(target=orch._consume_until_stopped, daemon=True)
    consumer.start()
    try:
        last = ids[-1].decode()

        def caught_up() -> bool:
            [group] = real_conn.xinfo_groups(orch.keys.events)
            return group["last-delivered-id"].decode() == last and group["pending"] == 0

        wait_for(caught_up, timeout_s=300)
        dead = {f[b"dead_original_id"].decode(): f[b"dead_reason"].decode() for f in dead_letters(real_conn)}
        false_positives = {i: dead[i] for i, valid in expected_valid.items() if valid and i in dead}
        missed = [i for i, valid in expected_valid.items() if not valid and i not in dead]
        generic = {i: r for i, r in dead.items() if r.startswith("poison") or not r.strip()}
        memory_after = real_conn.info("memory")["used_memory"]
        streams = {key: real_conn.memory_usage(key, samples=0) / 2**20 for key in (orch.keys.events,
                                                                                 orch.keys.dead_letters)}
        print(f"\nfuzz: {total} events ({sum(plan)} valid), {len(dead)} dead-lettered, "
              f"{real_conn.xpending(orch.keys.events, 'orchestrator')['pending']} lost (pending), "
              f"{len(false_positives)} false positives, {len(missed)} invalid handled; "
              f"Redis used_memory {memory_before / 2**20:.1f} -> {memory_after / 2**20:.1f} MiB "
              f"(events {streams[orch.keys.events]:.1f} MiB, dead letters {streams[orch.keys.dead_letters]:.1f} MiB); "
              f"handler_errors {real_conn.hget(orch.keys.stats, 'handler_errors')}")
        assert not false_positives, list(false_positives.items())[:5]
        assert not missed, missed[:5]
        assert not generic, list(generic.items())[:5]
        assert real_conn.hget(orch.keys.stats, "handler_errors") is None  # every reason came from a check
        assert consumer.is_alive()
        new = xadd_export(real_conn, "square8_2p", root / "fresh.npz", 50000)
        wait_for(lambda: real_conn.hget(orch.keys.config("square8_2p"), "last_event_id") == new.encode(),
                 timeout_s=60)
    finally:
        orch._stopping.set()
        consumer.join(timeout=30)
    again = TrainingOrchestrator(settings, real_conn, consumer_name="fuzz")
    again.prepare()  # a restart replays nothing bad and skips nothing valid
    assert real_conn.hget(orch.keys.stats, "configs_skipped") is None
