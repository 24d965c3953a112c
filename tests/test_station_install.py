"""The light station install: ``parcelscan inspect`` (and ``export --show``) work with PyTorch absent.

A station installs ``pip install parcelscan`` — numpy, OpenCV, Pillow, onnxruntime and the readers —
without the ``[train]`` extra. The test runs the real CLI in a fresh interpreter whose import system
refuses torch, torchvision, albumentations, onnx, onnxscript and matplotlib (everything only the
``[train]`` extra brings), exactly as if they were not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import inspect_helpers as helpers

TRAIN_ONLY = ("torch", "torchvision", "albumentations", "onnx", "onnxscript", "matplotlib")

_BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {TRAIN_ONLY!r}

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: station install)", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def _station_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCKER + code, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return helpers.build_all(tmp_path_factory.mktemp("station"))


def test_the_blocker_really_blocks():
    result = _station_python("import torch")
    assert result.returncode != 0 and "blocked: station install" in result.stderr


def test_inspect_runs_without_torch(built, tmp_path):
    code = (
        "import sys\n"
        "from parcelscan.cli import main\n"
        "status = main(sys.argv[1:])\n"
        f"leaked = sorted(m for m in sys.modules if m.split('.')[0] in {TRAIN_ONLY!r})\n"
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
    show = _station_python("import sys\nfrom parcelscan.cli import main\nsys.exit(main(sys.argv[1:]))",
                           "export", "--show", str(built["model"]))
    assert show.returncode == 0 and "name:             tiny-test" in show.stdout, show.stderr
