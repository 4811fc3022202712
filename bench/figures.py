"""Figures a benchmark hands to `bench/run_all` for the scaling model: one line
`figures: {json}` on stdout, which run_all collects and leaves out of the tables it prints."""

from __future__ import annotations

import json

PREFIX = "figures: "


def print_figures(**figures: float) -> None:
    print(PREFIX + json.dumps(figures))


def split_figures(output: str) -> tuple[str, dict[str, float]]:
    """A benchmark's output without its figures lines, and the figures."""
    kept, figures = [], {}
    for line in output.splitlines():
        if line.startswith(PREFIX):
            figures.update(json.loads(line[len(PREFIX):]))
        else:
            kept.append(line)
    return "\n".join(kept), figures
