"""The import graph of the package: no cycle, and no module importing a higher layer.

Layers, lowest first: the base (package root, atomic writes, paths, the user-error class,
statistics, the memory
allocator's name); the file formats (question records, the answer vocabulary, the data
settings, annotation loading, the HDF5 feature store: what feature extraction reads and
writes); extraction; data loading (tables, batch, dataset, datamodule); models; training
(config, losses, metrics, LightningModule, the loop); reports and the command line.
"""

from __future__ import annotations

import ast
import functools
import importlib
import sys
from pathlib import Path

import pytest

import avmaster

PACKAGE = Path(avmaster.__file__).parent
LAYERS: list[tuple[str, tuple[str, ...]]] = [  # (name, module prefixes), lowest first
    ("base", ("avmaster", "avmaster.atomic", "avmaster.paths", "avmaster.errors",
              "avmaster.stats", "avmaster.malloc")),
    ("formats", ("avmaster.data.records", "avmaster.data.vocab", "avmaster.data.config",
                 "avmaster.data.annotations", "avmaster.data.store")),
    ("extract", ("avmaster.extract",)),
    ("data", ("avmaster.data",)),
    ("models", ("avmaster.models",)),
    ("training", ("avmaster.config", "avmaster.losses", "avmaster.metrics",
                  "avmaster.lightning_module", "avmaster.training", "avmaster.variants",
                  "avmaster.seeds", "avmaster.step_graph", "avmaster.random_states")),
    ("reports/CLI", ("avmaster.reports", "avmaster.scoring", "avmaster.compare",
                     "avmaster.inference", "avmaster.predict", "avmaster.explain",
                     "avmaster.attribution", "avmaster.probe",
                     "avmaster.cli", "avmaster.demo")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every avmaster module ``path`` imports, at the top or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import mod`
    return {m for m in out if m == "avmaster" or m.startswith("avmaster.")}


def layer(module: str) -> int:
    """Index of the layer whose longest prefix matches ``module``."""
    best, best_len = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best >= 0, f"{module} belongs to no layer; add it to LAYERS"
    return best


@functools.cache
def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in imports(p) if i in modules and i != m} for m, p in modules.items()}


def test_every_module_has_a_layer():
    modules = graph()
    assert len(modules) > 40 and "avmaster.training" in modules
    assert all(0 <= layer(m) < len(LAYERS) for m in modules)


def test_no_import_goes_up_a_layer():
    up = [f"{m} ({LAYERS[layer(m)][0]}) imports {i} ({LAYERS[layer(i)][0]})"
          for m, deps in graph().items() for i in deps if layer(i) > layer(m)]
    assert not up, "\n".join(up)


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for i in sorted(g[m]):
            if state.get(i) == 1:
                cycles.append([*path[path.index(i):], i])
            elif i not in state:
                visit(i, [*path, i])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_checker_sees_a_back_edge(tmp_path):
    """The graph test would catch an upward import (guards the checker itself)."""
    assert layer("avmaster.data.dataset") < layer("avmaster.metrics")
    assert layer("avmaster.data.store") < layer("avmaster.extract.parts")
    assert layer("avmaster.training") < layer("avmaster.inference")
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from avmaster.metrics import GroupedAccuracy\n")
    assert imports(bad) == {"avmaster.metrics", "avmaster.metrics.GroupedAccuracy"}


def test_renamed_modules_still_import(monkeypatch):
    for old, new in avmaster.MOVED_MODULES.items():
        monkeypatch.delitem(sys.modules, old, raising=False)
        with pytest.warns(DeprecationWarning, match=new):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
