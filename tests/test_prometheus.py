"""The Grafana dashboard's queries on a real Prometheus (Debian's `prometheus`) scraping a real
`ringrift-train run --metrics-port` every second, through a dead letter, a trainer failure that
opens a config's and a node's circuit breaker at once, and a completed training."""

from __future__ import annotations

import json
import math
import subprocess
import urllib.parse
import urllib.request

import pytest
import yaml

from coordinator.bus.events import KNOWN_TYPES
from coordinator.ops.local_redis import free_port
from tests.support.exports import xadd_export
from tests.support.grafana import EXPECTED
from tests.support.polling import or_none, wait_for
from tests.support.streams import stream_events
from tests.support.tools import require
from tests.support.trainers import stub_trainer

pytestmark = pytest.mark.integration
def query(port: int, expr: str) -> list[dict]:
    address = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    reply = json.loads(urllib.request.urlopen(address, timeout=10).read())
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def answers(port: int, expr: str) -> dict[str, float]:
    label, _, _ = EXPECTED[expr]
    return {r["metric"].get(label, "") if label else "": float(r["value"][1]) for r in query(port, expr)}


def meets(port: int, expr: str) -> bool:
    _, want, positive = EXPECTED[expr]
    got = answers(port, expr)
    return want <= set(got) and all(not math.isnan(got[k]) and (got[k] > 0 or not positive) for k in want)


def test_grafana_queries_on_a_real_prometheus(redis_server, real_conn, service, rq_workers, tmp_path, npz):
    prometheus = require("prometheus")
    metrics_port, prom_port = free_port(), free_port()
    service(stub_trainer("--epoch-seconds", "0.5"), epochs=2, run_args=("--metrics-port", str(metrics_port)),
            breakers={"failures": 1, "window_s": 3600, "cooldown_s": 3600})
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                      "scrape_configs": [{"job_name": "ringrift", "static_configs": [
                                          {"targets": [f"127.0.0.1:{metrics_port}"]}]}]}))
    prom_log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=prom_log, stderr=subprocess.STDOUT)
    try:
        # Two scrapes of the fresh coordinator first: every counter is seen at 0 before it moves.
        wait_for(lambda: or_none(lambda: query(prom_port, 'count_over_time(up{job="ringrift"}[1m]) >= 2'), OSError),
                 timeout_s=60, interval_s=0.5)
        # Nothing consumed yet: one series per event type (and "unknown"), each at rate 0.
        assert answers(prom_port, "sum by (type) (rate(ringrift_events_consumed_total[5m]))") == dict.fromkeys(
            [*KNOWN_TYPES, "unknown"], 0.0)
        rq_workers(1)  # node-0
        xadd_export(real_conn, "hex8_2p", npz, 10)
        real_conn.xadd("ringrift:events", {"type": "NPZ_EXPORT_COMPLETE", "config_key": "hex8_2p"})  # dead letter
        wait_for(lambda: stream_events(real_conn, "TRAINING_COMPLETE"), timeout_s=60)
        # A missing file: the trainer's failure opens square8_2p's and node-0's breakers at once.
        xadd_export(real_conn, "square8_2p", tmp_path / "gone.npz", 10)
        wait_for(lambda: len(stream_events(real_conn, "CIRCUIT_OPENED")) == 2, timeout_s=60)
        for expr in EXPECTED:
            try:
                wait_for(lambda expr=expr: or_none(lambda: meets(prom_port, expr), OSError), timeout_s=60,
                         interval_s=0.5)
            except AssertionError:
                raise AssertionError(f"{expr} returned {answers(prom_port, expr)}, expected {EXPECTED[expr]}") from None
        assert answers(prom_port, 'sum(ringrift_node_slots{status!~"down|breaker_open"})') == {"": 1.0}
        opened = query(prom_port, "ringrift_breaker_open == 1")
        assert sorted((r["metric"]["kind"], r["metric"]["name"]) for r in opened) == [
            ("config", "square8_2p"), ("node", "node-0")]
    finally:
        prom.terminate()
        prom.wait(timeout=15)
        prom_log.close()

