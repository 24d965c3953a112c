"""Building blocks for goods: solids and hollow bodies in an item's own frame, and random draws.

An item is built around the origin with its bottom at z = 0; ``contents.place`` later turns and moves
it into the parcel. These helpers keep the item builders short and their materials explicit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from parcelscan.datasets.simulator.goods import material
from parcelscan.datasets.simulator.scene import Blob, Box, Cylinder, Ellipsoid, Part, Polyline, Shape, rotation

UP = rotation()
LYING_X = rotation(0.0, math.pi / 2)  # body z axis along scene x: a bottle or can on its side


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def choice(rng: np.random.Generator, options, weights=None):
    """One element of a sequence (weights need not be normalised)."""
    if weights is None:
        return options[int(rng.integers(len(options)))]
    w = np.asarray(weights, float)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def box(centre, size, rot: np.ndarray = UP) -> Box:
    return Box(np.asarray(centre, float), rot, np.asarray(size, float) / 2.0)


def cylinder(centre, radius_mm: float, length_mm: float, rot: np.ndarray = UP) -> Cylinder:
    return Cylinder(np.asarray(centre, float), rot, radius_mm=radius_mm, half_length_mm=length_mm / 2.0)


def ellipsoid(centre, semi, rot: np.ndarray = UP) -> Ellipsoid:
    return Ellipsoid(np.asarray(centre, float), rot, np.asarray(semi, float))


def blob(
    rng: np.random.Generator,
    centre,
    rx_mm: float,
    ry_mm: float,
    thickness_mm: float,
    *,
    edge_power: float = 3.0,
    lumpiness: float = 0.08,
    folds: float = 0.0,
    fold_scale_mm: float = 60.0,
    creases: bool = False,
    yaw_rad: float = 0.0,
) -> Blob:
    """An irregular soft body: a random outline (``lumpiness``) and a random thickness texture of relative
    amplitude ``folds`` on a length scale ``fold_scale_mm`` (``creases``: sharp ridges, as folded cloth)."""
    harmonics = tuple((k, float(rng.normal(0.0, lumpiness / k)), uniform(rng, 0, 2 * math.pi)) for k in (2, 3, 4, 5))
    texture = None
    if folds > 0:
        n = int(np.clip(round(2 * max(rx_mm, ry_mm) / fold_scale_mm) + 2, 3, 16))
        field = rng.standard_normal((n, n))
        if creases:
            field = 1.0 - 2.0 * np.abs(field) / max(np.abs(field).max(), 1e-9)
        texture = (folds * field / max(np.abs(field).max(), 1e-9)).astype(np.float32)
    return Blob(np.asarray(centre, float), rx_mm, ry_mm, thickness_mm, yaw_rad, edge_power, harmonics, texture)


def strand(points, radius_mm: float) -> Polyline:
    return Polyline(np.asarray(points, float), radius_mm)


def wander(rng: np.random.Generator, start, n: int, step_mm: float, turn_rad: float, z_mm: float) -> np.ndarray:
    """A random bent path near the belt plane (a loose cable, a chain)."""
    points = [np.array([start[0], start[1], z_mm])]
    heading = uniform(rng, 0, 2 * math.pi)
    for _ in range(n):
        heading += float(rng.normal(0.0, turn_rad))
        points.append(points[-1] + step_mm * np.array([math.cos(heading), math.sin(heading), 0.0]))
    path = np.array(points)
    path[:, :2] -= path[:, :2].mean(axis=0)
    return path


def coil(rng: np.random.Generator, radius_mm: float, turns: float, z_mm: float, wobble: float = 0.08) -> np.ndarray:
    """A coiled strand seen from above (a wound cable, a spool)."""
    n = max(int(turns * 16), 8)
    angle = np.linspace(0, 2 * math.pi * turns, n)
    r = radius_mm * (1 + wobble * rng.standard_normal(n).cumsum() / math.sqrt(n))
    return np.stack([r * np.cos(angle), r * np.sin(angle), np.full(n, z_mm)], axis=1)


@dataclass
class Parts:
    """Collects the parts of one item."""

    items: list[Part] = field(default_factory=list)

    def add(
        self,
        shape: Shape,
        material_name: str,
        density_g_cm3: float | None = None,
        *,
        cavities: tuple[Shape, ...] = (),
        fill_below_z_mm: float | None = None,
        role: str = "item",
    ) -> Part:
        m = material(material_name)
        part = Part(
            shape, m, density_g_cm3 if density_g_cm3 is not None else m.density_g_cm3, cavities, fill_below_z_mm, role
        )
        self.items.append(part)
        return part

    def hollow_box(
        self,
        centre,
        size,
        wall_mm: float,
        material_name: str,
        rot: np.ndarray = UP,
        density_g_cm3: float | None = None,
        open_top: bool = False,
    ) -> Box:
        """A box with walls; returns the cavity (to fill it). ``open_top`` makes a tray."""
        size = np.asarray(size, float)
        inner = np.maximum(size - 2 * wall_mm, 0.1)
        inner_centre = np.asarray(centre, float)
        if open_top:
            inner = inner.copy()
            inner[2] = size[2]
            inner_centre = inner_centre + rot @ np.array([0.0, 0.0, wall_mm])
        cavity = box(inner_centre, inner, rot)
        self.add(box(centre, size, rot), material_name, density_g_cm3, cavities=(cavity,))
        return cavity

    def hollow_cylinder(
        self,
        centre,
        radius_mm: float,
        length_mm: float,
        wall_mm: float,
        material_name: str,
        rot: np.ndarray = UP,
        density_g_cm3: float | None = None,
        open_top: bool = False,
    ) -> Cylinder:
        """A tube closed at both ends (a bottle, a can) or open at its top; returns the cavity."""
        inner_length = max(length_mm - 2 * wall_mm, 0.1)
        inner_centre = np.asarray(centre, float)
        if open_top:
            inner_length = length_mm
            inner_centre = inner_centre + rot @ np.array([0.0, 0.0, wall_mm])
        cavity = cylinder(inner_centre, max(radius_mm - wall_mm, 0.1), inner_length, rot)
        self.add(cylinder(centre, radius_mm, length_mm, rot), material_name, density_g_cm3, cavities=(cavity,))
        return cavity

    def ring(
        self, centre, outer_mm: float, inner_mm: float, length_mm: float, material_name: str, rot: np.ndarray = UP
    ) -> None:
        """A ring or tube open at both ends (a bearing race, a washer, a finger ring)."""
        bore = cylinder(centre, inner_mm, length_mm * 1.5, rot)
        self.add(cylinder(centre, outer_mm, length_mm, rot), material_name, cavities=(bore,))


def fill_level_z(shape: Shape, fraction: float) -> float:
    """A fill height for a vessel cavity: ``fraction`` of the way up its vertical extent.

    The filled *volume* that results is measured from the raster, not assumed."""
    x0, x1, y0, y1 = shape.bounds_xy()
    z0, z1 = shape.interval(np.linspace(x0, x1, 24), np.linspace(y0, y1, 24))
    hit = z1 > z0
    if not hit.any():
        return 0.0
    low, high = float(z0[hit].min()), float(z1[hit].max())
    return low + fraction * (high - low)
