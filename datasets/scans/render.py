"""Pictures for people: a scan file → its pseudo-colour image, with the labelled mask outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parcelscan.datasets.physics.profile import DEFAULT_PROFILE_NAME, PROFILES_DIR, load_profile
from parcelscan.datasets.physics.pseudocolor import overlay_mask, pseudocolor_from_pair
from parcelscan.datasets.scans.readers import load_scan
from parcelscan.datasets.scans.scanfile import Scan, check_file, decode_png, png_header
from parcelscan.errors import ScanReadError


def read_any_station_scan(path: Path) -> Scan:
    """Kept for callers of the first API: every format now goes through ``readers.load_scan``."""
    return load_scan(path)


def profile_for(scan: Scan, profile_path: str | None = None):
    """The profile named by the user, else the scan's own shipped profile, else the default."""
    if profile_path:
        return load_profile(profile_path)
    name = scan.meta.get("profile")
    if isinstance(name, str) and (PROFILES_DIR / f"{name}.toml").exists():
        return load_profile(name)
    return load_profile(DEFAULT_PROFILE_NAME)


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
    if scan.kind == "pseudo_color":
        rgb = scan.rgb  # already the operator image: shown as the scanner exported it
    else:
        rgb = pseudocolor_from_pair(scan.low, scan.high, profile_for(scan, profile_path))
    if outline_mask:
        if mask_path is None:
            labels = scan.meta.get("labels")
            mask_name = labels.get("mask") if isinstance(labels, dict) else None
            mask_path = Path(path).parent / mask_name if isinstance(mask_name, str) and mask_name else None
        if mask_path is not None and mask_path.exists():
            rgb = overlay_mask(rgb, read_mask(mask_path, scan.shape))
    return rgb
