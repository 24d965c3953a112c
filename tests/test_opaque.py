"""The shield rule on what a detector really delivers (``inference/opaque.py``): blurred, noisy pixels.

The rule alarms on an opaque region that could hide the smallest pouch of the threat model (10 g of W powder,
10 mm thick: an ellipse 9.1 x 15.5 mm). Its geometric shadow is what hides the pouch; the detector's blur
(postal-dual-140: σ 0.7 px) spills light 2-3 px onto the edge of any body that stops the beam. With only the
one-pixel rim of the 3x3 mean grown back, a shield the size of the pouch never alarmed, nor one 1 mm larger on
every side (0 of 12 draws of each, measured with this forward model before the rim followed the blur).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.simulator.goods import material
from parcelscan.inference.opaque import (
    DEFAULT_DETECTOR_BLUR_PX,
    OPAQUE_GREY_LEVELS,
    ShieldRule,
    find_opaque_regions,
    opaque_mask_dual,
    rim_px,
)

SIZE = 100


@pytest.fixture(scope="module")
def physics():
    return forward_model(default_profile())


def _pouch_outline(grow_mm: float, angle_rad: float, offset) -> np.ndarray:
    short, long = ShieldRule().pouch_axes_mm
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5 - SIZE / 2
    x, y = xx - offset[0], yy - offset[1]
    u = x * math.cos(angle_rad) + y * math.sin(angle_rad)
    v = -x * math.sin(angle_rad) + y * math.cos(angle_rad)
    return (u / (long / 2 + grow_mm)) ** 2 + (v / (short / 2 + grow_mm)) ** 2 <= 1.0


def _scanned(physics, shield: np.ndarray, background_a_high: float, rng) -> np.ndarray:
    """The high-energy image of a body that stops the beam (A_high 12, e.g. 5 mm of lead) over a background,
    through the profile's own detector: quanta, electronic noise, blur 0.7 px, 16-bit quantisation."""
    a_high = np.where(shield, 12.0, background_a_high).astype(np.float32)
    return physics.detect(a_high, a_high, rng, blur_sigma_px=DEFAULT_DETECTOR_BLUR_PX)[1]


def _alarms(physics, grow_mm: float, background_a_high: float, draws: int = 8) -> int:
    rng = np.random.default_rng(15)
    hits = 0
    for _ in range(draws):
        shield = _pouch_outline(grow_mm, rng.uniform(0, math.pi), rng.uniform(-0.5, 0.5, 2))
        hits += find_opaque_regions(opaque_mask_dual(_scanned(physics, shield, background_a_high, rng)), 1.0).alarm
    return hits


def test_the_opaque_level_is_31_mm_of_steel_or_2_5_mm_of_lead(physics):
    """A_high 8 (22 of 65535) under postal-dual-140: scanner makers quote 31-37 mm of steel penetration."""
    def a_high(name: str, mm: float) -> float:
        m = material(name)
        return physics.material_attenuation(m, mm / 10 * m.density_g_cm3)[1]

    assert round(65535 * math.exp(-8)) == OPAQUE_GREY_LEVELS
    assert a_high("steel", 30) < 8 < a_high("steel", 32)
    assert a_high("Pb", 2.4) < 8 < a_high("Pb", 2.6)
    assert a_high("Cu", 22) < 8 < a_high("Cu", 24)
    assert a_high("WC", 1.7) < 8 < a_high("WC", 1.9)


def test_the_rim_follows_the_detector_blur():
    assert default_profile().blur_sigma_px == DEFAULT_DETECTOR_BLUR_PX
    assert rim_px(0.0, OPAQUE_GREY_LEVELS) == 1  # a sharp detector: the 3x3 mean's pixel only
    assert rim_px(0.7, OPAQUE_GREY_LEVELS) == 3  # light reaches 2.4 px in: 2 pixel centres, plus the mean's
    assert rim_px(1.0, OPAQUE_GREY_LEVELS) == 4


def test_a_shield_the_size_of_the_smallest_pouch_alarms_through_the_blur(physics):
    assert _alarms(physics, 0.0, background_a_high=1.0) == 8  # exactly the pouch's outline, in a parcel
    assert _alarms(physics, 0.5, background_a_high=0.0) == 8  # next to air, the worst contrast
    assert _alarms(physics, -1.0, background_a_high=1.0) == 0  # 1 mm smaller on every side: no pouch fits


def test_a_sharp_edge_is_kept_where_it_is():
    """A synthetic unblurred block: the mask is the block, not grown (the rim only comes back on the dark side
    of an edge, and a sharp edge has no blurred side)."""
    high = np.full((80, 80), 30000, np.uint16)
    high[20:50, 30:45] = 3
    mask = opaque_mask_dual(high)
    assert mask.sum() == 30 * 15 and mask[20:50, 30:45].all()


def test_isolated_noisy_pixels_never_make_a_region(physics):
    rng = np.random.default_rng(4)
    near = np.full((SIZE, SIZE), 7.7, np.float32)  # near-opaque metal (A_high 7.7): noise takes 1 pixel in 7 under
    high = physics.detect(near, near, rng, blur_sigma_px=DEFAULT_DETECTOR_BLUR_PX)[1]
    assert (high <= OPAQUE_GREY_LEVELS).mean() > 0.1
    assert not find_opaque_regions(opaque_mask_dual(high), 1.0).alarm
    speckle = np.full((SIZE, SIZE), 20000, np.uint16)
    speckle[rng.random((SIZE, SIZE)) < 0.3] = 0  # dead pixels scattered over a bright area
    assert not opaque_mask_dual(speckle).any()
