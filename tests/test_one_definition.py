"""Issue 12's traps in the model and training code, kept closed: each concept is defined in one place.

A newcomer who changes the input kinds, the devices, the class names, how a model file is opened, how tiles
are batched through a model or how the source commit is read must find one definition, not the first of
two or three. These tests read the package's source with ``ast`` (benchmarks and tests excluded) and fail
on a second definition; the behaviour of each single definition is tested where it lives.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from parcelscan.errors import ParcelscanError
from parcelscan.model.session import run_in_batches

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"tests", "benchmarks", "examples", ".venv", "build"}


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in SKIP or any(part.startswith(".") for part in relative.parts):
            continue
        out.append((str(relative), ast.parse(path.read_text(encoding="utf-8"))))
    return out


def _assigned(name: str) -> list[str]:
    """Modules that bind ``name`` at module level by assignment (an import is not a definition)."""
    found = []
    for module, tree in _modules():
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found.append(module)
    return found


@pytest.mark.parametrize(("name", "home"), [("INPUT_KINDS", "datasets/preprocess.py"),
                                            ("DEVICES", "model/session.py"),
                                            ("LABELS", "datasets/manifest.py")])
def test_shared_constants_are_defined_once(name, home):
    assert _assigned(name) == [home]
    assert _assigned("CLASSES") == []  # the class names are the manifest's LABELS, imported where needed


def _calls(predicate) -> list[str]:
    found = []
    for module, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and predicate(node):
                found.append(module)
    return found


def test_onnxruntime_sessions_are_created_in_one_place():
    def creates_session(call: ast.Call) -> bool:
        return isinstance(call.func, ast.Attribute) and call.func.attr == "InferenceSession"

    assert sorted(set(_calls(creates_session))) == ["model/session.py"]


def test_the_source_commit_is_read_in_one_place():
    def runs_git(call: ast.Call) -> bool:
        return any(isinstance(arg, ast.List) and arg.elts and isinstance(arg.elts[0], ast.Constant)
                   and arg.elts[0].value == "git" for arg in call.args)

    assert sorted(set(_calls(runs_git))) == ["model/metadata.py"]


def test_tiles_are_batched_through_a_model_by_one_function():
    """No module but ``model/session.py`` walks a tile array in model-sized slices itself."""
    def slices_tiles(node: ast.AST) -> bool:
        return (isinstance(node, ast.For) and isinstance(node.iter, ast.Call)
                and isinstance(node.iter.func, ast.Name) and node.iter.func.id == "range"
                and len(node.iter.args) == 3 and "tiles" in ast.unparse(node.iter.args[1]))

    found = sorted({module for module, tree in _modules() for node in ast.walk(tree) if slices_tiles(node)})
    assert found == ["model/session.py"]


def test_run_in_batches_keeps_rows_in_order_and_refuses_a_lost_row():
    tiles = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    calls = []

    def model(chunk):
        calls.append(len(chunk))
        return chunk.sum(axis=1), chunk * 2

    scores, doubled = run_in_batches(model, tiles, 3)
    assert calls == [3, 3, 1]
    assert np.array_equal(scores, tiles.sum(axis=1)) and np.array_equal(doubled, tiles * 2)
    with pytest.raises(ParcelscanError, match="returned 2 rows"):
        run_in_batches(lambda chunk: (chunk[:2],), tiles, 3)
