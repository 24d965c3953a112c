"""The light station install: ``parcelscan inspect`` (and ``export --show``) work with PyTorch absent.

A station installs ``pip install parcelscan`` — numpy, OpenCV, Pillow, onnxruntime and the readers —
without the ``[train]`` or ``[review]`` extras. The test runs the real CLI in a fresh interpreter whose
import system refuses everything only those extras bring (torch, torchvision, albumentations, onnx,
onnxscript; fastapi, uvicorn, jinja2, python-multipart, argon2, the PostgreSQL drivers — read from
``cli.EXTRA_OF_MODULE``, less what the station install has anyway: xraydb brings sqlalchemy), exactly as
if they were not installed, and matplotlib, which spekpy installs but the station path must not load.
The verbs that need an extra say which one, in one line.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parcelscan.cli import EXTRA_OF_MODULE

sys.path.insert(0, str(Path(__file__).parent))
import inspect_helpers as helpers


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _canonical(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])


def _base_closure() -> set[str]:
    """Every distribution the station install brings: parcelscan's dependencies without extras, and theirs
    (xraydb brings sqlalchemy, for one: a package an extra also pins is not missing on a station)."""
    todo = [r for r in importlib.metadata.requires("parcelscan") or [] if "extra ==" not in r.replace("'", '"')]
    seen: set[str] = set()
    todo = [_requirement_name(r) for r in todo]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo.extend(_requirement_name(r) for r in requirements if "extra ==" not in r.replace("'", '"'))
    return seen


_PROVIDERS = {module: {_canonical(d) for d in dists}
              for module, dists in importlib.metadata.packages_distributions().items()}
_BASE = _base_closure()


def _extra_only(extra: str) -> tuple[str, ...]:
    """The import names only the extra brings (cli.EXTRA_OF_MODULE, less what the station install has)."""
    return tuple(module for module, wanted in EXTRA_OF_MODULE.items()
                 if wanted == extra and not (_PROVIDERS.get(module, set()) & _BASE))


TRAIN_ONLY = _extra_only("train")
REVIEW_ONLY = _extra_only("review")
# installed on a station all the same (spekpy needs it) but heavy: the station path must not load it
STATION_NEVER_LOADS = ("matplotlib",)
BLOCKED = TRAIN_ONLY + REVIEW_ONLY + STATION_NEVER_LOADS
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scans"

_BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: station install)", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


_CLI = "import sys\nfrom parcelscan.cli import main\nsys.exit(main(sys.argv[1:]))"


def _station_python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCKER + code, *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return helpers.build_all(tmp_path_factory.mktemp("station"))


def test_the_blocker_really_blocks():
    for name in ("torch", "fastapi", "uvicorn"):
        result = _station_python(f"import {name}")
        assert result.returncode != 0 and "blocked: station install" in result.stderr


def test_inspect_runs_without_torch(built, tmp_path):
    code = (
        "import sys\n"
        "from parcelscan.cli import main\n"
        "status = main(sys.argv[1:])\n"
        f"leaked = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r})\n"
        "print('LEAKED', leaked, file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    result = _station_python(code, "inspect", str(built["scans"]), "--model", str(built["model"]),
                             "--heatmaps", str(tmp_path / "heat"), "--threshold", "0.2")
    assert "Traceback" not in result.stderr, result.stderr
    assert "LEAKED []" in result.stderr
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(verdicts) == sum(len(v) for v in built["ids"].values())
    assert all(v["score"] is not None for v in verdicts)
    assert result.returncode == 1  # threshold 0.2: some suspects (and the opaque scan)
    assert any((tmp_path / "heat").iterdir())  # heatmaps are part of the station path too
    show = _station_python(_CLI, "export", "--show", str(built["model"]))
    assert show.returncode == 0 and "name:             tiny-test" in show.stdout, show.stderr


def _one_line_advice(result: subprocess.CompletedProcess, verb: str, extra: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"parcelscan {verb}: error: ")
    assert f"pip install 'parcelscan[{extra}]'" in lines[0]


def test_train_without_the_train_extra_says_which_extra(tmp_path):
    """Issue 11 item 7: `parcelscan train` in the station install ended in a ModuleNotFoundError traceback."""
    result = _station_python(_CLI, "train", "--data", str(EXAMPLES), "--epochs", "1",
                             "--project", str(tmp_path / "runs"), "--no-progress", cwd=tmp_path)
    _one_line_advice(result, "train", "train")
    assert "'torch'" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-made before the refusal


def test_review_serve_without_the_review_extra_says_which_extra(tmp_path):
    """Issue 11 item 7: `parcelscan review serve` in the station install ended in a traceback."""
    result = _station_python(_CLI, "review", "serve", "--db", str(tmp_path / "review.sqlite"), cwd=tmp_path)
    _one_line_advice(result, "review", "review")


def test_a_missing_module_of_our_own_keeps_its_traceback():
    """Only optional dependencies get the install advice: a bug (a module of ours missing) stays visible."""
    code = ("import sys, parcelscan.inference.inspect_cli as m\n"
            "def run(args):\n    import parcelscan.no_such_module\n"
            "m.run = run\n" + _CLI)
    result = _station_python(code, "inspect", str(EXAMPLES))
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "ModuleNotFoundError" in result.stderr and "pip install" not in result.stderr


def _extra_requirements(extra: str) -> list[str]:
    names = []
    for requirement in importlib.metadata.requires("parcelscan") or []:
        if f'extra == "{extra}"' in requirement.replace("'", '"'):
            names.append(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower())
    return names


@pytest.mark.parametrize("extra", ["train", "review"])
def test_every_dependency_of_an_extra_is_named_by_the_advice(extra):
    """A dependency added to an extra without a line in ``EXTRA_OF_MODULE`` would bring the traceback back."""
    provided: dict[str, set[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            provided.setdefault(distribution.lower(), set()).add(module)
    requirements = _extra_requirements(extra)
    assert requirements, f"no [{extra}] extra in the installed metadata"
    for distribution in requirements:
        if _canonical(distribution) in _BASE:
            continue  # the station install has it already (the extra only pins it)
        modules = provided.get(distribution, set())
        assert modules, f"{distribution} is not installed in the test environment"
        assert any(EXTRA_OF_MODULE.get(m) == extra for m in modules), (distribution, sorted(modules))
