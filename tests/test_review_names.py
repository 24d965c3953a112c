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
