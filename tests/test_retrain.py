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
        "target_pfa": 0.2,
        # best.pt by a ranking, as the shipped recipes pick it: Pd at one threshold over ~10 validation suspects
        # moves in steps of 10 points and picked a first epoch whose scores were all but constant (an Intel AVX-512
        # host, session 25: AUC 0.5 on the new data for base and candidate alike)
        "select_metric": "pauc"}




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
    assert new_holdout["base"]["n_suspect"] >= 3 and new_holdout["base"]["n_clear"] >= 3
    # The candidate ranks the new scenario's suspects above its clear parcels better than the base did. Ranked,
    # not counted at each model's stored threshold: the tiny base's threshold (Pfa 20 % on 12 validation scans)
    # can sit low enough to flag every scan, and then its Pd on the new data is 1.0 however blind it is
    # (the simulator's scenes changed and this happened; an AUC cannot be bought with false alarms).
    assert new_holdout["candidate"]["roc_auc"] > new_holdout["base"]["roc_auc"]
    # the gate's verdict is the rule applied to the recorded numbers, Pfa on the original test included
    from parcelscan.model.registry import PromotionGate

    original = saved["original_test"]
    assert original["base_pfa"] == original["base"]["pfa"] and original["candidate_pfa"] == original["candidate"]["pfa"]
    assert saved["gate_problems"] == PromotionGate(
        original["base_pd"], original["candidate_pd"], new_holdout["base_pd"], new_holdout["candidate_pd"],
        original["base_pfa"], original["candidate_pfa"]).problems()

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


# --- retraining the shipped default (issue 11 items 2 and 6) ----------------------------------------------
@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    """Stand-in for the original training data: simulated scans with train/val/test splits."""
    data = simulate(tmp_path_factory.mktemp("original") / "data", 30, 41, ["mail_pouch", "tile_stack"])
    assert cli(["data", "split", str(data), "--val", "0.3", "--test", "0.3", "--seed", "0"]) == 0
    return data


def test_retrain_from_the_shipped_default_through_the_cli(original, tmp_path, capsys):
    """A fresh clone retrains the shipped ONNX default: its checkpoint lies beside it, the run keeps the
    recipe's data settings, the candidate is registered under --name as a child of the (now registered)
    base, and the report shows counts beside percentages."""
    from parcelscan.datasets.manifest import read_manifest
    from parcelscan.model.session import read_metadata, sha256_file
    from parcelscan.training.config import load_config
    from parcelscan.training.retrain import base_in_registry, resolve_base

    new = tmp_path / "new"
    assert cli(["simulate", "--out", str(new), "--count", "30", "--seed", "42", "--workers", "1", "--no-progress",
                "--suspect-fraction", "0.85", "--scenarios", "tile_ingredients"]) == 0
    store = tmp_path / "store"
    assert cli(["retrain", "--base", str(SHIPPED_DEFAULT), "--new", str(new), "--replay", str(original),
                "--name", "seizures", "--epochs", "1", "--project", str(tmp_path / "runs"), "--registry", str(store),
                "--device", "cpu"]) == 0
    out = capsys.readouterr()
    run_dir = tmp_path / "runs" / "seizures"
    args = load_config(run_dir / "train" / "args.yaml")
    recipe = load_config(Path(__file__).resolve().parent.parent / "training" / "recipes" / "dual.yaml")
    for key in ("augment", "tile_flips", "cache", "batch_size"):  # the recipe's, not hard-coded
        assert getattr(args, key) == getattr(recipe, key), key
    assert args.workers == 0  # loader processes are the machine's, not the base's (batches in-process)
    assert (args.augment, args.cache, args.tile_flips) == (False, True, True)
    assert "fine-tuning with the base recipe's data settings" in out.err

    registry = Registry(store)
    base_name = read_metadata(SHIPPED_DEFAULT).name
    candidate = registry.get("seizures@1")
    assert candidate.parent == f"{base_name}@1" and candidate.checkpoint
    stored_base = registry.get(candidate.parent)
    assert stored_base.sha256 == sha256_file(SHIPPED_DEFAULT) and stored_base.checkpoint  # with its checkpoint
    # the next retraining finds the same base again by its sha256 instead of registering it twice
    assert base_in_registry(registry, resolve_base(str(SHIPPED_DEFAULT), None)) == candidate.parent
    assert len(registry.entries()) == 2

    saved = json.loads((run_dir / "comparison.json").read_text())
    counts = saved["counts"]
    assert counts["new_holdout"] == len([r for r in read_manifest(run_dir / "holdout")])
    assert counts["new_holdout_suspect"] >= 5
    report = (run_dir / "report.md").read_text()
    holdout = saved["new_holdout"]["candidate"]
    assert f"({holdout['flagged_suspect']}/{holdout['n_suspect']})" in report
    assert f"| new_holdout | {counts['new_holdout']} | {counts['new_holdout_suspect']} |" in report
    assert "child of `" + candidate.parent in report


def test_retrain_refuses_new_data_that_cannot_support_the_comparison(original, tmp_path, capsys):
    """Three scans (the case from issue 11): refused before any training, with the rule and the counts."""
    new = tmp_path / "three"
    assert cli(["simulate", "--out", str(new), "--count", "3", "--seed", "43", "--workers", "1", "--no-progress",
                "--suspect-fraction", "1.0"]) == 0
    runs = tmp_path / "runs"
    code = cli(["retrain", "--base", str(SHIPPED_DEFAULT), "--new", str(new), "--replay", str(original),
                "--project", str(runs), "--registry", str(tmp_path / "store"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "too little new data" in err and "at least 5 needed" in err
    assert not runs.exists() or not any(runs.iterdir())  # nothing half-made


def test_retrain_checks_the_checkpoint_beside_an_onnx_base(tmp_path):
    """The shipped checkpoint is found beside the ONNX and verified; a missing, tampered or mismatched
    one is refused with a message that says which."""
    import shutil

    from parcelscan.errors import ParcelscanError
    from parcelscan.model.session import sha256_sidecar
    from parcelscan.training.retrain import resolve_base

    base = resolve_base(str(SHIPPED_DEFAULT), None)
    assert base.checkpoint == SHIPPED_DEFAULT.with_suffix(".pt") and base.onnx == SHIPPED_DEFAULT
    copy = tmp_path / SHIPPED_DEFAULT.name
    shutil.copy(SHIPPED_DEFAULT, copy)
    shutil.copy(sha256_sidecar(SHIPPED_DEFAULT), sha256_sidecar(copy))
    with pytest.raises(ParcelscanError, match=r"checkpoint \(\.pt\).*none beside it"):
        resolve_base(str(copy), None)
    checkpoint = copy.with_suffix(".pt")
    shutil.copy(SHIPPED_DEFAULT.with_suffix(".pt"), checkpoint)
    with pytest.raises(ParcelscanError, match="unverified"):
        resolve_base(str(copy), None)
    shutil.copy(sha256_sidecar(SHIPPED_DEFAULT.with_suffix(".pt")), sha256_sidecar(checkpoint))
    assert resolve_base(str(copy), None).checkpoint == checkpoint
    rgb = SHIPPED_DEFAULT.with_name("parcelscan-rgb.pt")  # another model's checkpoint under this name
    shutil.copy(rgb, checkpoint)
    shutil.copy(sha256_sidecar(rgb), sha256_sidecar(checkpoint))
    (sha256_sidecar(checkpoint)).write_text(sha256_sidecar(rgb).read_text().split()[0] + f"  {checkpoint.name}\n")
    with pytest.raises(ParcelscanError, match="another model file"):
        resolve_base(str(copy), None)


# --- the promotion gate's false-alarm rule (issue 14 item 4) ------------------------------------------------------
def test_the_gate_refuses_a_candidate_that_buys_pd_with_false_alarms(tmp_path, monkeypatch):
    """A candidate that gains Pd on the original test by alarming on more clear parcels is refused; the rise
    is measured at each model's own stored threshold and allowed up to MAX_PFA_RISE_POINTS; a comparison
    that recorded no Pfa cannot pass."""
    from parcelscan.errors import ParcelscanError
    from parcelscan.model.registry import MAX_PFA_RISE_POINTS, PromotionGate

    tolerance = MAX_PFA_RISE_POINTS / 100
    assert PromotionGate(0.90, 0.90, 0.40, 0.80, 0.010, 0.010 + 0.9 * tolerance).problems() == []
    problems = PromotionGate(0.90, 0.95, 0.40, 0.80, 0.010, 0.010 + 1.1 * tolerance).problems()
    assert len(problems) == 1 and "raises Pfa" in problems[0]
    assert PromotionGate(0.90, 0.90, 0.40, 0.80, 0.030, 0.010).problems() == []  # fewer false alarms: fine
    unrecorded = PromotionGate(0.90, 0.90, 0.40, 0.80).problems()
    assert len(unrecorded) == 1 and "no Pfa" in unrecorded[0]

    monkeypatch.setenv("PARCELSCAN_MODEL_DIR", str(tmp_path / "store"))
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"the registry only copies and hashes it")
    registry = Registry()
    base = registry.register(model_file, "dual")
    registry.promote(base.model_id, force=True, reason="bootstrap")

    def candidate(base_pfa, candidate_pfa):
        original = {"base_pd": 0.90, "candidate_pd": 0.97, "base_pfa": base_pfa, "candidate_pfa": candidate_pfa}
        return registry.register(model_file, "dual", parent=base.model_id, comparison={
            "base": base.model_id, "original_test": original,
            "new_holdout": {"base_pd": 0.40, "candidate_pd": 0.80}})

    noisy = candidate(0.010, 0.040)  # the case that used to pass: Pd up 7 points, false alarms ×4
    with pytest.raises(ParcelscanError, match=r"raises Pfa .* by 3\.00 points"):
        registry.promote(noisy.model_id)
    legacy = registry.register(model_file, "dual", parent=base.model_id, comparison={
        "base": base.model_id, "original_test": {"base_pd": 0.90, "candidate_pd": 0.97},
        "new_holdout": {"base_pd": 0.40, "candidate_pd": 0.80}})
    with pytest.raises(ParcelscanError, match="no Pfa"):
        registry.promote(legacy.model_id)
    fine = candidate(0.010, 0.012)
    registry.promote(fine.model_id)
    assert registry.current().model_id == fine.model_id
