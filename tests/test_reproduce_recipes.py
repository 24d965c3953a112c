"""The shipped models' reproduce script (training/recipes/reproduce.sh, `make reproduce-dual`, `make reproduce-rgb`)
runs end to end, shrunk.

It is the one command a station's engineers retrain a shipped model with (issue 14, item 5): simulate the three
training parts → merge → split → train → simulate the calibration set → export → calibrate over all clear parcels →
export with that operating point → the weights-only `.pt`. Here it runs with the real recipe file, only shrunk (a few
scans per part, 8 mm tiles of 64 px, one epoch). Nothing is stubbed: the same `python -m parcelscan` commands run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from parcelscan.model.checkpoint import read_checkpoint
from parcelscan.model.session import read_metadata, sha256_file
from parcelscan.training.ship import RUN_FIELDS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "recipes" / "reproduce.sh"
INPUT_KIND = {"dual": "dual_energy", "rgb": "pseudo_color"}
TILES = {"pixel_pitch_mm": 4.0, "tile_rows": 160, "tile_cols": 160}
# the dual-energy recipe clamps both attenuations at the opaque level (since session 15, from the first step)
CEILING = {"dual": {"attenuation_ceiling": 8.0}, "rgb": {}}


def _recipe(name: str) -> dict:
    return yaml.safe_load((REPO / "training" / "recipes" / f"{name}.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(INPUT_KIND))
def test_the_shipped_recipe_is_what_the_script_trains(name):
    """Each recipe file is its shipped model's: 4 mm, 160 × 160 tiles, classifier head, twins out of the losses,
    best.pt by partial AUC (the model cards state these), and the Makefile's target runs it; the shipped model's
    checkpoint carries the same training settings."""
    recipe = _recipe(name)
    assert recipe["preprocessing"] == TILES | CEILING[name]
    assert (recipe["twin_policy"], recipe["select_metric"]) == ("ignore", "pauc")
    assert recipe["input_kind"] == INPUT_KIND[name]
    assert f"training/recipes/reproduce.sh {name} " in (REPO / "Makefile").read_text(encoding="utf-8")
    shipped = read_checkpoint(REPO / "model" / "default" / f"parcelscan-{name}.pt")
    for key, value in recipe.items():
        if key not in RUN_FIELDS:  # loader processes: how fast the run ran, not what it learnt
            assert shipped["config"][key] == value, key
    assert not shipped["source"].get("init_from")  # trained from scratch by the one stage the script runs


def test_an_unknown_model_name_is_refused(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "rgbx", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "unknown model 'rgbx'" in done.stderr


def run_shrunk(tmp_path: Path, name: str, out_name: str = "out") -> tuple[Path, str]:
    """The script with the real recipe file, shrunk (a few scans per part, 8 mm tiles of 64 px, one epoch):
    (its output folder, its stdout)."""
    recipe = _recipe(name)
    recipe.update(epochs=1, batch_size=4, plots=False, workers=0,
                  preprocessing={"pixel_pitch_mm": 8.0, "tile_rows": 64, "tile_cols": 64} | CEILING[name])
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / out_name
    env = {**os.environ, "PY": sys.executable, "RECIPE": str(tiny),
           "WORKERS": "1", "STRESS_COUNT": "16", "POSTAL_COUNT": "12", "SHIELDED_COUNT": "4", "CALIB_COUNT": "20",
           "VAL_FRACTION": "0.25", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), name, str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory):
    """``shrunk(name)``: one shrunk run of each model per module, shared by the tests that read it."""
    runs: dict[str, tuple[Path, str]] = {}

    def get(name: str) -> tuple[Path, str]:
        if name not in runs:
            runs[name] = run_shrunk(tmp_path_factory.mktemp(name), name)
        return runs[name]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(INPUT_KIND))
def test_reproduce_script_runs_end_to_end_shrunk(shrunk, name):
    out, stdout = shrunk(name)
    assert "merged and split 32 scans" in stdout and stdout.rstrip().endswith(f"parcelscan-{name}.onnx")
    manifest = [json.loads(line) for line in (out / "train" / "manifest.jsonl").read_text().splitlines()]
    assert {r["provenance"]["mix"] for r in manifest} == {"stress", "postal"}
    assert sum(r["scenario"] == "shielded" for r in manifest) == 4
    # the dual-energy recipe simulates the pairs only; the pseudo-colour one trains on the operator images
    assert all(("rgb" in r["files"]) == (name == "rgb") for r in manifest)
    calibration = json.loads((out / "calibration.json").read_text())
    metadata = read_metadata(out / f"parcelscan-{name}.onnx")
    assert metadata.input_kind == INPUT_KIND[name]
    if name == "dual":  # the dark end clamped in the exported model's preprocessing
        assert metadata.preprocessing["attenuation_ceiling"] == 8.0
    else:
        assert "attenuation_ceiling" not in metadata.preprocessing
    assert metadata.threshold == pytest.approx(calibration["threshold"])
    weights = read_checkpoint(out / f"parcelscan-{name}.pt")  # what `parcelscan retrain --base` starts from
    assert weights["source"]["onnx_sha256"] == sha256_file(out / f"parcelscan-{name}.onnx")
    assert metadata.metrics["operating_point"]["pfa_over"] == "all clear scans"  # --count-twins: what a station pays


@pytest.mark.slow
def test_the_one_command_makes_the_same_model_twice(shrunk, tmp_path):
    """Run twice on one machine with the same thread count, the command makes the same model: every weight of the
    exported graph, the graph itself, the operating point and the weights-only `.pt` bit for bit. Only when and
    where it ran differ (the metadata's timestamps and the calibration set's path)."""
    import onnx
    import torch
    from onnx import numpy_helper

    first, _ = shrunk("dual")
    second, _ = run_shrunk(tmp_path, "dual", "second")
    models = [onnx.load(out / "parcelscan-dual.onnx") for out in (first, second)]
    weights = [{t.name: numpy_helper.to_array(t) for t in m.graph.initializer} for m in models]
    assert weights[0].keys() == weights[1].keys()
    assert [k for k in weights[0] if not (weights[0][k] == weights[1][k]).all()] == []
    assert models[0].graph == models[1].graph
    metadata = [{p.key: p.value for p in m.metadata_props} for m in models]
    differing = {key for key in metadata[0] if metadata[0][key] != metadata[1].get(key)}
    assert differing <= {"created", "exported", "metrics"}
    operating = [json.loads(m["metrics"])["operating_point"] for m in metadata]
    for point in operating:
        point.pop("data")  # the calibration set's folder
    assert operating[0] == operating[1]
    thresholds = [read_metadata(out / "parcelscan-dual.onnx").threshold for out in (first, second)]
    assert thresholds[0] == thresholds[1]
    pts = [read_checkpoint(out / "parcelscan-dual.pt") for out in (first, second)]
    assert all(torch.equal(pts[0]["model"][k], pts[1]["model"][k]) for k in pts[0]["model"])
