"""How fragile is a model's score to what a real scanner does differently? Perturb each scan's model tiles at test time
(``datasets.tile_augment``, one component at a time) and print ROC AUC and Pd at Pfa 1 % over the non-twin clear scans.

The components: a lower dose, a softer detector, belt stretch, the calibration residuals ``augment`` allows, and a
dark-offset residual of a few grey levels (of 65,535) per channel — with and without clamping both channels at the
opaque level (A ≤ 8, ``pseudocolor.OPAQUE_A_HIGH``) first. Below that level a reading is electronic noise and dark
residual; a model that reads meaning into it will not survive a real scanner's dark calibration (README, model
cards, "Session 10").

    python examples/dark_end.py MODEL.onnx DATA_DIR

Each perturbation is drawn per scan from ``numpy.random.default_rng([7, scan index])``, so a run is repeatable.
"""

from __future__ import annotations

import argparse
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from parcelscan.datasets.augment import CalibrationResiduals
from parcelscan.datasets.datatools import load_record_scan
from parcelscan.datasets.manifest import read_manifest
from parcelscan.datasets.physics.pseudocolor import OPAQUE_A_HIGH
from parcelscan.datasets.preprocess import PreparedScan, PreprocessSpec, prepare_scan
from parcelscan.datasets.tile_augment import TileAugment, TileAugmentConfig
from parcelscan.datasets.torch_dataset import nominal_quanta
from parcelscan.model.operating_point import threshold_at_pfa
from parcelscan.model.session import open_session
from parcelscan.training.metrics import roc_auc

OFF = dict(gain_p=0.0, noise_p=0.0, blur_p=0.0, stretch_p=0.0)
GREY = 1.0 / 65535.0


def dark_offset(grey_levels: float) -> TileAugmentConfig:
    residual = CalibrationResiduals(air_gain_jitter=0.0, attenuation_gain_jitter=0.0, ratio_drift=0.0,
                                    offset_jitter=grey_levels * GREY)
    return TileAugmentConfig(**(OFF | {"gain_p": 1.0, "calibration": residual}))


ARMS: list[tuple[str, TileAugmentConfig | None, bool]] = [
    ("none", None, False),
    ("dose down to 3,000 quanta", TileAugmentConfig(**(OFF | {"noise_p": 1.0})), False),
    ("blur sigma <= 0.5 px", TileAugmentConfig(**(OFF | {"blur_p": 1.0})), False),
    ("belt stretch x0.85-1.15", TileAugmentConfig(**(OFF | {"stretch_p": 1.0})), False),
    ("calibration residuals (defaults)", TileAugmentConfig(**(OFF | {"gain_p": 1.0})), False),
    *((f"dark offset +-{grey:g} grey", dark_offset(grey), False) for grey in (2, 6.5, 20)),
    ("clamped at the opaque level", None, True),
    *((f"clamped, dark offset +-{grey:g} grey", dark_offset(grey), True) for grey in (6.5, 20)),
]


def perturbed_tiles(prepared: PreparedScan, quanta: float, augment: TileAugment | None,
                    rng: np.random.Generator) -> np.ndarray:
    if augment is None:
        return prepared.tiles
    binning = prepared.scale[0] * prepared.scale[1]
    return np.stack([augment(tile, None, rng, scan_pixels_per_model_pixel=binning, nominal_quanta=quanta,
                             content_rows=prepared.content_shape[0] - origin[0],
                             content_cols=prepared.content_shape[1] - origin[1])[0]
                     for tile, origin in zip(prepared.tiles, prepared.tile_origins, strict=True)])


def arm_augment(spec: PreprocessSpec, config: TileAugmentConfig | None, clamp: bool) -> TileAugment | None:
    """The arm's perturbation; clamping is the preprocessing's own ``attenuation_ceiling`` at the opaque level,
    applied when ``TileAugment`` recomputes the channels (with every step off it only recomputes them; a no-op for
    a model trained with the ceiling)."""
    if not clamp:
        return None if config is None else TileAugment(spec, config)
    clamped = dataclasses.replace(spec, attenuation_ceiling=OPAQUE_A_HIGH)
    return TileAugment(clamped, config or TileAugmentConfig(**OFF))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    args = parser.parse_args()
    session = open_session(args.model, threads=2)
    spec = PreprocessSpec.from_dict(session.metadata.preprocessing)
    records = read_manifest(args.data / "manifest.jsonl")

    def prepare(record):
        scan = load_record_scan(record, args.data)
        return prepare_scan(scan, spec), nominal_quanta(scan.meta, record.provenance)

    with ThreadPoolExecutor(2) as pool:
        prepared = list(pool.map(prepare, records))
    suspect = np.array([r.label == "suspect" for r in records])
    non_twin_clear = np.array([r.label == "clear" and not r.twin_of for r in records])
    scored = suspect | non_twin_clear
    print(f"{args.model.name} on {args.data}: {int(suspect.sum())} suspects, "
          f"{int(non_twin_clear.sum())} non-twin clears")
    print(f"{'perturbation':36s} {'AUC':>7s} {'Pd at Pfa 1 %':>14s}")
    for name, config, clamp in ARMS:
        augment = arm_augment(spec, config, clamp)
        scores = np.array([float(session.run(perturbed_tiles(p, quanta, augment,
                                                             np.random.default_rng([7, index])))[0].max())
                           for index, (p, quanta) in enumerate(prepared)])
        threshold = threshold_at_pfa(scores[non_twin_clear], 0.01)
        pd = float((scores[suspect] >= threshold).mean())
        print(f"{name:36s} {roc_auc(suspect[scored], scores[scored]):7.4f} {100 * pd:13.1f} %", flush=True)


if __name__ == "__main__":
    main()
