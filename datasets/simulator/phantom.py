"""An ASTM F792-like test object: step wedges, material discs and a steel penetration step.

Every region has a stated material and areal density (g/cm²), so the scan can be checked against the
physics: the discs are sized to roughly equal high-energy attenuation (A_high ≈ 1), where the ratio
R = A_low/A_high orders materials by effective Z — and where rare-earth oxides, through their K-edges,
fall *below* iron. The phantom lies on a 3 mm cardboard tray that spans the scan.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import Material, get_material
from parcelscan.datasets.physics.pseudocolor import pseudocolor_from_pair
from parcelscan.datasets.scans.scanfile import Scan, write_bytes_atomic, write_station_scan, write_tiff

PHANTOM_ROWS = 360
TRAY = ("cardboard", 0.21)  # 3 mm cardboard at 0.70 g/cm³


@dataclass(frozen=True)
class PhantomRegion:
    """One uniform region: a box (rows, columns; end exclusive) of one material at one areal density.

    ``kind`` is ``wedge_step``, ``disc`` or ``penetration_step``; ``box`` is the measuring box (the
    inner part of a disc, away from its blurred edge).
    """

    name: str
    kind: str
    material: str
    areal_density_g_cm2: float
    box: tuple[int, int, int, int]  # row0, col0, row1, col1


# (material, areal density g/cm²) of the discs: chosen for A_high ≈ 1 under postal-dual-140
DISCS: tuple[tuple[str, float], ...] = (
    ("water", 5.5), ("NaCl", 4.4), ("CaCO3", 4.2), ("SiO2", 5.3), ("Fe", 1.94),
    ("Nd2O3", 0.30), ("Dy2O3", 0.245), ("CeO2", 0.345), ("Pb", 0.245), ("W", 0.22),
)
WEDGES: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("acetal", (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)),
    ("Al", (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)),
    ("steel", (0.4, 0.8, 1.6, 3.2, 6.4, 12.8)),
)
PENETRATION_STEEL_MM = (5, 10, 15, 20, 25, 30)


def build_phantom(channels: int = 640) -> tuple[list[Material], np.ndarray, list[PhantomRegion]]:
    """Materials, their (M, rows, channels) areal-density maps and the region list."""
    if channels < 320:
        raise ValueError("the phantom needs at least 320 detector channels")
    names = ["cardboard"] + [m for m, _ in WEDGES] + [m for m, _ in DISCS]
    names = list(dict.fromkeys(names))  # unique, ordered
    materials = [get_material(n) for n in names]
    index = {n: i for i, n in enumerate(names)}
    areal = np.zeros((len(names), PHANTOM_ROWS, channels), dtype=np.float32)
    regions: list[PhantomRegion] = []
    margin = 20
    areal[index["cardboard"], margin:PHANTOM_ROWS - margin, 8:channels - 8] = TRAY[1]

    # step wedges: three bands of six steps each, rows 30-130
    step_width = (channels - 2 * 40) // 18
    col = 40
    for material, steps in WEDGES:
        for k, density in enumerate(steps):
            areal[index[material], 30:130, col:col + step_width] += density
            regions.append(PhantomRegion(f"{material} step {k + 1}", "wedge_step", material, density,
                                         (40, col + 4, 120, col + step_width - 4)))
            col += step_width

    # discs, rows 150-250, two rows of five
    yy, xx = np.mgrid[0:PHANTOM_ROWS, 0:channels]
    radius = 20
    spacing = (channels - 80) // 5
    for k, (material, density) in enumerate(DISCS):
        cy = 175 if k < 5 else 235
        cx = 40 + spacing // 2 + (k % 5) * spacing
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        areal[index[material]][inside] += density
        regions.append(PhantomRegion(f"{material} disc", "disc", material, density,
                                     (cy - 10, cx - 10, cy + 10, cx + 10)))

    # steel penetration step, rows 270-330
    step_width = (channels - 80) // len(PENETRATION_STEEL_MM)
    for k, thickness_mm in enumerate(PENETRATION_STEEL_MM):
        col = 40 + k * step_width
        density = round(thickness_mm / 10.0 * get_material("steel").density_g_cm3, 4)
        areal[index["steel"], 275:330, col:col + step_width] += density
        regions.append(PhantomRegion(f"steel {thickness_mm} mm", "penetration_step", "steel", density,
                                     (285, col + 6, 320, col + step_width - 6)))
    return materials, areal, regions


def regions_to_json(regions: list[PhantomRegion]) -> list[dict]:
    return [asdict(r) | {"box": {"row0": r.box[0], "col0": r.box[1], "row1": r.box[2], "col1": r.box[3]}}
            for r in regions]


def write_phantom(out_dir, profile, seed: int = 0) -> dict:
    """Simulate the phantom under ``profile`` and write it in the station format plus ``phantom.json``."""
    out_dir = Path(out_dir)
    materials, areal, regions = build_phantom(profile.channels)
    low, high = forward_model(profile).scan(materials, areal, np.random.default_rng(seed))
    meta = {"profile": profile.name, "pixel_pitch_mm": profile.pixel_pitch_mm, "source": "simulated",
            "labels": {"label": "clear", "scenario": "phantom"}}
    scan = Scan("phantom", low, high, meta)
    files = write_station_scan(scan, out_dir, rgb=pseudocolor_from_pair(low, high, profile))
    write_tiff(scan, out_dir / "phantom.tiff")
    files["tiff"] = "phantom.tiff"
    description = {"scan_id": "phantom", "profile": profile.to_dict(), "seed": seed, "files": files,
                   "regions": regions_to_json(regions)}
    write_bytes_atomic(out_dir / "phantom_regions.json", (json.dumps(description, indent=1) + "\n").encode())
    return description
