"""Imports of parcelscan's own modules sit at module top, read with ``ast`` from the source.

A function-level import hides a dependency from a reader and costs a dictionary look-up on every call (some
sit on the per-scan path). The one good reason for one: the imported module loads a heavy optional
dependency at its top (torch, onnxruntime, fastapi, spekpy, xraydb, matplotlib, pydicom, the review
database libraries …) that a light path — the station's ``inspect``, ``--help`` — must not load. The CLI's
per-verb dispatch (``cli.py``) imports by name through importlib and is not an import statement.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("", "datasets", "model", "training", "inference")
HEAVY = {"torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "fastapi", "uvicorn", "starlette", "spekpy",
         "xraydb", "matplotlib", "pydicom", "sqlalchemy", "alembic", "psycopg", "psycopg_pool", "albumentations",
         "cryptography", "jinja2", "argon2", "scipy", "playwright"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["parcelscan", *parts])


def package_modules() -> dict[str, Path]:
    modules = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).glob("*.py" if folder == "" else "**/*.py")):
            modules[module_name(path)] = path
    return modules


MODULES = package_modules()


def resolve(name: str) -> str | None:
    """The package module an imported dotted name lives in (``a.b.func`` → ``a.b``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES else None


def top_level_imports(path: Path) -> set[str]:
    """Names imported when the module is imported: its top-level statements (inside if/try too)."""
    names: set[str] = set()
    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def loads_heavy(module: str, _memo: dict[str, bool] | None = None) -> bool:
    """True if importing ``module`` imports a heavy optional dependency, directly or through the package."""
    memo = {} if _memo is None else _memo
    if module in memo:
        return memo[module]
    memo[module] = False  # in progress: an import circle adds nothing heavy by itself
    for name in top_level_imports(MODULES[module]):
        target = resolve(name) if name.startswith("parcelscan") else None
        if name.split(".")[0] in HEAVY or (target and target != module and loads_heavy(target, memo)):
            memo[module] = True
            break
    return memo[module]


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                found += [(node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_own_modules_are_imported_at_module_top_unless_they_load_a_heavy_dependency():
    unjustified = []
    memo: dict[str, bool] = {}
    for path in MODULES.values():
        for line, name in function_level_imports(path):
            target = resolve(name) if name.startswith("parcelscan") else None
            if target and not loads_heavy(target, memo):
                unjustified.append(f"{path.relative_to(ROOT)}:{line} imports {name} inside a function")
    assert not unjustified, "move these to module top:\n" + "\n".join(unjustified)


def test_the_check_sees_a_light_import_inside_a_function(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from parcelscan.errors import ParcelscanError\n    return ParcelscanError\n")
    assert function_level_imports(source) == [(2, "parcelscan.errors.ParcelscanError")]
    assert not loads_heavy("parcelscan.errors")
    assert loads_heavy("parcelscan.model.network")  # torch at its top
