"""The shield alarm: where the beam did not get through, nothing behind can be seen, so never "clear".

Real screening systems raise a dense-object alarm on such regions; a CNN that scores "clear" has simply
seen nothing, which is not the same as seeing that nothing is there.

**Opaque pixels, by input kind.** Dual-energy: a pixel is opaque when its high-energy transmission is at
most ``ShieldRule.opaque_grey_levels`` of 65535 after a 3×3 mean: 22 = 65535·e^−8, A_high ≥ 8.0, the level
at which the operator image is painted black (``pseudocolor.OPAQUE_A_HIGH``) and at which, under the default
profile, about 7 of 20,000 air quanta per pixel reach the detector — fewer than its electronic noise (4 quanta
rms) can resolve. Under postal-dual-140 that is 31 mm of steel, 35 mm of cast iron, 23 mm of copper, 24 mm
of brass, 2.5 mm of lead, 1.8 mm of tungsten carbide (30-34 mm of steel over the ±10 kV variants; scanner
makers quote 31-37 mm of steel penetration at 140-160 kV). The mean is the noise guard: an isolated pixel
at or under the level in a region that is not opaque (noise reaches it where A_high is ~7.5) never makes a
core pixel, and a hole of noise inside an opaque region never breaks it up.

**The rim the detector blurs away is grown back** (``rim_px``). The detector's blur (Gaussian, σ =
``ShieldRule.detector_blur_px``, postal-dual-140's 0.7 px) spills the light beside an opaque body onto its
edge: a pixel whose centre lies d px inside the edge of a body that stops the beam, next to air, reads
65535·Φ(−d/σ) grey levels, over the level up to d = σ·Φ⁻¹(1 − level/65535) (2.4 px at σ 0.7), and the 3×3
mean takes one pixel more. A shield the exact size of the smallest pouch therefore showed at most a 3-6 mm
wide core and never alarmed, nor did one 1 mm larger on every side (measured on the forward model: 0 of
12 at σ 0.7; ``tests/test_opaque.py``). The geometric shadow, which is what hides a pouch, is the core
grown back by up to those pixels (3 at σ 0.7), ring by ring, into pixels on the dark side of the edge (at
most half the brightest pixel within reach: a blurred step is at half height exactly at the step), so an
opaque region is read as the body that casts it, not smaller; a sharp edge stays where it is, and a body
whose opacity fades out gradually is read up to 3 px larger (the cost).
Pseudo-colour (``--rgb``): no
transmission is read, only the operator image, which ``pseudocolor`` paints exactly black (0, 0, 0)
where A_high ≥ 8 and, just below 8, no darker than a brightest channel of 4.9 (the darkest hue times
the brightness law e^−0.42·A_high; ``tests/test_station_policy.py`` recomputes it). So a pixel is
opaque when its brightest channel is at most ``opaque_rgb_level`` = 2 after the 3×3 mean — half of that
darkest colour. (It was 16, which also took pixels of A_high ≈ 4.7, transmission ≈ 600/65535: the same
parcels raised twice the shield alarms as RGB as they did as dual-energy pairs.)

**Regions that could hide a concealment** — from the station policy's threat model (``inference.policy``):
the smallest concealment of interest is ``min_concealed_mass_g`` of the densest target powder in the
thickest pouch the simulator's concealments make, lying flat; its footprint is an ellipse of area
``min_pouch_area_cm2`` = mass / (bulk density × thickness) and aspect ``pouch_aspect`` (long/short side),
so its short side is 2·√(area / (π·aspect)). An opaque region alarms when it *could contain* that pouch,
tested by a necessary condition that never misses one: opening is monotone, so a region that contains the
pouch contains, after a morphological opening with a disc as wide as the pouch's short side, the opened
pouch (the disc is one pixel narrower on each side than the short side, for the rasterised outline); the
alarm therefore needs one connected component of the opened opaque mask with at least as many pixels as the
opened pouch has at the scan's pitch (the least over 12 orientations and 4 sub-pixel
offsets of its outline). Thin structures — a dead detector channel, the rim or ring of a metal object
narrower than the pouch — are removed by the opening; areas are in cm² from the scan's own pitch, by the
one rule ``preprocess.scan_pitch_mm`` (rows along the belt: ``row_pitch_mm``; columns:
``pixel_pitch_mm``), so the shield check and the model measure the same parcel; a pitch that rule
refuses is refused here too.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

from parcelscan.datasets.physics.pseudocolor import OPAQUE_A_HIGH
from parcelscan.datasets.preprocess import PreprocessSpec, scan_pitch_mm

OPAQUE_GREY_LEVELS = round(65535 * math.exp(-OPAQUE_A_HIGH))  # 22 of 65535
OPAQUE_RGB_LEVEL = 2
# The default threat model (``inference/policies/default.toml`` states the same numbers; a test checks it):
# 10 g (the simulator's smallest concealment, ``concealments.MIN_TARGET_G``) of W powder, the densest target
# powder (bulk 9.0 g/cm³, ``physics.materials``), in a 10 mm pouch (the thickest of ``mail_pouch`` and of the
# ``tile_stack`` pouch), outline aspect up to 1.7 (``mail_pouch``): 10 / (9.0 × 1.0) = 1.11 cm².
DEFAULT_MIN_POUCH_AREA_CM2 = 10.0 / (9.0 * 1.0)
DEFAULT_POUCH_ASPECT = 1.7
# The detector blur of the default profile (postal-dual-140 ``blur_sigma_px``; a test checks they agree).
DEFAULT_DETECTOR_BLUR_PX = 0.7


def rim_px(detector_blur_px: float, level: int) -> int:
    """Pixels of an opaque body's edge that read over ``level`` (module docstring): those whose centre lies less
    than σ·Φ⁻¹(1 − level/65535) inside the edge, next to air (the brightest neighbour there can be), plus the
    one the 3×3 mean takes."""
    if detector_blur_px <= 0:
        return 1
    reach = detector_blur_px * NormalDist().inv_cdf(1.0 - max(int(level), 1) / 65535.0)
    return max(0, math.ceil(reach - 0.5)) + 1


@dataclass(frozen=True)
class ShieldRule:
    """What the shield alarm looks for (module docstring); built from a station policy."""

    min_pouch_area_cm2: float = DEFAULT_MIN_POUCH_AREA_CM2
    pouch_aspect: float = DEFAULT_POUCH_ASPECT
    opaque_grey_levels: int = OPAQUE_GREY_LEVELS
    opaque_rgb_level: int = OPAQUE_RGB_LEVEL
    detector_blur_px: float = DEFAULT_DETECTOR_BLUR_PX

    def __post_init__(self) -> None:
        if not (math.isfinite(self.detector_blur_px) and 0 <= self.detector_blur_px <= 5):
            raise ValueError(f"detector_blur_px must be within 0-5, got {self.detector_blur_px}")
        if not (math.isfinite(self.min_pouch_area_cm2) and self.min_pouch_area_cm2 > 0):
            raise ValueError(f"min_pouch_area_cm2 must be positive, got {self.min_pouch_area_cm2}")
        if not (math.isfinite(self.pouch_aspect) and self.pouch_aspect >= 1.0):
            raise ValueError(f"pouch_aspect must be >= 1, got {self.pouch_aspect}")
        if not 0 <= int(self.opaque_grey_levels) < 65535 or not 0 <= int(self.opaque_rgb_level) < 255:
            raise ValueError("opaque levels out of range")

    @property
    def pouch_axes_mm(self) -> tuple[float, float]:
        """(short, long) side of the smallest pouch's elliptical footprint, mm."""
        short = 2.0 * math.sqrt(self.min_pouch_area_cm2 * 100.0 / (math.pi * self.pouch_aspect))
        return short, short * self.pouch_aspect


@dataclass
class OpaqueResult:
    """The largest qualifying opaque region (cm², after the opening), all of them together, their mask."""

    largest_cm2: float
    total_cm2: float
    regions: int
    mask: np.ndarray  # bool (H, W): pixels of qualifying regions
    pitch_mm: tuple[float, float]  # (row, column) pitch the areas were measured with
    kind: str = "dual_energy"  # what was read: "dual_energy" (a transmission) or "pseudo_color" (an operator image)
    rule: ShieldRule = ShieldRule()

    @property
    def alarm(self) -> bool:
        return self.regions > 0

    def reason(self) -> str:
        short, long = self.rule.pouch_axes_mm
        if self.kind == "pseudo_color":
            level = (f"black in the operator image (brightest channel ≤ {self.rule.opaque_rgb_level}/255, "
                     f"painted where A_high ≥ {OPAQUE_A_HIGH:g})")
        else:
            level = f"high-energy transmission ≤ {self.rule.opaque_grey_levels}/65535"
        return (f"shield alarm: opaque region {self.largest_cm2:.1f} cm² that could hide a "
                f"{self.rule.min_pouch_area_cm2:.2f} cm² pouch ({short:.0f} × {long:.0f} mm; {level} — the beam "
                f"did not get through, what lies behind cannot be seen)")


def _smoothed_at_most(image: np.ndarray, level: int, rim: int) -> np.ndarray:
    """Pixels whose 3×3 mean is ≤ ``level`` (the core), grown back by up to ``rim`` pixels, one ring at a time,
    into pixels on the dark side of an edge: at most half the brightest pixel within reach beyond them. The
    detector blurs a step to half its height exactly at the step, so this finds the body's own outline: the
    blurred rim of a shield comes back whole, the pixels beside it (over half) never do, and a sharp synthetic
    edge is kept where it is."""
    image = np.ascontiguousarray(image)
    core = cv2.blur(image, (3, 3), borderType=cv2.BORDER_REPLICATE) <= level
    if rim <= 0 or not core.any():
        return core
    reach = 2 * rim + 3
    brightest = cv2.dilate(image, np.ones((reach, reach), np.uint8), borderType=cv2.BORDER_REPLICATE)
    dark_side = image.astype(np.float32) <= 0.5 * brightest.astype(np.float32)
    grown = core.astype(np.uint8)
    step = np.ones((3, 3), np.uint8)
    for _ in range(rim):
        grown = cv2.dilate(grown, step) & (dark_side | core).astype(np.uint8)
    return grown.astype(bool)


def _dark_box_mask(image: np.ndarray, level: int, rim: int) -> np.ndarray:
    """``_smoothed_at_most`` on the bounding box of pixels ≤ 9·level only: a 3×3 mean ≤ L needs the pixel
    itself ≤ 9·L, and most parcels have none, so most scans cost one comparison. The box is grown by the
    mean's reach and the rim, so the result is the one on the whole image."""
    mask = np.zeros(image.shape, dtype=bool)
    dark = image <= 9 * level
    rows = np.flatnonzero(dark.any(axis=1))
    if rows.size == 0:
        return mask
    cols = np.flatnonzero(dark.any(axis=0))
    grow = 2 + max(rim, 0)
    r0, r1 = max(0, rows[0] - grow), min(image.shape[0], rows[-1] + grow + 1)
    c0, c1 = max(0, cols[0] - grow), min(image.shape[1], cols[-1] + grow + 1)
    mask[r0:r1, c0:c1] = _smoothed_at_most(image[r0:r1, c0:c1], level, rim)
    return mask


def opaque_mask_dual(high_u16: np.ndarray, level: int = OPAQUE_GREY_LEVELS,
                     detector_blur_px: float = DEFAULT_DETECTOR_BLUR_PX) -> np.ndarray:
    """Opaque pixels of a high-energy transmission image: the core and its blurred rim (module docstring)."""
    return _dark_box_mask(np.asarray(high_u16), level, rim_px(detector_blur_px, level))


def opaque_mask_rgb(rgb_u8: np.ndarray, level: int = OPAQUE_RGB_LEVEL,
                    detector_blur_px: float = DEFAULT_DETECTOR_BLUR_PX) -> np.ndarray:
    """Opaque pixels of a pseudo-colour operator image (brightest channel after the 3×3 mean), with the same
    rim as the transmission it was painted from (the blur happened in the detector, before the painting)."""
    return _dark_box_mask(np.asarray(rgb_u8).max(axis=-1), level, rim_px(detector_blur_px, OPAQUE_GREY_LEVELS))


def _kernel(short_mm: float, row_mm: float, col_mm: float) -> np.ndarray | None:
    """A disc (an ellipse in pixels where the pitch is not square) as wide as the pouch's short side less
    one pixel on each side (a footprint rasterised at an angle, or blurred by the detector, loses up to that)."""
    width_cols, width_rows = int(short_mm / col_mm) - 2, int(short_mm / row_mm) - 2
    if width_cols <= 1 and width_rows <= 1:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(1, width_cols), max(1, width_rows)))


@functools.lru_cache(maxsize=64)
def pouch_pixels(rule: ShieldRule, row_mm: float, col_mm: float) -> int:
    """Pixels of the smallest pouch's footprint after the opening, at this pitch: the least over 12
    orientations and 4 sub-pixel offsets (a region holding the pouch holds at least this many)."""
    short, long = rule.pouch_axes_mm
    kernel = _kernel(short, row_mm, col_mm)
    size = math.ceil(long / min(row_mm, col_mm)) + 8
    least = None
    for angle in range(0, 180, 15):
        for dr, dc in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)):
            rr, cc = np.mgrid[0:size, 0:size].astype(np.float64)
            y = (rr + 0.5 - size / 2 - dr) * row_mm
            x = (cc + 0.5 - size / 2 - dc) * col_mm
            t = math.radians(angle)
            u, v = x * math.cos(t) + y * math.sin(t), -x * math.sin(t) + y * math.cos(t)
            pouch = (((u / (long / 2)) ** 2 + (v / (short / 2)) ** 2) <= 1.0).astype(np.uint8)
            if kernel is not None:
                pouch = cv2.morphologyEx(pouch, cv2.MORPH_OPEN, kernel)
            count = int(pouch.sum())
            least = count if least is None else min(least, count)
    return max(1, least or 1)


def find_opaque_regions(opaque: np.ndarray, pitch_mm: float | tuple[float, float], rule: ShieldRule = ShieldRule(),
                        kind: str = "dual_energy") -> OpaqueResult:
    """Connected opaque regions that could contain the rule's smallest pouch (module docstring); work on
    their bounding box. ``pitch_mm``: (row, column) pitch in mm, or one number for square pixels."""
    row_mm, col_mm = (float(pitch_mm), float(pitch_mm)) if np.isscalar(pitch_mm) else map(float, pitch_mm)
    pixel_cm2 = row_mm * col_mm / 100.0
    mask = np.zeros(opaque.shape, dtype=bool)
    empty = OpaqueResult(0.0, 0.0, 0, mask, (row_mm, col_mm), kind, rule)
    need = pouch_pixels(rule, row_mm, col_mm)
    if np.count_nonzero(opaque) < need:  # the common case: nothing to do
        return empty
    kernel = _kernel(rule.pouch_axes_mm[0], row_mm, col_mm)
    # the bounding box of the opaque pixels, grown by the kernel's reach, so that the opening sees the same
    # neighbourhood (real zeros inside the image, OpenCV's default border outside) as on the whole image
    rows, cols = np.flatnonzero(opaque.any(axis=1)), np.flatnonzero(opaque.any(axis=0))
    margin = (max(kernel.shape) if kernel is not None else 1) + 1
    box = (slice(max(0, rows[0] - margin), rows[-1] + 1 + margin),
           slice(max(0, cols[0] - margin), cols[-1] + 1 + margin))
    opaque_u8 = np.ascontiguousarray(opaque[box], dtype=np.uint8)
    if kernel is not None:
        opaque_u8 = cv2.morphologyEx(opaque_u8, cv2.MORPH_OPEN, kernel)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(opaque_u8, connectivity=8)
    pixels = stats[:, cv2.CC_STAT_AREA].copy()
    pixels[0] = 0  # background
    keep = pixels >= need
    if not keep.any():
        return empty
    mask[box] = keep[labels]
    areas_cm2 = pixels * pixel_cm2
    return OpaqueResult(float(areas_cm2[keep].max()), float(areas_cm2[keep].sum()), int(keep.sum()), mask,
                        (row_mm, col_mm), kind, rule)


def check_opaque(scan, spec: PreprocessSpec | None = None, rule: ShieldRule = ShieldRule()) -> OpaqueResult:
    """Shield-alarm check of a decoded scan (dual-energy pair or pseudo-colour image), at the pitch
    ``preprocess.scan_pitch_mm`` gives it (``spec``: the model's, for its assumed scan pitch)."""
    pitch = scan_pitch_mm(scan, spec)
    rgb = getattr(scan, "rgb", None)
    if getattr(scan, "kind", "dual_energy") == "pseudo_color" or (getattr(scan, "high", None) is None
                                                                   and rgb is not None):
        return find_opaque_regions(opaque_mask_rgb(rgb, rule.opaque_rgb_level, rule.detector_blur_px), pitch, rule,
                                   "pseudo_color")
    return find_opaque_regions(opaque_mask_dual(scan.high, rule.opaque_grey_levels, rule.detector_blur_px), pitch,
                               rule)
