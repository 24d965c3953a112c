"""The shipped default's reproduce script (training/recipes/dual.sh, `make reproduce-dual`) runs end to end, shrunk.

It is the one command a station's engineers retrain the default with (issue 14, item 5): simulate the three
training parts → merge → split → train → simulate the calibration set → export → calibrate over all clear
parcels → export with that operating point. Here it runs with the real recipe file, only shrunk (a few scans
per part, 8 mm tiles of 64 px, one epoch). Nothing is stubbed: the same `python -m parcelscan` commands run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from parcelscan.model.session import read_metadata

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "recipes" / "dual.sh"
RECIPE = REPO / "training" / "recipes" / "dual.yaml"


def test_the_shipped_recipe_is_what_the_script_trains():
    """The recipe file is the shipped default's: 4 mm, 160 × 160 tiles, classifier head, twins out of the losses,
    best.pt by partial AUC (the model card states these)."""
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    assert recipe["preprocessing"] == {"pixel_pitch_mm": 4.0, "tile_rows": 160, "tile_cols": 160}
    assert (recipe["twin_policy"], recipe["select_metric"], recipe["input_kind"]) == ("ignore", "pauc", "dual_energy")
    assert "training/recipes/dual.sh" in (REPO / "Makefile").read_text(encoding="utf-8")


@pytest.mark.slow
def test_reproduce_script_runs_end_to_end_shrunk(tmp_path):
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    recipe.update(epochs=1, batch_size=4, plots=False, workers=0,
                  preprocessing={"pixel_pitch_mm": 8.0, "tile_rows": 64, "tile_cols": 64})
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "RECIPE": str(tiny), "WORKERS": "1", "STRESS_COUNT": "16",
           "POSTAL_COUNT": "12", "SHIELDED_COUNT": "4", "CALIB_COUNT": "20", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "merged and split 32 scans" in done.stdout and done.stdout.rstrip().endswith("parcelscan-dual.onnx")
    manifest = [json.loads(line) for line in (out / "train" / "manifest.jsonl").read_text().splitlines()]
    assert {r["provenance"]["mix"] for r in manifest} == {"stress", "postal"}
    assert sum(r["scenario"] == "shielded" for r in manifest) == 4
    calibration = json.loads((out / "calibration.json").read_text())
    metadata = read_metadata(out / "parcelscan-dual.onnx")
    assert metadata.threshold == pytest.approx(calibration["threshold"])
    assert metadata.metrics["operating_point"]["pfa_over"] == "all clear scans"  # --count-twins: what a station pays
