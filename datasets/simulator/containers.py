"""Postal packaging: cardboard boxes, padded envelopes, poly mailers, letters, and packing fill.

A container is built in the parcel frame: x ∈ [−L/2, L/2] (length), y ∈ [−W/2, W/2], z ∈ [0, H], with
an ``interior`` where contents go. Corrugated board is modelled as cardboard at its *effective* density
(paper plus the air of the flutes: 0.12–0.25 g/cm³ over the wall thickness), which is what sets its
areal density (400–1200 g/m² per wall).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from parcelscan.datasets.simulator.scene import Part, rotation
from parcelscan.datasets.simulator.shapes import Parts, blob, box, choice, ellipsoid, uniform

CONTAINER_CLASS = {"box": "box", "padded_envelope": "soft", "poly_mailer": "soft", "letter": "letter"}

# (length, width, height) ranges in mm per box size; the scanner tunnel is 640 mm wide
BOX_SIZES = {
    "small": ((150, 320), (100, 240), (50, 160)),
    "medium": ((280, 450), (200, 340), (100, 300)),
    "large": ((400, 600), (300, 440), (200, 450)),
}


@dataclass
class Container:
    kind: str
    size_mm: tuple[float, float, float]  # outer (L, W, H)
    parts: list[Part]
    interior: tuple[float, float, float, float, float, float]  # x0, x1, y0, y1, z0, z1

    @property
    def container_class(self) -> str:
        return CONTAINER_CLASS[self.kind]

    @property
    def fit(self) -> np.ndarray:
        x0, x1, y0, y1, z0, z1 = self.interior
        return np.array([x1 - x0, y1 - y0, z1 - z0])


def _sizes(rng, ranges, min_size_mm=(0, 0, 0)) -> tuple[float, float, float]:
    """(L, W, H) drawn within the ranges, each at least its minimum (drawn above it, never clamped to it)."""
    length, width, height = (
        uniform(rng, max(lo, m), max(hi, m + 30)) for (lo, hi), m in zip(ranges, min_size_mm, strict=True)
    )
    if width > length:
        length, width = width, length
    return length, width, height


def cardboard_box(rng: np.random.Generator, size: str | None = None, min_size_mm=(0, 0, 0)) -> Container:
    """A regular slotted carton: walls, doubled flaps top and bottom, tape, a label."""
    size = size or choice(rng, list(BOX_SIZES), [4, 4, 2])
    length, width, height = _sizes(rng, BOX_SIZES[size], min_size_mm)
    wall = uniform(rng, 3, 7) if size != "small" else uniform(rng, 2, 4.5)
    density = uniform(rng, 0.12, 0.25)
    p = Parts()
    p.hollow_box((0, 0, height / 2), (length, width, height), wall, "cardboard", density_g_cm3=density)
    flap = width / 2 * uniform(rng, 0.5, 1.0)  # inner flaps under the outer ones
    for z in (wall * 1.5, height - wall * 1.5):
        for side in (-1, 1):
            p.add(
                box((side * (length / 2 - flap / 2 - wall), 0, z), (flap, width - 2 * wall, wall)), "cardboard", density
            )
    tape = choice(rng, ["polypropylene", "PVC", "paper"])
    for z in (height + 0.05, -0.05):
        p.add(box((0, 0, z), (length + 120, uniform(rng, 38, 75), 0.1)), tape, 1.2)
    if rng.random() < 0.8:  # shipping label
        p.add(
            box((uniform(rng, -0.2, 0.2) * length, uniform(rng, -0.2, 0.2) * width, height + 0.2), (150, 100, 0.2)),
            "paper",
        )
    inner = (-length / 2 + wall, length / 2 - wall, -width / 2 + wall, width / 2 - wall, wall * 2, height - wall * 2)
    return Container("box", (length, width, height), _as_container(p), inner)


def padded_envelope(rng: np.random.Generator) -> Container:
    """Kraft paper faces lined with bubble film."""
    length, width = choice(rng, [(250, 180), (340, 240), (360, 260), (445, 300), (470, 350)])
    height = uniform(rng, 10, 45)
    p = Parts()
    for z in (0.1, height - 0.1):
        p.add(box((0, 0, z), (length, width, 0.15)), "paper", 0.8)
        p.add(
            box((0, 0, z + (2 if z < 1 else -2)), (length - 8, width - 8, 3.5)),
            "polyethylene",
            uniform(rng, 0.01, 0.025),
        )
    p.add(box((length / 2 - 20, 0, height / 2), (40, width, 0.5)), "paper", 0.8)  # flap and seal
    inner = (-length / 2 + 6, length / 2 - 6, -width / 2 + 6, width / 2 - 6, 4, height - 4)
    return Container("padded_envelope", (length, width, height), _as_container(p), inner)


def poly_mailer(rng: np.random.Generator) -> Container:
    length, width = choice(rng, [(350, 250), (400, 300), (500, 400), (550, 450), (600, 500)])
    height = uniform(rng, 15, 120)
    p = Parts()
    film = uniform(rng, 0.05, 0.1)
    for z in (0.05, height - 0.05):
        p.add(box((0, 0, z), (length, width, film)), "polyethylene")
    p.add(box((length / 2 - 25, 0, height - 0.2), (40, width, film * 2)), "polyethylene")
    if rng.random() < 0.7:
        p.add(box((0, 0, height), (150, 100, 0.2)), "paper")
    inner = (-length / 2 + 10, length / 2 - 10, -width / 2 + 10, width / 2 - 10, 1, height - 1)
    return Container("poly_mailer", (length, width, height), _as_container(p), inner)


def letter(rng: np.random.Generator) -> Container:
    length, width = choice(rng, [(220, 110), (229, 162), (324, 229), (250, 176)])
    height = uniform(rng, 1.5, 8)
    p = Parts()
    for z in (0.05, height - 0.05):
        p.add(box((0, 0, z), (length, width, 0.1)), "paper", 0.8)
    p.add(box((0, width * 0.25, height - 0.15), (length, width * 0.5, 0.1)), "paper", 0.8)  # flap
    inner = (-length / 2 + 2, length / 2 - 2, -width / 2 + 2, width / 2 - 2, 0.2, height - 0.2)
    return Container("letter", (length, width, height), _as_container(p), inner)


def _as_container(p: Parts) -> list[Part]:
    for part in p.items:
        part.role = "container"
    return p.items


def packing_fill(rng: np.random.Generator, container: Container) -> list[Part]:
    """Crumpled paper, bubble wrap or foam peanuts in a box (often none)."""
    if container.kind != "box":
        return []
    x0, x1, y0, y1, z0, z1 = container.interior
    kind = choice(rng, ["none", "paper", "bubble", "peanuts", "foam"], [3, 3, 2, 1.5, 1])
    p = Parts()
    if kind == "paper":
        for _ in range(int(rng.integers(2, 8))):
            r = min(uniform(rng, 40, 120), (x1 - x0) / 2.6, (y1 - y0) / 2.6)
            centre = (
                uniform(rng, x0 + 1.2 * r, x1 - 1.2 * r),
                uniform(rng, y0 + 1.2 * r, y1 - 1.2 * r),
                uniform(rng, z0, z1),
            )
            p.add(
                blob(
                    rng,
                    centre,
                    r,
                    r * uniform(rng, 0.5, 1),
                    min(r, z1 - z0),
                    edge_power=2,
                    lumpiness=0.15,
                    folds=0.5,
                    fold_scale_mm=30,
                    creases=True,
                ),
                "paper",
                uniform(rng, 0.02, 0.07),
            )
    elif kind == "bubble":
        for _ in range(int(rng.integers(1, 4))):
            size = ((x1 - x0) * uniform(rng, 0.4, 1), (y1 - y0) * uniform(rng, 0.4, 1), uniform(rng, 4, 12))
            p.add(
                box(
                    (
                        uniform(rng, x0 + size[0] / 2, x1 - size[0] / 2),
                        uniform(rng, y0 + size[1] / 2, y1 - size[1] / 2),
                        uniform(rng, z0, z1),
                    ),
                    size,
                ),
                "polyethylene",
                uniform(rng, 0.008, 0.02),
            )
    elif kind == "peanuts":
        for _ in range(int(rng.integers(10, 40))):
            p.add(
                ellipsoid(
                    (uniform(rng, x0 + 20, x1 - 20), uniform(rng, y0 + 20, y1 - 20), uniform(rng, z0, z1)),
                    (uniform(rng, 12, 22), uniform(rng, 6, 10), 6),
                    rotation(uniform(rng, 0, 6.3)),
                ),
                "EPS foam",
                uniform(rng, 0.01, 0.02),
            )
    elif kind == "foam":
        for z in (z0 + 10, z1 - 10):
            p.add(box(((x0 + x1) / 2, (y0 + y1) / 2, z), (x1 - x0, y1 - y0, 20)), choice(rng, ["EPS foam", "PU foam"]))
    for part in p.items:
        part.role = "container"  # packing is packaging, not clutter that hides anything
    return p.items


def rotated_extent(size_mm, yaw_rad: float) -> tuple[float, float]:
    """Footprint extent (along belt, across belt) of an L×W rectangle turned by yaw."""
    c, s = abs(math.cos(yaw_rad)), abs(math.sin(yaw_rad))
    return size_mm[0] * c + size_mm[1] * s, size_mm[0] * s + size_mm[1] * c
