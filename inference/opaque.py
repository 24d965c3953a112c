"""The shield alarm: where the beam did not get through, nothing behind can be seen, so never "clear".

Real screening systems raise a dense-object alarm on such regions; a CNN that scores "clear" has simply
seen nothing, which is not the same as seeing that nothing is there. A pixel is *opaque* when its
high-energy transmission is at most ``OPAQUE_GREY_LEVELS`` of 65535 after a 3×3 mean (noise must not
break a region up; the one-pixel rim the mean erodes is grown back): that is A_high ≥ 8.0, the level
at which the operator image is painted black (``pseudocolor.OPAQUE_A_HIGH``) and at which, under
the default profile, about 7 of 20,000 air quanta per pixel reach the detector — fewer than its
electronic noise (4 quanta rms) can resolve. (40 mm of steel reaches it at 140 kV; 30 mm does not.)

An alarm needs one connected opaque region of at least ``MIN_OPAQUE_AREA_CM2`` (4 cm², a palm-sized
sachet of powder seen flat) that is also at least ``MIN_OPAQUE_WIDTH_MM`` wide everywhere it counts
(a morphological opening removes thin structures — a dead detector channel, the rim of a metal
object — that could not hide a concealment). Areas are in cm² from the scan's own pixel pitch
(sidecar ``pixel_pitch_mm``, default 1.0 mm, square pixels assumed).

Pseudo-colour (RGB) scans: the operator image paints opaque pixels black, so there a pixel is opaque
when its brightest channel is at most ``OPAQUE_RGB_LEVEL`` after the same 3×3 mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from parcelscan.datasets.pseudocolor import OPAQUE_A_HIGH

OPAQUE_GREY_LEVELS = round(65535 * math.exp(-OPAQUE_A_HIGH))  # 22 of 65535
OPAQUE_RGB_LEVEL = 16
MIN_OPAQUE_AREA_CM2 = 4.0
MIN_OPAQUE_WIDTH_MM = 5.0
DEFAULT_PITCH_MM = 1.0


@dataclass
class OpaqueResult:
    """The largest qualifying opaque region (cm²), all of them together, and their mask (scan pixels)."""

    largest_cm2: float
    total_cm2: float
    regions: int
    mask: np.ndarray  # bool (H, W): pixels of qualifying regions
    pitch_mm: float

    @property
    def alarm(self) -> bool:
        return self.regions > 0

    def reason(self) -> str:
        return (f"shield alarm: opaque region {self.largest_cm2:.1f} cm² (≥ {MIN_OPAQUE_AREA_CM2:g} cm²; "
                f"high-energy transmission ≤ {OPAQUE_GREY_LEVELS}/65535 — the beam did not get through, "
                f"what lies behind cannot be seen)")


def scan_pitch_mm(meta: dict) -> float:
    """The scan's pixel pitch from its sidecar, or the station default; nonsense values fall back too."""
    value = meta.get("pixel_pitch_mm", DEFAULT_PITCH_MM) if isinstance(meta, dict) else DEFAULT_PITCH_MM
    try:
        pitch = float(value)
    except (TypeError, ValueError):
        return DEFAULT_PITCH_MM
    return pitch if math.isfinite(pitch) and 0.01 <= pitch <= 100.0 else DEFAULT_PITCH_MM


def _smoothed_at_most(image: np.ndarray, level: int) -> np.ndarray:
    """Pixels whose 3×3 mean is ≤ ``level``, grown back by the one-pixel rim the mean erodes."""
    import cv2

    core = cv2.blur(np.ascontiguousarray(image), (3, 3), borderType=cv2.BORDER_REPLICATE) <= level
    return cv2.dilate(core.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def opaque_mask_dual(high_u16: np.ndarray) -> np.ndarray:
    return _smoothed_at_most(high_u16, OPAQUE_GREY_LEVELS)


def opaque_mask_rgb(rgb_u8: np.ndarray) -> np.ndarray:
    return _smoothed_at_most(np.asarray(rgb_u8).max(axis=-1), OPAQUE_RGB_LEVEL)


def find_opaque_regions(opaque: np.ndarray, pitch_mm: float, min_area_cm2: float = MIN_OPAQUE_AREA_CM2,
                        min_width_mm: float = MIN_OPAQUE_WIDTH_MM) -> OpaqueResult:
    """Connected opaque regions wide and large enough to hide a concealment."""
    import cv2

    opaque_u8 = np.ascontiguousarray(opaque, dtype=np.uint8)
    pixel_cm2 = (pitch_mm / 10.0) ** 2
    empty = OpaqueResult(0.0, 0.0, 0, np.zeros(opaque.shape, dtype=bool), pitch_mm)
    if opaque_u8.sum() * pixel_cm2 < min_area_cm2:  # the common case: nothing to do
        return empty
    width_px = max(1, round(min_width_mm / pitch_mm))
    if width_px > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (width_px, width_px))
        opaque_u8 = cv2.morphologyEx(opaque_u8, cv2.MORPH_OPEN, kernel)
    _count, labels, stats, _ = cv2.connectedComponentsWithStats(opaque_u8, connectivity=8)
    areas_cm2 = stats[1:, cv2.CC_STAT_AREA] * pixel_cm2
    keep = np.flatnonzero(areas_cm2 >= min_area_cm2) + 1
    if keep.size == 0:
        return empty
    mask = np.isin(labels, keep)
    return OpaqueResult(float(areas_cm2[keep - 1].max()), float(areas_cm2[keep - 1].sum()), int(keep.size), mask,
                        pitch_mm)


def check_opaque(scan) -> OpaqueResult:
    """Shield-alarm check of a decoded scan (dual-energy pair or pseudo-colour image)."""
    pitch = scan_pitch_mm(getattr(scan, "meta", {}) or {})
    rgb = getattr(scan, "rgb", None)
    if getattr(scan, "kind", "dual_energy") == "pseudo_color" or (getattr(scan, "high", None) is None
                                                                   and rgb is not None):
        return find_opaque_regions(opaque_mask_rgb(rgb), pitch)
    return find_opaque_regions(opaque_mask_dual(scan.high), pitch)
