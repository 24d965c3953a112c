"""The house plan's layers, read from the source with ``ast`` (imports inside functions included).

physics ← scans ← dataset tools ← simulator; all of ``datasets`` ← ``model`` ← {``training``,
``inference``}; ``inference`` never imports ``training``; no two modules import each other, directly or
around a circle. ``parcelscan.errors`` and the package root sit below everything; ``parcelscan.cli`` and
``__main__`` (the thin command line) sit above everything. See docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "parcelscan"

# Rank of each layer: a module may import modules of its own rank or lower, never higher.
LAYER_RANKS: dict[str, int] = {
    "base": 0,  # parcelscan, parcelscan.errors
    "physics": 1,
    "scans": 2,
    "dataset tools": 3,
    "simulator": 4,
    "model": 5,
    "training": 6,
    "inference": 6,
    "cli": 7,
}
# Same-rank pairs that must never import each other (rank alone would allow it).
FORBIDDEN_SAME_RANK = {("inference", "training"), ("training", "inference")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def layer_of(module: str) -> str:
    """The layer a ``parcelscan.*`` module belongs to."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in ("errors",):
        return "base"
    if parts[0] in ("cli", "__main__"):
        return "cli"
    if parts[0] == "datasets":
        if len(parts) > 1 and parts[1] in ("physics", "scans", "simulator"):
            return parts[1]
        return "dataset tools"
    return parts[0]


def package_modules() -> dict[str, Path]:
    modules = {}
    for folder in ("", "datasets", "model", "training", "inference"):
        base = ROOT / folder
        pattern = "*.py" if folder == "" else "**/*.py"
        for path in sorted(base.glob(pattern)):
            modules[module_name(path)] = path
    return modules


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every ``parcelscan`` module ``path`` imports, at any depth of the file (functions included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from parcelscan.datasets import scanfile" imports a module; "from x.y import name" imports x.y.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.startswith(PACKAGE):
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in known:
                    found.add(name)
    # "from parcelscan.x import y" also lists the package parcelscan.x; keep only the deepest module named.
    return {m for m in found if not any(other.startswith(m + ".") for other in found)}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imported_modules(path, known) - {name} for name, path in modules.items()}


def test_the_layout_has_a_folder_per_concern():
    for folder in ("datasets/physics", "datasets/scans", "datasets/simulator", "model", "training", "inference"):
        assert (ROOT / folder / "__init__.py").is_file(), folder


def test_every_import_points_down_the_layers():
    wrong = []
    for importer, imported in sorted(import_graph().items()):
        for target in sorted(imported):
            a, b = layer_of(importer), layer_of(target)
            if LAYER_RANKS[b] > LAYER_RANKS[a] or (a, b) in FORBIDDEN_SAME_RANK:
                wrong.append(f"{importer} ({a}) imports {target} ({b})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b"}, "b": {"a"}}, True),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
])
def test_cycle_finder_finds_circles(graph, expected):
    assert (find_cycle(graph) is not None) == expected


def test_layer_checker_reads_imports_inside_functions(tmp_path):
    """The checker must see a function-level import, the kind that hides a wrong arrow."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from parcelscan.training import metrics\n    return metrics\n")
    assert imported_modules(source, {"parcelscan.training", "parcelscan.training.metrics"}) == {
        "parcelscan.training.metrics"}
