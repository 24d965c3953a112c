"""Scene geometry, goods and concealments: exact projections, honest materials, no label in the geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from parcelscan.datasets.physics.materials import LIBRARY, RARE_EARTH_TARGETS, TARGET_MATERIALS
from parcelscan.datasets.simulator.concealments import LOOKALIKE_FILLS, SCENARIOS, build_concealment
from parcelscan.datasets.simulator.contents import BENIGN_KINDS, make_item
from parcelscan.datasets.simulator.goods import GOODS, material
from parcelscan.datasets.simulator.scene import (
    Box,
    Cylinder,
    Ellipsoid,
    Grid,
    Part,
    path_length_mm,
    rasterise,
    rotation,
    volume_mm3,
)
from parcelscan.datasets.simulator.shapes import blob, box, cylinder

WATER = material("water")


def _poses(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rotation(*rng.uniform(-math.pi, math.pi, 3)) for _ in range(n)]


@pytest.mark.parametrize("kind", ["box", "cylinder", "ellipsoid"])
def test_primitive_volumes_in_any_pose(kind):
    """The beam-direction projection of a posed solid integrates to its analytic volume."""
    centre = np.array([200.0, 150.0, 60.0])
    for rot in _poses(6):
        if kind == "box":
            shape = Box(centre, rot, np.array([40.0, 25.0, 7.0]))
        elif kind == "cylinder":
            shape = Cylinder(centre, rot, radius_mm=18.0, half_length_mm=45.0)
        else:
            shape = Ellipsoid(centre, rot, np.array([35.0, 20.0, 12.0]))
        assert volume_mm3(Part(shape, WATER, 1.0), samples=400) == pytest.approx(shape.volume_mm3(), rel=2e-3)


def test_cavities_and_gravity_fill_are_exact():
    lying = rotation(0.3, math.pi / 2)
    outer = Cylinder(np.array([0.0, 0.0, 40.0]), lying, radius_mm=40.0, half_length_mm=120.0)
    inner = Cylinder(np.array([0.0, 0.0, 40.0]), lying, radius_mm=38.0, half_length_mm=118.0)
    shell = volume_mm3(Part(outer, WATER, 1.0, cavities=(inner,)), samples=600)
    assert shell == pytest.approx(outer.volume_mm3() - inner.volume_mm3(), rel=5e-3)
    # a bottle lying on its side, filled to its axis, holds half its volume
    half = volume_mm3(Part(inner, WATER, 1.0, fill_below_z_mm=40.0), samples=400)
    assert half == pytest.approx(inner.volume_mm3() / 2, rel=2e-3)


def test_flat_prism_fast_path_matches_the_general_ray_path():
    """A carton lying flat takes the footprint fast path; a hair of tilt forces the general slab method."""
    xs = np.arange(0.5, 300.0, 1.0)
    ys = np.arange(0.5, 200.0, 1.0)
    for tilt in (0.0, 1e-6):
        rot = rotation(0.4, tilt)
        outer = Box(np.array([150.0, 100.0, 60.0]), rot, np.array([110.0, 70.0, 60.0]))
        inner = Box(np.array([150.0, 100.0, 60.0]), rot, np.array([105.0, 65.0, 55.0]))
        path = path_length_mm(Part(outer, WATER, 1.0, cavities=(inner,)), xs, ys)
        if tilt == 0.0:
            flat = path
        else:
            differs = np.abs(path - flat) > 1e-2
            assert differs.mean() < 0.003  # only silhouette pixels may flip
    assert flat.max() == pytest.approx(120.0) and flat[150, 100] == pytest.approx(10.0)


def test_rasterise_conserves_mass_and_separates_the_target_of_a_mixture():
    grid = Grid(200, 160, 1.0)
    water_box = Part(box((100, 80, 20), (100, 60, 20), rotation(0.5)), WATER, 1.0)
    nd, grout = LIBRARY["Nd2O3"], material("grout")
    # 12 % Nd2O3 in grout at 1.6 g/cm³: partial densities 0.192 and 1.408
    mix = Part(cylinder((60, 60, 20), 25, 30), nd, 0.192, role="target", admixture=((grout, 1.408),))
    raster = rasterise([water_box, mix], grid)
    pixel_cm2 = 0.01
    totals = {m.name: float(raster.areal_g_cm2[i].sum()) * pixel_cm2 for i, m in enumerate(raster.materials)}
    assert totals["water"] == pytest.approx(120.0, rel=0.01)
    volume_cm3 = math.pi * 2.5**2 * 3.0
    assert totals["Nd2O3"] == pytest.approx(0.192 * volume_cm3, rel=0.02)
    assert totals["grout"] == pytest.approx(1.408 * volume_cm3, rel=0.02)
    assert raster.target_mass_g == pytest.approx(totals["Nd2O3"], rel=1e-4)
    assert np.array_equal(raster.target_g_cm2 > 0, raster.areal_g_cm2[raster.materials.index(nd)] > 0)


def test_blob_stays_inside_its_bounds():
    rng = np.random.default_rng(3)
    for _ in range(10):
        b = blob(rng, (0, 0, 10), rng.uniform(20, 120), rng.uniform(20, 120), 30, lumpiness=0.2, folds=0.6,
                 yaw_rad=rng.uniform(0, 6))
        x0, x1, y0, y1 = b.bounds_xy()
        xs = np.linspace(x0 - 60, x1 + 60, 200)
        ys = np.linspace(y0 - 60, y1 + 60, 200)
        thick = b.thickness_map(xs, ys)
        assert thick.max() > 0
        hit_x = xs[np.any(thick > 0, axis=1)]
        hit_y = ys[np.any(thick > 0, axis=0)]
        assert hit_x.min() >= x0 and hit_x.max() <= x1 and hit_y.min() >= y0 and hit_y.max() <= y1


def test_at_least_25_benign_kinds_with_honest_materials():
    assert len(BENIGN_KINDS) >= 25
    known = set(LIBRARY) | set(GOODS)
    rng = np.random.default_rng(0)
    seen = set()
    for kind in BENIGN_KINDS:
        for _ in range(4):
            item = make_item(rng, kind, np.array([400.0, 300.0, 200.0]))
            assert item.parts, kind
            for part in item.parts:
                seen.add(part.material.name)
                assert part.material.name in known, (kind, part.material.name)
                assert part.material.family != "target", (kind, part.material.name)  # benign goods only
                # no material denser than its solid form (packed powders, foams and corrugated board are lighter)
                assert 0 < part.density_g_cm3 <= part.material.density_g_cm3 * 1.001, (kind, part.material.name)
    # the hard, legal look-alikes are really there: rare-earth magnets, lead, tungsten carbide, brass, ferrocerium
    assert {"NdFeB magnet", "Pb", "WC", "brass", "ferrite", "ferrocerium", "Li-ion cell", "ceramic tile"} <= seen


def test_lookalike_fills_include_the_dense_benign_goods():
    names = {name for variants in LOOKALIKE_FILLS.values() for options in variants.values() for name, _ in options}
    assert {"Pb", "WC", "brass", "salt", "CaCO3", "barite", "lead shot"} <= names
    assert not names & set(TARGET_MATERIALS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_vessel_geometry_does_not_depend_on_the_fill(scenario):
    """Same seed, target or benign fill: the same container, and (apart from a pouch sized by its mass)
    the same vessel; the fill is the target exactly when one was asked for."""
    for seed in range(6):
        positive = build_concealment(np.random.default_rng(seed), scenario, RARE_EARTH_TARGETS[seed])
        lookalike = build_concealment(np.random.default_rng(seed), scenario, None)
        assert positive.container.kind == lookalike.container.kind
        assert positive.container.size_mm == lookalike.container.size_mm
        assert positive.fill.is_target and not lookalike.fill.is_target
        assert positive.fill.material.name == RARE_EARTH_TARGETS[seed]
        assert any(p.role == "target" for p in positive.parts)
        assert not any(p.role == "target" for p in lookalike.parts)
        if scenario != "mail_pouch":
            assert positive.focus_xy == pytest.approx(lookalike.focus_xy, abs=1e-6)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_target_masses_stay_within_10_g_to_5_kg(scenario):
    grid = Grid(1400, 1400, 1.0)
    for seed in range(12):
        target = TARGET_MATERIALS[(seed * 7) % len(TARGET_MATERIALS)]
        concealment = build_concealment(np.random.default_rng(100 + seed), scenario, target)
        shift = np.array([700.0, 700.0, 0.0])
        parts = [p.moved(np.eye(3), shift) for p in concealment.parts if p.role == "target"]
        mass = rasterise(parts, grid).target_mass_g
        assert 9.0 <= mass <= 5000.0, (scenario, target, mass)


def test_benign_goods_and_concealment_scenarios_have_different_names():
    """A name means one thing: 'tile_stack' is the concealment scenario, the benign good is 'ceramic_tiles'."""
    assert not set(SCENARIOS) & set(BENIGN_KINDS)
