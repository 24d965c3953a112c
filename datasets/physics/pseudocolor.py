"""The operator image: screening pseudo-colour from the dual-energy pair.

Convention of the trade: white is air; orange organic (Z_eff ≲ 10), green inorganic (≈ 10–18),
blue metal (≳ 18); darker means more attenuating. The hue comes from an *apparent Z*: the pure element
whose ratio R = A_low/A_high at the same A_high matches the pixel's (a per-profile calibration curve,
computed from the same spectra and xraydb tables as the forward model; the dependence on A_high is the
beam hardening). Only the monotonic branch of R(Z), carbon to zinc, is used, so the calibration is
honest about K-edges: a rare-earth oxide, whose R falls below iron's because its K-edge sits inside the
low channel's band, is shown with the apparent Z that its R gives — it is never painted "more metal"
than iron.

The calibration of every shipped profile travels as data (``tables/<profile>.npz``, see ``tables``), so a
station draws operator images and heatmaps without xraydb or spekpy; a profile with other physics is
calibrated from the physics, which needs the ``[sim]`` extra.
"""

from __future__ import annotations

import functools

import numpy as np

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.physics.profile import ScannerProfile
from parcelscan.datasets.physics.tables import require_physics, shipped_tables

CALIBRATION_ELEMENTS = ("C", "N", "O", "Na", "Mg", "Al", "Si", "S", "Ca", "Ti", "Fe", "Cu", "Zn")
CALIBRATION_Z = np.array([6, 7, 8, 11, 12, 13, 14, 16, 20, 22, 26, 29, 30], dtype=float)
A_HIGH_GRID = np.geomspace(0.01, 12.0, 96)
AIR_A_HIGH = 0.015  # below this a pixel is shown as air
OPAQUE_A_HIGH = 8.0  # beyond this the beam is (nearly) stopped: shown black

# apparent Z → RGB anchors (orange organics, green inorganics, blue metals)
_HUE_Z = np.array([6.0, 9.0, 11.0, 13.0, 17.0, 20.0, 24.0, 30.0])
_HUE_RGB = np.array([
    [236, 140, 40], [226, 150, 40], [150, 180, 50], [70, 170, 70],
    [60, 160, 90], [50, 120, 190], [40, 80, 220], [30, 60, 210],
], dtype=float)


def calibration_from_physics(profile: ScannerProfile) -> np.ndarray:
    """R(Z, A_high) on (len(A_HIGH_GRID), len(CALIBRATION_Z)), monotonic in Z at each A_high, computed from
    the forward model (xraydb, spekpy)."""
    model = forward_model(profile)
    table = np.zeros((len(A_HIGH_GRID), len(CALIBRATION_Z)))
    areal = np.geomspace(1e-3, 400.0, 600)
    for j, element in enumerate(CALIBRATION_ELEMENTS):
        a_low, a_high = model.log_attenuation_direct([get_material(element)], areal[None, :])
        ok = np.isfinite(a_high) & np.isfinite(a_low) & (a_high < 40)
        ratio = a_low[ok] / a_high[ok]
        table[:, j] = np.interp(A_HIGH_GRID, a_high[ok], ratio)
    # enforce monotonicity (it holds physically on this branch; guard against interpolation noise)
    return np.maximum.accumulate(table, axis=1)


def calibration_tables(profile: ScannerProfile) -> dict[str, np.ndarray]:
    """The calibration as shipped tables (``tablegen``): R(Z, A_high) with its two axes, so that a table made
    on other axes is never read against these."""
    return {"pseudocolor_ratio": calibration_from_physics(profile),
            "pseudocolor_a_high_grid": A_HIGH_GRID.copy(),
            "pseudocolor_elements": np.array(CALIBRATION_ELEMENTS)}


@functools.lru_cache(maxsize=8)
def _calibration(physics_key: tuple, profile: ScannerProfile) -> np.ndarray:
    """R(Z, A_high): the shipped table of this profile's physics, else computed from the physics."""
    shipped = shipped_tables(profile)
    grid = None if shipped is None else shipped.get("pseudocolor_a_high_grid")
    # the same grid, to rounding: numpy's geomspace differs in the last bit between CPUs (SIMD code paths), so
    # an exact comparison would refuse the shipped table on every machine but the one that wrote it
    if (shipped is not None and "pseudocolor_ratio" in shipped and grid is not None
            and grid.shape == A_HIGH_GRID.shape and np.allclose(grid, A_HIGH_GRID, rtol=1e-12, atol=0.0)
            and shipped.get("pseudocolor_elements", np.array([])).tolist() == list(CALIBRATION_ELEMENTS)):
        return np.array(shipped["pseudocolor_ratio"], dtype=float)
    require_physics(f"the pseudo-colour calibration of scanner profile {profile.name!r}")
    return calibration_from_physics(profile)


def apparent_z(a_low: np.ndarray, a_high: np.ndarray, profile: ScannerProfile) -> np.ndarray:
    """Apparent atomic number (6–30) of each pixel from its (A_low, A_high)."""
    table = _calibration(profile.physics_key(), profile)
    a_high_c = np.clip(a_high, A_HIGH_GRID[0], A_HIGH_GRID[-1])
    ratio = np.where(a_high > 1e-6, a_low / np.maximum(a_high, 1e-6), 1.0)
    # locate A_high on the grid (log-spaced) and interpolate the R(Z) curve linearly between rows
    position = np.interp(np.log(a_high_c), np.log(A_HIGH_GRID), np.arange(len(A_HIGH_GRID)))
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, len(A_HIGH_GRID) - 1)
    frac = (position - lower)[..., None]
    curves = table[lower] * (1 - frac) + table[upper] * frac  # (..., n_Z)
    # count how many calibration points lie below R, then interpolate within the bracket
    below = np.sum(curves <= ratio[..., None], axis=-1)
    below = np.clip(below, 1, len(CALIBRATION_Z) - 1)
    r0 = np.take_along_axis(curves, (below - 1)[..., None], axis=-1)[..., 0]
    r1 = np.take_along_axis(curves, below[..., None], axis=-1)[..., 0]
    t = np.clip((ratio - r0) / np.maximum(r1 - r0, 1e-9), 0.0, 1.0)
    z = CALIBRATION_Z[below - 1] + t * (CALIBRATION_Z[below] - CALIBRATION_Z[below - 1])
    return np.clip(z, CALIBRATION_Z[0], CALIBRATION_Z[-1])


def hue_rgb(z: np.ndarray) -> np.ndarray:
    """Apparent Z → screening hue (float RGB 0–255)."""
    return np.stack([np.interp(z, _HUE_Z, _HUE_RGB[:, c]) for c in range(3)], axis=-1)


LUT_SIZE = 256
_LUT_LOG_A = np.linspace(np.log(AIR_A_HIGH), np.log(OPAQUE_A_HIGH), LUT_SIZE)
_LUT_RATIO = np.linspace(1.0, 3.2, LUT_SIZE)


def _colour(a_high: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Hue from apparent Z, saturation and darkness from A_high (float RGB)."""
    hue = hue_rgb(z)
    a = np.clip(a_high, 0.0, None)[..., None]
    saturation = 1.0 - np.exp(-a / 0.25)
    brightness = np.exp(-0.42 * a)
    return (255.0 - (255.0 - hue) * saturation) * brightness


@functools.lru_cache(maxsize=8)
def _rgb_lut(physics_key: tuple, profile: ScannerProfile) -> np.ndarray:
    """(LUT_SIZE, LUT_SIZE, 3) uint8 colour over (log A_high, R): the whole mapping as one table."""
    a_high = np.exp(_LUT_LOG_A)[:, None] * np.ones((1, LUT_SIZE))
    ratio = np.ones((LUT_SIZE, 1)) * _LUT_RATIO[None, :]
    z = apparent_z(a_high * ratio, a_high, profile)
    return np.clip(np.rint(_colour(a_high, z)), 0, 255).astype(np.uint8)


def pseudocolor(a_low: np.ndarray, a_high: np.ndarray, profile: ScannerProfile, smooth_px: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 operator image from log-attenuations (a table lookup per pixel)."""
    import cv2

    a_low = np.asarray(a_low, dtype=np.float32)
    a_high = np.asarray(a_high, dtype=np.float32)
    if smooth_px > 0:  # R is noisy where little is attenuated; colour from a lightly smoothed pair
        a_low = cv2.GaussianBlur(a_low, (0, 0), smooth_px)
        a_high = cv2.GaussianBlur(a_high, (0, 0), smooth_px)
    lut = _rgb_lut(profile.physics_key(), profile)
    scale_a = (LUT_SIZE - 1) / (_LUT_LOG_A[-1] - _LUT_LOG_A[0])
    scale_r = (LUT_SIZE - 1) / (_LUT_RATIO[-1] - _LUT_RATIO[0])
    safe_high = np.maximum(a_high, AIR_A_HIGH)
    row = np.clip((np.log(safe_high) - _LUT_LOG_A[0]) * scale_a + 0.5, 0, LUT_SIZE - 1).astype(np.intp)
    col = np.clip((a_low / safe_high - _LUT_RATIO[0]) * scale_r + 0.5, 0, LUT_SIZE - 1).astype(np.intp)
    rgb = lut[row, col]
    rgb[a_high < AIR_A_HIGH] = 255
    rgb[a_high >= OPAQUE_A_HIGH] = 0
    return rgb


def transmission_to_log_attenuation(image_u16: np.ndarray) -> np.ndarray:
    """16-bit air-normalised transmission → A = −ln(I/I0); opaque pixels clip at 1 grey level."""
    transmission = np.maximum(np.asarray(image_u16, dtype=np.float32), 1.0) / 65535.0
    return -np.log(transmission)


def pseudocolor_from_pair(low_u16: np.ndarray, high_u16: np.ndarray, profile: ScannerProfile) -> np.ndarray:
    return pseudocolor(transmission_to_log_attenuation(low_u16), transmission_to_log_attenuation(high_u16), profile)


def overlay_mask(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 0, 160)) -> np.ndarray:
    """Outline a binary mask on an RGB image (2 px contour), for a person to see what is labelled."""
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    contours, _ = cv2.findContours((np.asarray(mask) > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, 2)
    return out
