"""Fuzzing the two doors bad input comes through: the event consumer and the YAML loader."""

from __future__ import annotations

import msgpack
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import TrainingOrchestrator
from coordinator.bus.events import KNOWN_TYPES
from coordinator.core.errors import ConfigError
from coordinator.core.settings import parse_settings
from tests.support.streams import dead_letters

BATCH = 50  # x the Hypothesis profile's examples (conftest: dev 20, ci 100 = 5,000 events)
FIELD_NAMES = ["type", "board_type", "num_players", "config_key", "config", "npz_path", "output_path", "samples",
               "samples_exported", "elo", "timestamp", "node", "status", "gpus", "alive_peers", "until",
               "quality_score", "job_id", "hex8_2p", "payload", "reason"]
text_values = st.one_of(
    st.sampled_from(sorted(KNOWN_TYPES) + ["TRAINING_COMPLETED", "hex8", "square19", "2", "4", "9", "-1", "nan",
                                            "inf", "1e400", "/data/x.npz", "../../etc/passwd", "hex8_2p", "down"]),
    st.text(max_size=40),
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
# Huge values are built from a size (cheap for Hypothesis), not drawn byte by byte.
huge = st.tuples(st.integers(4000, 5000), st.sampled_from([b"x", b"\xff", "٣".encode()])).map(lambda t: t[1] * t[0])
values = st.one_of(text_values.map(str.encode), st.binary(max_size=64), huge)
msgpack_values = st.recursive(st.integers(-2**63, 2**63 - 1) | st.text(max_size=5),
                              lambda children: st.lists(children, max_size=3), max_leaves=30)
payloads = st.one_of(st.binary(max_size=32), msgpack_values.map(msgpack.packb))
events = st.dictionaries(
    st.one_of(st.sampled_from(FIELD_NAMES), st.text(min_size=1, max_size=12)).map(str.encode),
    values, min_size=1, max_size=8,
).flatmap(lambda fields: st.one_of(st.just(fields), payloads.map(lambda p: {**fields, b"payload": p})))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
@given(batch=st.lists(events, min_size=BATCH, max_size=BATCH))
def test_every_generated_event_is_handled_or_dead_lettered(fake_conn, keys, make_settings, batch):
    fake_conn.flushall()
    orch = TrainingOrchestrator(make_settings(), fake_conn, consumer_name="fuzz")
    orch.prepare()
    for fields in batch:
        fake_conn.xadd(keys.events, fields)
    while orch.process_once(block_ms=None):
        pass
    pending = fake_conn.xpending(keys.events, "orchestrator")["pending"]
    assert pending == 0, "an event was neither handled nor dead-lettered"
    for dead in dead_letters(fake_conn):
        assert dead[b"dead_reason"], "a dead letter without its reason"


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                         st.text(max_size=10), st.lists(st.text(max_size=5), max_size=3))
sections = {
    "redis": ["url", "prefix", "nope"], "training": ["default_epochs", "batch_size", "learning_rate", "command",
                                                     "data_roots", "check_npz", "timeout_s", "typo"],
    "events": ["stream_maxlen", "block_ms"], "scheduler": ["weights", "prefetch", "min_new_samples"],
    "leases": ["ttl_s"], "retries": ["trainer"], "breakers": ["failures"], "hosts": ["gpu-1", "gpu-2"],
    "mystery": ["x"],
}
configs = st.dictionaries(
    st.sampled_from(sorted(sections)),
    st.one_of(yaml_scalars, st.sampled_from(sorted(sections)).flatmap(
        lambda name: st.dictionaries(st.sampled_from(sections[name]), yaml_scalars, max_size=4))),
    max_size=6)


@settings(deadline=None)
@given(document=st.one_of(configs, yaml_scalars))
def test_every_generated_config_loads_or_names_its_problems(document):
    text = yaml.safe_dump(document)
    try:
        parse_settings(yaml.safe_load(text) or {}, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems and all(":" in p for p in exc.problems)
        assert str(exc).startswith("fuzz.yaml: ")
