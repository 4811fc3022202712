"""The coordinator's Prometheus metrics without Prometheus (fakeredis), and which series each
Grafana panel query must return: tests/test_prometheus.py runs every one of them on a real Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import generate_latest

from coordinator.bus.events import KNOWN_TYPES
from coordinator.core.settings import BreakerSettings
from coordinator.service.metrics import Metrics
from coordinator.stores.breakers import CircuitBreakers
from coordinator.stores.leases import LeaseManager

DASHBOARD = Path(__file__).parent.parent / "deploy/grafana/ringrift-training.json"

# What each panel query must return once the scenario has run: the label values of its series
# (one label per query, or "" for a single unlabelled series) and whether the values must be > 0.
EXPECTED: dict[str, tuple[str, set[str], bool]] = {
    "ringrift_queue_depth": ("", {""}, False),
    "ringrift_jobs_delayed": ("", {""}, False),
    "sum by (state) (ringrift_jobs)": ("state", {"complete", "failed"}, True),
    "sum(ringrift_node_slots_in_use)": ("", {""}, False),
    # node-0's breaker is open: only node-1's GPU counts.
    'sum(ringrift_node_slots{status!~"down|breaker_open"})': ("", {""}, True),
    "ringrift_node_slots_in_use": ("node", {"node-0", "node-1"}, False),
    "histogram_quantile(0.5, sum by (le) (rate(ringrift_training_duration_seconds_bucket[1h])))": ("", {""}, True),
    "histogram_quantile(0.9, sum by (le) (rate(ringrift_training_duration_seconds_bucket[1h])))": ("", {""}, True),
    "histogram_quantile(0.5, sum by (le) (rate(ringrift_event_to_start_seconds_bucket[15m])))": ("", {""}, True),
    "histogram_quantile(0.99, sum by (le) (rate(ringrift_event_to_start_seconds_bucket[15m])))": ("", {""}, True),
    "sum by (type) (rate(ringrift_events_consumed_total[5m]))": (
        "type", {"NPZ_EXPORT_COMPLETE", "TRAINING_STARTED", "TRAINING_COMPLETE", "TRAINING_FAILED",
                 "CIRCUIT_OPENED"}, True),
    "sum by (type) (rate(ringrift_events_dead_lettered_total[5m]))": ("type", {"NPZ_EXPORT_COMPLETE"}, True),
    "rate(ringrift_lease_acquisitions_total[5m])": ("", {""}, True),
    "rate(ringrift_lease_busy_total[5m])": ("", {""}, False),
    "increase(ringrift_fenced_publishes_total[1h])": ("", {""}, False),
    "ringrift_breaker_open == 1": ("kind", {"config", "node"}, True),
    "topk(20, ringrift_config_priority)": ("config", {"hex8_2p", "square8_2p"}, False),
    "ringrift_config_elo_per_hour": ("config", {"hex8_2p", "square8_2p"}, False),
}


def panel_queries() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]


def test_every_panel_query_is_checked():
    assert sorted(panel_queries()) == sorted(EXPECTED)


def test_series_exist_at_zero_and_node_breakers_show(fake_conn, keys, make_settings):
    """Without Prometheus: every known type's counters at 0 from the start; an open node breaker is
    a `kind="node"` series and its node's GPUs leave the usable status."""
    settings = make_settings()
    LeaseManager.from_settings(fake_conn, keys, settings).register_nodes({"n1": 2, "n2": 1})
    metrics = Metrics(fake_conn, keys, settings)
    text = generate_latest(metrics.registry).decode()
    for kind in (*KNOWN_TYPES, "unknown"):
        assert f'ringrift_events_consumed_total{{type="{kind}"}} 0.0' in text
        assert f'ringrift_events_dead_lettered_total{{type="{kind}"}} 0.0' in text
    assert 'ringrift_breaker_open{kind="node",name="n1"} 0.0' in text
    assert 'ringrift_node_slots{node="n1",status="healthy"} 2.0' in text
    breakers = CircuitBreakers(fake_conn, keys, BreakerSettings(failures=1, cooldown_s=settings.breakers.cooldown_s),
                               stream_maxlen=0)
    breakers.record("node", "n1", success=False)
    text = generate_latest(metrics.registry).decode()
    assert 'ringrift_breaker_open{kind="node",name="n1"} 1.0' in text
    assert 'ringrift_node_slots{node="n1",status="breaker_open"} 2.0' in text
    assert 'ringrift_node_slots{node="n2",status="healthy"} 1.0' in text
    assert "ringrift_training_duration_seconds_bucket{le=\"1.0\"} 0.0" in text  # seconds, not only hours
