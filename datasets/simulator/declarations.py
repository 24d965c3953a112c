"""Customs declarations of simulated parcels: an S10 item id for every parcel and, at a documented rate, the
CN22/CN23 electronic advance data a postal operator would receive for it (``scans.customs`` is the format).

Drawn from the scan's **own random stream** (``SeedSequence([seed, index, DECLARATION_STREAM])``), after the
scan: the pixels of every seed are those of a run without declarations. What a declaration says is computed
from the scene's ground truth (the goods drawn, each item's mass from its parts' volumes and densities) and
then written the way people write — the rates below, one table (``DECLARATION_TABLE``), each number with its
reasoning, frozen before any measurement and never tuned to a result:

* benign parcels declare honestly but loosely: itemised, vague ("gift", "parts", "goods"), or with an item
  forgotten; net and gross weights rounded *up* to 10 g, 100 g or 500 g;
* suspects are mislabelled as in the seizures ("machinery parts" 8487.90, "ceramic tiles" 6907.21, "tile
  adhesive" 3214.90, "samples" 3824.99, "gift"), declared as a benign dual-energy twin (natural barium sulphate
  2511.10, precipitated 2833.27), or honestly (the oxide's own heading: an exporter without a licence);
  the concealment's line carries the weight the scale will show, so weight alone does not give it away;
* honest and false declarations draw their words from the same vocabulary: benign parcels with machine
  parts, tiles, tile adhesive or barite declare exactly those words and codes.

The manifest records ``declaration_honest`` (null without a declaration) and, for suspects,
``declaration_names_twin`` (declared as a benign twin: barium sulphate); ``provenance.declaration`` keeps the
style, cover and rounding drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parcelscan.datasets.scans.customs import CATEGORIES, hs_display, make_s10
from parcelscan.datasets.simulator.parcel import Scene, SimConfig, SimulatedScan, build_scene
from parcelscan.datasets.simulator.scene import MM_PER_CM, Grid, Part, path_length_mm
from parcelscan.datasets.simulator.shapes import choice
from parcelscan.datasets.simulator.streams import Frequency

DECLARATION_STREAM = 0x5310  # the third SeedSequence word: independent of the scan's five streams
DECLARATIONS_VERSION = "declarations-1"


# fmt: off
DECLARATION_TABLE: dict[str, dict[str, Frequency]] = {
    # Share of parcels whose declaration the station receives (electronic advance data keyed by S10 id).
    "declared": {
        "clear": Frequency(0.55, "CN22/CN23 data exist only for international items; cross-border e-commerce is "
                           "roughly half of a parcel hub's intake (assumption), and advance data are complete for "
                           "most of it since the 2021 EU ICS2 and US STOP Act rules"),
        "suspect": Frequency(0.90, "the seizures were exports, so a declaration exists; 10 % arrive without "
                             "advance data (a domestic leg first, data lost between operators) (assumption)"),
    },
    # How a benign sender fills in the form (shares sum to 1).
    "benign_style": {
        "itemised": Frequency(0.50, "one line per item with its own words and code (assumption)"),
        "vague": Frequency(0.30, "one line 'gift', 'parts', 'goods', 'personal items' or 'samples' with the main "
                           "item's code and the total net weight: customs reports name vague descriptions as the "
                           "most common defect of CN22 forms (assumption on the share)"),
        "forgot_item": Frequency(0.20, "itemised, but one item (not the heaviest) is left out (assumption)"),
    },
    # Precision weights are written with (rounded up: people round to the next mark of a kitchen scale).
    "weight_precision_kg": {
        "0.01": Frequency(0.30, "weighed on a letter or kitchen scale, written to 10 g (assumption)"),
        "0.1": Frequency(0.40, "written to 100 g (assumption)"),
        "0.5": Frequency(0.30, "written to half a kilogram (assumption)"),
    },
    # What a suspect's concealment line says (shares sum to 1). Field reports: rare-earth oxide in water bottles
    # declared as machinery parts, powders as tile adhesive and ceramic samples; barite is the textbook twin.
    "suspect_cover": {
        "machinery parts": Frequency(0.28, "the Nd/Pr oxide seizures in water bottles (assumption on the share)"),
        "ceramic tiles": Frequency(0.12, "powder between or under tiles declared as the tiles (assumption)"),
        "tile adhesive": Frequency(0.12, "powder in construction-powder sacks (assumption)"),
        "samples": Frequency(0.12, "'ceramic samples', 'samples of no commercial value' (assumption)"),
        "gift": Frequency(0.12, "the most common vague cover (assumption)"),
        "barium sulphate, natural": Frequency(0.08, "declared as its benign twin, natural barite 2511.10 "
                                              "(assumption: the informed smuggler)"),
        "barium sulphate, precipitated": Frequency(0.04, "precipitated barium sulphate 2833.27 (assumption)"),
        "honest": Frequency(0.12, "declared as what it is (an exporter without a licence) (assumption)"),
    },
    # CN23 category boxes of benign declarations (suspect covers choose their own, below).
    "category": {
        "sale_of_goods": Frequency(0.50, "e-commerce (assumption)"),
        "gift": Frequency(0.30, "private consignments (assumption)"),
        "commercial_sample": Frequency(0.06, "(assumption)"),
        "returned_goods": Frequency(0.06, "(assumption)"),
        "other": Frequency(0.08, "(assumption)"),
    },
}
# fmt: on

for _group in ("benign_style", "weight_precision_kg", "suspect_cover", "category"):
    if abs(sum(f.value for f in DECLARATION_TABLE[_group].values()) - 1.0) > 1e-9:
        raise ValueError(f"declaration table {_group} does not sum to 1")
if not set(DECLARATION_TABLE["category"]) <= set(CATEGORIES):
    raise ValueError("declaration table names an unknown category")

# What people write for each kind of goods: (descriptions, HS code).
GOODS_WORDS: dict[str, tuple[tuple[str, ...], str]] = {
    "clothing": (("clothes", "t-shirt", "dress", "jacket"), "610910"),
    "shoes": (("shoes", "sneakers"), "640399"),
    "book": (("book", "books"), "490199"),
    "documents": (("documents", "papers", "printed matter"), "491199"),
    "toy": (("toy", "toys"), "950300"),
    "cosmetics": (("cosmetics", "make-up", "skin cream"), "330499"),
    "electronics": (("electronics", "electronic module"), "854370"),
    "li_ion_cells": (("lithium batteries", "18650 cells"), "850760"),
    "batteries": (("batteries",), "850610"),
    "phone": (("mobile phone", "phone"), "851713"),
    "power_bank": (("power bank",), "850760"),
    "laptop": (("laptop",), "847130"),
    "cable": (("cable", "usb cable"), "854442"),
    "hand_tools": (("hand tools", "tools", "wrench"), "820559"),
    "machinery_parts": (("machinery parts", "spare parts", "parts"), "848790"),
    "al_casting": (("aluminium parts", "parts"), "761699"),
    "brass_fittings": (("brass fittings", "fittings"), "741220"),
    "fishing_weights": (("fishing weights", "fishing tackle"), "950790"),
    "carbide_bits": (("drill bits", "tools"), "820750"),
    "coins": (("coins",), "711810"),
    "jewellery": (("jewellery", "bracelet"), "711719"),
    "speaker": (("speaker",), "851822"),
    "motor": (("electric motor", "motor", "machinery parts"), "850110"),
    "ferrite_magnets": (("magnets",), "850519"),
    "fire_steel": (("fire starter",), "961380"),
    "solder_spool": (("solder wire",), "831130"),
    "glass_jar": (("glass jar", "food"), "701337"),
    "canned_food": (("canned food", "food"), "200599"),
    "bottle": (("drinks", "bottle"), "220299"),
    "food_bag": (("food", "snacks"), "190590"),
    "construction_sack": (("tile adhesive", "cement", "building materials"), "321490"),
    "ceramic_tiles": (("ceramic tiles", "tiles"), "690721"),
    "kitchenware": (("kitchenware", "pan"), "732393"),
    "medicine": (("medicine", "vitamins"), "300490"),
    "candles_soap": (("candles", "soap"), "340600"),
    "keys": (("keys",), "830170"),
    "chocolate_food": (("chocolate", "food"), "180690"),
    "powder_sample_bag": (("samples", "powder sample"), "382499"),
}

# A look-alike's line: (descriptions, HS code) by fill, for the bottle, sack and pouch scenarios.
FILL_WORDS: dict[str, tuple[tuple[str, ...], str]] = {
    "CaCO3": (("calcium carbonate", "chalk powder"), "283650"),
    "barite": (("barium sulphate, natural", "barite powder"), "251110"),
    "iron oxide pigment": (("iron oxide pigment", "pigment"), "282110"),
    "titanium white": (("titanium dioxide", "white pigment"), "320611"),
    "zircon": (("zircon sand", "zircon flour"), "261510"),
    "zinc oxide": (("zinc oxide",), "281700"),
    "sand": (("sand", "quartz sand"), "250510"),
    "foundry sand": (("foundry sand",), "250510"),
    "salt": (("salt", "bath salt"), "250100"),
    "grout": (("tile grout", "grout"), "321490"),
    "tile adhesive": (("tile adhesive",), "321490"),
    "lead shot": (("lead shot", "fishing weights"), "780600"),
    "steel shot": (("steel shot", "blasting shot"), "720510"),
    "glass beads": (("glass beads",), "701820"),
    "brass swarf": (("brass scrap",), "740400"),
    "sugar": (("sugar",), "170199"),
    "baking soda": (("baking soda",), "283630"),
    "clay": (("clay", "kaolin"), "250840"),
    "talc": (("talc", "talcum powder"), "252620"),
    "protein powder": (("protein powder", "supplements"), "210610"),
    "tea": (("tea",), "090230"),
    "coffee": (("coffee",), "090121"),
}
# Fills declared under either of two headings: (alternative words, code, share of senders who use it).
FILL_ALTERNATIVES: dict[str, tuple[tuple[str, ...], str, float]] = {
    "barite": (("barium sulphate, precipitated", "blanc fixe"), "283327", 1 / 3),
}
# Scenarios whose vessel is what is declared, whatever its fill (a casting; tiles with a sheet or pouch).
VESSEL_WORDS: dict[str, tuple[tuple[str, ...], str]] = {
    "machine_part": (("machinery parts", "casting", "spare parts"), "848790"),
    "tile_stack": (("ceramic tiles", "tiles"), "690721"),
}
# A target declared as what it is: (description, HS code).
TARGET_WORDS: dict[str, tuple[str, str]] = {
    "Nd2O3": ("neodymium oxide", "284690"), "Pr6O11": ("praseodymium oxide", "284690"),
    "Dy2O3": ("dysprosium oxide", "284690"), "Tb4O7": ("terbium oxide", "284690"),
    "CeO2": ("cerium oxide", "284610"), "La2O3": ("lanthanum oxide", "284690"),
    "Y2O3": ("yttrium oxide", "284690"), "Gd2O3": ("gadolinium oxide", "284690"),
    "Sm2O3": ("samarium oxide", "284690"), "NdFeB powder": ("NdFeB alloy powder", "850519"),
    "RE carbonate": ("rare earth carbonate", "284690"), "Sb2O3": ("antimony trioxide", "282580"),
    "GeO2": ("germanium dioxide", "282560"), "Ga": ("gallium metal", "811292"),
    "W powder": ("tungsten powder", "810110"),
}
# A suspect's cover: (descriptions, HS code, CN23 category, names a benign twin).
COVER_WORDS: dict[str, tuple[tuple[str, ...], str, str, bool]] = {
    "machinery parts": (("machinery parts", "spare parts", "parts"), "848790", "sale_of_goods", False),
    "ceramic tiles": (("ceramic tiles", "tiles"), "690721", "sale_of_goods", False),
    "tile adhesive": (("tile adhesive", "building materials"), "321490", "sale_of_goods", False),
    "samples": (("samples", "ceramic samples"), "382499", "commercial_sample", False),
    "gift": (("gift", "gift items"), "950300", "gift", False),
    "barium sulphate, natural": (("barium sulphate, natural", "barite powder"), "251110", "sale_of_goods", True),
    "barium sulphate, precipitated": (("barium sulphate, precipitated", "blanc fixe"), "283327", "sale_of_goods",
                                      True),
}
VAGUE_WORDS = ("gift", "parts", "goods", "personal items", "samples")
ORIGINS = (("CN", 0.55), ("HK", 0.08), ("DE", 0.06), ("US", 0.06), ("GB", 0.05), ("TR", 0.05), ("IN", 0.05),
           ("VN", 0.05), ("PL", 0.05))
S10_SERVICES = ("RR", "RX", "CP", "LX", "EE", "UA")


@dataclass
class Line:
    """One thing in the parcel as the sender sees it: a word list, an HS code, a true mass (g)."""

    words: tuple[str, ...]
    hs: str
    mass_g: float
    heaviest_first: int = 0


def part_mass_g(part: Part, grid: Grid, path_sum_mm: float | None = None) -> float:
    """A part's mass from its path lengths over its footprint (the same geometry the raster uses). ``path_sum_mm``:
    their sum as ``rasterise`` already took it on this grid (``Raster.part_path_sums_mm``, the same float), so the
    part is not projected a second time (~12 ms a declared scan, 6 % of the simulation)."""
    if path_sum_mm is None:
        x0, x1, y0, y1 = part.shape.bounds_xy()
        r0, r1, xs = grid.centres(x0, x1, grid.rows)
        c0, c1, ys = grid.centres(y0, y1, grid.cols)
        if r1 <= r0 or c1 <= c0:
            return 0.0
        path_sum_mm = float(path_length_mm(part, xs, ys).sum())
    density = part.density_g_cm3 + sum(d for _, d in part.admixture)
    path_cm = path_sum_mm / MM_PER_CM
    return path_cm * density * (grid.pitch_mm / MM_PER_CM) ** 2


def _round_up_kg(mass_g: float, precision_kg: float) -> float:
    steps = max(1, int(np.ceil(mass_g / 1000.0 / precision_kg - 1e-9)))
    return round(steps * precision_kg, 2)


def _weights(group: str) -> tuple[list[str], list[float]]:
    names = list(DECLARATION_TABLE[group])
    return names, [DECLARATION_TABLE[group][n].value for n in names]


def _value(rng: np.random.Generator, mass_g: float) -> float:
    return round(float(np.exp(rng.normal(np.log(5.0 + mass_g / 50.0), 0.8))), 2)


def declare(config: SimConfig, index: int, scan: SimulatedScan, scene: Scene | None = None) -> tuple[dict, dict]:
    """(sidecar keys, ground truth) of scan ``index``: the sidecar gets ``item_id`` and, when drawn,
    ``declaration``; the ground truth is ``declaration_honest``, ``declaration_names_twin`` and the draws.

    ``scene`` is the scene scan ``index`` of ``config`` was made from, when the caller still holds it
    (``simulate``); without it the scene is rebuilt from the seed — the same parts, a second time."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, index, DECLARATION_STREAM]))
    origin = choice(rng, [o for o, _ in ORIGINS], [w for _, w in ORIGINS])
    item_id = make_s10(choice(rng, S10_SERVICES), int(rng.integers(0, 10**8)), origin)
    label = scan.labels["label"]
    declared = rng.random() < DECLARATION_TABLE["declared"][label].value
    precision = float(choice(rng, *_weights("weight_precision_kg")))
    style = choice(rng, *_weights("benign_style"))
    cover = choice(rng, *_weights("suspect_cover"))
    category = choice(rng, *_weights("category"))
    truth = {"declaration_honest": None, "declaration_names_twin": None,
             "draws": {"version": DECLARATIONS_VERSION, "declared": declared}}
    if not declared:
        return {"item_id": item_id}, truth

    if scene is None:
        scene = build_scene(config, index)  # the same scene the pixels came from (deterministic in seed, index)
    grid = scene.belt.grid
    # each part weighed once, from the sums its scene's raster took (``build_scene`` rasterises ``belt.parts``)
    part_g = [part_mass_g(part, grid, path_sum)
              for part, path_sum in zip(scene.belt.parts, scene.raster.part_path_sums_mm, strict=True)]
    gross_g = sum(part_g)
    masses: dict[int, float] = {}
    for part, grams in zip(scene.belt.parts, part_g, strict=True):
        if part.role != "container":
            masses[part.item_id] = masses.get(part.item_id, 0.0) + grams
    kinds = scene.parcel.kinds
    lines: list[Line] = []
    for item_id_, mass in masses.items():
        if item_id_ < 0:
            continue
        k = item_id_ - 100 if item_id_ >= 100 else item_id_
        kind = kinds[k] if 0 <= k < len(kinds) else "documents"
        words, hs = GOODS_WORDS.get(kind, (("goods",), "999999"))
        lines.append(Line(words, hs, mass))
    concealment = scene.parcel.concealment
    hidden: Line | None = None
    if concealment is not None:
        mass = masses.get(-1, 0.0)
        scenario = scene.plan.scenario if label == "suspect" else scene.plan.lookalike
        fill = concealment.fill.name
        if label == "suspect":
            hidden = Line(("?",), "000000", mass)
        elif scenario in VESSEL_WORDS:
            hidden = Line(*VESSEL_WORDS[scenario], mass)
        elif fill in FILL_ALTERNATIVES and rng.random() < FILL_ALTERNATIVES[fill][2]:
            hidden = Line(*FILL_ALTERNATIVES[fill][:2], mass)
        else:
            hidden = Line(*FILL_WORDS.get(fill, ((fill,), "382499")), mass)
    if label == "suspect":
        if cover == "honest":
            description, hs = TARGET_WORDS.get(scan.labels["material"], ("rare earth compound", "284690"))
            if (scan.labels.get("mass_fraction") or 1.0) < 1.0:
                description = f"{description} mixture"
            category = "sale_of_goods"
            names_twin = False
        else:
            words, hs, category, names_twin = COVER_WORDS[cover]
            description = choice(rng, words)
        truth["declaration_honest"] = cover == "honest"
        truth["declaration_names_twin"] = names_twin
        items = [_item(rng, description, hs, hidden.mass_g if hidden else 0.0, precision)]
        items += [_item(rng, choice(rng, line.words), line.hs, line.mass_g, precision) for line in lines]
        truth["draws"].update({"cover": cover})
    else:
        truth["declaration_honest"] = True
        if hidden is not None:
            lines.insert(0, hidden)
        lines.sort(key=lambda line: -line.mass_g)
        if not lines:
            lines = [Line(("goods",), "999999", max(gross_g * 0.5, 1.0))]
        if style == "vague":
            items = [_item(rng, choice(rng, VAGUE_WORDS), lines[0].hs, sum(li.mass_g for li in lines), precision)]
        else:
            if style == "forgot_item" and len(lines) > 1:
                lines.pop(int(rng.integers(1, len(lines))))
            items = [_item(rng, choice(rng, line.words), line.hs, line.mass_g, precision) for line in lines]
        truth["draws"].update({"style": style})
    truth["draws"].update({"precision_kg": precision})
    declaration = {
        "item_id": item_id,
        "category": category,
        "items": items,
        "currency": "USD",
        # the form's gross weight is at least the sum of its lines (each rounded up on its own)
        "gross_weight_kg": round(max(_round_up_kg(gross_g, precision), sum(i["net_weight_kg"] for i in items)), 2),
        "origin": origin,
    }
    return {"item_id": item_id, "declaration": declaration}, truth


def _item(rng: np.random.Generator, description: str, hs: str, mass_g: float, precision_kg: float) -> dict:
    return {"description": description, "hs_code": hs_display(hs), "quantity": 1,
            "net_weight_kg": _round_up_kg(mass_g, precision_kg), "value": _value(rng, mass_g)}


def attach_declaration(scan: SimulatedScan, config: SimConfig, index: int) -> dict:
    """Add the declaration's ground truth to ``scan.labels``/``provenance``; return the sidecar keys."""
    sidecar, truth = declare(config, index, scan, scan.scene)
    scan.labels["declaration_honest"] = truth["declaration_honest"]
    scan.labels["declaration_names_twin"] = truth["declaration_names_twin"]
    scan.provenance["item_id"] = sidecar["item_id"]
    scan.provenance["declaration"] = truth["draws"]
    return sidecar
