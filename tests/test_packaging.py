"""The wheel: it builds without setuptools warnings and carries every module and data file a station needs.

Issue 11 item 8: ``pip install .`` printed ~300 lines of warnings (the deprecated ``project.license``
table; "Package would be ignored" for the scanner profiles, the review app's templates and static files,
the default models and the training recipes). A warning a user learns to scroll past hides the one that
matters, and "would be ignored" is a promise that a future setuptools drops the files. The test builds
the wheel from a copy of the source tree, exactly as ``pip install .`` does (``pip wheel --no-deps``,
with the environment's setuptools, which must satisfy ``[build-system] requires``), and reads what the
wheel holds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[1]
# what is not the package: the environment, caches, generated data, and the folders the wheel leaves out
_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "runs", "data", "out", "*.egg-info",
                                     "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", "*.sqlite*")
_NOT_PACKAGED = {"tests", "benchmarks", "examples", "docs"}
_WARNING = re.compile(r"warning|deprecat|would be ignored|absent from the `packages`", re.IGNORECASE)
# pip -v says these about its own settings, not about the project
_HARMLESS = ("byte-compiling is disabled",)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                             "--no-index", "-v", "-w", str(work / "out")],
                            cwd=source, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    (built,) = (work / "out").glob("parcelscan-*.whl")
    return built, log


def test_the_environment_setuptools_is_the_one_the_build_asks_for():
    """Building without isolation is only representative if this setuptools satisfies the requirement."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    (spec,) = [r for r in requires if r.startswith("setuptools")]
    minimum = re.search(r">=\s*([\d.]+)", spec)
    assert minimum, f"{spec!r}: give a minimum version (the SPDX licence string needs setuptools >= 77)"
    assert _version(minimum.group(1)) >= (77,)
    assert _version(setuptools.__version__) >= _version(minimum.group(1))


def test_the_build_prints_no_warnings(wheel):
    _, log = wheel
    warnings = [line.strip() for line in log.splitlines()
                if _WARNING.search(line) and not any(h in line for h in _HARMLESS)]
    assert warnings == [], "\n".join(warnings[:20])


def test_the_licence_is_an_spdx_expression(wheel):
    built, _ = wheel
    with zipfile.ZipFile(built) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    assert "License-Expression: Apache-2.0" in metadata


def _source_files() -> set[str]:
    """Every module of the package and every data file the code reads at run time, as wheel paths."""
    files = set()
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in _NOT_PACKAGED or relative.parts[0].startswith(".") or "__pycache__" in relative.parts:
            continue
        if relative.parts[0] in {"build", "dist", "runs", "data", "out"} or relative.parts[0].endswith(".egg-info"):
            continue
        files.add(f"parcelscan/{relative.as_posix()}")
    for pattern in ("datasets/physics/profiles/*", "datasets/physics/tables/*.npz", "training/recipes/*.yaml",
                    "model/default/*",
                    "inference/policies/*.toml", "inference/review/templates/*", "inference/review/static/*"):
        found = [p for p in ROOT.glob(pattern) if p.is_file()]
        assert found, f"no {pattern} in the source tree"
        files.update(f"parcelscan/{p.relative_to(ROOT).as_posix()}" for p in found)
    return files


def test_the_wheel_holds_every_module_and_data_file(wheel):
    built, _ = wheel
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
    missing = sorted(_source_files() - names)
    assert missing == [], missing
    # and nothing that is not the package (tests, benchmarks, examples, docs stay in the repository)
    leaked = sorted(n for n in names if n.split("/")[0] == "parcelscan" and n.split("/")[1] in _NOT_PACKAGED)
    assert leaked == [], leaked[:10]
