"""The import structure of the packages: no circles, and each layer imports only what it may.

Read from the source (every ``import`` and ``from ... import``, also those inside functions and
under ``TYPE_CHECKING``: a circle there is still a circle in the design):

- no import circle among the modules of ``models/``, ``stream/``, ``training/`` and ``offerstream/``;
- ``models/`` (the pure core) imports neither faust, aiokafka, aiohttp nor any other package here;
- ``stream/`` and ``training/`` are siblings: neither imports the other;
- only the front door (``offerstream/``) may import both.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "stream", "training", "offerstream")
FORBIDDEN = {
    "models": {"faust", "aiokafka", "aiohttp", "kafka", "confluent_kafka", "stream", "training", "offerstream"},
    "stream": {"training", "offerstream"},
    "training": {"stream", "offerstream", "faust", "aiokafka", "aiohttp"},
    "offerstream": set(),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute names; a ``from pkg import mod`` counts as pkg.mod)."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return out


GRAPH = {name: {m for m in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return circles


def test_the_packages_are_read() -> None:
    assert {"models.customer_state", "stream.worker", "training.replay"} <= set(MODULES)
    assert len(MODULES) > 40


def test_no_import_circle() -> None:
    assert _circles() == []


@pytest.mark.parametrize("package", PACKAGES)
def test_each_layer_imports_only_what_it_may(package: str) -> None:
    wrong = sorted(
        f"{name} imports {imported}"
        for name, path in MODULES.items() if name.split(".")[0] == package
        for imported in _imports(name, path) if imported.split(".")[0] in FORBIDDEN[package]
    )
    assert wrong == []


def test_a_circle_would_be_found() -> None:
    """The checker itself: a two-module circle added to the graph is reported."""
    saved = {k: set(v) for k, v in GRAPH.items()}
    try:
        GRAPH["models.errors"].add("models.events")
        GRAPH["models.events"].add("models.errors")
        assert ["models.errors", "models.events"] in _circles()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def test_stream_modules_and_functions_stay_small() -> None:
    """STYLE: modules of ``stream/`` under ~400 lines, functions under ~60 (issue 12)."""
    too_long = []
    for name, path in MODULES.items():
        if not name.startswith("stream"):
            continue
        source = path.read_text()
        if len(source.splitlines()) > 400:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert too_long == []
