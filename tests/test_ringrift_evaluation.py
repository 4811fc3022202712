"""RingRift's EVALUATION_COMPLETED (issue 24, items 1 and 5), on fakeredis: recorded whatever its
`model_path` says, matched to the config's published models for lineage, and a gain for the cost
factor from a config's first evaluation.

The events are built as RingRift's `emit_evaluation_completed` (ai-service/app/coordination/
event_router.py) builds its payload, XADDed with `encode_fields` (numbers as text, dicts and lists as
JSON, None left out): `model_path` relative to its working directory, `elo` (= `best_elo` when given),
`timestamp` from `datetime.now().isoformat()` (no zone), nested `opponent_results`.
"""

from __future__ import annotations

import json

import pytest

from coordinator.bus import schemas
from coordinator.bus.events import decode_entry, encode_fields
from coordinator.core.errors import EventError
from coordinator.core.settings import CostSettings
from tests.support.streams import dead_letters

HEX = "hexagonal_2p"
CANONICAL = "models/canonical_hexagonal_2p.pth"


def ringrift_evaluation(elo: float, model_path: str = CANONICAL, config: str = HEX, **extra: object) -> dict[str, str]:
    board, players = config.rsplit("_", 1)
    payload = {"model_id": model_path, "model_path": model_path, "elo": elo, "win_rate": 0.71, "games_played": 120,
               "timestamp": "2026-12-07T10:15:02.123456", "board_type": board, "num_players": int(players[:-1]),
               "config_key": config, "best_elo": elo, "estimated_elo": elo, "architecture": "v5_heavy",
               "opponent_results": {name: {"wins": 40, "losses": 10, "draws": 0, "games": 50, "win_rate": 0.8,
                                           "elo_estimate": 1400.0 + i} for i, name in enumerate(
                                               ("random", "heuristic", "heuristic_strong", "mcts_light"))},
               "is_multi_harness": False, "vs_random_rate": 0.8, "vs_heuristic_rate": 0.8, "harness_results": None,
               **extra}
    return encode_fields("EVALUATION_COMPLETED", payload)


def complete(conn, keys, job_id: str, model_path: str, parent: str = "", config: str = HEX, hours: float = 24.0):
    conn.xadd(keys.events, {"type": "TRAINING_COMPLETE", "job_id": job_id, "config_key": config,
                            "duration_s": str(hours * 3600), "model_path": model_path, "parent_model": parent})


def config_field(conn, keys, name: str, config: str = HEX) -> str | None:
    value = conn.hget(keys.config(config), name)
    return value.decode() if value is not None else None


def gains(conn, keys, config: str = HEX) -> list[float]:
    return [float(g) for g in conn.lrange(keys.elo_gains(config), 0, -1)]


# -- item 1: recorded whatever the path says ------------------------------------------------------
def test_a_ringrift_evaluation_with_a_relative_path_is_recorded_not_dead_lettered(orch, fake_conn, keys):
    fake_conn.xadd(keys.events, ringrift_evaluation(1310.0))
    orch.process_once(block_ms=None)
    assert dead_letters(fake_conn) == []
    [point] = fake_conn.lrange(keys.elo(HEX), 0, -1)
    assert point.decode().endswith(" 1310.000")
    assert config_field(fake_conn, keys, "eval_lineage") == "unknown"
    assert config_field(fake_conn, keys, "eval_model_reported") == CANONICAL


def test_every_ringrift_field_passes_the_validator():
    fields = ringrift_evaluation(1310.0, composite_participant_ids=["canonical_hexagonal_2p:gumbel_mcts:x" * 3] * 40,
                                 beats_current_best=True, source="gauntlet", harness_type="gumbel_mcts")
    fields["opponent_results"] = json.dumps({f"opponent_{i}": {"games": 50, "win_rate": 0.5} for i in range(200)})
    assert len(fields["opponent_results"]) > schemas.MAX_FIELD_BYTES  # a long gauntlet's results
    e = schemas.parse_evaluation(decode_entry("1-0", fields))
    assert (e.config_key, e.elo, e.anchored_elo, e.at, e.model_path) == (HEX, 1310.0, 1310.0, None, CANONICAL)


def test_the_elo_comes_from_best_elo_or_estimated_elo_when_elo_is_missing():
    event = decode_entry("1-0", {"type": "EVALUATION_COMPLETED", "config": "hex8_2p", "best_elo": "1250"})
    assert schemas.parse_evaluation(event).elo == 1250.0
    event = decode_entry("1-0", {"type": "EVALUATION_COMPLETED", "config": "hex8_2p", "win_rate": "0.6"})
    with pytest.raises(EventError, match="one of elo, best_elo, estimated_elo"):
        schemas.parse_evaluation(event)


@pytest.mark.parametrize(("timestamp", "at"), [
    ("1796601600", 1796601600.0), ("2026-12-07T00:00:00+00:00", 1796601600.0), ("2026-12-07T00:00:00Z", 1796601600.0),
    ("2026-12-07T00:00:00", None)])  # local time, zone unknown
def test_timestamps_are_epoch_seconds_or_iso_8601(timestamp, at):
    event = decode_entry("1-0", {"type": "EVALUATION_COMPLETED", "config_key": HEX, "elo": "1", "timestamp": timestamp})
    assert schemas.parse_evaluation(event).at == at


def test_paths_the_coordinator_opens_stay_absolute_and_confined(orch, fake_conn, keys, tmp_path):
    fake_conn.xadd(keys.events, {"type": "NPZ_EXPORT_COMPLETE", "config_key": HEX, "npz_path": "data/h.npz",
                                 "samples": "10"})
    fake_conn.xadd(keys.events, {"type": "TRAINING_STARTED", "job_id": "j1", "config_key": HEX,
                                 "init_weights": "models/canonical_hexagonal_2p.pth"})
    orch.process_once(block_ms=None)
    reasons = [f[b"dead_reason"].decode() for f in dead_letters(fake_conn)]
    assert reasons == ["npz_path must be an absolute path, got 'data/h.npz'",
                       "init_weights must be an absolute path, got 'models/canonical_hexagonal_2p.pth'"]
    with pytest.raises(EventError, match="outside the data roots"):
        schemas.parse_export(decode_entry("1-0", {"type": "NPZ_EXPORT_COMPLETE", "config_key": HEX,
                                                  "npz_path": "/etc/passwd"}), [str(tmp_path)])


def test_a_relative_path_resolved_against_the_working_dir_finds_its_lineage(make_orch, fake_conn, keys):
    orch = make_orch(working_dir="/srv/ringrift/ai-service")
    wd = "/srv/ringrift/ai-service"
    complete(fake_conn, keys, "j1", f"{wd}/models/hex_a.pth")
    complete(fake_conn, keys, "j2", f"{wd}/models/hex_b.pth", f"{wd}/models/hex_a.pth")
    fake_conn.xadd(keys.events, ringrift_evaluation(1000.0, "models/hex_a.pth"))
    fake_conn.xadd(keys.events, ringrift_evaluation(1045.0, "./models/../models/hex_b.pth"))
    orch.process_once(block_ms=None)
    assert dead_letters(fake_conn) == []
    assert config_field(fake_conn, keys, "eval_lineage") == "published"
    assert config_field(fake_conn, keys, "eval_model") == "/srv/ringrift/ai-service/models/hex_b.pth"
    # a: its first evaluation, from scratch in one training: 1000 - 400; b: over its parent a.
    assert gains(fake_conn, keys) == [600.0, 45.0]


def test_a_published_model_is_matched_by_its_file_name_only_when_one_has_it():
    from coordinator.stores.configs import match_model

    lineage = {"/shared/hex/j1/attempt-1/model.pt": "", "/shared/hex/j2/attempt-1/model.pt": "",
               "/shared/hex/j3/attempt-2/canonical_hexagonal_2p.pth": ""}
    assert match_model(CANONICAL, lineage, []) == "/shared/hex/j3/attempt-2/canonical_hexagonal_2p.pth"
    assert match_model("models/model.pt", lineage, []) is None  # two have that name: which one?
    assert match_model("models/other.pth", lineage, ["/p/other.pth"]) == "/p/other.pth"  # the published list
    assert match_model("/shared/hex/j1/attempt-1/model.pt", lineage, []) == "/shared/hex/j1/attempt-1/model.pt"


def test_a_training_complete_with_a_relative_model_path_still_records_lineage_and_cost(orch, fake_conn, keys):
    complete(fake_conn, keys, "j1", "models/hex_a.pth", hours=2.0)
    orch.process_once(block_ms=None)
    assert dead_letters(fake_conn) == []
    assert json.loads(config_field(fake_conn, keys, "lineage")) == {"models/hex_a.pth": ""}
    assert [float(h) for h in fake_conn.lrange(keys.gpu_hours(HEX), 0, -1)] == [2.0]


# -- item 5: the cost factor learns from the first evaluation -------------------------------------
def test_the_first_anchored_evaluation_gives_a_gain_per_training_and_moves_the_factor(orch, fake_conn, keys):
    complete(fake_conn, keys, "j1", "/shared/hex/j1/attempt-1/model.pt")
    complete(fake_conn, keys, "j2", "/shared/hex/j2/attempt-1/model.pt", "/shared/hex/j1/attempt-1/model.pt")
    orch.process_once(block_ms=None)
    prior = float(config_field(fake_conn, keys, "f_value_per_gpu_hour"))
    fake_conn.xadd(keys.events, ringrift_evaluation(1200.0))  # unknown lineage: over both trainings done
    orch.process_once(block_ms=None)
    assert gains(fake_conn, keys) == [(1200.0 - 400.0) / 2]
    assert float(config_field(fake_conn, keys, "f_value_per_gpu_hour")) > prior


def test_a_reevaluated_path_gains_only_over_the_trainings_since(orch, fake_conn, keys):
    complete(fake_conn, keys, "j1", "/shared/hex/j1/attempt-1/model.pt")
    fake_conn.xadd(keys.events, ringrift_evaluation(1200.0))
    fake_conn.xadd(keys.events, ringrift_evaluation(1215.0))  # the same canonical model again: noise
    complete(fake_conn, keys, "j2", "/shared/hex/j2/attempt-1/model.pt")
    complete(fake_conn, keys, "j3", "/shared/hex/j3/attempt-1/model.pt")
    fake_conn.xadd(keys.events, ringrift_evaluation(1275.0))  # promoted twice since: 60 Elo over 2 trainings
    orch.process_once(block_ms=None)
    assert gains(fake_conn, keys) == [800.0, 30.0]


def test_an_unanchored_first_evaluation_is_only_a_baseline(orch, fake_conn, keys):
    complete(fake_conn, keys, "j1", "/shared/hex/j1/attempt-1/model.pt")
    fake_conn.xadd(keys.events, {"type": "EVALUATION_COMPLETED", "config": HEX, "elo": "1500"})  # a tournament's scale
    orch.process_once(block_ms=None)
    assert gains(fake_conn, keys) == []


def test_the_rule_spreads_the_first_gain_over_the_lineage_from_scratch():
    from coordinator.stores.configs import EvaluationBasis, attributed_gain

    s = CostSettings()
    assert s.untrained_elo == 400.0  # RingRift's BASELINE_ELO_RANDOM
    lineage = {"/m/a": "", "/m/b": "/m/a", "/m/c": "/m/b"}
    first = EvaluationBasis("/m/c", True, {}, lineage, None, None, None, trainings_done=7)
    assert attributed_gain(1000.0, 1000.0, first, s.untrained_elo) == pytest.approx(200.0)  # 3 trainings a, b, c
    cut = EvaluationBasis("/m/c", True, {}, {"/m/c": "/m/b"}, None, None, None, trainings_done=4)
    assert attributed_gain(1000.0, 1000.0, cut, s.untrained_elo) == pytest.approx(150.0)  # all trainings done
    none_done = EvaluationBasis("models/x.pth", False, {}, {}, None, None, None, trainings_done=0)
    assert attributed_gain(1000.0, 1000.0, none_done, s.untrained_elo) is None  # not the coordinator's work
