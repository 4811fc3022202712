"""The Grafana dashboard's panel queries and what each must return once test_prometheus's scenario
has run (test_metrics checks the list is complete; test_prometheus runs each on a real Prometheus)."""

from __future__ import annotations

import json
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/ringrift-training.json"

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
