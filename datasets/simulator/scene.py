"""3-D parcel scenes projected along the beam into per-material areal densities.

Geometry: the parcel lies on the belt (the x-y plane, z up). Rows of the scan run along the belt (x),
columns across it (y, one per detector channel); the beam is vertical and parallel (a line scanner's
fan beam without magnification). Every ray is the vertical line through a pixel centre, so each convex
primitive meets it in one z-interval ``[z_in, z_out]``. That makes the constructions a parcel needs
exact and cheap:

* hollow bodies (a bottle wall, a cardboard box, a casting with a cavity): path = outer − overlap with
  each cavity (both convex, one interval each);
* gravity fills (a half-full bottle lying on its side, powder settled in a bag): clip ``z_out`` at the
  fill level, since the beam is vertical.

The areal density a material contributes is its path length times its density (g/cm²). Partial-volume
pixels at silhouette edges are left to the detector: its blur acts on transmission, which is the
physically right place to average a pixel's footprint (blurring areal densities would not be).

All lengths are millimetres; densities g/cm³; areal densities g/cm².
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from parcelscan.datasets.physics.materials import Material

FAR_MM = 1.0e6  # stands in for ±infinity in z-intervals (finite, so no inf − inf)
PROFILE_SAMPLES = 1024  # a blob's edge profile is tabulated over the normalised radius 0..1
MM_PER_CM = 10.0


def rotation(yaw_rad: float = 0.0, pitch_rad: float = 0.0, roll_rad: float = 0.0) -> np.ndarray:
    """R = Rz(yaw) · Ry(pitch) · Rx(roll); columns are the body axes in scene coordinates."""
    cy, sy = math.cos(yaw_rad), math.sin(yaw_rad)
    cp, sp = math.cos(pitch_rad), math.sin(pitch_rad)
    cr, sr = math.cos(roll_rad), math.sin(roll_rad)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def _empty(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.full(shape, FAR_MM, np.float32), np.full(shape, -FAR_MM, np.float32)


class Shape:
    """A convex solid: its footprint bounds and its z-interval along each vertical ray."""

    def bounds_xy(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) in mm: every ray outside misses the solid."""
        raise NotImplementedError

    def interval(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z_in, z_out), each (len(xs), len(ys)) float32; a miss has z_out <= z_in."""
        raise NotImplementedError

    def moved(self, rz: np.ndarray, offset_mm: np.ndarray) -> Shape:
        """The same solid after a rotation about the vertical (``rz``) and a translation."""
        raise NotImplementedError

    def path_mm(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Path length of each ray through the solid (mm)."""
        z0, z1 = self.interval(xs, ys)
        return np.maximum(z1 - z0, 0.0)

    def prism(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, float, float] | None:
        """(footprint, z_bottom, z_top) when the solid is a vertical prism (a flat-lying box, an upright
        disc), else None: then paths and overlaps need no per-pixel intervals."""
        return None


@dataclass(frozen=True, eq=False)
class _Posed(Shape):
    """A shape with a centre and an orientation: rays are expressed in body coordinates."""

    centre_mm: np.ndarray
    rot: np.ndarray  # 3x3, columns = body axes

    def _ray(self, xs: np.ndarray, ys: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Body-frame origin o_i (arrays) and direction d_i (scalars) of the rays (x, y, 0) + t·ẑ."""
        dx = (xs - self.centre_mm[0]).astype(np.float32)[:, None]
        dy = (ys - self.centre_mm[1]).astype(np.float32)[None, :]
        r = self.rot.astype(np.float32)
        cz = np.float32(self.centre_mm[2])
        origin = [r[0, i] * dx + r[1, i] * dy - r[2, i] * cz for i in range(3)]
        return origin, self.rot[2, :].astype(np.float64)

    def _moved_pose(self, rz: np.ndarray, offset_mm: np.ndarray) -> dict:
        return {"centre_mm": rz @ self.centre_mm + offset_mm, "rot": rz @ self.rot}


def _box_around(centre_mm: np.ndarray, half_x_mm: float, half_y_mm: float) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of the footprint box of half-extents (half_x_mm, half_y_mm) around a centre."""
    return (centre_mm[0] - half_x_mm, centre_mm[0] + half_x_mm, centre_mm[1] - half_y_mm, centre_mm[1] + half_y_mm)


def _slab(o: np.ndarray, d: float, half: float) -> tuple[np.ndarray, np.ndarray]:
    """Interval of t where |o + t·d| <= half."""
    if abs(d) > 1e-9:
        ta = (-half - o) / np.float32(d)
        tb = (half - o) / np.float32(d)
        return np.minimum(ta, tb), np.maximum(ta, tb)
    inside = np.abs(o) <= half
    return np.where(inside, -FAR_MM, FAR_MM).astype(np.float32), np.where(inside, FAR_MM, -FAR_MM).astype(np.float32)


def _quadratic(a: float, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Roots of a·t² + b·t + c = 0 as an interval (empty where none)."""
    disc = b * b - np.float32(4.0 * a) * c
    hit = disc >= 0
    root = np.sqrt(np.maximum(disc, 0.0))
    t0 = np.where(hit, (-b - root) / np.float32(2.0 * a), FAR_MM)
    t1 = np.where(hit, (-b + root) / np.float32(2.0 * a), -FAR_MM)
    return t0.astype(np.float32), t1.astype(np.float32)


@dataclass(frozen=True, eq=False)
class Box(_Posed):
    """A cuboid of half-sizes ``half_mm`` (body x, y, z). Tiles, books, slabs, castings, boxes."""

    half_mm: np.ndarray = field(default_factory=lambda: np.ones(3))

    def bounds_xy(self):
        ext = np.abs(self.rot[:2, :]) @ self.half_mm
        return _box_around(self.centre_mm, ext[0], ext[1])

    def _vertical_axis(self) -> int | None:
        """The body axis that is vertical, if any (then the footprint is a rectangle of constant depth)."""
        k = int(np.argmax(np.abs(self.rot[2, :])))
        return k if abs(self.rot[2, k]) > 1.0 - 1e-9 else None

    def _footprint(self, xs, ys, k: int) -> np.ndarray:
        a, b = (i for i in range(3) if i != k)
        dx = (xs - self.centre_mm[0]).astype(np.float32)[:, None]
        dy = (ys - self.centre_mm[1]).astype(np.float32)[None, :]
        r = self.rot.astype(np.float32)
        inside_a = np.abs(r[0, a] * dx + r[1, a] * dy) <= np.float32(self.half_mm[a])
        inside_b = np.abs(r[0, b] * dx + r[1, b] * dy) <= np.float32(self.half_mm[b])
        return inside_a & inside_b

    def path_mm(self, xs, ys):
        k = self._vertical_axis()
        if k is None:
            return super().path_mm(xs, ys)
        return self._footprint(xs, ys, k).astype(np.float32) * np.float32(2.0 * self.half_mm[k])

    def prism(self, xs, ys):
        k = self._vertical_axis()
        if k is None:
            return None
        return self._footprint(xs, ys, k), self.centre_mm[2] - self.half_mm[k], self.centre_mm[2] + self.half_mm[k]

    def interval(self, xs, ys):
        k = self._vertical_axis()
        if k is not None:
            inside = self._footprint(xs, ys, k)
            cz, hz = self.centre_mm[2], self.half_mm[k]
            return (
                np.where(inside, np.float32(cz - hz), np.float32(FAR_MM)),
                np.where(inside, np.float32(cz + hz), np.float32(-FAR_MM)),
            )
        origin, direction = self._ray(xs, ys)
        z0, z1 = None, None
        for i in range(3):
            lo, hi = _slab(origin[i], direction[i], np.float32(self.half_mm[i]))
            z0 = lo if z0 is None else np.maximum(z0, lo)
            z1 = hi if z1 is None else np.minimum(z1, hi)
        return z0, z1

    def moved(self, rz, offset_mm):
        return Box(**self._moved_pose(rz, offset_mm), half_mm=self.half_mm)

    def volume_mm3(self) -> float:
        return float(8.0 * np.prod(self.half_mm))


@dataclass(frozen=True, eq=False)
class Cylinder(_Posed):
    """A right circular cylinder along the body z axis. Bottles, cans, cells, shafts, coins, magnets."""

    radius_mm: float = 1.0
    half_length_mm: float = 1.0

    def bounds_xy(self):
        axis = self.rot[:, 2]
        ext = np.abs(axis[:2]) * self.half_length_mm + self.radius_mm * np.sqrt(np.maximum(1.0 - axis[:2] ** 2, 0.0))
        return _box_around(self.centre_mm, ext[0], ext[1])

    def interval(self, xs, ys):
        (ox, oy, oz), (dx, dy, dz) = self._ray(xs, ys)
        a = dx * dx + dy * dy
        if a > 1e-12:
            r0, r1 = _quadratic(
                a, 2.0 * (ox * np.float32(dx) + oy * np.float32(dy)), ox * ox + oy * oy - np.float32(self.radius_mm**2)
            )
        else:  # axis vertical: the ray runs along the axis inside the disc
            inside = ox * ox + oy * oy <= self.radius_mm**2
            r0 = np.where(inside, -FAR_MM, FAR_MM).astype(np.float32)
            r1 = np.where(inside, FAR_MM, -FAR_MM).astype(np.float32)
        s0, s1 = _slab(oz, dz, np.float32(self.half_length_mm))
        return np.maximum(r0, s0), np.minimum(r1, s1)

    def prism(self, xs, ys):
        if abs(self.rot[2, 2]) < 1.0 - 1e-9:
            return None
        dx = (xs - self.centre_mm[0]).astype(np.float32)[:, None]
        dy = (ys - self.centre_mm[1]).astype(np.float32)[None, :]
        inside = dx * dx + dy * dy <= np.float32(self.radius_mm**2)
        return inside, self.centre_mm[2] - self.half_length_mm, self.centre_mm[2] + self.half_length_mm

    def path_mm(self, xs, ys):
        prism = self.prism(xs, ys)
        if prism is None:
            return super().path_mm(xs, ys)
        return prism[0].astype(np.float32) * np.float32(prism[2] - prism[1])

    def moved(self, rz, offset_mm):
        return Cylinder(**self._moved_pose(rz, offset_mm), radius_mm=self.radius_mm, half_length_mm=self.half_length_mm)

    def volume_mm3(self) -> float:
        return math.pi * self.radius_mm**2 * 2.0 * self.half_length_mm


@dataclass(frozen=True, eq=False)
class Ellipsoid(_Posed):
    """An ellipsoid of semi-axes ``semi_mm``. Fruit, pebbles, lead weights, rounded housings."""

    semi_mm: np.ndarray = field(default_factory=lambda: np.ones(3))

    def bounds_xy(self):
        ext = np.sqrt((self.rot[:2, :] ** 2) @ (self.semi_mm**2))
        return _box_around(self.centre_mm, ext[0], ext[1])

    def interval(self, xs, ys):
        origin, direction = self._ray(xs, ys)
        o = [origin[i] / np.float32(self.semi_mm[i]) for i in range(3)]
        d = [direction[i] / self.semi_mm[i] for i in range(3)]
        a = d[0] ** 2 + d[1] ** 2 + d[2] ** 2
        b = np.float32(2.0 * d[0]) * o[0] + np.float32(2.0 * d[1]) * o[1] + np.float32(2.0 * d[2]) * o[2]
        c = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - np.float32(1.0)
        return _quadratic(a, b, c)

    def moved(self, rz, offset_mm):
        return Ellipsoid(**self._moved_pose(rz, offset_mm), semi_mm=self.semi_mm)

    def volume_mm3(self) -> float:
        return float(4.0 / 3.0 * math.pi * np.prod(self.semi_mm))


@functools.lru_cache(maxsize=256)
def _edge_profile(power: float) -> np.ndarray:
    """(1 − ρ^p)^(1/p) on ρ = 0..1, ending at exactly 0 (ρ >= 1 is outside)."""
    rho = np.linspace(0.0, 1.0, PROFILE_SAMPLES)
    table = np.power(np.maximum(1.0 - rho**power, 0.0), 1.0 / power).astype(np.float32)
    table[-1] = 0.0
    return table


@dataclass(frozen=True, eq=False)
class Blob(Shape):
    """An irregular soft body: folded clothing, a bag of flour, a sack of grout, a powder pouch.

    Outline: an ellipse (semi-axes ``rx_mm``, ``ry_mm``, turned by ``yaw_rad``) whose radius is modulated
    by low harmonics. Thickness: ``thickness_mm`` at the centre, falling to 0 at the outline with the
    profile (1 − ρ^p)^(1/p) (large p: a flat pillow; p = 2: a lens), times (1 + texture), a smooth random
    field (folds, creases, lumps) given on a small grid over the body's own frame and interpolated. The
    mid-surface is the plane through ``centre_mm`` with slopes ``tilt`` (dz/dx, dz/dy).
    """

    centre_mm: np.ndarray
    rx_mm: float
    ry_mm: float
    thickness_mm: float
    yaw_rad: float = 0.0
    edge_power: float = 3.0
    harmonics: tuple[tuple[int, float, float], ...] = ()  # (k, amplitude, phase) of the outline radius
    texture: np.ndarray | None = None  # (n, n) relative thickness change over u, v ∈ [−1, 1]
    tilt: tuple[float, float] = (0.0, 0.0)

    def _max_radius_scale(self) -> float:
        return 1.0 + sum(abs(a) for _, a, _ in self.harmonics)

    def bounds_xy(self):
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        scale = self._max_radius_scale()
        ex = math.hypot(self.rx_mm * c, self.ry_mm * s) * scale
        ey = math.hypot(self.rx_mm * s, self.ry_mm * c) * scale
        return _box_around(self.centre_mm, ex, ey)

    def thickness_map(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        dx = (xs - self.centre_mm[0]).astype(np.float32)[:, None]
        dy = (ys - self.centre_mm[1]).astype(np.float32)[None, :]
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        u = np.float32(c / self.rx_mm) * dx + np.float32(s / self.rx_mm) * dy
        v = np.float32(-s / self.ry_mm) * dx + np.float32(c / self.ry_mm) * dy
        rho = np.sqrt(u * u + v * v)
        if self.harmonics:  # cos(kφ), sin(kφ) by the angle-addition recurrence (no arctan2, no cos)
            inv = 1.0 / np.maximum(rho, np.float32(1e-6))
            c1, s1 = u * inv, v * inv
            ck, sk = c1, s1
            radius = np.ones_like(rho)
            for k in range(1, max(k for k, _, _ in self.harmonics) + 1):
                if k > 1:
                    ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
                for order, amplitude, phase in self.harmonics:
                    if order == k:
                        radius += (
                            np.float32(amplitude * math.cos(phase)) * ck - np.float32(amplitude * math.sin(phase)) * sk
                        )
            rho /= radius
        index = np.minimum(rho * np.float32(PROFILE_SAMPLES - 1) + np.float32(0.5), PROFILE_SAMPLES - 1).astype(np.intp)
        thickness = _edge_profile(round(self.edge_power, 2))[index] * np.float32(self.thickness_mm)
        if self.texture is not None:
            import cv2

            n = self.texture.shape[0]
            scale = np.float32((n - 1) / 2.0)
            wave = cv2.remap(
                self.texture, (u + 1.0) * scale, (v + 1.0) * scale, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
            )
            thickness *= np.maximum(wave + np.float32(1.0), 0.0)
        return thickness

    def path_mm(self, xs, ys):
        return self.thickness_map(xs, ys)

    def interval(self, xs, ys):
        half = np.float32(0.5) * self.thickness_map(xs, ys)
        mid = np.float32(self.centre_mm[2])
        if self.tilt[0] or self.tilt[1]:
            dx = (xs - self.centre_mm[0]).astype(np.float32)[:, None]
            dy = (ys - self.centre_mm[1]).astype(np.float32)[None, :]
            mid = mid + np.float32(self.tilt[0]) * dx + np.float32(self.tilt[1]) * dy
        hit = half > 0
        return (
            np.where(hit, mid - half, np.float32(FAR_MM)).astype(np.float32),
            np.where(hit, mid + half, np.float32(-FAR_MM)).astype(np.float32),
        )

    def moved(self, rz, offset_mm):
        angle = math.atan2(rz[1, 0], rz[0, 0])
        tilt = rz[:2, :2] @ np.asarray(self.tilt)
        return Blob(
            rz @ self.centre_mm + offset_mm,
            self.rx_mm,
            self.ry_mm,
            self.thickness_mm,
            self.yaw_rad + angle,
            self.edge_power,
            self.harmonics,
            self.texture,
            (float(tilt[0]), float(tilt[1])),
        )

    def scaled(self, factor_xy: float = 1.0, factor_z: float = 1.0) -> Blob:
        """The same outline shrunk or grown about its centre (an inner bag inside a sack)."""
        return Blob(
            self.centre_mm,
            self.rx_mm * factor_xy,
            self.ry_mm * factor_xy,
            self.thickness_mm * factor_z,
            self.yaw_rad,
            self.edge_power,
            self.harmonics,
            None,
            self.tilt,
        )


@dataclass(frozen=True, eq=False)
class Polyline(Shape):
    """A bent round strand through ``points_mm`` (n, 3): cables, chains, zips, wires.

    Each segment is a cylinder lying near the belt plane; a ray's path is the chord through the nearest
    segment (overlaps at joints are not counted twice).
    """

    points_mm: np.ndarray
    radius_mm: float

    def bounds_xy(self):
        p = self.points_mm
        r = self.radius_mm
        return p[:, 0].min() - r, p[:, 0].max() + r, p[:, 1].min() - r, p[:, 1].max() + r

    def interval(self, xs, ys):
        shape = (len(xs), len(ys))
        best = np.zeros(shape, np.float32)
        mid = np.zeros(shape, np.float32)
        r = self.radius_mm
        r2 = np.float32(r * r)
        for a, b in zip(self.points_mm[:-1], self.points_mm[1:], strict=True):
            i0 = int(np.searchsorted(xs, min(a[0], b[0]) - r))
            i1 = int(np.searchsorted(xs, max(a[0], b[0]) + r))
            j0 = int(np.searchsorted(ys, min(a[1], b[1]) - r))
            j1 = int(np.searchsorted(ys, max(a[1], b[1]) + r))
            if i1 <= i0 or j1 <= j0:
                continue
            px = (xs[i0:i1] - a[0]).astype(np.float32)[:, None]
            py = (ys[j0:j1] - a[1]).astype(np.float32)[None, :]
            seg = (b - a).astype(np.float32)
            length2 = float(seg[0] ** 2 + seg[1] ** 2)
            if length2 > 1e-9:
                t = np.clip((px * seg[0] + py * seg[1]) / np.float32(length2), 0.0, 1.0)
            else:
                t = np.zeros((i1 - i0, j1 - j0), np.float32)
            ex = px - t * seg[0]
            ey = py - t * seg[1]
            half = np.sqrt(np.maximum(r2 - ex * ex - ey * ey, 0.0))
            window = best[i0:i1, j0:j1]
            better = half > window
            mid[i0:i1, j0:j1] = np.where(better, np.float32(a[2]) + t * seg[2], mid[i0:i1, j0:j1])
            np.maximum(window, half, out=window)
        hit = best > 0
        return np.where(hit, mid - best, FAR_MM).astype(np.float32), np.where(hit, mid + best, -FAR_MM).astype(
            np.float32
        )

    def moved(self, rz, offset_mm):
        return Polyline(self.points_mm @ rz.T + offset_mm, self.radius_mm)

    def volume_mm3(self) -> float:
        lengths = np.linalg.norm(np.diff(self.points_mm, axis=0), axis=1)
        return float(math.pi * self.radius_mm**2 * lengths.sum())


def slab(centre_mm, size_mm, yaw_rad: float = 0.0, pitch_rad: float = 0.0, roll_rad: float = 0.0) -> Box:
    """A flat box (a tile, a book, a sheet) of full sizes ``size_mm`` (length, width, thickness)."""
    return Box(np.asarray(centre_mm, float), rotation(yaw_rad, pitch_rad, roll_rad), np.asarray(size_mm, float) / 2.0)


# --- parts and rasterisation ----------------------------------------------------------------------------
@dataclass
class Part:
    """One material body of the scene.

    ``cavities`` are solids removed from it (they must lie inside it); ``fill_below_z_mm`` keeps only
    what lies below a level (liquids and powders settle). ``role``: ``container`` (the parcel's own
    packaging), ``item`` (contents), ``vessel`` (what holds a concealment or its look-alike filling),
    ``fill`` (a look-alike's benign filling) or ``target`` (the concealed powder: it makes the mask).
    ``item_id`` groups the parts of one object.

    A mixture (5 % Nd2O3 in grout, a slurry) is the primary material at its *partial* density (its mass
    per volume of mixture) plus ``admixture``: the other components at theirs. Optical depth is linear
    in the areal densities, so this is exactly the mixture, and the target's own areal density (the mask,
    the mass) stays separate.
    """

    shape: Shape
    material: Material
    density_g_cm3: float
    cavities: tuple[Shape, ...] = ()
    fill_below_z_mm: float | None = None
    role: str = "item"
    item_id: int = -1
    admixture: tuple[tuple[Material, float], ...] = ()  # (material, partial density g/cm³)

    def moved(self, rz: np.ndarray, offset_mm: np.ndarray) -> Part:
        fill = None if self.fill_below_z_mm is None else self.fill_below_z_mm + float(offset_mm[2])
        return Part(
            self.shape.moved(rz, offset_mm),
            self.material,
            self.density_g_cm3,
            tuple(c.moved(rz, offset_mm) for c in self.cavities),
            fill,
            self.role,
            self.item_id,
            self.admixture,
        )


def path_length_mm(part: Part, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Path length (mm) of each vertical ray through the part, on the grid xs × ys."""
    if part.fill_below_z_mm is None and not part.cavities:
        return part.shape.path_mm(xs, ys)
    if part.fill_below_z_mm is None:
        fast = _prism_path(part, xs, ys)
        if fast is not None:
            return fast
    z0, z1 = part.shape.interval(xs, ys)
    if part.fill_below_z_mm is not None:
        z1 = np.minimum(z1, np.float32(part.fill_below_z_mm))
    path = np.maximum(z1 - z0, 0.0)
    for cavity in part.cavities:
        c0, c1 = cavity.interval(xs, ys)
        path -= np.maximum(np.minimum(z1, c1) - np.maximum(z0, c0), 0.0)
    return np.maximum(path, 0.0)


def _prism_path(part: Part, xs: np.ndarray, ys: np.ndarray) -> np.ndarray | None:
    """Hollow prisms (a carton, a flat tray, a washer lying flat): constant depths, footprints only."""
    outer = part.shape.prism(xs, ys)
    if outer is None:
        return None
    inner = [c.prism(xs, ys) for c in part.cavities]
    if any(c is None for c in inner):
        return None
    footprint, z0, z1 = outer
    path = footprint.astype(np.float32) * np.float32(z1 - z0)
    for cavity, c0, c1 in inner:
        overlap = min(z1, c1) - max(z0, c0)
        if overlap > 0:
            path -= (footprint & cavity).astype(np.float32) * np.float32(overlap)
    return np.maximum(path, 0.0)


def volume_mm3(part: Part, samples: int = 160) -> float:
    """Volume of a part (after cavities and fill level), by integrating its path over a fine grid."""
    x0, x1, y0, y1 = part.shape.bounds_xy()
    xs = np.linspace(x0, x1, samples, endpoint=False) + (x1 - x0) / (2 * samples)
    ys = np.linspace(y0, y1, samples, endpoint=False) + (y1 - y0) / (2 * samples)
    return float(path_length_mm(part, xs, ys).sum(dtype=np.float64) * (x1 - x0) * (y1 - y0) / samples**2)


@dataclass
class Grid:
    """The scan grid: ``rows`` along the belt, ``cols`` detector channels, square pixels."""

    rows: int
    cols: int
    pitch_mm: float

    def centres(self, lo_mm: float, hi_mm: float, n: int) -> tuple[int, int, np.ndarray]:
        """Pixel index range [i0, i1) whose centres lie in [lo, hi], and those centres (mm)."""
        i0 = max(math.floor(lo_mm / self.pitch_mm - 0.5), 0)
        i1 = min(math.ceil(hi_mm / self.pitch_mm - 0.5) + 1, n)
        return i0, i1, (np.arange(i0, i1) + 0.5) * self.pitch_mm


@dataclass
class Raster:
    """A projected scene: what the forward model and the labels need."""

    materials: list[Material]
    areal_g_cm2: np.ndarray  # (M, rows, cols) float32
    target_g_cm2: np.ndarray  # (rows, cols) areal density of the concealed powder (0 where none)
    fill: np.ndarray  # (rows, cols) bool: where a concealment's or a look-alike's filling lies
    clutter: np.ndarray  # (rows, cols) bool: footprint of contents other than the concealment itself
    target_mass_g: float = 0.0  # mass of the target material itself (not of what it is mixed with)
    fill_g_cm2: np.ndarray | None = None  # (rows, cols) areal density of the whole filling, carrier included
    # per part of the rasterised list, in its order: the sum of its path lengths (mm) over the grid, 0 where it lies
    # off the grid; the declaration weighs parts from these (``declarations.part_mass_g``), not by projecting again
    part_path_sums_mm: tuple[float, ...] = ()


def rasterise(parts: list[Part], grid: Grid) -> Raster:
    """Project every part onto the grid, each only over its own footprint's bounding box."""
    index: dict[int, int] = {}
    materials: list[Material] = []
    for part in parts:
        for material in (part.material, *(m for m, _ in part.admixture)):
            if id(material) not in index:
                index[id(material)] = len(materials)
                materials.append(material)
    areal = np.zeros((len(materials), grid.rows, grid.cols), np.float32)
    target = np.zeros((grid.rows, grid.cols), np.float32)
    clutter = np.zeros((grid.rows, grid.cols), bool)
    fill = np.zeros((grid.rows, grid.cols), bool)
    fill_areal = np.zeros((grid.rows, grid.cols), np.float32)
    path_sums_mm = []
    for part in parts:
        x0, x1, y0, y1 = part.shape.bounds_xy()
        r0, r1, xs = grid.centres(x0, x1, grid.rows)
        c0, c1, ys = grid.centres(y0, y1, grid.cols)
        if r1 <= r0 or c1 <= c0:
            path_sums_mm.append(0.0)
            continue
        path_mm = path_length_mm(part, xs, ys)
        path_sums_mm.append(float(path_mm.sum()))
        path_cm = path_mm * np.float32(1.0 / MM_PER_CM)
        areal_part = path_cm * np.float32(part.density_g_cm3)
        areal[index[id(part.material)], r0:r1, c0:c1] += areal_part
        for material, partial_density in part.admixture:
            areal[index[id(material)], r0:r1, c0:c1] += path_cm * np.float32(partial_density)
        if part.role == "target":
            target[r0:r1, c0:c1] += areal_part
        if part.role in ("target", "fill"):
            fill[r0:r1, c0:c1] |= path_cm > 0
            total_density = part.density_g_cm3 + sum(d for _, d in part.admixture)
            fill_areal[r0:r1, c0:c1] += path_cm * np.float32(total_density)
        elif part.role == "item":
            clutter[r0:r1, c0:c1] |= path_cm > 0
    pixel_area_cm2 = (grid.pitch_mm / MM_PER_CM) ** 2
    mass = float(target.sum(dtype=np.float64) * pixel_area_cm2)
    return Raster(materials, areal, target, fill, clutter, mass, fill_areal, tuple(path_sums_mm))
