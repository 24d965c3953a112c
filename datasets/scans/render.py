"""Pictures for people: a scan file → its pseudo-colour image, with the labelled mask outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parcelscan.datasets.physics.pseudocolor import overlay_mask
from parcelscan.datasets.scans.colour import pseudocolor_of
from parcelscan.datasets.scans.readers import load_scan
from parcelscan.datasets.scans.scanfile import check_file, decode_png, png_header
from parcelscan.errors import ScanReadError


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """An 8-bit label mask PNG of the scan's size (header checked before decoding)."""
    path = check_file(Path(path))
    width, height, _, _ = png_header(path)
    if (height, width) != tuple(shape):
        raise ScanReadError(f"{path}: mask is {width}x{height}, not the scan's size {shape[1]}x{shape[0]}")
    mask = decode_png(path, width, height)
    return mask if mask.ndim == 2 else mask[..., 0]


def render_scan_file(path: Path, mask_path: Path | None = None, outline_mask: bool = True,
                     profile_path: str | None = None) -> np.ndarray:
    scan = load_scan(path)
    # a pseudo-colour scan is already the operator image: shown as the scanner exported it
    rgb = scan.rgb if scan.kind == "pseudo_color" else pseudocolor_of(scan, profile_path)
    if outline_mask:
        if mask_path is None:
            labels = scan.meta.get("labels")
            mask_name = labels.get("mask") if isinstance(labels, dict) else None
            mask_path = Path(path).parent / mask_name if isinstance(mask_name, str) and mask_name else None
        if mask_path is not None and mask_path.exists():
            rgb = overlay_mask(rgb, read_mask(mask_path, scan.shape))
    return rgb
