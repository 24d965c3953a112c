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
object — that could not hide a concealment). Areas are in cm² from the scan's own pitch, by the one rule
``preprocess.scan_pitch_mm`` (rows along the belt: ``row_pitch_mm``; columns: ``pixel_pitch_mm``), so
the shield check and the model measure the same parcel; a pitch that rule refuses is refused here too.

Pseudo-colour (RGB) scans: the operator image paints opaque pixels black, so there a pixel is opaque
when its brightest channel is at most ``OPAQUE_RGB_LEVEL`` after the same 3×3 mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from parcelscan.datasets.physics.pseudocolor import OPAQUE_A_HIGH
from parcelscan.datasets.preprocess import PreprocessSpec, scan_pitch_mm

OPAQUE_GREY_LEVELS = round(65535 * math.exp(-OPAQUE_A_HIGH))  # 22 of 65535
OPAQUE_RGB_LEVEL = 16
MIN_OPAQUE_AREA_CM2 = 4.0
MIN_OPAQUE_WIDTH_MM = 5.0


@dataclass
class OpaqueResult:
    """The largest qualifying opaque region (cm²), all of them together, and their mask (scan pixels)."""

    largest_cm2: float
    total_cm2: float
    regions: int
    mask: np.ndarray  # bool (H, W): pixels of qualifying regions
    pitch_mm: tuple[float, float]  # (row, column) pitch the areas were measured with

    @property
    def alarm(self) -> bool:
        return self.regions > 0

    def reason(self) -> str:
        return (f"shield alarm: opaque region {self.largest_cm2:.1f} cm² (≥ {MIN_OPAQUE_AREA_CM2:g} cm²; "
                f"high-energy transmission ≤ {OPAQUE_GREY_LEVELS}/65535 — the beam did not get through, "
                f"what lies behind cannot be seen)")


def _smoothed_at_most(image: np.ndarray, level: int) -> np.ndarray:
    """Pixels whose 3×3 mean is ≤ ``level``, grown back by the one-pixel rim the mean erodes."""
    core = cv2.blur(np.ascontiguousarray(image), (3, 3), borderType=cv2.BORDER_REPLICATE) <= level
    return cv2.dilate(core.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def opaque_mask_dual(high_u16: np.ndarray) -> np.ndarray:
    """Opaque pixels of a high-energy image. A 3×3 mean ≤ L needs the pixel itself ≤ 9·L, so only the
    bounding box of such dark pixels (plus the filters' reach) is filtered — most parcels have none."""
    high_u16 = np.asarray(high_u16)
    mask = np.zeros(high_u16.shape, dtype=bool)
    dark = high_u16 <= 9 * OPAQUE_GREY_LEVELS
    rows = np.flatnonzero(dark.any(axis=1))
    if rows.size == 0:
        return mask
    cols = np.flatnonzero(dark.any(axis=0))
    r0, r1 = max(0, rows[0] - 2), min(high_u16.shape[0], rows[-1] + 3)
    c0, c1 = max(0, cols[0] - 2), min(high_u16.shape[1], cols[-1] + 3)
    mask[r0:r1, c0:c1] = _smoothed_at_most(high_u16[r0:r1, c0:c1], OPAQUE_GREY_LEVELS)
    return mask


def opaque_mask_rgb(rgb_u8: np.ndarray) -> np.ndarray:
    return _smoothed_at_most(np.asarray(rgb_u8).max(axis=-1), OPAQUE_RGB_LEVEL)


def find_opaque_regions(opaque: np.ndarray, pitch_mm: float | tuple[float, float],
                        min_area_cm2: float = MIN_OPAQUE_AREA_CM2,
                        min_width_mm: float = MIN_OPAQUE_WIDTH_MM) -> OpaqueResult:
    """Connected opaque regions wide and large enough to hide a concealment (work on their bounding box).
    ``pitch_mm``: (row, column) pitch in mm, or one number for square pixels."""
    row_mm, col_mm = (float(pitch_mm), float(pitch_mm)) if np.isscalar(pitch_mm) else map(float, pitch_mm)
    pixel_cm2 = row_mm * col_mm / 100.0
    mask = np.zeros(opaque.shape, dtype=bool)
    empty = OpaqueResult(0.0, 0.0, 0, mask, (row_mm, col_mm))
    if np.count_nonzero(opaque) * pixel_cm2 < min_area_cm2:  # the common case: nothing to do
        return empty
    width_rows, width_cols = max(1, round(min_width_mm / row_mm)), max(1, round(min_width_mm / col_mm))
    # the bounding box of the opaque pixels, grown by the kernel's reach, so that the opening sees the same
    # neighbourhood (real zeros inside the image, OpenCV's default border outside) as on the whole image
    rows, cols = np.flatnonzero(opaque.any(axis=1)), np.flatnonzero(opaque.any(axis=0))
    margin = max(width_rows, width_cols) + 1
    box = (slice(max(0, rows[0] - margin), rows[-1] + 1 + margin),
           slice(max(0, cols[0] - margin), cols[-1] + 1 + margin))
    opaque_u8 = np.ascontiguousarray(opaque[box], dtype=np.uint8)
    if width_rows > 1 or width_cols > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (width_cols, width_rows))
        opaque_u8 = cv2.morphologyEx(opaque_u8, cv2.MORPH_OPEN, kernel)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(opaque_u8, connectivity=8)
    areas_cm2 = stats[:, cv2.CC_STAT_AREA] * pixel_cm2
    areas_cm2[0] = 0.0  # background
    keep = areas_cm2 >= min_area_cm2
    if not keep.any():
        return empty
    mask[box] = keep[labels]
    return OpaqueResult(float(areas_cm2[keep].max()), float(areas_cm2[keep].sum()), int(keep.sum()), mask,
                        (row_mm, col_mm))


def check_opaque(scan, spec: PreprocessSpec | None = None) -> OpaqueResult:
    """Shield-alarm check of a decoded scan (dual-energy pair or pseudo-colour image), at the pitch
    ``preprocess.scan_pitch_mm`` gives it (``spec``: the model's, for its assumed scan pitch)."""
    pitch = scan_pitch_mm(scan, spec)
    rgb = getattr(scan, "rgb", None)
    if getattr(scan, "kind", "dual_energy") == "pseudo_color" or (getattr(scan, "high", None) is None
                                                                   and rgb is not None):
        return find_opaque_regions(opaque_mask_rgb(rgb), pitch)
    return find_opaque_regions(opaque_mask_dual(scan.high), pitch)
