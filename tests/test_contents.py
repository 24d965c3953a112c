"""Benign goods stop the beam only where a real one would (``datasets/simulator/contents.py``).

Under postal-dual-140 a ray is opaque (A_high >= 8, the station's shield level) after 31 mm of steel, 23 mm of
copper, 24 mm of brass, 2.5 mm of lead or 1.9 mm of 18k gold. Goods whose modelled geometry crossed that by a
geometry error (two materials in one volume, a watch closed in gold, a solid solder ring) raised the shield
alarm on ordinary clear parcels; goods that really are opaque (a big stepper motor, a spool of solder, lead
sinkers) must stay opaque. Each good is projected alone, noiseless, at 1 mm, and tested with the station's
own rule for regions that could hide the smallest pouch (``inference.opaque.find_opaque_regions``).
"""

from __future__ import annotations

import numpy as np
import pytest

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.simulator.contents import (
    CASTING_WALL_MM,
    al_casting,
    brass_fittings,
    ei_transformer,
    fishing_weights,
    make_item,
    motor_parts,
    place,
    solder_spool,
    watch,
)
from parcelscan.datasets.simulator.goods import material
from parcelscan.datasets.simulator.scene import Grid, Part, rasterise
from parcelscan.datasets.simulator.shapes import Parts
from parcelscan.inference.opaque import find_opaque_regions

OPAQUE = 8.0
CENTRE = np.array([150.0, 150.0, 0.0])


@pytest.fixture(scope="module")
def physics():
    return forward_model(default_profile())


def _a_high(physics, parts: list[Part]) -> np.ndarray:
    moved = [part.moved(np.eye(3), CENTRE) for part in parts]
    raster = rasterise(moved, Grid(300, 300, 1.0))
    return physics.log_attenuation(raster.materials, raster.areal_g_cm2)[1]


def _hides_a_pouch(a_high: np.ndarray) -> bool:
    return find_opaque_regions(a_high >= OPAQUE, 1.0).alarm


def test_an_ei_transformer_is_seen_through_and_its_copper_lies_beside_its_iron(physics):
    p = Parts()
    ei_transformer(p, (0.0, 0.0, 12.0))
    a_high = _a_high(physics, p.items)
    assert 5.0 < a_high.max() < OPAQUE  # 24 mm of laminations: dark, not opaque
    # no ray crosses more iron + copper mass than the 24 mm core height of iron would hold
    raster = rasterise([part.moved(np.eye(3), CENTRE) for part in p.items], Grid(300, 300, 1.0))
    assert raster.areal_g_cm2.sum(axis=0).max() <= 2.4 * material("transformer core").density_g_cm3


@pytest.mark.parametrize("case_metal", ["stainless steel", "Al", "gold"])
def test_a_watch_is_seen_through_its_crystal(physics, case_metal):
    p = Parts()
    watch(p, np.array([0.0, 0.0, 6.0]), 24.0, case_metal)
    assert not _hides_a_pouch(_a_high(physics, p.items))


def test_a_motor_armature_is_no_denser_than_a_wound_armature():
    """Iron teeth and copper in the slots share the winding zone at partial densities (it was solid copper plus
    iron at 3 g/cm³ in the same volume, 12 g/cm³); the yoke inside it is solid laminations."""
    p = Parts()
    motor_parts(p, 30.0, 60.0, 1.5, "ferrite")
    iron = {round(part.shape.radius_mm, 3): part.density_g_cm3 for part in p.items
            if part.material.name == "transformer core"}
    (copper,) = [part.density_g_cm3 for part in p.items if part.material.name == "Cu"]
    winding_zone, yoke = iron[18.0] + copper, iron[18.0] + iron[6.0]
    steel = material("transformer core").density_g_cm3
    assert 5.0 < winding_zone < steel and yoke == pytest.approx(steel * 0.95)


@pytest.mark.parametrize(("radius_mm", "opaque"), [(18.0, False), (30.0, True)])
def test_a_small_motor_is_seen_through_and_a_stepper_is_not(physics, radius_mm, opaque):
    """A 550-size motor (36 mm) is not opaque; a 60 mm one (NEMA 23 class) is, as on a real scanner."""
    p = Parts()
    motor_parts(p, radius_mm, 60.0, 1.5, "ferrite")
    assert _hides_a_pouch(_a_high(physics, p.items)) is opaque


def test_goods_that_really_stop_the_beam_still_do(physics):
    """A spool of solder (200-840 g of wire) and lead sinkers stay opaque: the fix is geometry, not transparency."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        assert _hides_a_pouch(_a_high(physics, solder_spool(rng, np.array([300.0, 300.0, 100.0])).parts))
    lead = 0
    for _ in range(10):
        item = fishing_weights(rng, np.array([300.0, 300.0, 100.0]))
        lead += _hides_a_pouch(_a_high(physics, item.parts))
    assert lead >= 7


def test_castings_and_fittings_have_the_walls_their_process_makes():
    rng = np.random.default_rng(11)
    fit = np.array([300.0, 250.0, 150.0])
    for _ in range(60):
        item = al_casting(rng, fit)
        body = item.parts[0]
        metal = body.material.name
        (cavity,) = body.cavities
        outer, inner = body.shape.half_mm, getattr(cavity, "half_mm", None)
        if inner is not None:
            if np.min(inner) > 0.51:  # a cavity not squeezed to its 1 mm floor by a small part
                lo, hi = CASTING_WALL_MM[metal]
                assert lo - 1e-6 <= float(np.min(outer - inner)) <= hi + 1e-6
        else:
            assert metal != "zamak"  # zinc is never a solid block with a bore
        for boss in item.parts[1:]:
            assert boss.cavities or metal == "cast iron"  # die-cast bosses are cored for their screw
    for _ in range(40):
        for part in brass_fittings(rng, fit).parts:
            bore = part.cavities[0].radius_mm if part.cavities else 0.0
            nut = abs(bore / part.shape.radius_mm - 0.8 / 1.3) < 1e-9  # a hex nut: outer 1.3 r, inner 0.8 r
            if part.material.name == "brass" and part.cavities and not nut:
                wall = part.shape.radius_mm - bore
                assert wall <= 3.0 + 0.1 * part.shape.radius_mm + 1e-6


def test_ordinary_goods_in_a_random_parcel_rarely_hide_a_pouch(physics):
    """Jewellery and boards with transformers used to hide a pouch in 8/40 and 11/40 draws; now in none."""
    rng = np.random.default_rng(5)
    for kind in ("jewellery", "electronics"):
        for _ in range(15):
            item = make_item(rng, kind, (400.0, 300.0, 200.0))
            parts = place(rng, item, (-140.0, 140.0, -140.0, 140.0, 0.0, 200.0), xy=(0.0, 0.0))
            assert not _hides_a_pouch(_a_high(physics, parts)), kind
