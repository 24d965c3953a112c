"""Models and scans for the inference benchmarks.

Speed does not depend on what the weights learned, so when no trained model is given (and the shipped
default is not there yet) the benchmarks export the *default architecture* — MobileNetV3-small, three
dual-energy channels, 320 × 320 tiles — with untrained weights through the real ``parcelscan export``
path. Scans come from the project's simulator (``parcelscan.datasets.simulator.generate``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def simulate(out: Path, count: int, seed: int = 11, workers: int = 2) -> Path:
    """``count`` simulated station scans (default profile) in ``out``."""
    from parcelscan.datasets.physics.profile import default_profile
    from parcelscan.datasets.simulator.generate import generate
    from parcelscan.datasets.simulator.parcel import SimConfig

    out.mkdir(parents=True, exist_ok=True)
    generate(SimConfig(default_profile(), seed=seed), out, list(range(count)), workers, progress=False)
    return out


def replicate(source: Path, out: Path, count: int) -> list[str]:
    """Copy the station pairs of ``source`` round-robin under new scan ids until ``count`` exist in ``out``.

    Decoding, preprocessing and inference cost the same whether an image repeats, so 1,000 files made
    from 100 simulated scans measure the station path honestly (the page cache holds both alike)."""
    from parcelscan.datasets.scans.readers import discover_scans

    refs = [ref for ref in discover_scans([source]) if ref.ok and ref.format == "pair"]
    if not refs:
        raise SystemExit(f"no station-format pairs in {source}")
    out.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        ref = refs[i % len(refs)]
        scan_id = f"bench-{i:05d}"
        shutil.copyfile(source / f"{ref.scan_id}_low.png", out / f"{scan_id}_low.png")
        shutil.copyfile(source / f"{ref.scan_id}_high.png", out / f"{scan_id}_high.png")
        sidecar = source / f"{ref.scan_id}.json"
        if sidecar.exists():
            meta = json.loads(sidecar.read_text())
            meta["scan_id"] = scan_id
            meta.get("labels", {}).pop("mask", None)
            (out / f"{scan_id}.json").write_text(json.dumps(meta))
        ids.append(scan_id)
    return ids


def untrained_checkpoint(path: Path, scans: Path, arch: str = "mobilenet_v3_small") -> Path:
    """Untrained weights, BatchNorm statistics measured on real tiles: activations of realistic size.

    (A fresh network's default statistics shrink activations layer by layer into float32 denormals,
    which slow eager PyTorch by an order of magnitude and would make any speed comparison meaningless.)"""
    import numpy as np
    import torch

    from parcelscan.datasets.preprocess import PreprocessSpec, prepare_scan
    from parcelscan.datasets.scans.readers import discover_scans
    from parcelscan.model.checkpoint import save_checkpoint
    from parcelscan.model.network import build_model

    torch.manual_seed(0)
    spec = PreprocessSpec.dual_energy()
    refs = [ref for ref in discover_scans([scans]) if ref.ok][:16]
    tiles = np.concatenate([prepare_scan(ref.load(), spec).tiles for ref in refs])
    net = build_model(arch, spec.in_channels).train()
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average
            module.reset_running_stats()
    with torch.no_grad():
        net(torch.from_numpy(tiles))
    net.eval()
    return save_checkpoint(path, {
        "arch": arch, "in_channels": spec.in_channels, "model": net.state_dict(), "ema": None, "optimizer": None,
        "scheduler": None, "epoch": 0, "config": {}, "preprocessing": spec.to_dict(), "threshold": 0.5,
        "target_pfa": 0.01, "temperature": 1.0, "metrics": {}, "data_fingerprint": "benchmark-untrained",
        "git_commit": "", "created": "", "name": f"untrained-{arch}", "version": "0"})


def benchmark_model(workdir: Path, scans: Path, model: str | None) -> tuple[Path, str]:
    """(model path, description): the given model, the shipped default, or an untrained default-arch export."""
    from parcelscan.model.registry import SHIPPED_DEFAULT

    if model:
        return Path(model), f"{model} (given)"
    if SHIPPED_DEFAULT.is_file():
        return SHIPPED_DEFAULT, f"{SHIPPED_DEFAULT.name} (shipped default)"
    from parcelscan.model.export import export_checkpoint

    checkpoint = untrained_checkpoint(workdir / "untrained.pt", scans)
    result = export_checkpoint(checkpoint, workdir / "untrained.onnx", data=scans, log=lambda _line: None)
    return result.path, "untrained mobilenet_v3_small, 3 channels, 320x320 tiles (no trained default yet)"
