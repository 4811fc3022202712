"""Issue 22: one validator (`coordinator/bus/schemas.py`) and one config-key rule
(`coordinator/core/boards.py`) that events, settings and names all ask."""

from __future__ import annotations

import pytest

from coordinator.bus import schemas
from coordinator.bus.events import decode_entry
from coordinator.core.boards import parse_config_key
from coordinator.core.errors import ConfigError, EventError
from coordinator.core.settings import parse_settings
from tests.support.import_graph import graph

# Keys each place disagreed on before issue 22 (settings took `[a-z0-9]+_[2-9]p`), and near misses.
KEYS = ["hex8_2p", "hex8_4p", "square19_3p", "hexagonal_2p", "square8_4p", "hex8_1p", "hex8_5p", "hex8_9p",
        "hex9_2p", "foo_2p", "hex8_10p", "hex8-2p", "Hex8_2p", "hex8_2p\n", "hex８_2p", "hex8_٣p", "_2p"]


def _event(**fields: str):
    return decode_entry(b"1-0", {k.encode(): v.encode() for k, v in fields.items()})


def _accepted_by_events(key: str) -> bool:
    try:
        schemas.validate(_event(type="EVALUATION_COMPLETED", config_key=key, elo="1500"))
    except EventError:
        return False
    return True


def _accepted_by_settings(key: str) -> bool:
    try:
        parse_settings({"training": {"data_roots": ["/d"], "per_config": {key: {"warm_start": False}}}})
    except ConfigError:
        return False
    return True


def _accepted_by_boards(key: str) -> bool:
    try:
        parse_config_key(key)
    except EventError:
        return False
    return True


@pytest.mark.parametrize("key", KEYS)
def test_events_and_settings_accept_the_same_config_keys(key):
    assert _accepted_by_events(key) == _accepted_by_settings(key) == _accepted_by_boards(key)


def test_the_rule_is_the_boards_and_player_range():
    accepted = [key for key in KEYS if _accepted_by_boards(key)]
    assert accepted == ["hex8_2p", "hex8_4p", "square19_3p", "hexagonal_2p", "square8_4p"]


def test_a_settings_key_is_refused_with_the_events_reason():
    with pytest.raises(ConfigError) as caught:
        parse_settings({"training": {"data_roots": ["/d"], "per_config": {"hex9_2p": {}, "hex8_5p": {}}}}, "x.yaml")
    assert "training.per_config.hex9_2p: unknown board_type 'hex9'" in str(caught.value)
    assert "training.per_config.hex8_5p: num_players must be 2..4, got 5" in str(caught.value)


def test_parse_export_confines_the_path_to_the_data_roots(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "escape.npz").symlink_to("/etc/passwd")
    inside = _event(type="NPZ_EXPORT_COMPLETE", config="hex8_3p", output_path=str(root / "a.npz"),
                    samples_exported="7")
    export = schemas.parse_export(inside, [str(root)])
    assert (export.config_key, export.num_players, export.npz_path, export.samples) == (
        "hex8_3p", 3, str(root / "a.npz"), 7)
    escape = _event(type="NPZ_EXPORT_COMPLETE", config_key="hex8_2p", npz_path=str(root / "escape.npz"))
    with pytest.raises(EventError, match="resolves to '/etc/passwd', outside the data roots"):
        schemas.parse_export(escape, [str(root)])
    assert schemas.parse_export(escape).npz_path == str(root / "escape.npz")  # no roots: anywhere


def test_parse_export_applies_the_entry_limits_and_the_schema():
    too_big = _event(type="NPZ_EXPORT_COMPLETE", config_key="hex8_2p", npz_path="/d/x.npz", note="x" * 5000)
    with pytest.raises(EventError, match="field 'note' is larger than 4096 bytes"):
        schemas.parse_export(too_big)
    with pytest.raises(EventError, match="not an export"):
        schemas.parse_export(_event(type="EVALUATION_COMPLETED", config_key="hex8_2p", elo="1"))


@pytest.mark.parametrize("event_type", ["NPZ_EXPORT_COMPLETE", "EVALUATION_COMPLETED", "TRAINING_BLOCKED_BY_QUALITY"])
def test_a_config_named_twice_must_agree_before_any_handler_runs(event_type):
    event = _event(type=event_type, config_key="hex8_3p", board_type="hex8", num_players="2", elo="1",
                   npz_path="/d/x.npz")
    with pytest.raises(EventError, match=r"config_key 'hex8_3p' disagrees with board_type/num_players \(hex8_2p\)"):
        schemas.validate(event)


def test_validation_flows_one_way():
    """schemas reads events, inputs and boards; none of them (nor anything below the bus) reads schemas."""
    edges = graph()
    assert {"coordinator.bus.events", "coordinator.core.inputs", "coordinator.core.boards"} <= edges[
        "coordinator.bus.schemas"]
    readers = {module for module, targets in edges.items() if "coordinator.bus.schemas" in targets}
    assert not readers & {"coordinator.bus.events", "coordinator.core.inputs", "coordinator.core.boards"}
