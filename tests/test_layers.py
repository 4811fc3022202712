"""The code's layers import only downwards (README "Where things are").

Every import in `coordinator/` and `workers/` is read with `ast` (tests/support/import_graph.py), those
inside functions and under `TYPE_CHECKING` included: any of them is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast

from tests.support.import_graph import ROOT, graph, module_files

# Package (or module) -> layer; a module belongs to the longest prefix listed. An import may point
# to its own layer or below, never up.
LAYERS: dict[str, int] = {
    "coordinator.core": 0,       # keys, errors, settings, job states, names, boards, codec, clock, Lua loader
    "coordinator.trainer": 0,    # the trainer contract: command template, output patterns, checkpoints, NPZ
    "coordinator.bus": 1,        # the event stream, the validator, the intake
    "coordinator.stores": 2,     # job records, config hashes, leases, breakers (each with its scripts)
    "coordinator.scheduling": 3, # priority formula, cost, preemption rule and preempter
    "coordinator.service": 4,    # orchestrator, handlers, recovery, periodic work, metrics
    "coordinator.ops": 5,        # CLI, views, dashboard, demo, local redis, worker pool
    "workers": 5,                # what `rq worker training` runs on a GPU node
    "coordinator": 6,            # the package's public API (lazy re-exports)
}


def layer_of(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    assert all(any(m == p or m.startswith(p + ".") for p in LAYERS) for m in module_files())


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_imports_point_only_downwards() -> None:
    upward = [f"{a} ({layer_of(a)}) -> {b} ({layer_of(b)})"
              for a, targets in graph().items() for b in targets if layer_of(b) > layer_of(a)]
    assert upward == []


def test_the_coordinator_never_imports_the_workers() -> None:
    reverse = [f"{a} -> {b}" for a, targets in graph().items() if a.startswith("coordinator")
               for b in targets if b.startswith("workers")]
    assert reverse == []


def test_the_checks_see_what_they_claim() -> None:
    """The graph reader finds a function-level import and a TYPE_CHECKING one (both are in the code
    base: `coordinator/__init__.py` imports the orchestrator lazily), so the tests above are not
    vacuous."""
    edges = graph()
    assert "coordinator.service.orchestrator" in edges["coordinator"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in tests/support/ (helpers) and tests/conftest.py (fixtures, which
    pytest provides without an import)."""
    found = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)} imports {n}" for n in names
                      if n.startswith(("tests.test_", "tests.conftest", "tests.faults.test_", "tests.faults.conftest"))]
    assert found == []
