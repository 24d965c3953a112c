"""The ``shielded`` concealment: powder behind or inside metal that stops (part of) the beam.

A smuggler who knows the parcel will be X-rayed hides the powder where the beam cannot see it. The station's
answer is the shield alarm (``inference.opaque``): an opaque region that could hide the smallest concealment
of interest is never "clear". This scenario tests that answer, and it must not pass by construction, so its
walls span thicknesses that do *and* do not stop a 140 kV beam (31 mm of steel, 35 mm of cast iron or 2.5 mm
of lead along the ray reach A_high 8 under postal-dual-140, ``tests/test_opaque.py``; thinner walls leave the
powder visible to the model through the metal), and a quarter of the cases shield only part of the powder.

Variants (``VARIANTS``, weights in brackets), every wall a hollow body around a cavity; the beam crosses two
walls (top and bottom, the parcel lying flat on the belt):

* ``lead_box`` [1]: a lead-lined box (radiation-shielding pouches and film boxes): a 4–8 mm wooden box lined
  with lead sheet **1–3 mm** thick (``LEAD_MM``).
* ``steel_case`` [1]: a steel case or tool box, walls **3–10 mm** (``STEEL_CASE_MM``): the beam crosses two
  walls, 6–20 mm of steel, so the powder is always in view through them (A_high 2–6 from the steel); only the
  case's side walls, seen edge-on over the case's height, are opaque, in strips as wide as the wall.
* ``casting`` [1]: a thick cast-iron or steel casting with a cored cavity, walls **12–30 mm**
  (``CASTING_MM``; a pump body, a brake drum, a counterweight).
* ``partial`` [1]: a pouch of powder with a lead sheet (**1–3 mm**) or a steel plate (**10–25 mm**,
  ``PLATE_MM``) laid over **30–90 %** of its footprint (``PARTIAL_COVER``): part of the powder stays in plain
  view, and a steel plate (at most 25 mm) or a lead sheet under 2.5 mm never stops the beam: the powder under
  it is seen through the metal too.

The powder is a flat pouch on the cavity floor (under the plate for ``partial``): **10–1000 g**,
log-uniform, of any target at its packed density, **5–25 mm** thick (``POUCH_MM``) within the cavity. The
benign look-alike is the same case with ``LOOKALIKE_FILLS`` (nothing, steel or lead shot, tools' worth of
steel, CaCO3, barite, salt): a shielded box is not in itself a concealment.

``simulate --scenarios shielded`` draws it; the default scenarios (``concealments.SCENARIOS``) do not include
it, so the stress and postal streams keep their pixels. ``build`` is registered by ``parcel`` and accepted by
``generate`` through ``OPTIONAL_SCENARIOS``.
"""

from __future__ import annotations

import math

import numpy as np

from parcelscan.datasets.simulator.concealments import (
    MIN_TARGET_G,
    Concealment,
    Fill,
    _fill_part,
    benign_powder,
    target_powder,
)
from parcelscan.datasets.simulator.containers import Container, cardboard_box
from parcelscan.datasets.simulator.contents import make_item, place
from parcelscan.datasets.simulator.goods import material
from parcelscan.datasets.simulator.scene import rotation
from parcelscan.datasets.simulator.shapes import Parts, blob, box, choice, log_uniform, uniform

OPTIONAL_SCENARIOS = ("shielded",)
VARIANTS = {"lead_box": 1.0, "steel_case": 1.0, "casting": 1.0, "partial": 1.0}
LEAD_MM = (1.0, 3.0)
STEEL_CASE_MM = (3.0, 10.0)
CASTING_MM = (12.0, 30.0)
PLATE_MM = (10.0, 25.0)
PARTIAL_COVER = (0.3, 0.9)
POUCH_MM = (5.0, 25.0)
MAX_POWDER_G = 1000.0
LOOKALIKE_FILLS = (("air", 3.0), ("steel shot", 1.0), ("lead shot", 1.0), ("steel", 1.0), ("CaCO3", 1.0),
                   ("barite", 1.0), ("salt", 1.0))


def _pouch(geo: np.random.Generator, pay: np.random.Generator, target: str | None, centre_xy, floor_z: float,
           max_xy: tuple[float, float], max_mm: float, p: Parts) -> tuple[Fill, float]:
    """A flat pouch of powder (target or benign) on ``floor_z``, within ``max_xy`` and ``max_mm`` high."""
    thickness = min(uniform(geo, *POUCH_MM), max_mm)
    mass_g = log_uniform(pay, MIN_TARGET_G, MAX_POWDER_G)
    if target:
        fill = target_powder(pay, target)
    else:
        name = choice(pay, [n for n, _ in LOOKALIKE_FILLS if n not in ("air", "steel")],
                      [w for n, w in LOOKALIKE_FILLS if n not in ("air", "steel")])
        fill = benign_powder(pay, name)
    area = mass_g / fill.total_density_g_cm3 * 1000 / (thickness * 0.75)
    aspect = uniform(geo, 1.0, 1.7)
    rx = min(math.sqrt(area / math.pi * aspect), max_xy[0] / 2)
    ry = min(area / math.pi / rx, max_xy[1] / 2)
    pouch = blob(geo, (centre_xy[0], centre_xy[1], floor_z + thickness / 2), rx, ry, thickness,
                 edge_power=uniform(geo, 3, 8), lumpiness=0.05)
    _fill_part(p, pouch, fill)
    p.add(box((centre_xy[0], centre_xy[1], floor_z + thickness / 2), (2.15 * rx, 2.15 * ry, 0.1)), "polyethylene",
          role="vessel")
    return fill, thickness


def shielded(geo: np.random.Generator, pay: np.random.Generator, target: str | None,
             container: Container) -> Concealment:
    """One shielded case (module docstring) with a target powder or a benign fill, in ``container``."""
    x0, x1, y0, y1, z0, _ = container.interior
    fit = container.fit
    variant = choice(geo, list(VARIANTS), list(VARIANTS.values()))
    p = Parts()
    yaw = uniform(geo, -0.4, 0.4)
    rot = rotation(yaw)
    size = np.array([uniform(geo, 100, min(280, fit[0] * 0.9)), uniform(geo, 80, min(200, fit[1] * 0.9)),
                     uniform(geo, 40, min(120, fit[2] * 0.9))])
    centre = ((x0 + x1) / 2 + uniform(geo, -0.2, 0.2) * (fit[0] - size[0]),
              (y0 + y1) / 2 + uniform(geo, -0.2, 0.2) * (fit[1] - size[1]), z0 + size[2] / 2)
    details: dict = {"variant": variant}
    if variant == "partial":
        floor = z0 + 1.0
        fill_or_none = None
        if target or geo.random() < 0.7:  # a look-alike may carry a benign pouch, or only the plate
            fill_or_none, thickness = _pouch(geo, pay, target, centre[:2], floor, (size[0] * 0.8, size[1] * 0.8),
                                             30.0, p)
        else:
            thickness = uniform(geo, *POUCH_MM)
        metal = choice(geo, ["Pb", "steel"])
        plate_mm = uniform(geo, *(LEAD_MM if metal == "Pb" else PLATE_MM))
        cover = uniform(geo, *PARTIAL_COVER)
        pouch_extent = (size[0] * 0.8, size[1] * 0.8)
        if p.items and p.items[0].role in ("target", "fill"):
            shape = p.items[0].shape
            bx0, bx1, by0, by1 = shape.bounds_xy()
            pouch_extent = (bx1 - bx0, by1 - by0)
        plate_len = pouch_extent[0] * cover
        plate_centre = (centre[0] - pouch_extent[0] / 2 + plate_len / 2, centre[1],
                        floor + thickness + 2 + plate_mm / 2)
        p.add(box(plate_centre, (plate_len, pouch_extent[1] * 1.3, plate_mm)), metal, role="vessel")
        details.update({"shield": metal, "wall_mm": round(plate_mm, 1), "cover": round(cover, 2)})
        fill = fill_or_none or Fill("air", material("air"), material("air").density_g_cm3, False, 0.0)
    else:
        if variant == "lead_box":
            wood_mm, lead_mm = uniform(geo, 4, 8), uniform(geo, *LEAD_MM)
            outer = box(centre, size, rot)
            lining = box(centre, size - 2 * wood_mm, rot)
            cavity = box(centre, size - 2 * (wood_mm + lead_mm), rot)
            p.add(outer, "wood", cavities=(lining,), role="vessel")
            p.add(lining, "Pb", cavities=(cavity,), role="vessel")
            wall, metal = lead_mm, "Pb"
        else:
            metal = "steel" if variant == "steel_case" else choice(geo, ["cast iron", "steel"], [2, 1])
            wall = uniform(geo, *(STEEL_CASE_MM if variant == "steel_case" else CASTING_MM))
            wall = min(wall, float(size.min()) / 2 - 6)
            cavity = box(centre, size - 2 * wall, rot)
            p.add(box(centre, size, rot), metal, cavities=(cavity,), role="vessel")
        inner = size - 2 * (wall + (wood_mm if variant == "lead_box" else 0.0))
        floor = centre[2] - inner[2] / 2
        details.update({"shield": metal, "wall_mm": round(wall, 1)})
        if target:
            fill, _ = _pouch(geo, pay, target, centre[:2], floor, (inner[0] * 0.9, inner[1] * 0.9), inner[2] - 1, p)
        else:
            name = choice(pay, [n for n, _ in LOOKALIKE_FILLS], [w for _, w in LOOKALIKE_FILLS])
            if name == "air":
                fill = Fill("air", material("air"), material("air").density_g_cm3, False, 0.0)
            elif name == "steel":  # tools' worth of steel in the case
                for _ in range(int(geo.integers(1, 4))):
                    item = make_item(geo, "hand_tools", tuple(inner * 0.9))
                    p.items.extend(place(geo, item, (centre[0] - inner[0] * 0.45, centre[0] + inner[0] * 0.45,
                                                     centre[1] - inner[1] * 0.45, centre[1] + inner[1] * 0.45,
                                                     floor, floor + inner[2] * 0.9)))
                m = material("steel")
                fill = Fill("steel", m, m.density_g_cm3, False, 0.0)
            else:
                fill, _ = _pouch(geo, pay, None, centre[:2], floor, (inner[0] * 0.9, inner[1] * 0.9), inner[2] - 1, p)
    companions = int(geo.integers(0, 3))
    for _ in range(companions):
        kind = choice(geo, ["clothing", "documents", "hand_tools", "machinery_parts"], [2, 2, 1, 1])
        p.items.extend(place(geo, make_item(geo, kind, fit), container.interior))
    return Concealment("shielded", variant, container, p.items, (float(centre[0]), float(centre[1])), fill,
                       ("hand_tools", "machinery_parts", "documents", "clothing"), details, 1 + companions)


def shielded_container(rng: np.random.Generator) -> Container:
    """The packaging of a shielded case: a medium or large box."""
    return cardboard_box(rng, choice(rng, ["medium", "large"]), min_size_mm=(220, 180, 80))


def build(rng: np.random.Generator, scenario: str, target: str | None) -> Concealment:
    """``concealments.build_concealment`` for the optional scenarios: geometry stream first, then the fill."""
    if scenario not in OPTIONAL_SCENARIOS:
        raise ValueError(f"unknown optional scenario {scenario!r}")
    geo, pay = rng.spawn(2)
    return shielded(geo, pay, target, shielded_container(geo))
