"""The dashboard's stream tail on fakeredis: what it keeps of the event stream between polls
(tests/test_dashboard.py runs the whole dashboard on a real Redis)."""

from __future__ import annotations

from coordinator.bus.events import TRAINING_PROGRESS, publish
from coordinator.ops.dashboard import stream_tail


def test_stream_tail_memory_is_bounded(fake_conn, keys, monkeypatch):
    """Curves per job and jobs with curves are capped; a poll reads only what is new."""
    monkeypatch.setattr(stream_tail, "CURVES_KEPT", 3)
    monkeypatch.setattr(stream_tail, "CURVE_POINTS", 4)
    tail = stream_tail.StreamTail(fake_conn, keys)
    for job in range(5):
        for epoch in range(1, 7):
            publish(fake_conn, keys, TRAINING_PROGRESS, {"job_id": f"j{job}", "config_key": "hex8_2p",
                                                         "epoch": epoch, "train_loss": 1 / epoch}, maxlen=0)
    assert tail.catch_up() == 30 and tail.catch_up() == 0
    assert list(tail.curves) == ["j2", "j3", "j4"]  # the oldest jobs' curves dropped
    assert [p[0] for p in tail.curve("j4")] == [1, 2, 3, 4]  # at most CURVE_POINTS epochs
    publish(fake_conn, keys, TRAINING_PROGRESS, {"job_id": "j4", "config_key": "hex8_2p", "epoch": 2,
                                                 "train_loss": 0.25}, maxlen=0)  # a resumed attempt redoes epoch 2
    assert tail.catch_up() == 1 and tail.curve("j4")[1] == (2, 0.25, None)
