"""Issue 24's done-when, on a real redis-server: RingRift-shaped EVALUATION_COMPLETED entries (relative
`model_path`, zone-less ISO `timestamp`, nested results as JSON), XADDed to the events stream as a
RingRift producer would, move the config's Elo and its next priority."""

from __future__ import annotations

import time
from dataclasses import replace

import redis

from coordinator.bus.events import encode_fields
from coordinator.service.orchestrator import TrainingOrchestrator

HEX = "hexagonal_2p"


def ringrift_evaluation(elo: float) -> dict[str, str]:
    """The payload of RingRift's `emit_evaluation_completed` (event_router.py) as stream fields."""
    return encode_fields("EVALUATION_COMPLETED", {
        "model_id": "models/canonical_hexagonal_2p.pth", "model_path": "models/canonical_hexagonal_2p.pth",
        "elo": elo, "win_rate": 0.74, "games_played": 100, "timestamp": "2026-12-07T10:15:02.123456",
        "board_type": "hexagonal", "num_players": 2, "config_key": HEX,
        "opponent_results": {"random": {"games": 50, "win_rate": 0.9}, "heuristic": {"games": 50, "win_rate": 0.58}},
        "best_elo": elo, "estimated_elo": elo, "architecture": "v5_heavy", "vs_random_rate": 0.9,
        "vs_heuristic_rate": 0.58})


def scores(conn: redis.Redis) -> tuple[float, float, float, str]:
    """hexagonal_2p's priority (sorted set), its elo_velocity and value factors, its lineage."""
    h = conn.hgetall(f"ringrift:config:{HEX}")
    return (conn.zscore("ringrift:training:priority", HEX), float(h[b"f_elo_velocity"]),
            float(h[b"f_value_per_gpu_hour"]), h.get(b"eval_lineage", b"").decode())


def test_ringrift_evaluations_move_the_elo_and_the_next_priority(redis_server, real_conn, make_settings):
    orch = TrainingOrchestrator(replace(make_settings(redis_server.url), hosts={"gpu-a": 1}), real_conn,
                                consumer_name="t")
    orch.prepare()
    for config in ("square8_2p", "hex8_2p", HEX):  # the first two take the GPU and the prefetch place
        board, players = config.split("_")
        real_conn.xadd("ringrift:events", {"type": "NPZ_EXPORT_COMPLETE", "board_type": board,
                                           "num_players": players[:-1], "npz_path": f"/data/{config}.npz",
                                           "samples": "50000"})
        orch.process_once(block_ms=None)
    real_conn.xadd("ringrift:events", {"type": "TRAINING_COMPLETE", "job_id": "earlier-1", "config_key": HEX,
                                       "duration_s": str(24 * 3600), "model_path": "/shared/hex/earlier-1/model.pt"})
    orch.process_once(block_ms=None)
    assert real_conn.hget("ringrift:training:active", HEX) is None  # waiting: it has a score
    before = scores(real_conn)
    assert before[0] > 0 and before[1:3] == (0.5, 0.5)  # no Elo yet: neutral velocity, the cost prior

    real_conn.xadd("ringrift:events", ringrift_evaluation(1150.0))
    orch.process_once(block_ms=None)
    first = scores(real_conn)
    assert real_conn.xlen("ringrift:events:dead") == 0
    assert real_conn.lrange(f"ringrift:elo:{HEX}", 0, -1)[-1].endswith(b" 1150.000")
    assert [float(g) for g in real_conn.lrange(f"ringrift:config:{HEX}:elo_gains", 0, -1)] == [750.0]
    assert first[2] > before[2] and first[0] > before[0] and first[3] == "unknown"

    time.sleep(1.1)  # RingRift's timestamps have no zone: the points are placed at their arrival
    real_conn.xadd("ringrift:events", ringrift_evaluation(1190.0))
    orch.process_once(block_ms=None)
    second = scores(real_conn)
    assert real_conn.xlen("ringrift:events:dead") == 0
    assert second[1] > first[1] and second[0] > first[0]  # Elo rising: velocity, then the score
