"""One name, one meaning: the review app defines no top-level function or class under a name another
module of parcelscan also defines (issue 12: ``build_scene`` meant a simulated parcel in the simulator and
a hand-drawn scene in the review sample; ``utc_now`` was written twice, with two precisions)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# names that are a convention, meant to repeat: every CLI module's add_arguments/run, Alembic's revisions
CONVENTIONS = {"add_arguments", "run", "upgrade", "downgrade"}


def top_level_names() -> dict[str, set[str]]:
    where: dict[str, set[str]] = defaultdict(set)
    files = list(ROOT.glob("*.py"))
    for folder in ("datasets", "model", "training", "inference"):
        files += (ROOT / folder).rglob("*.py")
    for path in files:
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            named = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if named and not node.name.startswith("_"):
                where[node.name].add(str(path.relative_to(ROOT)))
    return where


def test_review_names_mean_one_thing():
    review = str(Path("inference") / "review")
    shared = {name: sorted(paths) for name, paths in top_level_names().items()
              if len(paths) > 1 and name not in CONVENTIONS and any(p.startswith(review) for p in paths)}
    assert not shared, f"defined twice: {shared}"


def test_utc_now_is_defined_once():
    assert sorted(top_level_names()["utc_now"]) == [str(Path("inference") / "verdict.py")]


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``parcelscan`` import inside a function or class of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [(node.lineno, m) for m in modules if m.startswith("parcelscan")]
    return found


def test_the_review_app_imports_parcelscan_at_module_top():
    """Imports at the top say what a module depends on; the only exception is the command line, which
    loads the review extra (FastAPI, SQLAlchemy, psycopg, argon2) only for the verb that needs it."""
    review = ROOT / "inference" / "review"
    others = {"db.py", "store.py"}  # the database layer's own rules (another owner)
    inside = {str(p.relative_to(ROOT)): function_level_imports(p) for p in sorted(review.glob("*.py"))
              if p.name not in others}
    assert len(inside) >= 10 and not any(inside.values()), {k: v for k, v in inside.items() if v}
    cli = function_level_imports(ROOT / "inference" / "review_cli.py")
    assert cli and all(m.startswith("parcelscan.inference.review") for _, m in cli), cli
