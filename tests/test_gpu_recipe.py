"""The issue-14 GPU arm script (training/recipes/dual-2mm-gpu.sh) runs end to end, shrunk to a CPU.

The script is what a lent GPU machine runs with no network and minutes of budget: a broken line there costs the
whole lease. Here it runs with the real recipe file, only shrunk (one chunk of 40 scans, 8 mm tiles of 64 px,
one epoch, no GPU): simulate → merge → split → one training per score head side by side → slim checkpoints that
the CPU side exports. Nothing is stubbed: the same `python -m parcelscan` commands run."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from parcelscan.model.checkpoint import load_checkpoint, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "recipes" / "dual-2mm-gpu.sh"
RECIPE = REPO / "training" / "recipes" / "dual-2mm-gpu.yaml"
ARMS = ("heatmap_topk", "hybrid")


@pytest.mark.slow
def test_gpu_arm_script_runs_end_to_end_on_a_cpu(tmp_path):
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    recipe.update(epochs=1, batch_size=4, train_crop=32, plots=False,
                  preprocessing={"pixel_pitch_mm": 8.0, "tile_rows": 64, "tile_cols": 64})
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PY": sys.executable, "WORK": str(work), "RECIPE": str(tiny), "ARMS": " ".join(ARMS),
           "CHUNK": "40", "SIM_BUDGET_S": "0", "TRAIN_BUDGET_S": "600", "WORKERS": "0", "FIRST_SEED": "9190",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    log = (out / "gpuarm.log").read_text(encoding="utf-8") if (out / "gpuarm.log").exists() else ""
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + log[-2000:]
    assert "merged 40 scans (seeds 9190-9190)" in log and log.rstrip().endswith("done")
    for arm in ARMS:
        for which in ("best", "last"):
            slim = read_checkpoint(out / f"{arm}-{which}.pt")
            assert slim["optimizer"] == {} and slim["scheduler"] == {}  # no optimizer state travels back
            _model, info = load_checkpoint(out / f"{arm}-{which}.pt")  # what `parcelscan export` loads
            assert info["network"]["score_head"] == arm and info["config"]["select_metric"] == "pauc"
    with tarfile.open(out / "runs.tar.gz") as archive:
        names = archive.getnames()
    assert {f"runs/{arm}/results.csv" for arm in ARMS} <= set(names)
    assert {f"logs/train-{arm}.log" for arm in ARMS} <= set(names)
    assert not any(name.endswith(".pt") for name in names)
