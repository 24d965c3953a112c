"""Retraining on a "new seizure" scenario the base model never saw; the registry gate, promote, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from parcelscan.cli import main as cli
from parcelscan.model.registry import SHIPPED_DEFAULT, Registry, default_model_path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TINY = {"preprocessing": {"tile_rows": 64, "tile_cols": 64, "pixel_pitch_mm": 8.0}, "batch_size": 4, "workers": 0,
        "ema_decay": 0.9, "ema_tau_steps": 2.0, "progress": False, "device": "cpu", "augment": False,
        "balanced_sampling": False, "plots": False,
        # a handful of validation scans cannot place a 1 % false-alarm threshold: operate at 20 %
        "target_pfa": 0.2}




def simulate(out: Path, count: int, seed: int, scenarios: list[str]) -> Path:
    assert cli(["simulate", "--out", str(out), "--count", str(count), "--seed", str(seed), "--workers", "1",
                "--no-progress", "--scenarios", *scenarios]) == 0
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    """A base model trained on two scenarios only (no tile-ingredient sacks), and its data with splits."""
    work = tmp_path_factory.mktemp("base")
    data = simulate(work / "data", 60, 31, ["mail_pouch", "tile_stack"])
    assert cli(["data", "split", str(data), "--val", "0.2", "--test", "0.25", "--seed", "0"]) == 0
    config = {"data": str(data), "project": str(work / "runs"), "epochs": 6, "lr": 0.002, "warmup_epochs": 0.5,
              "patience": 0, **TINY}
    (work / "base.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert cli(["train", "--config", str(work / "base.yaml"), "--name", "base"]) == 0
    return work / "runs" / "base" / "weights" / "best.pt", data


def test_retrain_learns_the_new_scenario_and_the_registry_gates_it(base, tmp_path, monkeypatch):
    from parcelscan.training.retrain import RetrainConfig, retrain

    store = tmp_path / "store"
    monkeypatch.setenv("PARCELSCAN_MODEL_DIR", str(store))
    checkpoint, original = base
    new = simulate(tmp_path / "new", 60, 32, ["tile_ingredients"])
    comparison = retrain(RetrainConfig(
        base=str(checkpoint), new=str(new), replay=str(original), project=str(tmp_path / "runs"), name="r",
        epochs=8, lr=0.002, replay_ratio=1.0, holdout_fraction=0.35, device="cpu",
        train_overrides={**TINY, "warmup_epochs": 0.5}), log=lambda line: None)
    run_dir = Path(comparison["run_dir"])
    for name in ("comparison.json", "report.md", "model.onnx", "model.onnx.sha256", "train/weights/best.pt"):
        assert (run_dir / name).exists(), name
    saved = json.loads((run_dir / "comparison.json").read_text())
    new_holdout = saved["new_holdout"]
    assert new_holdout["base"]["n_suspect"] >= 3
    # the candidate finds more of the new scenario than the base model did
    assert new_holdout["candidate_pd"] > new_holdout["base_pd"]

    registry = Registry()
    entry = registry.get(comparison["registered_as"])
    assert entry.parent is None and entry.checkpoint  # base was a plain checkpoint, not a registry id
    problems = saved["gate_problems"]
    if problems:  # the gate's verdict is the registry's verdict
        with pytest.raises(Exception, match="refusing to promote"):
            registry.promote(entry.model_id)
        registry.promote(entry.model_id, force=True, reason="test: forced past " + problems[0])
    else:
        registry.promote(entry.model_id)
    # promote and rollback change what `inspect` uses by default
    assert default_model_path() == registry.resolve_path(entry)
    assert cli(["models", "rollback", "--reason", "test"]) == 0
    assert default_model_path() == SHIPPED_DEFAULT


def test_retrain_refuses_an_onnx_base_and_missing_original_test(base, tmp_path):
    from parcelscan.errors import ParcelscanError
    from parcelscan.training.retrain import RetrainConfig, retrain

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    checkpoint, original = base
    with pytest.raises(ParcelscanError, match=r"checkpoint \(\.pt\)"):
        retrain(RetrainConfig(base=str(onnx), new=str(original), replay=str(original)))
    with pytest.raises(ParcelscanError, match="original test"):
        retrain(RetrainConfig(base=str(checkpoint), new=str(original)))
