"""The concealment scenarios from the seizures, and a benign look-alike of each.

Every scenario builds its vessel (a sack, PET bottles, a tile stack, a flat pouch, a casting) with the
same geometry law whether it is filled with a target powder (a positive) or with a benign filler (its
look-alike, a clear parcel): geometry is drawn from its own random stream before the fill is chosen,
so a vessel's size, shape, pose and container never tell the label. Only the fill differs — and the
benign fills include dense and high-Z goods (lead, bismuth, tungsten carbide, brass, barite, zircon,
iron-oxide pigment, salt, calcium carbonate), so that density alone does not tell it either.

Masses: 10 g – 5 kg of target. Any fill (target or benign) that would exceed 5 kg is settled to a lower
fill level by the same rule, so the cap does not mark positives.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from parcelscan.datasets.physics.materials import LIBRARY, TARGET_MATERIALS, Material, mix_materials
from parcelscan.datasets.simulator.containers import Container, cardboard_box, letter, padded_envelope, poly_mailer
from parcelscan.datasets.simulator.contents import (
    bottle_body,
    bottle_dims,
    make_item,
    place,
    sack_shape,
    tile_stack_layout,
)
from parcelscan.datasets.simulator.goods import material
from parcelscan.datasets.simulator.scene import Part, Shape, rotation, volume_mm3
from parcelscan.datasets.simulator.shapes import (
    LYING_X,
    UP,
    Parts,
    blob,
    box,
    choice,
    cylinder,
    fill_level_z,
    log_uniform,
    uniform,
)

SCENARIOS = ("tile_ingredients", "water_bottle", "tile_stack", "mail_pouch", "machine_part")
MIN_TARGET_G = 10.0
MAX_FILL_G = 5000.0

# benign fills of each look-alike: (name, weight); dense and high-Z goods on purpose
LOOKALIKE_FILLS: dict[str, dict[str, tuple[tuple[str, float], ...]]] = {
    "tile_ingredients": {
        "mixed": (
            ("CaCO3", 3),
            ("barite", 2),
            ("iron oxide pigment", 2),
            ("titanium white", 1),
            ("zircon", 1.5),
            ("zinc oxide", 1),
            ("sand", 1),
            ("salt", 1),
        ),
        "bagged": (
            ("iron oxide pigment", 2),
            ("titanium white", 1),
            ("CaCO3", 2),
            ("barite", 2),
            ("zircon", 1.5),
            ("sand", 1),
            ("salt", 1),
            ("grout", 1),
            ("lead shot", 0.7),
            ("steel shot", 0.7),
        ),
    },
    "water_bottle": {
        "powder": (
            ("sand", 2),
            ("salt", 2),
            ("CaCO3", 2),
            ("glass beads", 1),
            ("steel shot", 1.5),
            ("lead shot", 1),
            ("brass swarf", 1),
            ("barite", 1.5),
            ("zircon", 1.5),
            ("sugar", 1),
            ("baking soda", 1),
        ),
        "slurry": (
            ("CaCO3", 2),
            ("clay", 2),
            ("barite", 2),
            ("titanium white", 1),
            ("zinc oxide", 1),
            ("iron oxide pigment", 1.5),
            ("salt", 1),
            ("sugar", 1),
        ),
    },
    "tile_stack": {
        "pouch": (
            ("tile adhesive", 2),
            ("grout", 2),
            ("CaCO3", 2),
            ("salt", 1),
            ("sand", 1),
            ("clay", 1),
            ("iron oxide pigment", 1.5),
            ("zircon", 1.5),
            ("barite", 1.5),
        ),
        "sheet": (("Pb", 2), ("steel", 1.5), ("brass", 1), ("Cu", 1), ("rubber", 1), ("cardboard", 1), ("wood", 1)),
    },
    "mail_pouch": {
        "pouch": (
            ("salt", 2),
            ("sugar", 1),
            ("baking soda", 1),
            ("talc", 1),
            ("CaCO3", 2),
            ("protein powder", 1),
            ("tea", 1),
            ("coffee", 1),
            ("clay", 1),
            ("zinc oxide", 1.5),
            ("iron oxide pigment", 1.5),
            ("titanium white", 1),
            ("barite", 1.5),
            ("lead shot", 1),
            ("glass beads", 0.5),
            ("zircon", 1),
        ),
    },
    "machine_part": {
        "cavity": (
            ("air", 3),
            ("Pb", 2),
            ("foundry sand", 2),
            ("brass", 1.5),
            ("steel", 1.5),
            ("grease", 1),
            ("WC", 1),
            ("bismuth", 1),
            ("Cu", 1),
            ("zircon", 1),
            ("CaCO3", 1),
            ("lead shot", 1),
        ),
    },
}


@dataclass
class Fill:
    """What a vessel holds: its material, packed density and the target's mass fraction in it."""

    name: str  # target or benign good
    material: Material
    density_g_cm3: float  # of ``material`` per volume of fill (its partial density in a mixture)
    is_target: bool
    mass_fraction: float = 1.0  # target mass / fill mass (1 for a pure powder, 0 for benign fills)
    admixture: tuple[tuple[Material, float], ...] = ()  # what it is mixed with, at partial densities

    @property
    def total_density_g_cm3(self) -> float:
        return self.density_g_cm3 + sum(d for _, d in self.admixture)

    @property
    def role(self) -> str:
        return "target" if self.is_target else "fill"


@dataclass
class Concealment:
    scenario: str
    variant: str
    container: Container
    parts: list[Part]  # vessel, fill and companions, in the parcel frame
    focus_xy: tuple[float, float]  # a point over the fill, where overlapping clutter goes
    fill: Fill
    clutter_kinds: tuple[str, ...] = ()
    notes: dict = field(default_factory=dict)
    objects: int = 1  # the vessel and the scenario's companions


# --- fills ------------------------------------------------------------------------------------------
def target_powder(rng: np.random.Generator, name: str, bulk_range: tuple[float, float] | None = None) -> Fill:
    """A pure target powder as packed: its bulk density, somewhat tapped or compacted."""
    m = LIBRARY[name]
    density = uniform(rng, *bulk_range) if bulk_range else m.packed_density_g_cm3 * uniform(rng, 0.9, 1.35)
    return Fill(name, m, min(density, 0.75 * m.density_g_cm3), True, 1.0)


def benign_powder(rng: np.random.Generator, name: str, bulk_range: tuple[float, float] | None = None) -> Fill:
    m = material(name)
    if bulk_range is not None and m.bulk_density_g_cm3 is not None:
        density = uniform(rng, *bulk_range)
    else:
        density = m.packed_density_g_cm3 * (uniform(rng, 0.9, 1.35) if m.bulk_density_g_cm3 else 1.0)
    return Fill(name, m, min(density, 0.75 * m.density_g_cm3) if m.bulk_density_g_cm3 else density, False, 0.0)


def mixed_fill(rng: np.random.Generator, name: str, is_target: bool, carrier: str, fraction: float, wet: bool) -> Fill:
    """``fraction`` (by mass) of a powder in a carrier: a dry mix (packed, with air) or a slurry (no air)."""
    powder = LIBRARY[name] if is_target else material(name)
    base = material(carrier)
    mix = mix_materials(f"{name} {fraction:.0%} in {carrier}", [(powder, fraction), (base, 1 - fraction)])
    density = mix.density_g_cm3 if wet else mix.packed_density_g_cm3 * uniform(rng, 0.95, 1.2)
    return Fill(name, powder, fraction * density, is_target, fraction if is_target else 0.0,
                ((base, (1 - fraction) * density),))


def lookalike_name(rng: np.random.Generator, scenario: str, variant: str) -> str:
    options = LOOKALIKE_FILLS[scenario][variant]
    return choice(rng, [n for n, _ in options], [w for _, w in options])


def _settle(part: Part, density_g_cm3: float, cap_g: float = MAX_FILL_G) -> float:
    """Lower a fill's level until its mass is within the cap (same rule for every fill). Returns mass (g)."""
    mass = volume_mm3(part) / 1000 * density_g_cm3
    if mass <= cap_g:
        return mass
    top = part.fill_below_z_mm if part.fill_below_z_mm is not None else fill_level_z(part.shape, 1.0)
    bottom = fill_level_z(part.shape, 0.0)
    lo, hi = bottom, top
    for _ in range(18):
        part.fill_below_z_mm = (lo + hi) / 2
        mass = volume_mm3(part, 96) / 1000 * density_g_cm3
        lo, hi = (part.fill_below_z_mm, hi) if mass < 0.98 * cap_g else (lo, part.fill_below_z_mm)
    part.fill_below_z_mm = lo
    return volume_mm3(part) / 1000 * density_g_cm3


def _fill_part(p: Parts, shape: Shape, fill: Fill, *, cavities=(), level: float | None = None) -> Part:
    part = Part(
        shape,
        fill.material,
        fill.density_g_cm3,
        tuple(cavities),
        None if level is None else fill_level_z(shape, level),
        fill.role,
        admixture=fill.admixture,
    )
    p.items.append(part)
    return part


def _vessel(parts: list[Part]) -> list[Part]:
    for part in parts:
        if part.role == "item":
            part.role = "vessel"
    return parts


def _centre_xy(shape: Shape) -> tuple[float, float]:
    x0, x1, y0, y1 = shape.bounds_xy()
    return (x0 + x1) / 2, (y0 + y1) / 2


# --- the scenarios -------------------------------------------------------------------------------------
def tile_ingredients(
    geo: np.random.Generator, pay: np.random.Generator, target: str | None, container: Container
) -> Concealment:
    x0, x1, y0, y1, z0, _ = container.interior
    fit = container.fit
    carrier = choice(geo, ["grout", "tile adhesive", "clay", "grout", "tile adhesive"])
    variant = "mixed" if geo.random() < 0.55 else "bagged"
    sack_kg = log_uniform(geo, 0.5, 8.0)
    carrier_m = material(carrier)
    sack = sack_shape(geo, sack_kg * 1000 / carrier_m.packed_density_g_cm3 * 1000, fit * np.array([0.9, 0.9, 0.8]))
    centre = np.array(
        [
            uniform(geo, x0 + sack.rx_mm, max(x0 + sack.rx_mm, x1 - sack.rx_mm))
            if x1 - x0 > 2 * sack.rx_mm
            else (x0 + x1) / 2,
            uniform(geo, y0, y1) * 0.3,
            z0 + sack.thickness_mm / 2 + 1,
        ]
    )
    sack = sack.moved(np.eye(3), centre - sack.centre_mm)
    wrapper = choice(geo, ["paper", "polypropylene"])
    p = Parts()
    p.add(sack.scaled(1.03, 1.02), wrapper, uniform(geo, 0.03, 0.06), role="vessel")
    fraction = log_uniform(geo, 0.05, 0.6)
    inner_q = log_uniform(geo, 0.03, 0.5)  # bagged: inner bag volume share of the sack
    notes = {"carrier": carrier, "sack_kg_nominal": round(sack_kg, 2)}
    if variant == "mixed":
        fill = (
            mixed_fill(pay, target, True, carrier, fraction, wet=False)
            if target
            else mixed_fill(pay, lookalike_name(pay, "tile_ingredients", "mixed"), False, carrier, fraction, wet=False)
        )
        part = _fill_part(p, sack, fill)
        target_mass = volume_mm3(part) / 1000 * fill.density_g_cm3
        if target and target_mass > MAX_FILL_G:  # at most 5 kg of target: a leaner mix
            fraction = max(fraction * MAX_FILL_G / target_mass * 0.78, 0.05)
            fill = mixed_fill(pay, target, True, carrier, fraction, wet=False)
            part.material, part.density_g_cm3, part.admixture = fill.material, fill.density_g_cm3, fill.admixture
        notes["fraction"] = round(fraction, 4)
    else:
        s_z = min(inner_q ** (1 / 3), 0.8)
        bag = sack.scaled(math.sqrt(inner_q / s_z), s_z)
        fill = (
            target_powder(pay, target)
            if target
            else benign_powder(pay, lookalike_name(pay, "tile_ingredients", "bagged"))
        )
        p.add(sack, carrier, carrier_m.packed_density_g_cm3, cavities=(bag,), role="vessel")
        p.add(bag.scaled(1.02, 1.02), "polyethylene", 0.03, role="vessel")
        part = _fill_part(p, bag, fill)
        _settle(part, fill.total_density_g_cm3)
    return Concealment(
        "tile_ingredients",
        variant,
        container,
        p.items,
        (float(centre[0]), float(centre[1])),
        fill,
        ("hand_tools", "construction_sack", "ceramic_tiles", "documents", "food_bag", "kitchenware"),
        notes,
    )


def water_bottle(
    geo: np.random.Generator, pay: np.random.Generator, target: str | None, container: Container
) -> Concealment:
    x0, x1, y0, y1, z0, z1 = container.interior
    n = int(geo.integers(1, 7))
    n_filled = int(geo.integers(1, n + 1))
    variant = "powder" if geo.random() < 0.5 else "slurry"
    level = [uniform(geo, 0.5, 0.98) for _ in range(n)]
    volumes = [choice(geo, [330, 500, 500, 750, 1000, 1500]) for _ in range(n)]
    fraction = uniform(geo, 0.05, 0.4)
    p = Parts()
    filled_parts, y = [], y0
    fill_name = target or lookalike_name(pay, "water_bottle", variant)
    if variant == "powder":
        fill = target_powder(pay, fill_name, (1.5, 3.5)) if target else benign_powder(pay, fill_name, (1.5, 3.5))
    else:
        fill = mixed_fill(pay, fill_name, bool(target), "water", fraction, wet=True)
    focus = (0.0, 0.0)
    for k in range(n):
        radius, length = bottle_dims(geo, volumes[k])
        upright = geo.random() < 0.15 and length + 40 < z1 - z0
        yaw = uniform(geo, -0.15, 0.15)
        if upright:
            rot = UP
            centre = (uniform(geo, x0 + radius, x1 - radius), uniform(geo, y0 + radius, y1 - radius), z0 + length / 2)
        else:
            rot = rotation(yaw, math.pi / 2 + uniform(geo, -0.08, 0.08))
            if y + 2 * radius > y1:
                y = y0 + uniform(geo, 0, radius)
            cx = uniform(geo, x0 + length / 2 + 20, max(x0 + length / 2 + 20, x1 - length / 2 - 20))
            centre = (
                min(cx, (x0 + x1) / 2 + 40),
                y + radius,
                z0 + radius + uniform(geo, 0, max(0, z1 - z0 - 2 * radius)),
            )
            y += 2 * radius + uniform(geo, 0, 25)
        vessel = choice(geo, ["PET", "PET", "polyethylene"])
        b = Parts()
        cavity = bottle_body(b, radius, length, vessel, rot, centre)
        p.items.extend(_vessel(b.items))
        if k < n_filled:
            part = _fill_part(p, cavity, fill, level=level[k])
            filled_parts.append(part)
            focus = _centre_xy(cavity)
        else:
            other = choice(geo, ["water", "water", "juice"])
            p.add(cavity, other, fill_below_z_mm=fill_level_z(cavity, level[k]))
    total = sum(volume_mm3(q) / 1000 * fill.total_density_g_cm3 for q in filled_parts)
    if total > MAX_FILL_G:
        for part in filled_parts:
            _settle(part, fill.total_density_g_cm3, MAX_FILL_G / len(filled_parts))
    companions = int(geo.integers(1, 7))
    for _ in range(companions):  # the "machinery parts" of the declaration
        kind = choice(
            geo, ["machinery_parts", "al_casting", "brass_fittings", "hand_tools", "motor"], [4, 2, 1.5, 1, 1]
        )
        p.items.extend(place(geo, make_item(geo, kind, container.fit), container.interior))
    return Concealment(
        "water_bottle",
        variant,
        container,
        p.items,
        focus,
        fill,
        ("machinery_parts", "al_casting", "hand_tools", "documents", "cable"),
        {"bottles": n, "filled_bottles": n_filled, "bottle_volumes_ml": volumes},
        n + companions,
    )


def tile_stack(
    geo: np.random.Generator, pay: np.random.Generator, target: str | None, container: Container
) -> Concealment:
    x0, x1, y0, y1, z0, _ = container.interior
    fit = container.fit
    layer_mm = uniform(geo, 1.0, 10.0)
    gap_after = int(geo.integers(0, 4))
    tiles = tile_stack_layout(geo, fit, gap_after, layer_mm + 0.3)
    sheet = geo.random() < 0.3  # look-alikes only: a solid sheet instead of a pouch
    variant = "sheet" if sheet and not target else "pouch"
    share = (uniform(geo, 0.3, 0.48), uniform(geo, 0.3, 0.48))
    p = Parts()
    cx, cy = (x0 + x1) / 2 + uniform(geo, -0.1, 0.1) * fit[0], (y0 + y1) / 2 + uniform(geo, -0.1, 0.1) * fit[1]
    tile_material = choice(geo, ["ceramic tile", "ceramic tile", "glass"])
    for centre, size, yaw in tiles:
        c = (centre[0] + cx, centre[1] + cy, centre[2] + z0)
        p.add(box(c, size, rotation(yaw)), tile_material, uniform(geo, 1.9, 2.4), role="vessel")
    below = tiles[min(gap_after, len(tiles) - 1)]
    side = below[1]
    z_layer = below[0][2] + z0 + side[2] / 2 + 0.15
    centre = (
        cx + uniform(geo, -0.05, 0.05) * side[0],
        cy + uniform(geo, -0.05, 0.05) * side[1],
        z_layer + layer_mm / 2,
    )
    if variant == "pouch":
        pouch = blob(
            geo,
            centre,
            side[0] * share[0],
            side[1] * share[1],
            layer_mm,
            edge_power=uniform(geo, 4, 10),
            lumpiness=0.04,
        )
        fill = target_powder(pay, target) if target else benign_powder(pay, lookalike_name(pay, "tile_stack", "pouch"))
        part = _fill_part(p, pouch, fill)
        _settle(part, fill.total_density_g_cm3)
        p.add(box(centre, (2.1 * pouch.rx_mm, 2.1 * pouch.ry_mm, 0.12)), "polyethylene", role="vessel")
    else:
        name = lookalike_name(pay, "tile_stack", "sheet")
        sheet_mm = min(layer_mm, uniform(pay, 0.5, 2.5)) if name in ("Pb", "steel", "brass", "Cu") else layer_mm
        m = material(name)
        fill = Fill(name, m, m.density_g_cm3, False, 0.0)
        p.items.append(
            Part(
                box(centre, (2 * side[0] * share[0], 2 * side[1] * share[1], sheet_mm)),
                m,
                m.density_g_cm3,
                role="fill",
            )
        )
    return Concealment(
        "tile_stack",
        variant,
        container,
        p.items,
        (centre[0], centre[1]),
        fill,
        ("construction_sack", "hand_tools", "documents", "food_bag"),
        {"tiles": len(tiles), "layer_mm": round(layer_mm, 2)},
    )


def mail_pouch(
    geo: np.random.Generator, pay: np.random.Generator, target: str | None, container: Container
) -> Concealment:
    kind = container.kind
    thickness = uniform(geo, 2.0, 10.0)
    if kind == "letter":
        thickness = min(thickness, uniform(geo, 2.0, 5.0))
        length, width, _ = container.size_mm
        container = Container(
            "letter", (length, width, thickness + 2), container.parts, (*container.interior[:4], 0.2, thickness + 1.8)
        )
    x0, x1, y0, y1, z0, z1 = container.interior
    fit = container.fit
    thickness = min(thickness, fit[2] * 0.8)
    mass_g = log_uniform(pay, MIN_TARGET_G, 200.0)
    fill_name = target or lookalike_name(pay, "mail_pouch", "pouch")
    fill = target_powder(pay, fill_name) if target else benign_powder(pay, fill_name)
    area = mass_g / fill.density_g_cm3 * 1000 / (thickness * 0.75)
    aspect = uniform(geo, 1.0, 1.7)
    rx = min(math.sqrt(area / math.pi * aspect), fit[0] * 0.45)
    ry = min(area / math.pi / rx, fit[1] * 0.45)
    p = Parts()
    n_papers = int(geo.integers(1, 4))
    pouch_level = int(geo.integers(0, n_papers + 1))
    z = z0
    centre = (
        (x0 + x1) / 2 + uniform(geo, -0.25, 0.25) * (fit[0] - 2 * rx),
        (y0 + y1) / 2 + uniform(geo, -0.25, 0.25) * (fit[1] - 2 * ry),
        0.0,
    )
    for k in range(n_papers + 1):
        if k == pouch_level:
            centre = (centre[0], centre[1], z + thickness / 2)
            pouch = blob(geo, centre, rx, ry, thickness, edge_power=uniform(geo, 3, 8), lumpiness=0.05)
            part = _fill_part(p, pouch, fill)
            made_g = volume_mm3(part) / 1000 * fill.total_density_g_cm3
            if made_g > 0:  # the outline is approximate: set the thickness for exactly the intended mass
                part.shape = dataclasses.replace(pouch, thickness_mm=pouch.thickness_mm * mass_g / made_g)
            wrap = choice(geo, ["polyethylene", "polyethylene", "Al", "paper"])
            p.add(box(centre, (2.15 * rx, 2.15 * ry, 0.1 if wrap != "Al" else 0.02)), wrap, role="vessel")
            z += thickness * 0.8
        if k < n_papers:
            papers = make_item(geo, "documents", np.array([fit[0], fit[1], max(z1 - z, 0.5) / (n_papers - k + 1)]))
            p.items.extend(place(geo, papers, container.interior, z_mm=z))
            z += papers.height_mm * 0.8
    return Concealment(
        "mail_pouch",
        "pouch",
        container,
        p.items,
        (centre[0], centre[1]),
        fill,
        ("documents", "jewellery", "coins", "keys", "cosmetics", "clothing", "cable"),
        {"container": kind, "pouch_mm": round(thickness, 2)},
        1 + n_papers,
    )


def machine_part(
    geo: np.random.Generator, pay: np.random.Generator, target: str | None, container: Container
) -> Concealment:
    x0, x1, y0, y1, z0, _ = container.interior
    fit = container.fit
    metal = choice(
        geo, ["Al", "cast iron", "steel", "brass", "acetal", "nylon", "ABS"], [4, 2.5, 1.5, 0.5, 0.7, 0.5, 0.5]
    )
    shape_kind = choice(geo, ["box", "cylinder"])
    wall = {"Al": (4, 15), "cast iron": (3, 9), "steel": (2, 7), "brass": (2, 5)}.get(metal, (3, 8))
    wall = uniform(geo, *wall)
    p = Parts()
    size = np.array(
        [
            uniform(geo, 70, min(300, fit[0] * 0.9)),
            uniform(geo, 50, min(200, fit[1] * 0.9)),
            uniform(geo, 35, min(140, fit[2] * 0.9)),
        ]
    )
    centre = (
        (x0 + x1) / 2 + uniform(geo, -0.2, 0.2) * (fit[0] - size[0]),
        (y0 + y1) / 2 + uniform(geo, -0.2, 0.2) * (fit[1] - size[1]),
        z0 + size[2] / 2,
    )
    rot = rotation(uniform(geo, -0.4, 0.4))
    if shape_kind == "box":
        outer = box(centre, size, rot)
        cavity = box(centre, np.maximum(size - 2 * wall, 4), rot)
    else:
        r = min(size[1], size[2]) / 2
        outer = cylinder(centre, r, size[0], rot @ LYING_X)
        cavity = cylinder(centre, max(r - wall, 2), max(size[0] - 2 * wall, 4), rot @ LYING_X)
    level = uniform(geo, 0.8, 1.0)
    p.add(outer, metal, cavities=(cavity,), role="vessel")
    for _ in range(int(geo.integers(0, 4))):  # bosses and ribs
        p.add(
            cylinder(
                np.asarray(centre)
                + rot @ np.array([uniform(geo, -0.45, 0.45) * size[0], uniform(geo, -0.45, 0.45) * size[1], 0]),
                uniform(geo, 4, 10),
                size[2] * 0.9,
            ),
            metal,
            role="vessel",
        )
    variant = "cavity"
    if target:
        fill = target_powder(pay, target)
        part = _fill_part(p, cavity, fill, level=level)
        _settle(part, fill.total_density_g_cm3)
    else:
        name = lookalike_name(pay, "machine_part", "cavity")
        m = material(name)
        if name == "air":
            fill = Fill("air", m, m.density_g_cm3, False, 0.0)
        elif m.bulk_density_g_cm3 is not None or name in ("grease",):
            fill = benign_powder(pay, name)
            part = _fill_part(p, cavity, fill, level=level)
            _settle(part, fill.total_density_g_cm3)
        else:  # a solid insert: a cast-in lead weight, a brass bushing, a steel shaft, a WC wear part
            fill = Fill(name, m, m.density_g_cm3, False, 0.0)
            scale = uniform(pay, 0.3, 0.9)
            insert = cylinder(
                centre,
                max(min(size[1], size[2]) / 2 - wall, 2) * scale,
                max(size[0] - 2 * wall, 4) * uniform(pay, 0.3, 1.0),
                rot @ LYING_X,
            )
            part = Part(insert, m, m.density_g_cm3, role="fill")
            p.items.append(part)
            _settle(part, m.density_g_cm3)
    companions = int(geo.integers(0, 4))
    for _ in range(companions):
        kind = choice(geo, ["machinery_parts", "al_casting", "brass_fittings", "hand_tools"], [4, 1.5, 1, 1])
        p.items.extend(place(geo, make_item(geo, kind, fit), container.interior))
    return Concealment(
        "machine_part",
        variant,
        container,
        p.items,
        (centre[0], centre[1]),
        fill,
        ("machinery_parts", "al_casting", "hand_tools", "documents", "cable", "electronics"),
        {"casting": metal, "shape": shape_kind, "wall_mm": round(wall, 1)},
        1 + companions,
    )


def scenario_container(rng: np.random.Generator, scenario: str) -> Container:
    """The packaging a scenario travels in. Clear parcels without a look-alike draw theirs from here too
    (a random scenario's), so container types and sizes never tell the label."""
    if scenario == "tile_ingredients":
        return cardboard_box(rng, choice(rng, ["medium", "large"]), min_size_mm=(300, 220, 90))
    if scenario == "water_bottle":
        return cardboard_box(rng, choice(rng, ["medium", "large"]), min_size_mm=(380, 230, 110))
    if scenario == "tile_stack":
        return cardboard_box(rng, choice(rng, ["small", "medium"]), min_size_mm=(160, 140, 50))
    if scenario == "mail_pouch":
        kind = choice(rng, ["padded_envelope", "letter", "box", "poly_mailer"], [4, 2, 3, 2])
        if kind == "box":
            return cardboard_box(rng, "small")
        return {"padded_envelope": padded_envelope, "letter": letter, "poly_mailer": poly_mailer}[kind](rng)
    if scenario == "machine_part":
        return cardboard_box(rng, choice(rng, ["small", "medium", "medium"]), min_size_mm=(180, 140, 80))
    raise ValueError(f"unknown scenario {scenario!r}")


BUILDERS: dict[str, Callable[[np.random.Generator, np.random.Generator, str | None, Container], Concealment]] = {
    "tile_ingredients": tile_ingredients,
    "water_bottle": water_bottle,
    "tile_stack": tile_stack,
    "mail_pouch": mail_pouch,
    "machine_part": machine_part,
}


def build_concealment(rng: np.random.Generator, scenario: str, target: str | None) -> Concealment:
    """A scenario's vessel and companions, with a target powder (``target``) or a benign fill (None).

    The geometry stream is spawned before anything about the fill is drawn."""
    if target is not None and target not in TARGET_MATERIALS:
        raise ValueError(f"unknown target material {target!r}")
    geo, pay = rng.spawn(2)
    return BUILDERS[scenario](geo, pay, target, scenario_container(geo, scenario))
