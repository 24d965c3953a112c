"""Simulated parcels and hand-written verdict lines, for the review app's tests, demo and screenshot.

The scans are real physics (forward model → noisy 16-bit station files). The verdict lines are *not*
model output: they follow the Verdict contract, their heatmaps are the concealment region blurred by
hand (drawn with the station's own overlay code, ``inference.heatmap``), and their ``model`` field
says so (``name: handwritten-sample``). ``parcelscan inspect`` produces the real thing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.physics.pseudocolor import pseudocolor_from_pair
from parcelscan.datasets.scans.scanfile import Scan, write_png, write_station_scan
from parcelscan.inference.heatmap import write_heatmap

SAMPLE_MODEL = {"name": "handwritten-sample", "version": "0",
                "sha256": hashlib.sha256(b"parcelscan review sample verdicts").hexdigest()}


@dataclass(frozen=True)
class SampleParcel:
    scan_id: str
    contents: str  # one of the scene kinds below
    verdict: str
    score: float | None
    station: str
    scanned_at: str
    reasons: tuple[str, ...] = ()


SAMPLES: tuple[SampleParcel, ...] = (
    SampleParcel("PX-0001", "nd_tile_adhesive", "suspect", 0.97, "LHR-2", "2026-03-02T08:14:05Z",
                 ("high-Z powder below the iron line",)),
    SampleParcel("PX-0002", "dy_slurry_bottle", "suspect", 0.88, "FRA-1", "2026-03-02T09:40:11Z"),
    SampleParcel("PX-0003", "steel_block", "manual_inspection", 0.41, "LHR-2", "2026-03-03T11:02:47Z",
                 ("opaque region 62 cm²",)),
    SampleParcel("PX-0004", "ceramic_tiles", "suspect", 0.74, "FRA-1", "2026-03-03T13:25:30Z"),
    SampleParcel("PX-0005", "books_clothes", "clear", 0.05, "LHR-2", "2026-03-04T07:51:12Z"),
    SampleParcel("PX-0006", "nd_bag_tools", "suspect", 0.81, "LHR-2", "2026-03-04T10:33:59Z"),
)


def _ellipse(shape: tuple[int, int], centre: tuple[int, int], axes: tuple[int, int], angle: float = 0) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1)
    return mask.astype(bool)


def _cylinder(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Path length (cm) through a bottle lying along the columns: a circular chord across the rows."""
    out = np.zeros(shape, np.float32)
    r0, r1 = rows
    radius = (r1 - r0) / 2
    centre = (r0 + r1) / 2
    rr = np.arange(shape[0], dtype=np.float32)[:, None]
    chord_mm = 2 * np.sqrt(np.clip(radius**2 - (rr - centre) ** 2, 0, None))
    out[:, cols[0]:cols[1]] = np.broadcast_to(chord_mm / 10.0, (shape[0], cols[1] - cols[0]))
    return out


def sample_scene(contents: str, rows: int, cols: int):
    """(materials, areal densities (M, rows, cols) g/cm², the region a heatmap should point at)."""
    shape = (rows, cols)
    layers: list[tuple[str, np.ndarray]] = []
    box = np.zeros(shape, np.float32)
    r0, r1, c0, c1 = int(rows * 0.08), int(rows * 0.92), int(cols * 0.06), int(cols * 0.94)
    box[r0:r1, c0:c1] = 0.42  # two 3 mm cardboard walls
    box[r0:r0 + 6, c0:c1] += 2.0  # side walls seen edge-on
    box[r1 - 6:r1, c0:c1] += 2.0
    box[r0:r1, c0:c0 + 6] += 2.0
    box[r0:r1, c1 - 6:c1] += 2.0
    layers.append(("cardboard", box))
    textile = np.zeros(shape, np.float32)
    textile[_ellipse(shape, (cols // 2, rows // 2), (int(cols * 0.38), int(rows * 0.36)))] = 0.6
    layers.append(("textile", textile))
    target = np.zeros(shape, bool)

    def add(material: str, areal: np.ndarray) -> None:
        layers.append((material, areal.astype(np.float32)))

    if contents == "nd_tile_adhesive":
        bag = _ellipse(shape, (int(cols * 0.38), int(rows * 0.52)), (int(cols * 0.16), int(rows * 0.2)), 15)
        add("Nd2O3:0.15+tile adhesive:0.85", bag * 2.6)
        target = bag
        tool = np.zeros(shape, np.float32)
        tool[int(rows * 0.25):int(rows * 0.3), int(cols * 0.55):int(cols * 0.85)] = 0.8
        add("steel", tool)
    elif contents == "dy_slurry_bottle":
        path_cm = _cylinder(shape, (int(rows * 0.3), int(rows * 0.58)), (int(cols * 0.2), int(cols * 0.7)))
        add("Dy2O3:0.05+water:0.95", path_cm * 1.04)
        add("PET", (path_cm > 0) * 0.08)
        target = path_cm > 0
        other = _cylinder(shape, (int(rows * 0.64), int(rows * 0.86)), (int(cols * 0.25), int(cols * 0.75)))
        add("water", other * 1.0)
    elif contents == "steel_block":
        block = np.zeros(shape, np.float32)
        block[int(rows * 0.3):int(rows * 0.6), int(cols * 0.3):int(cols * 0.55)] = 70.0
        add("steel", block)
        target = block > 0
    elif contents == "ceramic_tiles":
        tiles = np.zeros(shape, np.float32)
        for k in range(3):
            tiles[int(rows * (0.2 + 0.22 * k)):int(rows * (0.38 + 0.22 * k)), int(cols * 0.2):int(cols * 0.6)] = 1.9
        add("ceramic tile", tiles)
        target = tiles > 0
        tool = np.zeros(shape, np.float32)
        tool[int(rows * 0.3):int(rows * 0.7), int(cols * 0.7):int(cols * 0.76)] = 1.6
        add("steel", tool)
    elif contents == "books_clothes":
        books = np.zeros(shape, np.float32)
        books[int(rows * 0.2):int(rows * 0.7), int(cols * 0.15):int(cols * 0.5)] = 3.5
        add("paper", books)
    elif contents == "nd_bag_tools":
        bag = _ellipse(shape, (int(cols * 0.65), int(rows * 0.45)), (int(cols * 0.1), int(rows * 0.12)))
        add("Nd2O3", bag * 0.35)
        target = bag
        for k in range(3):
            tool = np.zeros(shape, np.float32)
            tool[int(rows * (0.2 + 0.2 * k)):int(rows * (0.24 + 0.2 * k)), int(cols * 0.12):int(cols * 0.48)] = 1.2
            add("steel", tool)
    else:
        raise ValueError(f"unknown sample contents {contents!r}")
    names = list(dict.fromkeys(name for name, _ in layers))
    areal = np.zeros((len(names), rows, cols), np.float32)
    for name, layer in layers:
        areal[names.index(name)] += layer
    return [get_material(name) for name in names], areal, target


def heatmap_from_region(region: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    """A hand-made heatmap in [0, 1]: the region blurred, scaled to ``peak``, a little noise."""
    heat = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 6.0)
    if heat.max() > 0:
        heat = heat / heat.max() * peak
    heat += rng.uniform(0, 0.04, heat.shape).astype(np.float32)
    return np.clip(heat, 0.0, 1.0)


def write_heatmap_file(path: Path, scan, heat: np.ndarray, heatmap_format: str) -> None:
    """``station``: the overlay picture ``parcelscan inspect --heatmaps`` writes (same code);
    ``probability``: a single-channel 8-bit probability map at half the scan's size."""
    if heatmap_format == "station":
        write_heatmap(path, scan, heat)
    elif heatmap_format == "probability":
        small = cv2.resize(heat, (heat.shape[1] // 2, heat.shape[0] // 2), interpolation=cv2.INTER_AREA)
        write_png(path, np.clip(np.rint(small * 255), 0, 255).astype(np.uint8))
    else:
        raise ValueError(f"unknown heatmap format {heatmap_format!r}")


def write_sample_results(out_dir: Path, rows: int = 360, cols: int = 480, seed: int = 0,
                         samples: tuple[SampleParcel, ...] = SAMPLES, heatmap_format: str = "station") -> Path:
    """Write station scans and ``results.jsonl`` (Verdict lines with absolute paths) into ``out_dir``."""
    out_dir = Path(out_dir).resolve()
    scans_dir = out_dir / "scans"
    heat_dir = out_dir / "heatmaps"
    scans_dir.mkdir(parents=True, exist_ok=True)
    heat_dir.mkdir(parents=True, exist_ok=True)
    profile = default_profile()
    model = forward_model(profile)
    lines = []
    for k, sample in enumerate(samples):
        rng = np.random.default_rng([seed, k])
        materials, areal, region = sample_scene(sample.contents, rows, cols)
        low, high = model.scan(materials, areal, rng)
        scan = Scan(sample.scan_id, low, high, {"profile": profile.name, "pixel_pitch_mm": profile.pixel_pitch_mm,
                                                 "station": sample.station, "scanned_at": sample.scanned_at})
        files = write_station_scan(scan, scans_dir, rgb=pseudocolor_from_pair(low, high, profile))
        heatmap = None
        if sample.verdict == "suspect" and sample.score is not None:
            heatmap = heat_dir / f"{sample.scan_id}_heatmap.png"
            write_heatmap_file(heatmap, scan, heatmap_from_region(region, sample.score, rng), heatmap_format)
        lines.append({
            "scan_id": sample.scan_id,
            "inputs": [str(scans_dir / files["low"]), str(scans_dir / files["high"])],
            "verdict": sample.verdict, "score": sample.score, "threshold": 0.5, "model": SAMPLE_MODEL,
            "heatmap": str(heatmap) if heatmap else None, "error": None, "latency_ms": None,
            "station": sample.station, "scanned_at": sample.scanned_at, "reasons": list(sample.reasons),
            "provider": None,
        })
    results = out_dir / "results.jsonl"
    results.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines), encoding="utf-8")
    return results
