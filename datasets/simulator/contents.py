"""Benign parcel contents: what people actually post, with honest materials and sizes.

Each builder makes one item in its own frame (footprint around the origin, bottom at z = 0) sized to fit
the space it is given (``fit``: length, width, height in mm). ``place`` turns and moves an item into
the parcel. ``BENIGN_KINDS`` lists the kinds with the containers they travel in and how common they
are. Several kinds carry high-Z or rare-earth-bearing parts on purpose: speakers, motors and phones
with NdFeB magnets, ferrocerium fire steels, lead and bismuth weights, tungsten-carbide bits, solder,
brass, barite — legal goods a detector must learn to leave alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from parcelscan.datasets.simulator.goods import material
from parcelscan.datasets.simulator.scene import Blob, Part, rotation
from parcelscan.datasets.simulator.shapes import (
    LYING_X,
    UP,
    Parts,
    blob,
    box,
    choice,
    coil,
    cylinder,
    ellipsoid,
    fill_level_z,
    log_uniform,
    strand,
    uniform,
    wander,
)


@dataclass
class Item:
    """One object in its own frame: footprint around the origin, bottom at z = 0."""

    kind: str
    parts: list[Part]
    height_mm: float


Builder = Callable[[np.random.Generator, np.ndarray], Item]


def _fit(size: float, limit: float, margin: float = 0.95) -> float:
    return float(min(size, limit * margin))


# --- soft goods ---------------------------------------------------------------------------------------
def clothing(rng, fit) -> Item:
    p = Parts()
    rx = _fit(uniform(rng, 90, 230), fit[0] / 2)
    ry = _fit(uniform(rng, 70, 170), fit[1] / 2)
    t = _fit(uniform(rng, 12, 70), fit[2])
    p.add(
        blob(
            rng,
            (0, 0, t / 2),
            rx,
            ry,
            t,
            edge_power=uniform(rng, 2.5, 6),
            lumpiness=0.12,
            folds=0.6,
            fold_scale_mm=uniform(rng, 25, 60),
            creases=rng.random() < 0.6,
        ),
        "textile",
        uniform(rng, 0.15, 0.45),
    )
    if rng.random() < 0.35:  # zip
        zip_length = uniform(rng, 0.5, 1.6) * ry
        y = np.linspace(-zip_length / 2, zip_length / 2, 6)
        points = np.stack([uniform(rng, -0.4, 0.4) * rx + rng.normal(0, 4, 6), y, np.full(6, t * 0.6)], 1)
        p.add(strand(points, uniform(rng, 1.5, 3.0)), choice(rng, ["brass", "nylon", "stainless steel"]), None)
    if rng.random() < 0.4:  # buttons or rivets
        metal = choice(rng, ["brass", "ABS", "stainless steel", "nylon"])
        for _ in range(int(rng.integers(2, 8))):
            p.add(
                cylinder(
                    (uniform(rng, -0.6, 0.6) * rx, uniform(rng, -0.6, 0.6) * ry, t * 0.7),
                    uniform(rng, 4, 9),
                    uniform(rng, 1.5, 3.5),
                ),
                metal,
            )
    return Item("clothing", p.items, t)


def shoes(rng, fit) -> Item:
    p = Parts()
    length = _fit(uniform(rng, 220, 310), fit[0])
    width = uniform(rng, 80, 110)
    height = _fit(uniform(rng, 60, 120), fit[2])
    for side in (-1, 1) if fit[1] > 2 * width else (0,):
        y = side * width * 0.55
        sole = uniform(rng, 12, 30)
        p.add(
            blob(rng, (0, y, sole / 2), length / 2, width / 2, sole, edge_power=6, lumpiness=0.05),
            "rubber",  # solid rubber, or microcellular EVA/PU soles at a third of its density
            uniform(rng, 0.3, 1.1),
        )
        upper = blob(
            rng,
            (-length * 0.05, y, sole + (height - sole) / 2),
            length * 0.45,
            width * 0.48,
            height - sole,
            edge_power=2.2,
            lumpiness=0.06,
        )
        p.add(upper, choice(rng, ["leather", "textile"]), uniform(rng, 0.12, 0.3))
        if rng.random() < 0.3:  # steel shank
            p.add(box((length * 0.05, y, sole * 0.5), (80, 14, 1.5)), "steel")
        if rng.random() < 0.3:  # eyelets
            for k in range(5):
                p.ring((length * (0.1 + 0.05 * k), y - width * 0.25, height * 0.8), 3, 1.8, 1.2, "brass")
                p.ring((length * (0.1 + 0.05 * k), y + width * 0.25, height * 0.8), 3, 1.8, 1.2, "brass")
    return Item("shoes", p.items, height)


def book(rng, fit) -> Item:
    p = Parts()
    size = (
        _fit(uniform(rng, 140, 300), fit[0]),
        _fit(uniform(rng, 100, 220), fit[1]),
        _fit(log_uniform(rng, 5, 60), fit[2]),
    )
    p.add(box((0, 0, size[2] / 2), size), "paper", uniform(rng, 0.6, 0.9))
    if rng.random() < 0.4:  # hard cover
        for z in (1.0, size[2] - 1.0):
            p.add(box((0, 0, z), (size[0] + 4, size[1] + 4, 2.0)), "cardboard", 0.7)
    return Item("book", p.items, size[2])


def documents(rng, fit) -> Item:
    p = Parts()
    size = (
        _fit(choice(rng, [297, 210, 230, 250]) + uniform(rng, -5, 5), fit[0]),
        _fit(choice(rng, [210, 148, 160, 180]) + uniform(rng, -5, 5), fit[1]),
        _fit(log_uniform(rng, 0.3, 8), fit[2]),
    )
    p.add(box((0, 0, size[2] / 2), size), "paper", uniform(rng, 0.7, 0.9))
    if rng.random() < 0.4:  # staples or a paper clip
        clip = [
            (size[0] * 0.45, size[1] * 0.3, size[2]),
            (size[0] * 0.45 - 30, size[1] * 0.3, size[2]),
            (size[0] * 0.45 - 30, size[1] * 0.3 - 8, size[2]),
            (size[0] * 0.45 - 5, size[1] * 0.3 - 8, size[2]),
        ]
        p.add(strand(clip, 0.5), "steel")
    return Item("documents", p.items, size[2] + 1)


def toy(rng, fit) -> Item:
    p = Parts()
    variant = choice(rng, ["plastic", "plush", "diecast"])
    if variant == "plush":
        rx, ry = _fit(uniform(rng, 60, 160), fit[0] / 2), _fit(uniform(rng, 50, 120), fit[1] / 2)
        t = _fit(uniform(rng, 40, 120), fit[2])
        p.add(blob(rng, (0, 0, t / 2), rx, ry, t, edge_power=2, lumpiness=0.2), "textile", uniform(rng, 0.05, 0.15))
        if rng.random() < 0.5:  # plastic pellets for weight
            p.add(blob(rng, (0, 0, t * 0.3), rx * 0.5, ry * 0.5, t * 0.4, edge_power=2), "polyethylene", 0.55)
        return Item("toy", p.items, t)
    if variant == "diecast":
        size = (uniform(rng, 60, 140), uniform(rng, 28, 60), uniform(rng, 20, 45))
        p.hollow_box((0, 0, size[2] / 2), size, uniform(rng, 1.5, 3), "zamak")
        for x in (-0.3, 0.3):
            p.add(cylinder((x * size[0], 0, 6), 1.0, size[1] * 1.1, rotation(0, 0, math.pi / 2)), "steel")
            for y in (-0.5, 0.5):
                p.add(cylinder((x * size[0], y * size[1], 6), 6, 6, rotation(0, 0, math.pi / 2)), "rubber")
        return Item("toy", p.items, size[2])
    size = (
        _fit(uniform(rng, 80, 300), fit[0]),
        _fit(uniform(rng, 60, 200), fit[1]),
        _fit(uniform(rng, 30, 150), fit[2]),
    )
    cavity = p.hollow_box((0, 0, size[2] / 2), size, uniform(rng, 1.5, 3), choice(rng, ["ABS", "polypropylene"]))
    if rng.random() < 0.5:  # battery compartment and screws
        for k in range(int(rng.integers(2, 5))):
            p.add(cylinder((k * 15 - 20, 0, 8), 7.2, 50, LYING_X), "alkaline cell")
        for _ in range(4):
            p.add(
                cylinder((uniform(rng, -0.4, 0.4) * size[0], uniform(rng, -0.4, 0.4) * size[1], size[2] / 2), 1.5, 10),
                "steel",
            )
    if rng.random() < 0.4:
        p.add(box(cavity.centre_mm, (size[0] * 0.4, size[1] * 0.4, 1.6)), "PCB")
    return Item("toy", p.items, size[2])


def cosmetics(rng, fit) -> Item:
    p = Parts()
    variant = choice(rng, ["jar", "lipstick", "perfume", "compact", "tube"])
    if variant == "jar":
        r, h = uniform(rng, 25, 45), _fit(uniform(rng, 25, 60), fit[2])
        cavity = p.hollow_cylinder((0, 0, h / 2), r, h, uniform(rng, 2, 4), choice(rng, ["glass", "polypropylene"]))
        p.add(cavity, "cosmetic cream", fill_below_z_mm=fill_level_z(cavity, uniform(rng, 0.6, 0.95)))
        return Item("cosmetics", p.items, h)
    if variant == "lipstick":
        length = uniform(rng, 70, 85)
        p.hollow_cylinder((0, 0, 10), 9, length, 0.6, choice(rng, ["Al", "ABS", "brass"]), LYING_X)
        p.add(cylinder((0, 0, 10), 6, length * 0.6, LYING_X), "paraffin wax")
        return Item("cosmetics", p.items, 20)
    if variant == "perfume":
        size = (uniform(rng, 50, 90), uniform(rng, 35, 70), uniform(rng, 25, 40))
        cavity = p.hollow_box((0, 0, size[2] / 2), size, uniform(rng, 3, 7), "glass")
        p.add(cavity, "ethanol", fill_below_z_mm=fill_level_z(cavity, uniform(rng, 0.3, 0.95)))
        p.add(cylinder((size[0] / 2 + 8, 0, size[2] / 2), 8, 16, LYING_X), choice(rng, ["zamak", "ABS", "Al"]))
        return Item("cosmetics", p.items, size[2])
    if variant == "compact":  # pressed powder: talc, TiO2, zinc oxide
        r, h = uniform(rng, 30, 45), uniform(rng, 10, 18)
        p.hollow_cylinder((0, 0, h / 2), r, h, 1.5, choice(rng, ["ABS", "Al", "zamak"]))
        powder = choice(rng, ["talc", "titanium white", "zinc oxide", "CaCO3"])
        p.add(cylinder((0, 0, h * 0.35), r - 4, h * 0.3), powder, uniform(rng, 1.0, 1.6))
        if rng.random() < 0.5:
            p.add(cylinder((0, 0, h * 0.8), r - 3, 1.0), "glass")
        return Item("cosmetics", p.items, h)
    length, r = uniform(rng, 100, 190), uniform(rng, 12, 25)
    cavity = p.hollow_cylinder((0, 0, r), r, length, 0.6, choice(rng, ["polyethylene", "Al"]), LYING_X)
    p.add(cavity, choice(rng, ["cosmetic cream", "shampoo"]), fill_below_z_mm=fill_level_z(cavity, 0.8))
    return Item("cosmetics", p.items, 2 * r)


# --- electronics ----------------------------------------------------------------------------------------
def _components(rng, p: Parts, size, z: float) -> None:
    """Chips, capacitors, a heat sink, connectors on a board of (length, width)."""
    for _ in range(int(rng.integers(2, 9))):
        w = uniform(rng, 5, 25)
        p.add(
            box(
                (uniform(rng, -0.4, 0.4) * size[0], uniform(rng, -0.4, 0.4) * size[1], z + 1),
                (w, w * uniform(rng, 0.5, 1), uniform(rng, 1, 3)),
            ),
            "epoxy chip",
        )
    for _ in range(int(rng.integers(0, 5))):
        r = uniform(rng, 2.5, 8)
        p.hollow_cylinder(
            (uniform(rng, -0.4, 0.4) * size[0], uniform(rng, -0.4, 0.4) * size[1], z + r),
            r,
            uniform(rng, 6, 25),
            0.4,
            "Al",
        )
    if rng.random() < 0.4:  # finned heat sink
        base = (uniform(rng, 20, 50), uniform(rng, 20, 50))
        for k in range(int(rng.integers(4, 10))):
            p.add(box((k * 4 - 16, 0, z + 8), (1.5, base[1], 14)), "Al")
    if rng.random() < 0.5:  # connector with brass pins
        p.add(box((size[0] * 0.45, 0, z + 4), (10, uniform(rng, 10, 40), 8)), "nylon")
        p.add(box((size[0] * 0.45, 0, z + 4), (6, 8, 3)), "brass")
    if rng.random() < 0.3:  # small transformer: laminations and copper winding
        c = (uniform(rng, -0.3, 0.3) * size[0], uniform(rng, -0.3, 0.3) * size[1], z + 12)
        ei_transformer(p, c)


# An EI30 mains transformer (30 x 25 x 24 mm, ~100 g), lying on its board: E and I laminations in the x-z plane,
# stacked 25 mm along y. Yokes 5 mm top and bottom, a 10 mm centre leg and 5 mm outer legs leave two 5 x 14 mm
# windows, which the winding fills at a copper fill factor of ~0.45 (enamelled round wire), and the end turns
# bulge 4 mm out of the stack on both sides, beyond the bobbin's 0.5 mm flanges. Stacking factor 0.95. The beam
# crosses at most the 24 mm height of iron (A_high ~6 under postal-dual-140: not opaque alone; 31 mm of steel
# is). The winding used to be a solid
# copper tube overlapping a solid iron block (copper and iron in the same volume): up to 24 mm of iron plus
# 23 mm of copper along one ray, opaque over ~5 cm², an ordinary board raised the shield alarm.
EI_CORE_MM = (30.0, 25.0, 24.0)
EI_WINDOW_MM = (5.0, 14.0)  # (x, z) of each winding window, centred at x = +-7.5 mm
LAMINATION_STACKING = 0.95
WINDING_CU_FILL = 0.45


def ei_transformer(p: Parts, c) -> None:
    """An EI30 transformer centred at ``c`` (comment above)."""
    cx, cy, cz = c
    length, depth, height = EI_CORE_MM
    win_x, win_z = EI_WINDOW_MM
    windows = [box((cx + side * 7.5, cy, cz), (win_x, depth, win_z)) for side in (-1, 1)]
    steel = material("transformer core")
    p.add(box(c, (length, depth, height)), "transformer core", steel.density_g_cm3 * LAMINATION_STACKING,
          cavities=tuple(windows))
    copper = material("Cu").density_g_cm3 * WINDING_CU_FILL
    for window in windows:
        p.add(window, "Cu", copper)
    for side in (-1, 1):  # end turns around the centre leg, outside the stack beyond the 0.5 mm bobbin flange
        p.add(box((cx, cy + side * (depth / 2 + 2.5), cz), (2 * win_x + 10, 4, win_z)), "Cu", copper)


def electronics(rng, fit) -> Item:
    p = Parts()
    size = (_fit(uniform(rng, 50, 220), fit[0]), _fit(uniform(rng, 30, 150), fit[1]), 1.6)
    p.add(box((0, 0, 0.8), size), "PCB")
    _components(rng, p, size, 1.6)
    height = 25.0
    if rng.random() < 0.6:  # in a housing
        height = _fit(uniform(rng, 20, 70), fit[2])
        p.hollow_box((0, 0, height / 2), (size[0] + 10, size[1] + 10, height), 2.0, choice(rng, ["ABS", "Al"]))
    return Item("electronics", p.items, height)


def li_ion_cells(rng, fit) -> Item:
    p = Parts()
    n = int(rng.integers(1, 9))
    radius, length = choice(rng, [(9.0, 65.0), (10.5, 70.0), (7.0, 50.0)])
    for k in range(n):
        p.add(
            cylinder(
                ((k % 4) * 2.1 * radius, (k // 4) * (length + 2), radius),
                radius,
                length,
                rotation(math.pi / 2, math.pi / 2),
            ),
            "Li-ion cell",
        )
    return Item("li_ion_cells", p.items, 2 * radius)


def batteries(rng, fit) -> Item:
    p = Parts()
    radius, length = choice(rng, [(7.2, 50.0), (5.2, 44.0), (17.0, 60.0)])
    for k in range(int(rng.integers(2, 9))):
        p.add(
            cylinder(
                ((k % 4) * 2.05 * radius, (k // 4) * (length + 1), radius),
                radius,
                length,
                rotation(math.pi / 2, math.pi / 2),
            ),
            "alkaline cell",
        )
    if rng.random() < 0.6:  # blister: PVC tray on a card
        p.add(box((3 * radius, 0, 0.3), (8.5 * radius, length + 20, 0.6)), "cardboard")
    return Item("batteries", p.items, 2 * radius)


def phone(rng, fit) -> Item:
    p = Parts()
    size = (uniform(rng, 140, 170), uniform(rng, 68, 80), uniform(rng, 7.5, 10))
    p.hollow_box((0, 0, size[2] / 2), size, 1.0, choice(rng, ["Al", "stainless steel", "ABS"]))
    p.add(box((0, 0, size[2] - 0.5), (size[0] - 2, size[1] - 2, 0.8)), "glass")
    p.add(box((10, 0, size[2] / 2), (size[0] * 0.55, size[1] * 0.8, uniform(rng, 3.5, 5))), "Li-polymer cell")
    p.add(box((-size[0] * 0.33, 0, 2.5), (size[0] * 0.28, size[1] * 0.8, 1.2)), "PCB")
    p.add(box((-size[0] * 0.33, 0, 3.5), (25, 20, 1.0)), "steel")
    for x in (size[0] * 0.45, -size[0] * 0.45):  # speaker and earpiece magnets
        p.add(box((x, uniform(rng, -15, 15), 3), (uniform(rng, 4, 10), uniform(rng, 3, 6), 2)), "NdFeB magnet")
    if rng.random() < 0.5:  # case
        p.hollow_box(
            (0, 0, size[2] / 2), (size[0] + 3, size[1] + 3, size[2] + 2), 1.2, choice(rng, ["silicone", "ABS"])
        )
    return Item("phone", p.items, size[2] + 2)


def power_bank(rng, fit) -> Item:
    p = Parts()
    cells = int(rng.integers(1, 5))
    size = (uniform(rng, 90, 150), 22.0 * cells + 8, uniform(rng, 22, 26))
    p.hollow_box((0, 0, size[2] / 2), size, 1.5, choice(rng, ["ABS", "Al"]))
    if rng.random() < 0.6:
        for k in range(cells):
            p.add(cylinder((-5, (k - (cells - 1) / 2) * 21, size[2] / 2), 9, 65, LYING_X), "Li-ion cell")
    else:
        p.add(box((-5, 0, size[2] / 2), (size[0] - 30, size[1] - 6, 8)), "Li-polymer cell")
    p.add(box((size[0] / 2 - 14, 0, 4), (20, size[1] - 6, 1.6)), "PCB")
    return Item("power_bank", p.items, size[2])


def laptop(rng, fit) -> Item:
    p = Parts()
    size = (_fit(uniform(rng, 300, 360), fit[0]), _fit(uniform(rng, 210, 250), fit[1]), uniform(rng, 14, 22))
    p.hollow_box((0, 0, size[2] / 2), size, 1.2, choice(rng, ["Al", "ABS"]))
    p.add(box((0, 0, size[2] - 2), (size[0] - 10, size[1] - 10, 2.5)), "glass")
    p.add(box((0, -size[1] * 0.28, 4), (size[0] * 0.7, size[1] * 0.3, 6)), "Li-polymer cell")
    p.add(box((0, size[1] * 0.2, 3), (size[0] * 0.6, size[1] * 0.35, 1.6)), "PCB")
    _components(rng, p, (size[0] * 0.5, size[1] * 0.3), 3)
    p.add(box((size[0] * 0.3, size[1] * 0.3, 6), (40, 40, 6)), "Cu")  # heat pipe block
    return Item("laptop", p.items, size[2])


def cable(rng, fit) -> Item:
    p = Parts()
    sheath = uniform(rng, 1.5, 4.5)
    core = sheath * uniform(rng, 0.25, 0.5)
    if rng.random() < 0.5:
        path = coil(rng, _fit(uniform(rng, 30, 90), min(fit[0], fit[1]) / 2), uniform(rng, 2, 8), sheath)
    else:
        path = wander(rng, (0, 0), int(rng.integers(8, 25)), uniform(rng, 15, 35), 0.6, sheath)
        path[:, 0] = np.clip(path[:, 0], -fit[0] * 0.45, fit[0] * 0.45)
        path[:, 1] = np.clip(path[:, 1], -fit[1] * 0.45, fit[1] * 0.45)
    core_strand = strand(path, core)
    p.add(strand(path, sheath), choice(rng, ["PVC", "polyethylene", "rubber"]), cavities=(core_strand,))
    p.add(core_strand, "Cu")
    for end in (path[0], path[-1]):  # plugs
        if rng.random() < 0.7:
            p.add(box(end + np.array([0, 0, 3]), (uniform(rng, 15, 40), uniform(rng, 10, 20), 10)), "ABS")
            p.add(box(end + np.array([0, 0, 3]), (10, 6, 2)), choice(rng, ["brass", "steel", "Cu"]))
    return Item("cable", p.items, 2 * sheath + 10)


# --- metal goods ----------------------------------------------------------------------------------------
def hand_tools(rng, fit) -> Item:
    p = Parts()
    variant = choice(rng, ["wrench", "screwdriver", "pliers", "hammer", "trowel", "chisel"])
    if variant == "wrench":
        length = _fit(uniform(rng, 120, 300), fit[0])
        p.add(box((0, 0, 3), (length, length * 0.1, uniform(rng, 4, 8))), "stainless steel")
        p.ring((length / 2, 0, 3), length * 0.09, length * 0.05, 7, "stainless steel")
        p.add(box((-length / 2, 0, 3), (length * 0.12, length * 0.15, 7)), "stainless steel")
        return Item("hand_tools", p.items, 8)
    if variant == "screwdriver":
        shaft = uniform(rng, 60, 200)
        p.add(cylinder((shaft / 2, 0, 14), uniform(rng, 2, 4), shaft, LYING_X), "steel")
        p.add(cylinder((-45, 0, 14), uniform(rng, 11, 16), 90, LYING_X), choice(rng, ["polypropylene", "ABS", "wood"]))
        return Item("hand_tools", p.items, 28)
    if variant == "pliers":
        length = uniform(rng, 150, 250)
        for side in (-1, 1):
            p.add(
                strand([(-length / 2, side * 18, 6), (0, side * 4, 6), (length * 0.3, 0, 6)], uniform(rng, 4, 6)),
                "steel",
            )
            p.add(strand([(-length / 2, side * 18, 6), (-length * 0.1, side * 9, 6)], 7), "PVC")
        return Item("hand_tools", p.items, 14)
    if variant == "hammer":
        length = _fit(uniform(rng, 250, 350), fit[0])
        p.add(cylinder((0, 0, 16), 14, length, LYING_X), choice(rng, ["wood", "ABS"]))
        p.add(box((length / 2, 0, 16), (28, uniform(rng, 90, 120), 28)), "steel")
        return Item("hand_tools", p.items, 32)
    if variant == "trowel":
        blade = (_fit(uniform(rng, 200, 280), fit[0]), uniform(rng, 90, 130), uniform(rng, 0.8, 1.5))
        p.add(box((0, 0, 1), blade), "stainless steel")
        p.add(box((0, 0, 8), (blade[0] * 0.5, 15, 10)), "Al")
        p.add(cylinder((0, 0, 35), 15, 110, LYING_X), choice(rng, ["wood", "polypropylene"]))
        return Item("hand_tools", p.items, 50)
    length = uniform(rng, 150, 280)
    p.add(box((0, 0, 7), (length, uniform(rng, 10, 30), uniform(rng, 5, 10))), "steel")
    p.add(cylinder((-length / 2 - 50, 0, 12), 14, 100, LYING_X), choice(rng, ["polypropylene", "wood"]))
    return Item("hand_tools", p.items, 26)


def gear(p: Parts, rng, centre, radius: float, width: float, metal: str, rot=UP) -> None:
    p.ring(centre, radius, radius * uniform(rng, 0.15, 0.4), width, metal, rot)
    teeth = int(max(radius / 3, 8))
    for k in range(0, teeth, max(teeth // 24, 1)):
        a = 2 * math.pi * k / teeth
        local = np.array([math.cos(a), math.sin(a), 0.0]) * (radius + 2)
        p.add(box(np.asarray(centre) + rot @ local, (4, 3, width), rot @ rotation(a)), metal)


def machinery_parts(rng, fit) -> Item:
    p = Parts()
    variant = choice(rng, ["gear", "bearing", "flange", "bolts", "shaft", "chain", "spring", "bracket"])
    metal = choice(rng, ["steel", "stainless steel", "cast iron", "brass", "Al"], [4, 2, 2, 1, 1])
    if variant == "gear":
        r = uniform(rng, 20, 90)
        w = uniform(rng, 8, 30)
        gear(p, rng, (0, 0, w / 2), r, w, metal)
        return Item("machinery_parts", p.items, w)
    if variant == "bearing":
        r = uniform(rng, 15, 70)
        w = uniform(rng, 8, 30)
        p.ring((0, 0, w / 2), r, r * 0.8, w, "steel")
        p.ring((0, 0, w / 2), r * 0.55, r * 0.4, w, "steel")
        balls = int(rng.integers(7, 14))
        for k in range(balls):
            a = 2 * math.pi * k / balls
            p.add(ellipsoid((r * 0.675 * math.cos(a), r * 0.675 * math.sin(a), w / 2), (r * 0.11,) * 3), "steel")
        return Item("machinery_parts", p.items, w)
    if variant == "flange":
        r = uniform(rng, 40, 110)
        w = uniform(rng, 10, 25)
        holes = tuple(
            cylinder((r * 0.75 * math.cos(a), r * 0.75 * math.sin(a), w / 2), r * 0.08, w * 2)
            for a in np.linspace(0, 2 * math.pi, int(rng.integers(4, 9)), endpoint=False)
        )
        bore = cylinder((0, 0, w / 2), r * uniform(rng, 0.3, 0.5), w * 2)
        p.add(cylinder((0, 0, w / 2), r, w), metal, cavities=(bore, *holes))
        return Item("machinery_parts", p.items, w)
    if variant == "bolts":
        n = int(rng.integers(3, 30))
        for _ in range(n):
            d, length = uniform(rng, 3, 12), uniform(rng, 10, 80)
            x, y = uniform(rng, -60, 60), uniform(rng, -40, 40)
            rot = rotation(uniform(rng, 0, 2 * math.pi), math.pi / 2)
            p.add(cylinder((x, y, d), d / 2, length, rot), metal if metal != "Al" else "steel")
            p.add(cylinder(np.array([x, y, d]) + rot @ np.array([0, 0, length / 2]), d, d * 0.7, rot), "steel")
        return Item("machinery_parts", p.items, 24)
    if variant == "shaft":
        r, length = uniform(rng, 6, 30), _fit(uniform(rng, 100, 400), fit[0])
        p.add(cylinder((0, 0, r), r, length, LYING_X), metal)
        return Item("machinery_parts", p.items, 2 * r)
    if variant == "chain":
        path = wander(rng, (0, 0), int(rng.integers(8, 25)), uniform(rng, 15, 25), 0.4, 5)
        p.add(strand(path, uniform(rng, 3, 6)), "steel", uniform(rng, 3.5, 5.5))
        return Item("machinery_parts", p.items, 12)
    if variant == "spring":
        r, turns = uniform(rng, 8, 30), uniform(rng, 4, 15)
        pitch = uniform(rng, 4, 12)
        angle = np.linspace(0, 2 * math.pi * turns, int(turns * 12))
        points = np.stack([angle / (2 * math.pi) * pitch, r * np.cos(angle), r + r * np.sin(angle)], 1)
        points[:, 0] -= points[:, 0].mean()
        p.add(strand(points, uniform(rng, 0.8, 3)), "steel")
        return Item("machinery_parts", p.items, 2 * r + 4)
    size = (uniform(rng, 60, 200), uniform(rng, 30, 120), uniform(rng, 3, 10))
    p.add(
        box((0, 0, size[2] / 2), size),
        metal,
        cavities=tuple(
            cylinder(
                (uniform(rng, -0.4, 0.4) * size[0], uniform(rng, -0.4, 0.4) * size[1], size[2] / 2),
                uniform(rng, 3, 8),
                size[2] * 2,
            )
            for _ in range(int(rng.integers(1, 5)))
        ),
    )
    return Item("machinery_parts", p.items, size[2])


# Wall thickness of a housing by casting process: zinc (zamak) is pressure die-cast in thin walls (1.5-4 mm);
# aluminium die- and sand-castings 3-10 mm; grey-iron sand castings 4-12 mm (they cannot be poured much
# thinner). It was 4-12 mm for every metal: a zamak housing with 12 mm walls (~5 kg of zinc) stood on its
# walls over 40 mm of zinc, opaque (30 mm is).
CASTING_WALL_MM = {"Al": (3.0, 10.0), "cast iron": (4.0, 12.0), "zamak": (1.5, 4.0)}


def al_casting(rng, fit) -> Item:
    """A cast aluminium or cast-iron housing: thick walls, internal cavities, bosses."""
    p = Parts()
    metal = choice(rng, ["Al", "Al", "Al", "cast iron", "zamak"])
    size = (
        _fit(uniform(rng, 60, 250), fit[0]),
        _fit(uniform(rng, 50, 180), fit[1]),
        _fit(uniform(rng, 30, 120), fit[2]),
    )
    wall = uniform(rng, *CASTING_WALL_MM[metal])
    inner = box((0, 0, size[2] / 2), np.maximum(np.array(size) - 2 * wall, 1))
    bore = cylinder((0, 0, size[2] / 2), min(size[1], size[2]) * 0.25, size[0] * 1.2, LYING_X)
    hollow = rng.random() < 0.7
    # a solid block with a bore only in aluminium or iron: zinc is die-cast in thin walls, never in blocks of kilos
    p.add(box((0, 0, size[2] / 2), size), metal, cavities=(inner,) if hollow or metal == "zamak" else (bore,))
    for _ in range(int(rng.integers(0, 4))):  # bosses
        boss = cylinder(
            (uniform(rng, -0.45, 0.45) * size[0], uniform(rng, -0.45, 0.45) * size[1], size[2] / 2),
            uniform(rng, 5, 12),
            size[2],
        )
        # a die-cast boss (zinc, aluminium) is cored for its screw, its wall the casting's; a sand-cast iron boss
        # is solid (drilled later). A solid zinc boss of 24 mm stood 40 mm of zinc on end: opaque over 4 cm².
        core = cylinder(boss.centre_mm, max(boss.radius_mm - wall, 1.0), size[2] * 1.5)
        p.add(boss, metal, cavities=(core,) if metal != "cast iron" else ())
    return Item("al_casting", p.items, size[2])


# Wall of a cast brass pipe fitting: ~3 mm at 1/2" (body 27 mm across), ~4 mm at 1", ~5 mm at 2" (EN 1254-2 /
# ASME B16.15 bodies), i.e. 1.5-3 mm plus a tenth of the body radius. It was 20-40 % of the radius, 5-10 mm at
# 50 mm across: lying on its side such a tube crossed 30-45 mm of brass along its flanks (24 mm is opaque).
FITTING_WALL_MM = (1.5, 3.0)
FITTING_WALL_PER_MM = 0.1


def brass_fittings(rng, fit) -> Item:
    p = Parts()
    for _ in range(int(rng.integers(1, 7))):
        r, length = uniform(rng, 6, 25), uniform(rng, 20, 80)
        c = (uniform(rng, -60, 60), uniform(rng, -40, 40), r)
        rot = rotation(uniform(rng, 0, 2 * math.pi), math.pi / 2)
        p.ring(c, r, r - (uniform(rng, *FITTING_WALL_MM) + FITTING_WALL_PER_MM * r), length, "brass", rot)
        if rng.random() < 0.5:  # hex nut
            p.ring(np.array(c) + rot @ np.array([0, 0, length / 2]), r * 1.3, r * 0.8, r, "brass", rot)
        if rng.random() < 0.2:  # valve stem
            p.add(cylinder(c, 3, r * 3), "steel")
    return Item("brass_fittings", p.items, 50)


def fishing_weights(rng, fit) -> Item:
    p = Parts()
    metal = choice(rng, ["Pb", "Pb", "Pb", "bismuth", "brass"])
    tray = (uniform(rng, 80, 180), uniform(rng, 50, 110), uniform(rng, 15, 35))
    p.hollow_box((0, 0, tray[2] / 2), tray, 1.2, "polypropylene")
    for _ in range(int(rng.integers(1, 20))):
        mass_g = log_uniform(rng, 2, 150)
        volume = mass_g / 11.0 * 1000
        a = (volume * 3 / (4 * math.pi) / 0.5) ** (1 / 3)
        p.add(
            ellipsoid(
                (uniform(rng, -0.4, 0.4) * tray[0], uniform(rng, -0.4, 0.4) * tray[1], a * 0.7),
                (a * 1.4, a * 0.7, a * 0.7),
                rotation(uniform(rng, 0, 6.3)),
            ),
            metal,
        )
    return Item("fishing_weights", p.items, tray[2])


def carbide_bits(rng, fit) -> Item:
    p = Parts()
    case = (uniform(rng, 100, 220), uniform(rng, 50, 110), uniform(rng, 15, 30))
    p.hollow_box((0, 0, case[2] / 2), case, 2, choice(rng, ["ABS", "polypropylene", "steel"]))
    if rng.random() < 0.5:  # drill or router bits: steel shank, carbide tip
        for k in range(int(rng.integers(2, 12))):
            r = uniform(rng, 1.5, 6)
            length = uniform(rng, 40, min(case[0] - 10, 160))
            y = (k - 5) * 9.0
            p.add(cylinder((-length * 0.1, y, 10), r, length * 0.8, LYING_X), "steel")
            p.add(cylinder((length * 0.4, y, 10), r, length * 0.2, LYING_X), "WC")
    else:  # indexable inserts
        for k in range(int(rng.integers(4, 20))):
            p.add(
                box(
                    ((k % 5) * 16 - 32, (k // 5) * 16 - 24, 6),
                    (12.7, 12.7, uniform(rng, 3, 5)),
                    rotation(uniform(rng, 0, 0.3)),
                ),
                "WC",
            )
    return Item("carbide_bits", p.items, case[2])


def coins(rng, fit) -> Item:
    p = Parts()
    n = int(rng.integers(1, 30))
    stacked = rng.random() < 0.4
    for k in range(n):
        r, t = uniform(rng, 8, 14), uniform(rng, 1.5, 2.3)
        metal = choice(rng, ["cupronickel", "brass", "steel", "Al", "cupronickel"])
        if stacked:
            c, rot = (k * t, 0, r), rotation(0, math.pi / 2)
        else:
            c, rot = (
                (uniform(rng, -50, 50), uniform(rng, -35, 35), t / 2 + (k % 3) * t),
                rotation(0, uniform(rng, 0, 0.3)),
            )
        p.add(cylinder(c, r, t, rot), metal)
    if rng.random() < 0.5:  # purse or coin bag
        p.add(blob(rng, (0, 0, 8), 70, 50, 16, edge_power=4), choice(rng, ["leather", "textile"]), 0.5)
    return Item("coins", p.items, 30 if stacked else 10)


BANGLE_MM = (1.5, 4.0)  # radial thickness of a solid bangle (20-60 g of gold; chunky silver cuffs ~4 mm)
# A wristwatch case lying flat: a middle ring 2.5 mm thick (the lugs' rim) around a 1 mm case back, a 2 mm glass
# (mineral or sapphire) crystal on top, and the movement: brass plates and bridges 4 mm thick, about half metal.
# It was a closed 1.5 mm shell of the case metal, top and bottom: 3 mm of 18k gold along every ray, opaque
# (1.9 mm is, under postal-dual-140) over the whole 9-18 cm² dial, where a real watch has glass.
WATCH_BACK_MM = 1.0
WATCH_RIM_MM = 2.5
WATCH_CRYSTAL_MM = 2.0
WATCH_MOVEMENT_MM = 4.0
WATCH_MOVEMENT_METAL_SHARE = 0.5


def watch(p: Parts, c: np.ndarray, radius_mm: float, case_metal: str) -> None:
    """A wristwatch lying on its back, centred at ``c`` (comment above)."""
    height = 11.0
    p.ring(c, radius_mm, radius_mm - WATCH_RIM_MM, height, case_metal)
    p.add(cylinder(c + np.array([0, 0, -(height - WATCH_BACK_MM) / 2]), radius_mm - WATCH_RIM_MM, WATCH_BACK_MM),
          case_metal)
    p.add(cylinder(c + np.array([0, 0, (height - WATCH_CRYSTAL_MM) / 2]), radius_mm - WATCH_RIM_MM,
                   WATCH_CRYSTAL_MM), "glass")
    p.add(cylinder(c + np.array([0, 0, 1.0]), radius_mm - WATCH_RIM_MM - 0.5, WATCH_MOVEMENT_MM), "brass",
          material("brass").density_g_cm3 * WATCH_MOVEMENT_METAL_SHARE)


def jewellery(rng, fit) -> Item:
    p = Parts()
    metal = choice(rng, ["silver", "gold", "stainless steel", "brass", "silver"])
    for _ in range(int(rng.integers(1, 5))):
        variant = choice(rng, ["chain", "ring", "bracelet", "watch", "earrings"])
        c = np.array([uniform(rng, -40, 40), uniform(rng, -30, 30), 4.0])
        if variant == "chain":
            p.add(
                strand(coil(rng, uniform(rng, 10, 30), uniform(rng, 1, 3), 3) + c * [1, 1, 0], uniform(rng, 0.5, 1.5)),
                metal,
                None,
            )
        elif variant == "ring":
            ring_metal = choice(rng, [metal, "WC", "stainless steel"])
            p.ring(c, uniform(rng, 9.5, 12), 8.5, uniform(rng, 2, 8), ring_metal, rotation(0, uniform(rng, 0, 1.5)))
        elif variant == "bracelet":  # a bangle: 56 mm inside, a band 1.5-4 mm thick (it was 2-10 mm: 0.5 kg of gold)
            p.ring(c, uniform(rng, 28 + BANGLE_MM[0], 28 + BANGLE_MM[1]), 28, uniform(rng, 3, 12), metal)
        elif variant == "watch":
            watch(p, c, uniform(rng, 17, 24), choice(rng, ["stainless steel", "Al", "gold"]))
            p.add(cylinder(c, 10, 3), "alkaline cell")
            p.add(
                strand([c + np.array([0, -24, 0]), c + np.array([0, -80, 0])], 4),
                choice(rng, ["leather", "stainless steel", "silicone"]),
            )
        else:
            for dx in (-6, 6):
                p.add(ellipsoid(c + np.array([dx, 0, 0]), (2.5, 2.5, 4)), metal)
    if rng.random() < 0.5:  # gift box
        p.hollow_box((0, 0, 20), (110, 80, 40), 1.5, "cardboard", density_g_cm3=0.7)
    return Item("jewellery", p.items, 40)


def speaker(rng, fit) -> Item:
    """A small loudspeaker or Bluetooth speaker: magnet, pole plates, basket, cone."""
    p = Parts()
    r = uniform(rng, 20, 70)
    magnet = choice(rng, ["NdFeB magnet", "ferrite", "ferrite"])
    mr = r * (uniform(rng, 0.2, 0.35) if magnet == "NdFeB magnet" else uniform(rng, 0.4, 0.6))
    mt = uniform(rng, 3, 10) if magnet == "NdFeB magnet" else uniform(rng, 6, 15)
    p.add(cylinder((0, 0, 2 + mt / 2), mr, mt), magnet)
    p.add(cylinder((0, 0, 1), mr * 1.15, 2), "steel")  # back plate
    p.ring((0, 0, 3 + mt), mr * 1.1, mr * 0.5, 3, "steel")  # top plate
    p.ring((0, 0, 3 + mt + 8), r, r * 0.9, 16, "steel")  # basket rim
    p.add(ellipsoid((0, 0, 3 + mt + 8), (r * 0.9, r * 0.9, 6)), "paper", 0.3)  # cone
    height = 30 + mt
    if rng.random() < 0.5:  # Bluetooth speaker: housing, cell, board
        height = 2 * r + 20
        p.hollow_cylinder((0, 0, r + 10), r + 10, uniform(rng, 80, 180), 2.5, choice(rng, ["ABS", "Al"]), LYING_X)
        p.add(cylinder((40, 0, r), 9, 65, LYING_X), "Li-ion cell")
        p.add(box((-30, 0, 10), (50, 40, 1.6)), "PCB")
    return Item("speaker", p.items, height)


# The armature of a small motor (radius 0.6 of the can's): laminations (stacking factor 0.95) whose slots take
# ~45 % of the winding zone (0.2-0.6 of the can's radius) and hold copper at a fill factor of ~0.45; inside
# 0.2 r the yoke is solid iron. Overlapping parts at partial densities are the mixture (scene.Part), so the
# winding zone holds 0.55 x 7.27 g/cm³ of iron and 0.45 x 0.45 x 8.96 g/cm³ of copper: ~6 g/cm³ in all, as a
# wound armature weighs. (It used to be a solid copper tube at 8.96 g/cm³ *plus* iron at 3.0 g/cm³ in the same
# volume, 12 g/cm³, denser than copper: a 40 mm motor stopped the beam.) Through the centre of the can the beam
# now crosses ~24 mm of steel-equivalent at 36 mm diameter (a 550 motor: seen through) and ~40 mm at 60 mm
# (a NEMA 23 stepper: opaque, as on a real scanner).
MOTOR_SLOT_SHARE = 0.45
MOTOR_CU_FILL = 0.45


def motor(rng, fit) -> Item:
    """A small DC or brushless motor: steel can, copper windings, arc magnets, shaft."""
    p = Parts()
    r, length = uniform(rng, 10, 40), uniform(rng, 25, 90)
    can_mm = uniform(rng, 0.8, 2)
    motor_parts(p, r, length, can_mm, choice(rng, ["NdFeB magnet", "ferrite"]))
    return Item("motor", p.items, 2 * r)


def motor_parts(p: Parts, r: float, length: float, can_mm: float, magnet: str) -> None:
    """A motor of can radius ``r`` lying on its side (axis along x, bottom at z = 0)."""
    rot = LYING_X
    c = (0, 0, r)
    p.hollow_cylinder(c, r, length, can_mm, "steel", rot)
    p.ring(c, r * 0.92, r * (0.8 if magnet == "NdFeB magnet" else 0.65), length * 0.7, magnet, rot)
    iron = material("transformer core").density_g_cm3 * LAMINATION_STACKING
    armature = cylinder(c, r * 0.6, length * 0.6, rot)
    p.add(armature, "transformer core", iron * (1 - MOTOR_SLOT_SHARE))  # teeth, over the whole armature
    p.add(cylinder(c, r * 0.2, length * 0.6, rot), "transformer core", iron * MOTOR_SLOT_SHARE)  # solid yoke
    p.add(armature, "Cu", material("Cu").density_g_cm3 * MOTOR_SLOT_SHARE * MOTOR_CU_FILL,
          cavities=(cylinder(c, r * 0.2, length * 0.9, rot),))  # windings in the slots
    p.add(cylinder((length / 2 + 10, 0, r), max(r * 0.1, 1.5), length * 0.5 + 20, rot), "stainless steel")


def ferrite_magnets(rng, fit) -> Item:
    p = Parts()
    variant = choice(rng, ["blocks", "rings", "fridge"])
    if variant == "fridge":
        for _ in range(int(rng.integers(1, 8))):
            p.add(
                box(
                    (uniform(rng, -50, 50), uniform(rng, -40, 40), 1),
                    (uniform(rng, 30, 80), uniform(rng, 30, 60), uniform(rng, 0.8, 2)),
                ),
                "flexible magnet",
            )
        return Item("ferrite_magnets", p.items, 3)
    for k in range(int(rng.integers(1, 8))):
        c = (k * 25 - 75, uniform(rng, -20, 20), 0)
        if variant == "blocks":
            size = (uniform(rng, 10, 50), uniform(rng, 10, 40), uniform(rng, 4, 15))
            p.add(box((c[0], c[1], size[2] / 2), size), "ferrite")
        else:
            r = uniform(rng, 10, 40)
            t = uniform(rng, 4, 12)
            p.ring((c[0], c[1], t / 2), r, r * 0.45, t, "ferrite")
    return Item("ferrite_magnets", p.items, 15)


def fire_steel(rng, fit) -> Item:
    """A ferrocerium fire-starter rod: mischmetal (Ce, La, Nd, Pr) and iron — legal camping gear."""
    p = Parts()
    r, length = uniform(rng, 3, 6.5), uniform(rng, 60, 125)
    p.add(cylinder((0, 0, 12), r, length, LYING_X), "ferrocerium")
    p.add(cylinder((-length / 2 - 30, 0, 12), 11, 60, LYING_X), choice(rng, ["wood", "ABS", "rubber"]))
    p.add(box((20, 30, 1), (50, 20, 2)), "stainless steel")  # striker
    return Item("fire_steel", p.items, 24)


# Solder wire wound on a spool packs at ~0.8 of the alloy's density (round wire, layer on layer). The plastic
# spool is two 2 mm flanges and a 2 mm hub tube (it used to be a solid polypropylene ring occupying the same
# volume as the solder). 200-840 g of wire, 24 mm high: far more than the 4 mm of solid solder that stops a
# 140 kV beam, so a spool stays opaque over its annulus, as a real one is.
SOLDER_WIRE_PACKING = 0.8


def solder_spool(rng, fit) -> Item:
    p = Parts()
    r = uniform(rng, 20, 40)
    for z in (2.0, 28.0):  # flanges
        p.ring((0, 0, z), r * 1.3, r * 0.5, 2.0, "polypropylene")
    p.ring((0, 0, 15), r * 0.55, r * 0.55 - 2.0, 24, "polypropylene")  # hub
    p.add(cylinder((0, 0, 15), r * 1.15, 24), "solder", material("solder").density_g_cm3 * SOLDER_WIRE_PACKING,
          cavities=(cylinder((0, 0, 15), r * 0.55, 36),))
    return Item("solder_spool", p.items, 30)


# --- food and household ---------------------------------------------------------------------------------
def glass_jar(rng, fit) -> Item:
    p = Parts()
    r, h = uniform(rng, 30, 55), _fit(uniform(rng, 60, 150), fit[2] if rng.random() < 0.5 else 400)
    rot = UP if h < fit[2] else LYING_X
    c = (0, 0, h / 2) if rot is UP else (0, 0, r)
    cavity = p.hollow_cylinder(c, r, h, uniform(rng, 2.5, 5), "glass", rot)
    content = choice(rng, ["jam", "canned food", "water", "oil", "chocolate"])
    p.add(cavity, content, fill_below_z_mm=fill_level_z(cavity, uniform(rng, 0.7, 0.97)))
    lid_c = np.asarray(c, float) + rot @ np.array([0, 0, h / 2 + 1])
    p.add(cylinder(lid_c, r, 8, rot), "steel", 0.6)  # tinplate lid (mostly air)
    return Item("glass_jar", p.items, h if rot is UP else 2 * r)


def canned_food(rng, fit) -> Item:
    p = Parts()
    n = int(rng.integers(1, 5))
    r, h = uniform(rng, 32, 50), uniform(rng, 50, 120)
    upright = h < fit[2] and rng.random() < 0.6
    for k in range(n):
        rot = UP if upright else LYING_X
        c = (0, k * (2 * r + 2), h / 2 if upright else r)
        cavity = p.hollow_cylinder(c, r, h, 0.25, choice(rng, ["steel", "steel", "Al"]), rot)
        p.add(
            cavity,
            choice(rng, ["canned food", "canned food", "oil", "juice"]),
            fill_below_z_mm=fill_level_z(cavity, uniform(rng, 0.85, 0.98)),
        )
    return Item("canned_food", p.items, h if upright else 2 * r)


BOTTLE_LIQUIDS = ("water", "juice", "oil", "shampoo", "sand", "brine", "syrup", "ethanol")


def bottle_dims(rng, volume_ml: float) -> tuple[float, float]:
    """(radius, body length) in mm of a bottle of about ``volume_ml``."""
    radius = uniform(rng, 0.9, 1.15) * (volume_ml * 1000 / (math.pi * 4.2)) ** (1 / 3)
    return radius, volume_ml * 1000 / (math.pi * (radius - 0.4) ** 2)


def bottle_body(
    p: Parts, radius: float, length: float, material_name: str, rot: np.ndarray, centre, wall_mm: float | None = None
):
    """Bottle walls, neck and cap; returns the cavity to fill."""
    wall = wall_mm if wall_mm is not None else (0.35 if material_name in ("PET", "polyethylene") else 3.0)
    cavity = p.hollow_cylinder(centre, radius, length, wall, material_name, rot)
    neck_c = np.asarray(centre, float) + rot @ np.array([0, 0, length / 2 + 12])
    p.add(cylinder(neck_c, 13, 24, rot), material_name, cavities=(cylinder(neck_c, 11, 30, rot),))
    p.add(cylinder(neck_c + rot @ np.array([0, 0, 12]), 15, 12, rot), "polypropylene", 0.5)
    return cavity


def bottle(rng, fit) -> Item:
    p = Parts()
    liquid = choice(rng, BOTTLE_LIQUIDS, [5, 3, 2, 2, 1, 1, 1, 1])
    vessel = (
        "glass"
        if liquid in ("oil", "ethanol", "juice") and rng.random() < 0.4
        else choice(rng, ["PET", "polyethylene"])
    )
    radius, length = bottle_dims(rng, choice(rng, [330, 500, 750, 1000, 1500]))
    rot = rotation(0, math.pi / 2 + uniform(rng, -0.1, 0.1))
    cavity = bottle_body(
        p, radius, length, vessel, rot, (0, 0, radius), None if vessel != "glass" else uniform(rng, 2.5, 4.5)
    )
    density = 1.6 if liquid == "sand" else None
    p.add(cavity, liquid, density, fill_below_z_mm=fill_level_z(cavity, uniform(rng, 0.6, 0.98)))
    return Item("bottle", p.items, 2 * radius)


BAG_GOODS = (
    "sugar",
    "flour",
    "rice",
    "coffee",
    "salt",
    "baking soda",
    "talc",
    "detergent",
    "tea",
    "protein powder",
    "nuts",
)


def food_bag(rng, fit) -> Item:
    """A bag of a granular good (kitchen or household), settled into a pillow."""
    p = Parts()
    good = choice(rng, BAG_GOODS)
    mass_g = choice(rng, [250, 500, 1000, 1000, 2000])
    density = material(good).packed_density_g_cm3
    volume = mass_g / density * 1000
    t = _fit(uniform(rng, 30, 80), fit[2])
    area = volume / (t * 0.55)
    rx = min(math.sqrt(area / math.pi * uniform(rng, 1.0, 1.8)), fit[0] / 2)
    ry = min(area / math.pi / rx, fit[1] / 2)
    shape = blob(rng, (0, 0, t / 2), rx, ry, t, edge_power=4, lumpiness=0.06)
    p.add(shape, good, density)
    p.add(
        blob(rng, (0, 0, t / 2), rx * 1.04, ry * 1.04, t + 1, edge_power=4, lumpiness=0.0),
        choice(rng, ["polyethylene", "paper", "polypropylene"]),
        uniform(rng, 0.015, 0.04),
    )  # the bag film
    return Item("food_bag", p.items, t)


SACK_GOODS = ("cement", "grout", "tile adhesive", "clay")


def construction_sack(rng, fit) -> Item:
    p = Parts()
    good = choice(rng, SACK_GOODS)
    mass_g = log_uniform(rng, 500, 8000)
    density = material(good).packed_density_g_cm3
    shape = sack_shape(rng, mass_g / density * 1000, fit)
    p.add(shape, good, density)
    p.add(shape.scaled(1.03, 1.0), choice(rng, ["paper", "polypropylene"]), uniform(rng, 0.03, 0.06))
    return Item("construction_sack", p.items, shape.thickness_mm)


def sack_shape(rng, volume_mm3: float, fit) -> Blob:
    """A filled sack lying flat: a pillow of about ``volume_mm3`` that fits the space."""
    t = min(uniform(rng, 0.12, 0.25) * (volume_mm3 ** (1 / 3)) * 2.2, fit[2] * 0.95)
    for _ in range(20):
        area = volume_mm3 / (t * 0.72)
        aspect = uniform(rng, 1.2, 1.8)
        rx = math.sqrt(area / math.pi * aspect)
        ry = rx / aspect
        if rx <= fit[0] / 2 * 0.95 and ry <= fit[1] / 2 * 0.95:
            break
        t = min(t * 1.15, fit[2] * 0.95)
    rx, ry = min(rx, fit[0] / 2 * 0.95), min(ry, fit[1] / 2 * 0.95)
    return blob(
        rng, (0, 0, t / 2), rx, ry, t, edge_power=uniform(rng, 3, 6), lumpiness=0.05, folds=0.05, fold_scale_mm=120
    )


def ceramic_tiles(rng, fit) -> Item:
    p = Parts()
    tiles = tile_stack_layout(rng, fit)
    for centre, size, yaw in tiles:
        p.add(box(centre, size, rotation(yaw)), "ceramic tile", uniform(rng, 1.9, 2.3))
    top = tiles[-1][0][2] + tiles[-1][1][2] / 2
    return Item("ceramic_tiles", p.items, top)


def tile_stack_layout(rng, fit, gap_after: int | None = None, gap_mm: float = 0.0) -> list:
    """Tiles stacked with small offsets: [(centre, size, yaw)], bottom to top; a gap may follow tile k."""
    n = int(rng.integers(2, 11))
    side = (_fit(uniform(rng, 100, 330), fit[0]), _fit(uniform(rng, 100, 330), fit[1]))
    thickness = uniform(rng, 6, 12)
    tiles, z = [], 0.0
    for k in range(n):
        size = (side[0], side[1], thickness)
        tiles.append(((uniform(rng, -3, 3), uniform(rng, -3, 3), z + thickness / 2), size, uniform(rng, -0.03, 0.03)))
        z += thickness + uniform(rng, 0, 0.5)
        if gap_after is not None and k == min(gap_after, n - 1):
            z += gap_mm
    return tiles


def kitchenware(rng, fit) -> Item:
    p = Parts()
    variant = choice(rng, ["cutlery", "pot", "mug"])
    if variant == "cutlery":
        for k in range(int(rng.integers(2, 12))):
            length = uniform(rng, 150, 230)
            p.add(
                box(
                    (0, k * 12 - 40, 2),
                    (length, uniform(rng, 8, 22), uniform(rng, 1.5, 3)),
                    rotation(uniform(rng, -0.1, 0.1)),
                ),
                "stainless steel",
            )
        return Item("kitchenware", p.items, 6)
    if variant == "pot":
        r, h = _fit(uniform(rng, 70, 120), min(fit[0], fit[1]) / 2), _fit(uniform(rng, 60, 140), fit[2])
        p.hollow_cylinder(
            (0, 0, h / 2), r, h, uniform(rng, 1, 3), choice(rng, ["Al", "stainless steel"]), open_top=True
        )
        p.add(strand([(r, 0, h * 0.8), (r + 100, 0, h * 0.8)], 8), choice(rng, ["ABS", "wood", "stainless steel"]))
        return Item("kitchenware", p.items, h)
    r, h = uniform(rng, 38, 48), uniform(rng, 80, 110)
    upright = h < fit[2]
    rot = UP if upright else LYING_X
    p.hollow_cylinder((0, 0, h / 2 if upright else r), r, h, uniform(rng, 4, 6), "mug ceramic", rot, open_top=True)
    return Item("kitchenware", p.items, h if upright else 2 * r)


def medicine(rng, fit) -> Item:
    p = Parts()
    if rng.random() < 0.5:  # pill bottle
        r, h = uniform(rng, 20, 35), uniform(rng, 50, 110)
        cavity = p.hollow_cylinder((0, 0, r), r, h, 1.2, "polyethylene", LYING_X)
        p.add(cavity, "pills", 0.8, fill_below_z_mm=fill_level_z(cavity, uniform(rng, 0.3, 0.9)))
        return Item("medicine", p.items, 2 * r)
    for k in range(int(rng.integers(1, 5))):  # blister packs: PVC, Al foil, tablets
        z = 1 + 4 * k
        p.add(box((0, 0, z), (uniform(rng, 80, 110), uniform(rng, 45, 60), 0.3)), "PVC")
        p.add(box((0, 0, z + 0.2), (95, 50, 0.03)), "Al")
        for i in range(10):
            p.add(ellipsoid(((i % 5) * 16 - 32, (i // 5) * 20 - 10, z + 2), (5, 5, 2)), "pills")
    return Item("medicine", p.items, 20)


def candles_soap(rng, fit) -> Item:
    p = Parts()
    for _ in range(int(rng.integers(1, 5))):
        c = (uniform(rng, -50, 50), uniform(rng, -30, 30), 0)
        if rng.random() < 0.5:
            size = (uniform(rng, 60, 100), uniform(rng, 40, 65), uniform(rng, 20, 35))
            p.add(box((c[0], c[1], size[2] / 2), size), "soap")
        else:
            r = uniform(rng, 20, 45)
            p.add(cylinder((c[0], c[1], r), r, uniform(rng, 50, 150), LYING_X), "paraffin wax")
    return Item("candles_soap", p.items, 60)


def keys(rng, fit) -> Item:
    p = Parts()
    p.ring((0, 0, 2), 14, 12, 1.5, "stainless steel")
    for _ in range(int(rng.integers(1, 7))):
        a = uniform(rng, 0, 2 * math.pi)
        rot = rotation(a)
        p.add(
            box(rot @ np.array([35, 0, 1.2]), (45, uniform(rng, 8, 12), 2.2), rot),
            choice(rng, ["brass", "cupronickel", "steel"]),
        )
        p.add(box(rot @ np.array([15, 0, 1.5]), (22, 24, 3), rot), choice(rng, ["brass", "ABS"]))
    return Item("keys", p.items, 6)


def chocolate_food(rng, fit) -> Item:
    p = Parts()
    for k in range(int(rng.integers(1, 6))):
        size = (uniform(rng, 100, 200), uniform(rng, 50, 100), uniform(rng, 8, 30))
        p.add(box((0, k * 8, size[2] / 2 + k * size[2]), size), choice(rng, ["chocolate", "nuts", "paper pulp"]))
        p.add(box((0, k * 8, size[2] / 2 + k * size[2]), (size[0] + 2, size[1] + 2, 0.05)), "Al")
    return Item("chocolate_food", p.items, 60)


def powder_sample_bag(rng, fit) -> Item:
    """A small flat zip bag of a benign powder: spices, tea, supplements, clay face mask, pigment."""
    p = Parts()
    good = choice(
        rng,
        [
            "salt",
            "sugar",
            "tea",
            "coffee",
            "protein powder",
            "CaCO3",
            "clay",
            "baking soda",
            "talc",
            "iron oxide pigment",
            "zinc oxide",
        ],
    )
    density = material(good).packed_density_g_cm3
    mass = log_uniform(rng, 10, 200)
    t = _fit(uniform(rng, 2, 10), fit[2])
    area = mass / density * 1000 / (t * 0.7)
    rx = min(math.sqrt(area / math.pi * uniform(rng, 1.0, 1.6)), fit[0] / 2)
    ry = min(area / math.pi / rx, fit[1] / 2)
    p.add(blob(rng, (0, 0, t / 2), rx, ry, t, edge_power=5), good, density)
    p.add(box((0, 0, t / 2), (2.4 * rx, 2.4 * ry, 0.12)), "polyethylene")
    return Item("powder_sample_bag", p.items, t)


# --- the registry ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """A benign kind: its builder, how common it is, which containers it travels in."""

    build: Builder
    weight: float
    containers: tuple[str, ...]  # of "letter", "soft" (padded envelope, poly mailer), "box"


_ALL = ("soft", "box")
BENIGN_KINDS: dict[str, Kind] = {
    "clothing": Kind(clothing, 6, _ALL),
    "shoes": Kind(shoes, 2, _ALL),
    "book": Kind(book, 3, _ALL),
    "documents": Kind(documents, 3, ("letter", "soft", "box")),
    "toy": Kind(toy, 2, _ALL),
    "cosmetics": Kind(cosmetics, 3, _ALL),
    "electronics": Kind(electronics, 2, _ALL),
    "li_ion_cells": Kind(li_ion_cells, 1, _ALL),
    "batteries": Kind(batteries, 1, _ALL),
    "phone": Kind(phone, 2, _ALL),
    "power_bank": Kind(power_bank, 1.5, _ALL),
    "laptop": Kind(laptop, 0.7, ("box",)),
    "cable": Kind(cable, 3, _ALL),
    "hand_tools": Kind(hand_tools, 2, ("box",)),
    "machinery_parts": Kind(machinery_parts, 2, ("box",)),
    "al_casting": Kind(al_casting, 1, ("box",)),
    "brass_fittings": Kind(brass_fittings, 1, ("box",)),
    "fishing_weights": Kind(fishing_weights, 1, _ALL),
    "carbide_bits": Kind(carbide_bits, 1, _ALL),
    "coins": Kind(coins, 1, ("letter", "soft", "box")),
    "jewellery": Kind(jewellery, 1.5, ("letter", "soft", "box")),
    "speaker": Kind(speaker, 1.5, _ALL),
    "motor": Kind(motor, 1.2, _ALL),
    "ferrite_magnets": Kind(ferrite_magnets, 1, ("letter", "soft", "box")),
    "fire_steel": Kind(fire_steel, 0.6, _ALL),
    "solder_spool": Kind(solder_spool, 0.5, _ALL),
    "glass_jar": Kind(glass_jar, 2, ("box",)),
    "canned_food": Kind(canned_food, 1.5, ("box",)),
    "bottle": Kind(bottle, 2.5, ("box",)),
    "food_bag": Kind(food_bag, 2.5, ("box",)),
    "construction_sack": Kind(construction_sack, 1, ("box",)),
    "ceramic_tiles": Kind(ceramic_tiles, 1, ("box",)),
    "kitchenware": Kind(kitchenware, 1.5, ("box",)),
    "medicine": Kind(medicine, 1.5, _ALL),
    "candles_soap": Kind(candles_soap, 1, _ALL),
    "keys": Kind(keys, 0.8, ("letter", "soft", "box")),
    "chocolate_food": Kind(chocolate_food, 1.5, _ALL),
    "powder_sample_bag": Kind(powder_sample_bag, 1, ("letter", "soft", "box")),
}
LETTER_SAFE = ("documents", "coins", "jewellery", "ferrite_magnets", "keys", "powder_sample_bag")


def random_kind(rng: np.random.Generator, container_class: str) -> str:
    names = [n for n, k in BENIGN_KINDS.items() if container_class in k.containers]
    return choice(rng, names, [BENIGN_KINDS[n].weight for n in names])


def make_item(rng: np.random.Generator, kind: str, fit) -> Item:
    return BENIGN_KINDS[kind].build(rng, np.asarray(fit, float))


def place(
    rng: np.random.Generator,
    item: Item,
    interior,
    *,
    xy=None,
    z_mm: float | None = None,
    yaw_rad: float | None = None,
    item_id: int = -1,
    role: str | None = None,
) -> list[Part]:
    """Turn the item about the vertical and put it inside ``interior`` (x0, x1, y0, y1, z0, z1 in mm).

    ``xy`` and ``z_mm`` pin the position (e.g. clutter on top of a concealment); otherwise the item lies
    somewhere in the interior, overlapping whatever is there (parcels are packed in 3-D, the image is
    their projection)."""
    x0, x1, y0, y1, z0, z1 = interior
    best = None
    yaws = (
        [yaw_rad]
        if yaw_rad is not None
        else [uniform(rng, 0, 2 * math.pi)] + [k * math.pi / 2 + float(rng.normal(0, 0.08)) for k in range(4)]
    )
    for yaw in yaws:  # a random turn if the item fits that way, else the best-fitting square-ish turn
        rz = rotation(yaw)
        turned = [part.moved(rz, np.zeros(3)) for part in item.parts]
        bounds = np.array([part.shape.bounds_xy() for part in turned])
        lo = np.array([bounds[:, 0].min(), bounds[:, 2].min()])
        hi = np.array([bounds[:, 1].max(), bounds[:, 3].max()])
        overflow = max(hi[0] - lo[0] - (x1 - x0), 0) + max(hi[1] - lo[1] - (y1 - y0), 0)
        if best is None or overflow < best[0]:
            best = (overflow, turned, lo, hi)
        if overflow <= 0:
            break
    _, turned, lo, hi = best
    if xy is None:
        cx = uniform(rng, x0 - lo[0], x1 - hi[0]) if x1 - x0 > hi[0] - lo[0] else (x0 + x1) / 2 - (lo[0] + hi[0]) / 2
        cy = uniform(rng, y0 - lo[1], y1 - hi[1]) if y1 - y0 > hi[1] - lo[1] else (y0 + y1) / 2 - (lo[1] + hi[1]) / 2
    else:  # centred on the point, but kept inside the container where it fits
        cx, cy = xy[0] - (lo[0] + hi[0]) / 2, xy[1] - (lo[1] + hi[1]) / 2
        if x1 - x0 > hi[0] - lo[0]:
            cx = float(np.clip(cx, x0 - lo[0], x1 - hi[0]))
        if y1 - y0 > hi[1] - lo[1]:
            cy = float(np.clip(cy, y0 - lo[1], y1 - hi[1]))
    if z_mm is None:
        z_mm = uniform(rng, z0, max(z0, z1 - item.height_mm))
    offset = np.array([cx, cy, z_mm])
    placed = []
    for part in turned:
        moved = part.moved(np.eye(3), offset)
        moved.item_id = item_id
        if role is not None and moved.role == "item":
            moved.role = role
        placed.append(moved)
    return placed
