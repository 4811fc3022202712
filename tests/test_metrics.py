"""The coordinator's Prometheus metrics without Prometheus (fakeredis), and which series each
Grafana panel query must return (listed in tests/support/grafana.py): tests/test_prometheus.py runs every
one of them on a real Prometheus."""

from __future__ import annotations

from prometheus_client import generate_latest

from coordinator.bus.events import KNOWN_TYPES
from coordinator.core.settings import BreakerSettings
from coordinator.service.metrics import Metrics
from coordinator.stores.breakers import CircuitBreakers
from coordinator.stores.leases import LeaseManager
from tests.support.grafana import EXPECTED, panel_queries


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
