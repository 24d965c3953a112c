"""A tiny training run end to end: artefacts, loss going down, exact resume, config files, DDP on 2 CPUs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from parcelscan.cli import main as cli
from parcelscan.datasets.manifest import read_manifest
from parcelscan.errors import ParcelscanError
from parcelscan.model.checkpoint import read_checkpoint
from parcelscan.training.config import TrainConfig, dump_config, load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")



CONTRACT_KEYS = {"arch", "in_channels", "model", "ema", "optimizer", "scheduler", "epoch", "config", "preprocessing",
                 "classes", "threshold", "target_pfa", "temperature", "metrics", "data_fingerprint", "git_commit",
                 "created", "name", "version"}
EPOCHS = 6


def tiny_config(data: Path, project: Path, **overrides) -> dict:
    """Tiles of 64×64 at 8 mm model pitch keep a test epoch around a second; EMA follows quickly. No
    augmentation and plain permutations: every epoch sees the same 20 tiles, so the loss of 30 steps
    falls clearly above the noise (the balanced sampler and augmentation run in the DDP test)."""
    config = {"data": str(data), "project": str(project), "preprocessing": {"tile_rows": 64, "tile_cols": 64,
                                                                            "pixel_pitch_mm": 8.0},
              "epochs": EPOCHS, "batch_size": 4, "workers": 0, "lr": 0.002, "warmup_epochs": 0.5,
              "ema_decay": 0.9, "ema_tau_steps": 2.0, "patience": 0, "save_period": 1, "progress": False,
              "device": "cpu", "augment": False, "balanced_sampling": False}
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from parcelscan.datasets.simulator.generate import run_simulate  # noqa: F401  (the simulator must be installed)

    out = tmp_path_factory.mktemp("scans")
    assert cli(["simulate", "--out", str(out), "--count", "40", "--seed", "11", "--workers", "1",
                "--no-progress"]) == 0
    assert cli(["data", "split", str(out), "--val", "0.25", "--test", "0.25", "--seed", "0"]) == 0
    return out


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory) -> Path:
    """One 6-epoch run through the CLI, shared by the tests below."""
    work = tmp_path_factory.mktemp("train")
    config = work / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(dataset, work / "runs")), encoding="utf-8")
    assert cli(["train", "--config", str(config), "--name", "tiny"]) == 0
    return work / "runs" / "tiny"


def results(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_run_writes_every_artefact(run):
    for name in ("args.yaml", "results.csv", "metrics.json", "weights/best.pt", "weights/last.pt", "results.png",
                 "roc.png", "pd_vs_pfa.png", "confusion_matrix.png", "calibration.png", "val_heatmaps.png"):
        assert (run / name).is_file(), name
        assert (run / name).stat().st_size > 0, name
    args = load_config(run / "args.yaml")
    assert args.epochs == EPOCHS and args.preprocessing["tile_rows"] == 64
    rows = results(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    for key in ("train/loss", "train/cls_loss", "train/mask_bce", "val/loss", "val/auc", "val/pd_at_target_pfa",
                "lr", "epoch_time_s", "train_img_per_s"):
        assert np.isfinite(float(rows[-1][key])), key
    last = read_checkpoint(run / "weights" / "last.pt")
    assert set(last) >= CONTRACT_KEYS
    assert last["epoch"] == EPOCHS and last["classes"] == ["clear", "suspect"]
    assert last["data_fingerprint"].startswith("sha256:") and len(last["git_commit"]) >= 7
    assert last["preprocessing"]["tile_rows"] == 64 and last["in_channels"] == 3
    assert 0 < last["threshold"] <= 1 and last["temperature"] > 0 and last["target_pfa"] == 0.01
    assert last["ema"] is not None and last["optimizer"]["state"]
    assert last["network"] == {"arch": "mobilenet_v3_small", "in_channels": 3, "num_classes": 2,
                               "decoder_channels": 32, "hidden_units": 256, "score_head": "classifier",
                               "score_topk": 4, "test_time_flips": 1}  # the shape is stored, not assumed
    metrics = json.loads((run / "metrics.json").read_text())
    best = read_checkpoint(run / "weights" / "best.pt")
    assert metrics["best_epoch"] == best["epoch"] and metrics["threshold"] == best["threshold"]
    summary = metrics["val_summary"]
    assert summary["n_scans"] == len([r for r in read_manifest(Path(args.data)) if r.split == "val"])
    assert {"0.01", "0.001"} <= set(summary["pd_at_pfa"])


def test_training_lowers_the_loss(run):
    losses = [float(r["train/loss"]) for r in results(run)]
    assert np.mean(losses[-3:]) < losses[0], losses


def test_resume_continues_exactly(run, tmp_path):
    """Resume from epoch 5 in a copy of the run: epoch 6 is redone with the saved optimizer, scheduler
    and EMA state and lands on the same weights as the uninterrupted run."""
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(run, copy)
    epoch5 = copy / "weights" / "epoch5.pt"
    from parcelscan.training.train import Trainer

    trainer = Trainer(resume=epoch5, overrides={"plots": False})  # plots are checked above; they cost time
    assert trainer.start_epoch == 6
    saved = read_checkpoint(epoch5)
    state = trainer.optimizer.state_dict()
    assert state["param_groups"] == saved["optimizer"]["param_groups"]
    for key, value in saved["optimizer"]["state"].items():
        assert torch.equal(state["state"][key]["exp_avg"], value["exp_avg"])
    assert trainer.scheduler.last_epoch == saved["scheduler"]["last_epoch"]
    trainer.fit()
    assert [int(r["epoch"]) for r in results(copy)] == list(range(1, EPOCHS + 1))
    resumed = read_checkpoint(copy / "weights" / "last.pt")
    original = read_checkpoint(run / "weights" / "last.pt")
    assert resumed["epoch"] == EPOCHS
    for key, value in original["model"].items():
        assert torch.allclose(resumed["model"][key].float(), value.float(), atol=1e-5), key
    for key, value in original["ema"].items():
        assert torch.allclose(resumed["ema"][key].float(), value.float(), atol=1e-5), key


def test_init_from_starts_at_the_checkpoint_weights(run, dataset, tmp_path):
    from parcelscan.training.train import Trainer

    config = TrainConfig.from_dict(tiny_config(dataset, tmp_path / "runs", init_from=str(run / "weights" / "best.pt"),
                                               preprocessing={}))
    trainer = Trainer(config)
    best = read_checkpoint(run / "weights" / "best.pt")
    assert trainer.spec.to_dict() == best["preprocessing"]  # the checkpoint's spec, not the config's defaults
    for key, value in best["ema"].items():
        assert torch.equal(trainer.model.state_dict()[key], value), key
    assert trainer.model.test_time_flips == 1  # test_time_flips 0: the checkpoint's setting
    flipped = Trainer(TrainConfig.from_dict({**config.to_dict(), "test_time_flips": 4}))  # a setting, not a shape
    assert flipped.model.test_time_flips == 4 and flipped.model.config.test_time_flips == 4
    with pytest.raises(ParcelscanError, match="is a mobilenet_v3_small model"):
        Trainer(TrainConfig.from_dict({**config.to_dict(), "arch": "resnet18"}))


def test_a_fine_tune_may_set_the_attenuation_ceiling_and_nothing_else(run, dataset, tmp_path):
    """The dark end's ceiling is the one preprocessing change a network adapts to by fine-tuning; a fine-tune that
    changed the pitch or the tiles would start from weights that read other pixels, so it is refused."""
    from parcelscan.training.train import Trainer

    best = read_checkpoint(run / "weights" / "best.pt")
    base = tiny_config(dataset, tmp_path / "runs", init_from=str(run / "weights" / "best.pt"))
    trainer = Trainer(TrainConfig.from_dict({**base, "preprocessing": {**base["preprocessing"],
                                                                        "attenuation_ceiling": 8.0}}))
    assert trainer.spec.to_dict() == best["preprocessing"] | {"attenuation_ceiling": 8.0}
    with pytest.raises(ParcelscanError, match="changes tile_rows"):
        Trainer(TrainConfig.from_dict({**base, "preprocessing": {"tile_rows": 2 * best["preprocessing"]["tile_rows"]}}))


def test_resume_refuses_recipe_changes_and_finished_runs(run, capsys):
    assert cli(["train", "--resume", str(run / "weights" / "epoch5.pt"), "--lr", "0.1"]) == 2
    assert "cannot change lr" in capsys.readouterr().err
    assert cli(["train", "--resume", str(run / "weights" / "last.pt")]) == 2
    assert "already finished" in capsys.readouterr().err


def test_unsplit_data_is_refused(dataset, tmp_path, capsys, unsplit_copy):
    unsplit = unsplit_copy(dataset)
    assert cli(["train", "--data", str(unsplit), "--project", str(tmp_path / "runs"), "--device", "cpu"]) == 2
    assert "parcelscan data split" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_balanced_shard_sampler():
    from parcelscan.training.train import BalancedShardSampler

    labels = [0] * 90 + [1] * 10
    sampler = BalancedShardSampler(labels, balanced=True, seed=3)
    sampler.set_epoch(1)
    drawn = np.array(labels)[list(sampler)]
    assert len(drawn) == 100 and 0.35 < drawn.mean() < 0.65  # ~half suspect although 10 % of the scans
    again = BalancedShardSampler(labels, balanced=True, seed=3)
    again.set_epoch(1)
    assert list(again) == list(sampler)  # a function of (seed, epoch): resume draws the same samples
    again.set_epoch(2)
    assert list(again) != list(sampler)
    shards = [BalancedShardSampler(labels, balanced=False, seed=0, rank=r, world_size=3) for r in range(3)]
    parts = [list(s) for s in shards]
    assert all(len(p) == 34 for p in parts)  # equal shares (two indices repeat to pad 100 to 102)
    assert set().union(*parts) == set(range(100))


def test_run_names_increment(tmp_path):
    from parcelscan.training.runs import increment_dir

    assert increment_dir(tmp_path, "exp").name == "exp"
    assert increment_dir(tmp_path, "exp").name == "exp2"
    assert increment_dir(tmp_path, "exp").name == "exp3"


def test_config_yaml_round_trip_and_errors(tmp_path):
    config = TrainConfig(data="d", epochs=3, preprocessing={"tile_rows": 64})
    dump_config(config, tmp_path / "args.yaml")
    assert load_config(tmp_path / "args.yaml") == config
    (tmp_path / "bad.yaml").write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ParcelscanError, match="unknown setting"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "typed.yaml").write_text("epochs: three\n")
    with pytest.raises(ParcelscanError, match="epochs must be int"):
        load_config(tmp_path / "typed.yaml")
    (tmp_path / "int_lr.yaml").write_text("lr: 1\n")
    assert load_config(tmp_path / "int_lr.yaml").lr == 1.0
    with pytest.raises(ParcelscanError, match="target_pfa"):
        TrainConfig(target_pfa=1.5).validate()


@pytest.mark.slow
def test_ddp_two_cpu_processes(dataset, tmp_path):
    """``torchrun --nproc-per-node=2 -m parcelscan train``: gloo, one run directory, rank 0 writes."""
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(dataset, tmp_path / "runs", epochs=2, save_period=0, augment=True,
                                                 balanced_sampling=True, batch_size=8)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "parcelscan", "train", "--config", str(config), "--name", "ddp"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp"]
    metrics = json.loads((tmp_path / "runs" / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert [int(r["epoch"]) for r in results(tmp_path / "runs" / "ddp")] == [1, 2]
    assert read_checkpoint(tmp_path / "runs" / "ddp" / "weights" / "last.pt")["epoch"] == 2


def test_cached_run_trains_exactly_like_an_uncached_one(dataset, tmp_path):
    """``cache: true`` only skips decoding: the same recipe gives the same weights and validation numbers,
    and the cache then holds every val scan and every train scan the run reads (twin-filled clear scans are
    left out of training by the default twin_policy ignore)."""
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    rows = {}
    for name, cache in (("plain", False), ("cached", True)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(tiny_config(data, tmp_path / "runs", epochs=2, save_period=0,
                                                     plots=False, cache=cache)), encoding="utf-8")
        assert cli(["train", "--config", str(config), "--name", name]) == 0
        rows[name] = results(tmp_path / "runs" / name)
    for plain, cached in zip(rows["plain"], rows["cached"], strict=True):
        for key in ("train/loss", "val/loss", "val/auc", "val/threshold"):
            assert float(plain[key]) == pytest.approx(float(cached[key]), rel=1e-6, abs=1e-9), key
    from parcelscan.datasets.manifest import read_manifest
    from parcelscan.datasets.torch_dataset import is_twin

    entries = {path.stem for path in (data / ".cache").glob("prepared-*/*.prepared")}
    used = {r.scan_id for r in read_manifest(data)
            if r.split == "val" or (r.split == "train" and not is_twin(r))}
    assert entries == used
    flipped = tmp_path / "flip.yaml"  # the free flips and the tile augmentation of a cached run, end to end
    flipped.write_text(yaml.safe_dump(tiny_config(data, tmp_path / "runs", epochs=1, save_period=0, plots=False,
                                                  cache=True, tile_flips=True, tile_augment=True)), encoding="utf-8")
    assert cli(["train", "--config", str(flipped), "--name", "flip"]) == 0
    assert load_config(tmp_path / "runs" / "flip" / "args.yaml").tile_augment
    assert {path.stem for path in (data / ".cache").glob("prepared-*/*.prepared")} == used  # augmented after the cache


@pytest.mark.parametrize("recipe", ["dual.yaml", "rgb.yaml", "dual-ceiling65.yaml"])
def test_shipped_recipes_are_valid_configs(recipe):
    from parcelscan.training.config import load_config
    from parcelscan.training.train import make_spec

    config = load_config(Path(__file__).parents[1] / "training" / "recipes" / recipe).validate()
    spec = make_spec(config)
    assert spec.input_kind == config.input_kind and spec.tile_shape == (160, 160)
    assert config.cache and not config.augment  # the cache serves only unaugmented items


def test_the_2mm_recipe_is_a_valid_config():
    """training/recipes/dual-2mm.yaml (issue 14): 2 mm pitch, the heatmap-scored head, twins out of the losses,
    windows that fit in a tile."""
    from parcelscan.training.config import load_config
    from parcelscan.training.train import make_spec

    config = load_config(Path(__file__).parents[1] / "training" / "recipes" / "dual-2mm.yaml").validate()
    spec = make_spec(config)
    assert spec.pixel_pitch_mm == 2.0 and spec.tile_shape == (320, 320) and 0 < config.train_crop <= 320
    assert (config.score_head, config.twin_policy) == ("heatmap_topk", "ignore")
    assert config.cache and not config.augment


def test_heatmap_scored_run_with_windows_and_twins_left_out(dataset, tmp_path):
    """A heatmap_topk run on windows with twin_policy ignore trains, validates with Pfa on non-twin clears
    (results.csv carries the twins' alarm rate) and stores the head in its checkpoint."""
    from dataclasses import replace

    from parcelscan.datasets.manifest import read_manifest, write_manifest
    from parcelscan.model.checkpoint import load_checkpoint

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    records = read_manifest(data)
    clears = [r.scan_id for r in records if r.label == "clear" and r.split in ("train", "val")]
    twins = {clears[0], clears[-1]}  # one or two clear scans marked as twin fills, whatever the simulator said
    write_manifest(data / "manifest.jsonl", [replace(r, twin_of=["La2O3"] if r.scan_id in twins else
                                                     ([] if r.label == "clear" else r.twin_of)) for r in records])
    config = tmp_path / "topk.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, tmp_path / "runs", epochs=2, save_period=0, plots=False,
                                                 score_head="heatmap_topk", train_crop=32, twin_policy="ignore",
                                                 select_metric="pauc")),
                      encoding="utf-8")
    assert cli(["train", "--config", str(config), "--name", "topk"]) == 0
    rows = results(tmp_path / "runs" / "topk")
    assert len(rows) == 2 and all(0.0 <= float(row["val/twin_alarm_rate"]) <= 1.0 or
                                  row["val/twin_alarm_rate"] == "nan" for row in rows)
    # best.pt is chosen by the partial ROC area (select_metric pauc): the epoch with the highest val/pauc
    pauc = [(float(row["val/pauc"]), float(row["val/auc"])) for row in rows]
    model, info = load_checkpoint(tmp_path / "runs" / "topk" / "weights" / "best.pt")
    assert info["epoch"] == 1 + max(range(len(pauc)), key=lambda i: (pauc[i], -i))
    assert info["network"]["score_head"] == "heatmap_topk" and not hasattr(model, "classifier")
    assert info["config"]["twin_policy"] == "ignore" and info["config"]["train_crop"] == 32


def test_the_cache_filled_on_every_core_holds_what_the_loop_would_have_prepared(dataset, tmp_path):
    """``fill_cache`` (run before epoch 1) prepares the missing scans in forked processes; each entry is the
    array the training loop itself prepares, and a second call finds nothing to do."""
    from parcelscan.datasets.preprocess import PreprocessSpec
    from parcelscan.datasets.torch_dataset import ScanDataset

    spec = PreprocessSpec(tile_rows=64, tile_cols=64, pixel_pitch_mm=8.0)
    filled = ScanDataset(dataset, spec, split="train", cache_root=tmp_path / "filled", twin_policy="ignore")
    assert filled.fill_cache(processes=2) == len(filled.records) >= 4
    assert filled.fill_cache(processes=2) == 0
    lazy = ScanDataset(dataset, spec, split="train", cache_root=tmp_path / "lazy", twin_policy="ignore")
    for index in range(len(filled.records)):
        (prepared, masks), (expected, expected_masks) = filled._load(index, None), lazy._load(index, None)
        assert np.array_equal(prepared.tiles, expected.tiles)
        assert (masks is None) == (expected_masks is None)
        assert masks is None or np.array_equal(masks, expected_masks)
    entries = sorted(p.name for p in (tmp_path / "filled").rglob("*.prepared"))
    assert len(entries) == len(filled.records)
    assert entries == sorted(p.name for p in (tmp_path / "lazy").rglob("*.prepared"))


def _fs_type(path: Path) -> str:
    done = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return done.stdout.strip()


def _resident_bytes(path: Path) -> int | None:
    """The bytes of ``path`` in the page cache (util-linux ``fincore``), None where that cannot be read."""
    if shutil.which("fincore") is None:
        return None
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                          capture_output=True, text=True)
    return int(done.stdout.split()[0]) if done.returncode == 0 and done.stdout.strip() else None


def test_filling_the_cache_leaves_the_scans_out_of_memory(dataset, tmp_path):
    """Each scan is read once to fill the cache and never again: its pages are handed back (``forget_source_pages``),
    so that on a machine whose memory cannot hold both, the cache the epochs read stays in memory (session 23)."""
    from parcelscan.datasets.preprocess import PreprocessSpec
    from parcelscan.datasets.torch_dataset import ScanDataset

    if not hasattr(os, "posix_fadvise") or _fs_type(tmp_path) in ("tmpfs", "ramfs", ""):
        pytest.skip("no posix_fadvise, or a memory file system (its pages are the files)")
    copied = tmp_path / "scans"
    shutil.copytree(dataset, copied)  # files of its own, so that other tests' reads do not count
    os.sync()  # written back, as a simulation's scans are long before training: the kernel drops only clean pages
    filled = ScanDataset(copied, PreprocessSpec(tile_rows=64, tile_cols=64, pixel_pitch_mm=8.0), split="train",
                         cache_root=tmp_path / "cache", twin_policy="ignore")
    sources = [copied / name for r in filled.records for name in r.files.values() if name]
    for path in sources:
        path.read_bytes()
    before = [_resident_bytes(path) for path in sources]
    if not all(before):
        pytest.skip("no fincore, or this file system keeps no page cache of the files read")
    assert filled.fill_cache(processes=2) == len(filled.records)  # the forked processes: each forgets its own
    assert [_resident_bytes(path) for path in sources] == [0] * len(sources)


@pytest.mark.parametrize(("workers", "user", "expected"), [(0, None, None), (2, None, "PASSIVE"),
                                                           (2, "ACTIVE", "ACTIVE")])
def test_openmp_waits_passively_only_beside_loader_processes(monkeypatch, workers, user, expected):
    from parcelscan.training.train_cli import passive_omp_wait

    if user is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", user)
    passive_omp_wait(workers)
    assert os.environ.get("OMP_WAIT_POLICY") == expected


def test_a_resumed_run_waits_as_its_own_loader_settings_say(tmp_path):
    from parcelscan.training.train_cli import _resumed_workers

    checkpoint = tmp_path / "run" / "weights" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    assert _resumed_workers(checkpoint, {}) == 1  # no args.yaml: as before, passive
    (tmp_path / "run" / "args.yaml").write_text(yaml.safe_dump({"workers": 0}), encoding="utf-8")
    assert _resumed_workers(checkpoint, {}) == 0
    assert _resumed_workers(checkpoint, {"workers": 3}) == 3
