"""Pictures for people: a scan file → its pseudo-colour image, with the labelled mask outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from parcelscan.datasets.profile import DEFAULT_PROFILE_NAME, PROFILES_DIR, load_profile
from parcelscan.datasets.pseudocolor import overlay_mask, pseudocolor_from_pair
from parcelscan.datasets.scanfile import Scan, read_station_pair, read_tiff
from parcelscan.errors import ScanReadError


def read_any_station_scan(path: Path) -> Scan:
    """A station-format scan from any of its files (pair, TIFF, sidecar)."""
    path = Path(path)
    name = path.name
    for suffix in ("_low.png", "_high.png", "_rgb.png", ".json"):
        if name.endswith(suffix):
            scan_id = name[: -len(suffix)]
            if (path.parent / f"{scan_id}_low.png").exists():
                return read_station_pair(path.parent / f"{scan_id}_low.png")
            if (path.parent / f"{scan_id}.tiff").exists():
                return read_tiff(path.parent / f"{scan_id}.tiff")
            raise ScanReadError(f"{path}: no image pair or TIFF found for scan {scan_id!r}")
    if path.suffix.lower() in (".tif", ".tiff"):
        return read_tiff(path)
    if not path.exists():
        raise ScanReadError(f"{path}: no such file")
    raise ScanReadError(f"{path}: not a station-format scan (<id>_low.png, <id>.tiff or <id>.json)")


def profile_for(scan: Scan, profile_path: str | None = None):
    """The profile named by the user, else the scan's own shipped profile, else the default."""
    if profile_path:
        return load_profile(profile_path)
    name = scan.meta.get("profile")
    if isinstance(name, str) and (PROFILES_DIR / f"{name}.toml").exists():
        return load_profile(name)
    return load_profile(DEFAULT_PROFILE_NAME)


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.shape[:2] != shape:
        raise ScanReadError(f"{path}: mask unreadable or not the scan's size {shape}")
    return mask if mask.ndim == 2 else mask[..., 0]


def render_scan_file(path: Path, mask_path: Path | None = None, outline_mask: bool = True,
                     profile_path: str | None = None) -> np.ndarray:
    scan = read_any_station_scan(path)
    rgb = pseudocolor_from_pair(scan.low, scan.high, profile_for(scan, profile_path))
    if outline_mask:
        if mask_path is None:
            mask_name = (scan.meta.get("labels") or {}).get("mask")
            directory = Path(path).parent
            mask_path = directory / mask_name if mask_name else None
        if mask_path is not None and mask_path.exists():
            rgb = overlay_mask(rgb, read_mask(mask_path, scan.shape))
    return rgb
