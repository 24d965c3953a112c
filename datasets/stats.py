"""``parcelscan data stats DIR``: what a data set holds, from the manifest and image headers only (fast)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import tifffile

from parcelscan.datasets.datatools import format_table, record_path
from parcelscan.datasets.manifest import SPLITS, ManifestRecord, manifest_path, read_manifest
from parcelscan.datasets.preprocess import PreprocessSpec, model_shape, tile_layout
from parcelscan.datasets.scans.scanfile import png_header, read_sidecar
from parcelscan.errors import ScanReadError


def _shape(record: ManifestRecord, root: Path) -> tuple[int, int] | None:
    name = record.files.get("low") or record.files.get("rgb")
    try:
        if name and name.lower().endswith(".png"):
            width, height, _, _ = png_header(record_path(root, name))
            return height, width
        if record.files.get("tiff"):
            with tifffile.TiffFile(record_path(root, record.files["tiff"])) as tiff:
                return tuple(tiff.pages[0].shape[:2])  # type: ignore[return-value]
    except (ScanReadError, OSError, ValueError):
        return None
    return None


def _pitch(record: ManifestRecord, root: Path, default: float) -> float:
    if not record.files.get("sidecar"):
        return default
    try:
        value = read_sidecar(record_path(root, record.files["sidecar"])).get("pixel_pitch_mm", default)
    except ScanReadError:
        return default
    return float(value) if isinstance(value, (int, float)) and value > 0 else default


def dataset_stats(directory: Path) -> str:
    path = manifest_path(Path(directory))
    records = read_manifest(path)
    root = path.parent
    lines = [f"data stats: {directory} ({len(records)} scans)", ""]
    splits = [s for s in (*SPLITS, None) if any(r.split == s for r in records)]
    names = [s or "(none)" for s in splits]

    def counter_table(title: str, key) -> None:
        counts = {s: Counter(key(r) for r in records if r.split == s) for s in splits}
        values = sorted({v for c in counts.values() for v in c}, key=str)
        rows = [[str(v)] + [counts[s][v] for s in splits] + [sum(counts[s][v] for s in splits)] for v in values]
        lines.append(format_table([title, *names, "all"], rows))
        lines.append("")

    counter_table("label", lambda r: r.label)
    counter_table("scenario", lambda r: r.scenario if r.label == "suspect" else "(clear)")
    counter_table("material", lambda r: r.material or "-")
    counter_table("lookalike", lambda r: r.lookalike or "-")
    counter_table("source/kind", lambda r: f"{r.source}/{r.kind}")

    # sizes and tiles under the default 2 mm / 320 px policy (the spec's geometry, no physics needed)
    spec = PreprocessSpec.pseudo_color()  # geometry only: same pitch and tile defaults as dual-energy
    rows_px, cols_px, tiles, unreadable = [], [], [], 0
    for record in records:
        shape = _shape(record, root)
        if shape is None:
            unreadable += 1
            continue
        pitch = _pitch(record, root, spec.assumed_scan_pitch_mm)
        rows_px.append(shape[0])
        cols_px.append(shape[1])
        origins, _ = tile_layout(model_shape(shape, (pitch, pitch), spec), spec)
        tiles.append(len(origins))
    if rows_px:
        table = []
        for name, values in (("rows (belt)", rows_px), ("columns (channels)", cols_px),
                             (f"tiles of {spec.tile_rows}x{spec.tile_cols} at {spec.pixel_pitch_mm} mm", tiles)):
            v = np.asarray(values)
            table.append([name, int(v.min()), int(np.median(v)), int(v.max())])
        lines.append(format_table(["size", "min", "median", "max"], table))
        lines.append(f"total model tiles: {sum(tiles)}")
    if unreadable:
        lines.append(f"{unreadable} scan(s) with unreadable headers (run `parcelscan data check`)")
    return "\n".join(lines)
