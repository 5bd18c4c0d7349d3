"""The package's layers hold: no module imports against them, and no import cycle.

Every ``import`` in the package counts, at module level or inside a function (a lazy import is
still a dependency), except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "infoflow"

#: each layer and the layers it may import (itself included); the base is below everything
BASE = {"infoflow.errors", "infoflow.paths", "infoflow.io"}
ALLOWED = {
    "base": {"base"},
    "estimators": {"base", "estimators"},
    "training": {"base", "estimators", "training"},
    "spec": {"base", "estimators", "training", "spec"},
    "sweep": {"base", "estimators", "training", "spec", "sweep", "plugin"},
    "report": {"base", "estimators", "report"},
    # infoflow/__init__.py: what `import infoflow` gives; training only lazily (infoflow.Dataset,
    # by a module __getattr__: `import infoflow` stays free of torch, tested below)
    "api": {"base", "report", "training"},
    "entry": {"base", "estimators", "training", "spec", "sweep", "report", "plugin"},
    "plugin": {"sweep"},
}


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    if module == "infoflow":
        return "api"
    if module == "infoflow.__main__":
        return "entry"
    if module == "infoflow.spec":
        return "spec"
    if module.startswith("hydra_plugins.infoflow_launcher"):
        return "plugin"
    parts = module.split(".")
    assert parts[0] == "infoflow" and len(parts) > 1, module
    return parts[1]


def modules() -> dict[str, Path]:
    found = {}
    for root in (PACKAGE, ROOT / "hydra_plugins" / "infoflow_launcher"):
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


GRAPH = {m: imports(p, set(modules())) - {m} for m, p in modules().items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_follow_the_layers(module):
    here = layer(module)
    against = {
        other
        for other in GRAPH[module]
        if layer(other) not in ALLOWED[here] and other != "infoflow"
    }
    assert not against, f"{module} ({here}) imports {sorted(against)} against the layers"


def test_no_import_cycle():
    """Depth-first search over the import graph; a cycle is named in full."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(GRAPH.get(m, ())):
            if n == "infoflow":  # the package itself: its __init__ is its own node
                continue
            if state.get(n) == 1:
                cycle = [*path[path.index(n) :], n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_violation_and_a_cycle(tmp_path):
    """The two tests above can fail: a lazy import of the sweep machinery from training is
    found, and so is a cycle."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from infoflow.sweep import runner\n")
    assert imports(bad, set(modules())) == {"infoflow.sweep", "infoflow.sweep.runner"}
    assert "sweep" not in ALLOWED[layer("infoflow.training.loop")]
    hidden = tmp_path / "hidden.py"
    hidden.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from infoflow.sweep import job\n"
    )
    assert imports(hidden, set(modules())) == set()


def test_import_infoflow_does_not_import_torch():
    """The table readers (load, compression, score) run where torch is not installed; the
    Dataset type comes lazily."""
    code = (
        "import sys, infoflow; assert 'torch' not in sys.modules; "
        "infoflow.Dataset; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
