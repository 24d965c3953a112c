"""Training is a function of (recipe, data, compute): the same run twice gives the same weights bit for bit, whatever
the order of the manifest's lines. ``make reproduce-*`` relies on it. The compute (torch, threads, CPU
instruction set) is recorded in every checkpoint because it matters too: on the development machine 1 and 2
intra-op threads gave different weights (README, "Session 17"); that is the platform's property, not checked here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from parcelscan.cli import main as cli
from parcelscan.model.checkpoint import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scans")
    assert cli(["simulate", "--out", str(out), "--count", "24", "--seed", "17", "--workers", "1", "--no-progress"]) == 0
    assert cli(["data", "split", str(out), "--val", "0.25", "--test", "0", "--seed", "0"]) == 0
    return out


def train(data: Path, work: Path, name: str) -> dict:
    """Two epochs of a small recipe with the shipped one's sampling (class-balanced, with replacement, and tile
    flips), so that the order of the records decides which scan every draw reads."""
    config = {"data": str(data), "project": str(work / "runs"),
              "preprocessing": {"tile_rows": 64, "tile_cols": 64, "pixel_pitch_mm": 8.0},
              "epochs": 2, "batch_size": 4, "workers": 0, "lr": 0.002, "warmup_epochs": 0.5, "ema_decay": 0.9,
              "ema_tau_steps": 2.0, "patience": 0, "save_period": 0, "progress": False, "plots": False,
              "device": "cpu", "augment": False, "balanced_sampling": True, "tile_flips": True}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert cli(["train", "--config", str(path), "--name", name]) == 0
    return read_checkpoint(work / "runs" / name / "weights" / "last.pt")


def differing(a: dict, b: dict) -> list[str]:
    return [key for key in a["model"] if not torch.equal(a["model"][key], b["model"][key])]


def test_the_same_run_on_a_reordered_manifest_gives_the_same_weights_and_records_its_compute(dataset, tmp_path):
    """The same run twice, the second on the manifest's lines reversed (as `data merge` of the parts in reverse
    order would list them): the same weights bit for bit, which neither a run-to-run difference nor the order can
    pass; and both record the compute they ran on."""
    reordered = tmp_path / "reordered"
    shutil.copytree(dataset, reordered)
    manifest = reordered / "manifest.jsonl"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    manifest.write_text("\n".join(lines[::-1]) + "\n", encoding="utf-8")
    first, second = train(dataset, tmp_path, "original"), train(reordered, tmp_path, "reordered")
    assert differing(first, second) == []
    assert first["compute"] == second["compute"]
    assert first["compute"]["threads"] == torch.get_num_threads() == 1
    assert first["compute"]["torch"] == torch.__version__
    assert first["compute"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
