"""Settings rendered as YAML: the shipped `config/distributed_hosts.yaml` is `default_yaml()`.

Defaults and their meanings live once, in the dataclasses of `coordinator.core.settings` (each
field's `DOC` metadata). This module writes them out: what a deployment sets (`SHOWN`) as plain
settings, every other setting at its default as a commented-out `# key: value` line with its
meaning beside it. `tests/test_settings_yaml.py` fails when the shipped file differs from
`default_yaml()`; regenerate it with

    python -m coordinator.core.settings_yaml > config/distributed_hosts.yaml
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

import yaml

from coordinator.core.settings import DOC, HostGpus, Settings

# What a deployment sets (its Redis, where models go, where data may come from, its GPUs): written
# uncommented even at their defaults.
SHOWN = ("redis.url", "training.models_root", "training.data_roots", "hosts")
# The shipped file's example values for the settings whose default is empty (none: refused, or no host).
EXAMPLE_DATA_ROOTS = ("/data/training",)
EXAMPLE_HOSTS = {"gpu-node-1": 8, "gpu-node-2": 8}
HEADER = """\
# RingRift training coordinator settings. Copy and edit; `ringrift-train --config PATH` or
# RINGRIFT_CONFIG=PATH selects a file, REDIS_URL overrides redis.url. Unknown keys are errors.
#
# Set the uncommented settings for your cluster. Each "# key: value" line is a setting at its
# built-in default: remove its "# " (and its section's) to change it.
# Generated from coordinator/core/settings.py: python -m coordinator.core.settings_yaml
"""
WIDTH = 110  # of a line, comments included
DOC_COLUMN = 32  # where a comment beside a setting starts (further right after a long setting)
INDENT = "  "


@dataclass(frozen=True)
class _Node:
    """One key of the YAML: a leaf (`value` is its flow-style YAML) or a section (`children`)."""

    name: str
    doc: str
    commented: bool
    value: str | None = None
    children: tuple[_Node, ...] = ()


def settings_dict(settings: Settings) -> dict[str, Any]:
    """Every setting (nested, per_config and hosts included) as plain YAML/JSON values:
    `parse_settings(settings_dict(s)) == s`."""
    return {f.name: _plain(getattr(settings, f.name)) for f in fields(settings) if f.name != "source"}


def _plain(value: Any) -> Any:
    if isinstance(value, HostGpus):  # a hosts entry: its count, or the mapping it was written as
        declared = value.declared()
        return int(value) if declared == {"gpus": int(value)} else declared
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def example_settings() -> Settings:
    """The built-in defaults with the example data roots and hosts: what the shipped file holds."""
    base = Settings()
    return replace(base, training=replace(base.training, data_roots=EXAMPLE_DATA_ROOTS), hosts=EXAMPLE_HOSTS)


def default_yaml() -> str:
    """The text of the shipped `config/distributed_hosts.yaml`."""
    return render_yaml(example_settings())


def render_yaml(settings: Settings, shown: tuple[str, ...] = SHOWN) -> str:
    """`settings` as a YAML file that loads back to them: a setting at its default is commented
    out unless `shown`; top-level sections are separated by blank lines."""
    blocks = ["\n".join(_lines(node, 0, None)) for node in _nodes(settings, Settings(), "", shown)]
    return HEADER + "\n" + "\n\n".join(blocks) + "\n"


def _nodes(obj: Any, default: Any, path: str, shown: tuple[str, ...]) -> list[_Node]:
    """The nodes of a settings dataclass, those holding a `shown` setting first."""
    ordered = sorted((f for f in fields(obj) if f.name != "source"),
                     key=lambda f: not any(s == path + f.name or s.startswith(f"{path}{f.name}.") for s in shown))
    return [_node(f.name, f.metadata.get(DOC, ""), getattr(obj, f.name), getattr(default, f.name),
                  path + f.name, shown) for f in ordered]


def _node(name: str, doc: str, value: Any, default: Any, path: str, shown: tuple[str, ...]) -> _Node:
    if is_dataclass(value):
        children = tuple(_nodes(value, default, f"{path}.", shown))
        return _Node(name, doc, all(c.commented for c in children), children=children)
    if isinstance(value, Mapping) and value:  # hosts, per_config: never a default (those are empty)
        return _Node(name, doc, False, children=tuple(_item(str(k), v) for k, v in value.items()))
    return _Node(name, doc, value == default and path not in shown, value=_flow(_plain(value)))


def _item(name: str, value: Any) -> _Node:
    """One entry of a mapping setting; a per_config override lists only what it sets."""
    if is_dataclass(value):
        set_ = [f.name for f in fields(value) if getattr(value, f.name) is not None]
        return _Node(name, "", False, children=tuple(_item(n, getattr(value, n)) for n in set_))
    return _Node(name, "", False, value=_flow(_plain(value)))


def _flow(value: Any) -> str:
    """One YAML value on one line ([a, b], {k: v}, 'quoted' where YAML needs it)."""
    text: str = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False)
    return text.removesuffix("\n...\n").strip()  # a plain scalar's dump ends with a document-end marker


def _lines(node: _Node, depth: int, marker: int | None) -> Iterator[str]:
    """The node's lines at `depth`. A commented node's `# ` stands at the column of its outermost
    commented section (`marker`), so removing it from a whole block leaves valid YAML."""
    if node.commented:
        marker = depth if marker is None else marker
        prefix = INDENT * marker + "# " + INDENT * (depth - marker)
    else:
        prefix = INDENT * depth
    text = f"{prefix}{node.name}:" + (f" {node.value}" if node.value is not None else "")
    # A doc above a line is a comment of its block: inside a commented-out block it keeps the block's `# `.
    yield from _with_doc(text, prefix if node.commented and marker < depth else INDENT * depth, node.doc)
    for child in node.children:
        yield from _lines(child, depth + 1, marker if node.commented else None)


def _with_doc(text: str, prefix: str, doc: str) -> Iterator[str]:
    """`text` with `doc` beside it (on up to two lines), or above it (after `prefix`) when longer."""
    if not doc:
        yield text
        return
    column = max(DOC_COLUMN, len(text) + 2)
    beside = _wrap(doc, WIDTH - column - 2)
    if len(beside) <= 2:
        yield text.ljust(column) + "# " + beside[0]
        yield from (" " * column + "# " + line for line in beside[1:])
        return
    yield from (f"{prefix}# {line}" for line in _wrap(doc, WIDTH - len(prefix) - 2))
    yield text


def _wrap(doc: str, width: int) -> list[str]:
    return textwrap.wrap(doc, width, break_long_words=False, break_on_hyphens=False)


if __name__ == "__main__":
    print(default_yaml(), end="")
