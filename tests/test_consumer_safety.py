"""Issue 14 points 1-3: no single entry or stored config stops the consumer, start-up or dispatch."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
import redis

from coordinator import TrainingOrchestrator
from coordinator.core.errors import EventError
from coordinator.core.inputs import check_identifier, parse_int, parse_number
from tests.support.exports import xadd_export
from tests.support.streams import dead_reasons


@pytest.mark.parametrize("field", ["config_key", "config"])
def test_a_config_key_with_a_trailing_newline_is_dead_lettered(orch, fake_conn, keys, field):
    xadd_export(fake_conn, None, **{field: "hex8_2p\n"})
    xadd_export(fake_conn, "hex8_2p")
    orch.process_once(block_ms=None)
    [reason] = dead_reasons(fake_conn)
    assert "is not of the form <board_type>_<players>p" in reason
    assert [k.decode() for k in fake_conn.zrange(keys.priority, 0, -1)] == ["hex8_2p"]
    assert orch.jobs.active_job("hex8_2p") is not None


@pytest.mark.parametrize(("kind", "bad"), [
    ("config_key", "hex8_2p\n"), ("config_key", "hex８_2p"), ("board_type", "hex8\n"), ("node", "gpu-1\n"),
    ("node", "gpü"), ("job_id", "hex8_2p-1\n"), ("job_id", "a/b"), ("worker", "w 1"), ("worker", "")])
def test_identifiers_must_match_in_full(kind, bad):
    with pytest.raises(EventError, match="is not"):
        check_identifier(kind, bad)


@pytest.mark.parametrize(("text", "value"), [("5", 5), ("5.0", 5), ("1e3", 1000), ("+7", 7), ("-0", 0),
                                              ("12345678901234567890", 12345678901234567890)])
def test_the_number_rule_accepts_integral_values_in_any_notation(text, value):
    assert parse_int(text, "samples") == value


@pytest.mark.parametrize("text", ["٣", "1_000", " 5", "5 ", "5\n", "0x10", "nan", "inf", "1e400", "5.5", "", "1" * 65])
def test_the_number_rule_refuses_everything_else(text):
    with pytest.raises(EventError, match="samples"):
        parse_int(text, "samples")


def test_nan_and_inf_are_never_numbers():
    for text in ("nan", "NaN", "inf", "-Infinity", "1e999"):
        with pytest.raises(EventError):
            parse_number(text, "elo")


def test_an_npz_path_through_a_symlink_loop_is_dead_lettered(make_orch, fake_conn, keys, looped_data_root):
    root = looped_data_root
    o = make_orch(data_roots=(str(root),))
    xadd_export(fake_conn, "hex8_2p", root / "loop-a" / "x.npz")
    o.process_once(block_ms=None)
    [reason] = dead_reasons(fake_conn)
    assert "cannot be resolved" in reason and ("Symlink loop" in reason or "Too many levels" in reason)
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0
    make_orch(data_roots=(str(root),))  # started again: nothing of it left to trip over


def test_an_npz_path_that_cannot_be_checked_is_dead_lettered(make_orch, fake_conn, keys, tmp_path, monkeypatch):
    o = make_orch(data_roots=(str(tmp_path),))

    def refuse(self, strict=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr("pathlib.Path.resolve", refuse)
    xadd_export(fake_conn, "hex8_2p", tmp_path / "x.npz")
    o.process_once(block_ms=None)
    [reason] = dead_reasons(fake_conn)
    assert "cannot be resolved: PermissionError" in reason


def test_any_handler_error_dead_letters_the_entry_at_once(orch, fake_conn, keys, monkeypatch):
    monkeypatch.setattr(orch, "_handlers", {**orch._handlers, "EVALUATION_COMPLETED": lambda e: 1 / 0})
    fake_conn.xadd(keys.events, {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": "1"})
    xadd_export(fake_conn, "hex8_2p")
    orch.process_once(block_ms=None)
    assert dead_reasons(fake_conn) == ["ZeroDivisionError: division by zero"]
    assert fake_conn.hget(keys.stats, "handler_errors") == b"1"
    assert orch.jobs.active_job("hex8_2p") is not None
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0


def test_an_error_recording_exports_dead_letters_only_that_config(orch, fake_conn, keys, monkeypatch):
    real = orch.configs.record_exports_many

    def record(groups):
        if any(export.config_key == "square8_2p" for group in groups for export, _ in group):
            raise ValueError("broken config")
        return real(groups)

    monkeypatch.setattr(orch.configs, "record_exports_many", record)
    xadd_export(fake_conn, "square8_2p")
    xadd_export(fake_conn, "hex8_2p")
    orch.process_once(block_ms=None)
    assert dead_reasons(fake_conn) == ["ValueError: broken config"]
    assert orch.jobs.active_job("hex8_2p") is not None
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0


def test_a_stored_phantom_config_does_not_stop_start_up_or_dispatch(make_orch, fake_conn, keys):
    """What an older version left behind: a config recorded under `hex8_2p\\n`."""
    fake_conn.hset(keys.config("hex8_2p\n"), mapping={"npz_path": "/d/x.npz", "samples": "10", "exported_at": "1",
                                                      "new_samples": "100000", "first_seen_at": "1"})
    fake_conn.zadd(keys.priority, {"hex8_2p\n": 5.0})
    o = make_orch()
    assert fake_conn.zrange(keys.priority, 0, -1) == []
    assert b"is not of the form" in fake_conn.hget(keys.config("hex8_2p\n"), "skipped_reason")
    assert fake_conn.hget(keys.stats, "configs_skipped") == b"1"
    xadd_export(fake_conn, "hex8_2p")
    o.process_once(block_ms=None)
    assert o.jobs.active_job("hex8_2p") is not None


def test_a_config_that_cannot_be_dispatched_is_skipped(orch, fake_conn, keys, monkeypatch):
    real = orch.jobs.create_job

    def create(settings, config_key, params):
        if config_key == "square8_2p":
            raise ValueError("id rejected by RQ")
        return real(settings, config_key, params)

    monkeypatch.setattr(orch.jobs, "create_job", create)
    xadd_export(fake_conn, "square8_2p", samples="99999")
    xadd_export(fake_conn, "hex8_2p")
    orch.process_once(block_ms=None)
    assert orch.jobs.active_job("hex8_2p") is not None
    assert b"id rejected by RQ" in fake_conn.hget(keys.config("square8_2p"), "skipped_reason")


def test_a_stored_config_that_cannot_be_scored_is_skipped_at_start_up(make_orch, fake_conn, keys):
    fake_conn.hset(keys.config("hex8_3p"), mapping={"npz_path": "/d/x.npz", "new_samples": "lots"})
    fake_conn.zadd(keys.priority, {"hex8_3p": -1})
    xadd_export(fake_conn, "hex8_2p")
    o = make_orch()
    assert b"cannot be scored" in fake_conn.hget(keys.config("hex8_3p"), "skipped_reason")
    o.process_once(block_ms=None)
    assert o.jobs.active_job("hex8_2p") is not None


def test_the_loop_survives_an_unexpected_error_and_logs_it(orch, monkeypatch, caplog):
    calls = []

    def flaky(block_ms=None):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("bug")
        orch._stopping.set()
        return 0

    monkeypatch.setattr(orch, "process_once", flaky)
    monkeypatch.setattr("coordinator.service.orchestrator.ERROR_BACKOFF_S", 0.01)
    with caplog.at_level(logging.ERROR):
        orch._consume_until_stopped()
    assert len(calls) == 2 and "event loop failed" in caplog.text


def test_a_consumer_that_ends_makes_the_service_exit_non_zero(fake_conn, make_settings, monkeypatch, caplog):
    from coordinator.service.orchestrator import ConsumerDied

    o = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="t")

    def dies():
        raise SystemError("thread gone")

    monkeypatch.setattr(o, "_consume_until_stopped", dies)
    with caplog.at_level(logging.CRITICAL), pytest.raises(ConsumerDied, match="thread gone"):
        asyncio.run(o.run_until_signal())
    assert "the event consumer stopped" in caplog.text


def test_transient_redis_errors_are_retried_then_poison(fake_conn, keys, make_settings, monkeypatch):
    import time

    settings = make_settings()
    settings = replace(settings, events=replace(settings.events, reclaim_idle_ms=1, max_deliveries=3))
    o = TrainingOrchestrator(settings, fake_conn, consumer_name="t")
    o.prepare()

    def down(event):
        raise redis.ConnectionError("gone")

    monkeypatch.setattr(o, "_handlers", {**o._handlers, "EVALUATION_COMPLETED": down})
    fake_conn.xadd(keys.events, {"type": "EVALUATION_COMPLETED", "config_key": "hex8_2p", "elo": "1"})
    for _ in range(6):
        o._next_reclaim = 0
        time.sleep(0.01)
        try:
            o.process_once(block_ms=None)
        except redis.ConnectionError:
            pass
    [reason] = dead_reasons(fake_conn)
    assert reason.startswith("poison: delivered 4 times")
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0


@pytest.mark.parametrize(("args", "reason"), [
    (("hex8\n", 2, "/d/x.npz"), "unknown board_type 'hex8"),
    (("hex8", 2, "relative.npz"), "npz_path must be an absolute path"),
    (("hex8", 2, "/d/x.npz", -5), "samples must be 0.."),
])
def test_the_api_uses_the_event_validator(orch, args, reason):
    with pytest.raises(EventError, match=reason):
        orch.submit_training_sync(*args)


def test_start_up_replays_a_bad_pending_entry_into_a_dead_letter(fake_conn, keys, make_settings, looped_data_root):
    settings = make_settings(data_roots=(str(looped_data_root),))
    first = TrainingOrchestrator(settings, fake_conn, consumer_name="host-a")
    first.prepare()
    xadd_export(fake_conn, "hex8_2p", looped_data_root / "loop-a" / "x.npz")
    xadd_export(fake_conn, "hex8_2p\n")
    first.consumer.read(10, None)  # delivered, then the process died before handling them
    again = TrainingOrchestrator(settings, fake_conn, consumer_name="host-a")
    again.prepare()
    assert len(dead_reasons(fake_conn)) == 2
    assert fake_conn.xpending(keys.events, "orchestrator")["pending"] == 0


def test_exporters_submissions_are_moved_and_consumed_by_the_loop(redis_server, real_conn, make_settings):
    from coordinator.bus import intake

    o = TrainingOrchestrator(make_settings(redis_server.url), real_conn, consumer_name="t")
    o.prepare()
    intake.publish_export(real_conn, [("config_key", "hex8_2p"), ("npz_path", "/d/x.npz"), ("samples", "40000")],
                          o.keys)
    real_conn.rpush(o.keys.intake, b'["type"]')
    o.process_once(block_ms=None)  # moves them onto the stream and handles them
    assert o.jobs.active_job("hex8_2p") is not None
    [reason] = dead_reasons(real_conn)
    assert reason.startswith("intake rejected the submission: an odd number of items")
