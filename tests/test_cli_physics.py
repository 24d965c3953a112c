"""Every verb of the physics issue: real output, and bad input as one clear line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def parcelscan(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "parcelscan", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_help_on_every_verb():
    from parcelscan.cli import _available_verbs

    for verb in _available_verbs():
        result = parcelscan(verb, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: parcelscan " + verb in result.stdout


def test_physics_json_output():
    result = parcelscan("physics", "--material", "Nd2O3", "--areal-density", "0.3", "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.splitlines()[0])
    assert row["material"] == "Nd2O3" and row["A_high"] == pytest.approx(1.0, abs=0.05)
    assert row["R"] == pytest.approx(row["A_low"] / row["A_high"], rel=1e-4)


@pytest.mark.parametrize("args, message", [
    (["physics", "--material", "Kryptonite", "--areal-density", "1"], "unknown material"),
    (["physics", "--material", "water", "--thickness-cm", "-2"], ">= 0"),
    (["physics", "--material", "water", "--areal-density", "1", "--profile", "{bad}"], "profile"),
    (["render", "does-not-exist_low.png", "--out", "x.png"], "does-not-exist"),
    (["simulate", "--phantom", "--out", "out", "--profile", "{bad}"], "profile"),
])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, args, message):
    bad = tmp_path / "bad.toml"
    bad.write_text("tube_kv = = 3\n")
    args = [str(bad) if a == "{bad}" else a for a in args]
    result = parcelscan(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert message in lines[0]


def test_simulate_phantom_unwritable_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = parcelscan("simulate", "--phantom", "--out", str(blocker / "sub"))
    assert result.returncode == 2 and "cannot create output directory" in result.stderr


def test_render_phantom(tmp_path):
    assert parcelscan("simulate", "--phantom", "--out", str(tmp_path)).returncode == 0
    result = parcelscan("render", str(tmp_path / "phantom_low.png"), "--out", str(tmp_path / "r.png"))
    assert result.returncode == 0, result.stderr
    import cv2

    image = cv2.imread(str(tmp_path / "r.png"))
    assert image.shape == (360, 640, 3)
    assert (image[5, 5] == 255).all()  # air is white


def test_simulate_bad_scenario_creates_nothing(tmp_path):
    out = tmp_path / "never"
    result = parcelscan("simulate", "--out", str(out), "--count", "2", "--scenarios", "bogus")
    assert result.returncode == 2 and "unknown scenario" in result.stderr
    assert not out.exists()
