"""Shared by the export / inspect tests: physics-simulated station scans and a tiny exported model.

The scans come from the project's forward model (spectra, attenuation, detector noise): a cardboard
parcel with water and aluminium clutter; ``suspect`` scans add a rare-earth oxide sachet; the
``opaque`` scan adds a 4 cm steel block (A_high ≈ 9.8: the beam does not get through). The model is
H4's real network (``build_model``), randomly initialised with its class head scaled up so that scores
spread across (0, 1) and differ between scans — the tests check the plumbing, never model quality.
Built once per test process (module-level cache), in a directory the first caller provides.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROWS, COLS = 160, 192  # scan pixels at 1 mm: 80 x 96 model pixels at 2 mm, one 128 x 128 tile
TILE = 128
_CACHE: dict[str, object] = {}


def _scene(kind: str, rng: np.random.Generator):
    from parcelscan.datasets.physics.materials import get_material

    names = ["cardboard", "water", "Al", "Nd2O3", "steel"]
    areal = np.zeros((len(names), ROWS, COLS), dtype=np.float32)
    areal[0, 12:ROWS - 12, 10:COLS - 10] = 0.42  # two cardboard walls
    for _ in range(3):  # water-like clutter blocks (bottles, food)
        r, c = rng.integers(20, ROWS - 60), rng.integers(20, COLS - 60)
        h, w = rng.integers(20, 40), rng.integers(20, 40)
        areal[1, r:r + h, c:c + w] += rng.uniform(2.0, 8.0)
    r, c = rng.integers(20, ROWS - 40), rng.integers(20, COLS - 40)
    areal[2, r:r + 15, c:c + 25] += rng.uniform(0.5, 2.0)
    if kind == "suspect":
        r, c = rng.integers(30, ROWS - 60), rng.integers(30, COLS - 60)
        areal[3, r:r + 30, c:c + 30] += rng.uniform(0.8, 1.5)
    if kind == "opaque":
        areal[4, 50:80, 60:90] += 4.0 * 7.85  # 40 mm steel (A_high ≈ 9.8): 9 cm² at 1 mm pitch
    return [get_material(n) for n in names], areal


def write_scans(directory: Path, n_clear: int = 3, n_suspect: int = 3, opaque: bool = True,
                seed: int = 0) -> dict[str, list[str]]:
    """Station-format scans with sidecar labels; returns {kind: [scan ids]}."""
    from parcelscan.datasets.physics.forward import forward_model
    from parcelscan.datasets.physics.profile import default_profile
    from parcelscan.datasets.scans.scanfile import Scan, write_station_scan

    profile = default_profile()
    model = forward_model(profile)
    directory.mkdir(parents=True, exist_ok=True)
    kinds = ["clear"] * n_clear + ["suspect"] * n_suspect + (["opaque"] if opaque else [])
    ids: dict[str, list[str]] = {"clear": [], "suspect": [], "opaque": []}
    for i, kind in enumerate(kinds):
        rng = np.random.default_rng(seed * 1000 + i)
        materials, areal = _scene(kind, rng)
        low, high = model.scan(materials, areal, rng)
        scan_id = f"{kind}-{i:03d}"
        label = "suspect" if kind == "suspect" else "clear"
        meta = {"profile": profile.name, "pixel_pitch_mm": 1.0, "source": "simulated",
                "labels": {"label": label, "scenario": kind}}
        write_station_scan(Scan(scan_id, low, high, meta), directory)
        ids[kind].append(scan_id)
    return ids


def tiny_checkpoint(path: Path, scans: Path, threshold: float = 0.5, seed: int = 0) -> Path:
    """A real ParcelNet checkpoint: untrained weights, BatchNorm statistics measured on the test scans
    (a fresh network's default statistics make every feature ~1e-9 and every score 0.5) and the class
    head scaled, so that scores spread over (0, 1) and differ between scans."""
    import torch

    from parcelscan.datasets.preprocess import PreprocessSpec, prepare_scan
    from parcelscan.datasets.scans.readers import discover_scans
    from parcelscan.model.checkpoint import save_checkpoint
    from parcelscan.model.network import build_model

    torch.manual_seed(seed)
    spec = PreprocessSpec.dual_energy(tile_rows=TILE, tile_cols=TILE)
    tiles = np.concatenate([prepare_scan(ref.load(), spec).tiles for ref in discover_scans([scans])])
    net = build_model("mobilenet_v3_small", spec.in_channels)
    net.train()
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the batch below
            module.reset_running_stats()
    with torch.no_grad():
        net(torch.from_numpy(tiles))
        net.classifier[0].weight.mul_(8.0)
        net.classifier[-1].weight.mul_(8.0)
    net.eval()
    return save_checkpoint(path, {
        "arch": "mobilenet_v3_small", "in_channels": spec.in_channels, "model": net.state_dict(), "ema": None,
        "optimizer": None, "scheduler": None, "epoch": 0, "config": {}, "preprocessing": spec.to_dict(),
        "threshold": threshold, "target_pfa": 0.01, "temperature": 1.0,
        "metrics": {"note": "untrained test model"}, "data_fingerprint": "test-fixture", "git_commit": "test",
        "created": "2026-01-01T00:00:00+00:00", "name": "tiny-test", "version": "1"})


def build_all(workdir: Path) -> dict[str, object]:
    """Scans + checkpoint + exported model, once per process. Returns paths and the export result."""
    if "model" in _CACHE:
        return _CACHE
    from parcelscan.model.export import export_checkpoint

    scans = workdir / "scans"
    ids = write_scans(scans)
    checkpoint = tiny_checkpoint(workdir / "tiny.pt", scans)
    result = export_checkpoint(checkpoint, workdir / "tiny.onnx", data=scans, log=lambda _line: None)
    _CACHE.update({"scans": scans, "ids": ids, "checkpoint": checkpoint, "model": result.path, "export": result,
                   "workdir": workdir})
    return _CACHE


def scan_scores(model_path: Path, scans: Path) -> dict[str, float]:
    """Scores per scan id with threshold 1.0 (everything that scores is not suspect by score)."""
    from parcelscan.inference.inspector import Inspector

    inspector = Inspector(model_path, threshold=1.0)
    from parcelscan.datasets.scans.readers import discover_scans

    return {v.scan_id: v.score for v in inspector.inspect_many(discover_scans([scans]))}


def verdict_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]
