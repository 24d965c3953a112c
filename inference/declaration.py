"""The declaration check: what the parcel's customs declaration says against what the X-ray shows.

``inspect`` reads a scan's declaration from its sidecar (``declaration``, keyed by the sidecar's ``item_id``) or
from ``--declarations FILE`` (electronic advance data, JSON lines or CSV keyed by the S10 ``item_id``; the
format is ``datasets.scans.customs``) and writes ``declaration_check`` into the verdict:

* ``status``: ``absent`` (no declaration for this item), ``consistent`` or ``mismatch``;
* ``reasons``: in words, e.g. "declared 'machinery parts' (HS 8487.90), 2.0 kg; seen: 2 bodies ≈ 1400 g,
  signature of Nd2O3 or Pr6O11 — no declared line (HS 8487) holds it at its weight" (a body the beam does not
  cross everywhere is weighed "≥": a lower bound, ``mass_lower_bound``);
* ``observed``: the bodies seen (mass in grams, whether that is a lower bound, signature, twins) and the parcel's
  X-ray mass (kg).

What is *seen*: the bodies the model localises (connected regions of its heatmap ≥ ``BODY_HEAT``, at least
``MIN_BODY_CM2``), each measured by ``physics.mass.body_mass`` (background removed, signature from the readable
core, what it could be, grams),
whether or not the scan's score reached the threshold — the check is a second, independent look at the same
regions — and the parcel's X-ray mass (``physics.mass.parcel_mass``; a lower bound where the beam is stopped).

When it is a **mismatch**: the declaration cannot be read (``customs.parse_declaration``'s problems: wrong
types, absurd weights, huge strings, unknown HS codes, another item's id); or **nothing could be weighed** — the
scan was not analysed (unreadable, refused by a gate) or has no dual-energy images — so the X-ray cannot confirm
the declaration, and "consistent" would claim a look that never happened (fail closed, as for a check that
fails; until session 24 such a parcel read "consistent: no dense body the declaration would have to explain");
or the X-ray mass exceeds
``WEIGHT_FACTOR`` × the declared gross weight + ``WEIGHT_SLACK_KG`` (undeclared mass); or **the image shows a
powder no declared line names**: the model's scan score reaches the policy's declaration operating point
(``[declaration] powder_score_threshold``, far below the alarm threshold: a mismatch never flags alone; set for a
small false-mismatch rate on declared clear parcels of development data, for one model) and no line of a *powder
heading* (one whose plausible materials hold a target or barite: the targets' own headings, barium sulphate,
magnets) explains it — nor, when bodies were localised, each of them by that powder (a target, barite, a magnet's
NdFeB: the speaker's steel is not the powder the image sees) and weight; or, at that same
operating point, a body of at least ``MIN_BODY_G`` that the declaration has to explain is explained by **no
declared line** (without an operating point — another model, a policy without one — every checked body is held
to this, the physics alone). Why the image decides *whether* there is a powder: measured on development sets
7300/7301, dual-energy physics alone cannot call a false declaration false — the beam is stopped by most bottles
and castings (no signature) and "machinery parts", "tiles" or "gift" can stop it too, and steel, brass, zircon or
pigments are twins of the oxides within the signature's error — while the image model, trained to tell these
powders from their look-alikes, separates them far better; the physics alone also raised most false mismatches
on clear parcels (small bodies in electronics read as oxides). The body rule:

* which bodies: those whose readable core *could be a target* (``physics.mass``: the references whose R, fitted per
  pixel on the body's own background, lies within the estimator's measured tolerance — ``could_be``), and those
  the beam does not cross readably (no signature; ``OPAQUE_NO_SIGNATURE``). A body that can only be organic,
  light-inorganic or metal is a forgotten can, tool or garment, not what this check is about;
* a line explains a body when one of its heading's plausible materials (``HS_TABLE``, one documented table) is among
  the body's readings — for a body without signature, when the heading's goods can stop the beam at their packed
  density over ``MAX_THICKNESS_CM`` — *and* the body weighed as that material is at most ``LINE_FACTOR`` × the
  line's net weight + ``LINE_SLACK_KG`` (people round weights up; the estimator reads up to +150 %), times the share
  of the goods that material can be (``Heading.shares``: the magnets of a phone, speaker, motor or computer are at
  most ``MAGNET_SHARE`` of it);
* a vague line ("gift", "parts", "samples", … ``VAGUE_DESCRIPTIONS``: its code is the sender's guess, often the
  main item's) explains any readable body that could be benign matter, at its weight; never a body that can only
  be a target, nor a beam-stopped one.

**Policy** (issue 16): a mismatch raises the scan's priority — reason class ``declaration`` on a flagged scan,
``declaration_check.priority = "raised"`` on any — but never flags a scan alone; **a declaration never lowers
an alarm** (declaring barium sulphate is exactly the route of an informed smuggler): the check only adds.
Nothing here can make a flagged scan clear; any error inside the check is a mismatch with the reason.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from parcelscan.datasets.physics.attenuation import log_attenuation_direct
from parcelscan.datasets.physics.mass import (
    OPAQUE_A,
    OPAQUE_NO_SIGNATURE,
    body_mass,
    body_window,
    lookup_references,
    mass_words,
    parcel_mass,
)
from parcelscan.datasets.physics.materials import RARE_EARTH_TARGETS, TARGET_MATERIALS
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.physics.pseudocolor import transmission_to_log_attenuation
from parcelscan.datasets.preprocess import heatmap_to_scan, scan_pitch_mm
from parcelscan.datasets.scans.customs import Declaration, hs_display, parse_declaration, s10_valid
from parcelscan.errors import ParcelscanError

BODY_HEAT = 0.5  # a body: heatmap ≥ this (the model's powder-mask head, a probability)
MIN_BODY_CM2 = 2.0
MIN_BODY_G = 10.0  # the smallest concealment of interest (the simulator's smallest, the policy's default)
MAX_BODIES = 8
WEIGHT_FACTOR = 2.5
WEIGHT_SLACK_KG = 1.0
MAX_FILE_BYTES = 64 << 20
LINE_FACTOR = 2.5  # a line explains a body up to this × its net weight (+ slack): the body's grams read as the
LINE_SLACK_KG = 0.1  # line's material are off by up to +150 % (p90 over non-opaque ground-truth bodies, dev set 7100)
# Descriptions that name no goods: customs services list them as the most common defect of CN22/CN23 forms
# ("gift", "parts", "samples", "goods", "personal items", "accessories", "merchandise"); honest senders write them
VAGUE_DESCRIPTIONS = frozenset({"gift", "gifts", "gift items", "present", "parts", "goods", "items",
                                "personal items", "personal effects", "samples", "sample", "accessories",
                                "merchandise", "stuff", "things"})
MAX_THICKNESS_CM = 30.0  # the most of one heading's goods a beam crosses in a postal parcel (assumption)
ORGANIC = ("sugar", "water")
TARGET_NAMES = frozenset(TARGET_MATERIALS)
POWDER_LIKE = TARGET_NAMES | {"barite"}  # what the image model calls powder: the targets and their textbook twin
_METALS = ("steel", "aluminium", "brass", "copper")
_MAGNET = ("NdFeB powder",)  # a sintered NdFeB magnet (phones, speakers, motors, drives) is the powder's composition
# Goods that *carry* magnets are not magnets: the NdFeB in a device is a small part of its weight — a phone 2-4 g in
# 150-200 g (~2 %), a laptop's drive and speakers ~20 g in 1.5 kg (~1-2 %), a permanent-magnet motor 2-8 % (a small
# drone or hub motor up to ~20 %), a neodymium speaker driver ~10-20 % (less with its cabinet). So a device line
# explains a body read as NdFeB only up to this share of its net weight (an upper bound over those goods; then
# LINE_FACTOR and LINE_SLACK_KG as for any line): a declared phone of 0.4 kg does not hold 400 g of magnet powder.
# A line of magnets themselves (HS 8505) keeps its whole weight
MAGNET_SHARE = 0.25
_CARRIES_MAGNETS = (("NdFeB powder", MAGNET_SHARE),)


@dataclass(frozen=True)
class Heading:
    """An HS heading (4 digits) as the check sees it: its words and the reference materials (targets and
    ``signature.BENIGN_FAMILIES``) its goods plausibly show as, and their packed density (g/cm³, for the reader:
    a projection measures areal density, not density)."""

    words: str
    plausible: tuple[str, ...]
    density_g_cm3: tuple[float, float]
    shares: tuple[tuple[str, float], ...] = ()  # materials its goods hold only as a part: (name, the most of the
    # line's net weight they can be); a plausible material not named here can be the whole line

    def share(self, name: str) -> float:
        """The most of a line's net weight that ``name`` can be in this heading's goods (1: all of it)."""
        return dict(self.shares).get(name, 1.0)


# fmt: off
HS_TABLE: dict[str, Heading] = {
    # printed matter, textiles, organics: paper carries CaCO3 filler; zips and buttons are metal
    "4901": Heading("books", (*ORGANIC, "CaCO3"), (0.7, 1.2)),
    "4911": Heading("printed matter, documents", (*ORGANIC, "CaCO3"), (0.7, 1.2)),
    "6109": Heading("garments", (*ORGANIC, "steel", "brass", "aluminium"), (0.1, 0.5)),
    "6403": Heading("footwear", (*ORGANIC, "steel", "brass"), (0.3, 1.1)),
    "4008": Heading("rubber sheet", ORGANIC, (0.9, 1.5)),
    "4808": Heading("paper and paperboard", (*ORGANIC, "CaCO3"), (0.5, 1.0)),
    "4412": Heading("plywood, wood panels", ORGANIC, (0.4, 0.9)),
    "3406": Heading("candles", ORGANIC, (0.8, 1.0)),
    # food and drink (cans are steel or aluminium; salt in food)
    "0901": Heading("coffee", ORGANIC, (0.3, 0.6)), "0902": Heading("tea", ORGANIC, (0.3, 0.6)),
    "1701": Heading("sugar", ORGANIC, (0.8, 1.6)), "1806": Heading("chocolate", ORGANIC, (1.0, 1.4)),
    "1905": Heading("bakery products, snacks", ORGANIC, (0.2, 0.8)),
    "2005": Heading("preserved vegetables", (*ORGANIC, "steel", "aluminium", "salt"), (0.9, 1.2)),
    "2106": Heading("food preparations, supplements", (*ORGANIC, "salt", "CaCO3"), (0.4, 0.8)),
    "2202": Heading("beverages", (*ORGANIC, "aluminium", "sand"), (1.0, 1.1)),
    # cosmetics, medicine: mineral pigments and fillers
    "3304": Heading("cosmetics", (*ORGANIC, "titanium white", "zinc oxide", "CaCO3", "iron oxide pigment", "salt",
                                  "sand"), (0.5, 1.5)),
    "3004": Heading("medicaments", (*ORGANIC, "CaCO3", "titanium white", "salt"), (0.5, 1.5)),
    # electrical goods: copper, steel, aluminium, solder (lead), glass-fibre boards (sand), cells
    "8471": Heading("computers", (*ORGANIC, *_METALS, "sand", "lead", *_MAGNET), (0.5, 2.0),
                    _CARRIES_MAGNETS),
    "8506": Heading("primary batteries", (*ORGANIC, *_METALS, "zinc oxide"), (2.0, 3.5)),
    "8507": Heading("accumulators", (*ORGANIC, *_METALS, "zinc oxide"), (2.0, 3.0)),
    "8517": Heading("telephones", (*ORGANIC, *_METALS, "sand", "lead", *_MAGNET), (1.0, 2.5),
                    _CARRIES_MAGNETS),
    "8518": Heading("loudspeakers", (*ORGANIC, *_METALS, "iron oxide pigment", *_MAGNET), (1.0, 3.0),
                    _CARRIES_MAGNETS),
    "8543": Heading("electrical machines n.e.s.", (*ORGANIC, *_METALS, "sand", "lead"), (0.5, 2.5)),
    "8544": Heading("insulated wire, cable", (*ORGANIC, "copper", "aluminium"), (1.5, 3.0)),
    "8501": Heading("electric motors", (*ORGANIC, *_METALS, "iron oxide pigment", *_MAGNET), (3.0, 6.0),
                    _CARRIES_MAGNETS),
    "8505": Heading("magnets", ("steel", "iron oxide pigment", "NdFeB powder"), (4.5, 7.5)),
    # tools, machinery, metal goods: castings carry cores (foundry sand, zircon) and inserts
    "8205": Heading("hand tools", (*ORGANIC, *_METALS, "tungsten carbide"), (2.0, 7.9)),
    "8207": Heading("interchangeable tools", ("steel", "tungsten carbide", "brass"), (7.0, 15.0)),
    "8487": Heading("machinery parts", (*ORGANIC, *_METALS, "tungsten carbide", "lead", "bismuth", "sand",
                                        "zircon", "CaCO3"), (2.0, 8.5)),
    "7616": Heading("aluminium articles", ("aluminium", "steel"), (2.0, 2.8)),
    "7323": Heading("kitchenware", ("steel", "aluminium", "copper", *ORGANIC), (2.0, 7.9)),
    "7412": Heading("copper fittings", ("brass", "copper"), (8.0, 9.0)),
    "7409": Heading("copper plates", ("brass", "copper"), (8.0, 9.0)),
    "7404": Heading("copper waste and scrap", ("brass", "copper"), (2.0, 5.0)),
    "7804": Heading("lead plates", ("lead",), (11.0, 11.4)),
    "7806": Heading("lead articles, shot", ("lead",), (6.0, 7.5)),
    "7205": Heading("steel shot", ("steel",), (4.0, 5.0)),
    "7210": Heading("flat-rolled steel", ("steel",), (7.8, 7.9)),
    "8301": Heading("locks, keys", ("brass", "steel"), (7.5, 8.5)),
    "8311": Heading("solder wire", ("lead", "copper", "steel"), (7.0, 9.0)),
    "9613": Heading("lighters, fire steels", ("steel", "iron oxide pigment", *ORGANIC), (2.0, 7.0)),
    "9507": Heading("fishing tackle", ("lead", "steel", "brass", *ORGANIC), (3.0, 11.0)),
    "7117": Heading("imitation jewellery", ("brass", "copper", "steel"), (5.0, 9.0)),
    "7118": Heading("coins", ("brass", "copper", "steel"), (8.0, 9.0)),
    "9503": Heading("toys", (*ORGANIC, "steel", "aluminium", "brass", "zinc oxide", "CaCO3", "titanium white"),
                    (0.2, 1.5)),
    # glass, ceramics, building materials
    "7013": Heading("glassware", ("sand", "CaCO3", *ORGANIC), (2.4, 2.6)),
    "7018": Heading("glass beads", ("sand", "CaCO3"), (1.4, 1.6)),
    "6907": Heading("ceramic tiles", ("sand", "CaCO3", "zircon", "aluminium"), (2.0, 2.4)),
    "3214": Heading("mastics, tile adhesive, grout", ("sand", "CaCO3", "iron oxide pigment"), (1.3, 1.6)),
    "2508": Heading("clays", ("sand", "CaCO3", "iron oxide pigment"), (1.2, 1.6)),
    "2505": Heading("natural sands", ("sand", "CaCO3", "iron oxide pigment"), (1.4, 1.7)),
    "2526": Heading("talc", ("sand", "CaCO3"), (0.6, 1.0)),
    "2501": Heading("salt", ("salt",), (1.1, 1.3)),
    # inorganic chemicals and minerals, as declared
    "3824": Heading("chemical products n.e.s. (samples)", (*ORGANIC, "CaCO3", "sand", "salt", "titanium white",
                                                            "zinc oxide", "iron oxide pigment"), (0.5, 2.0)),
    "2836": Heading("carbonates", ("CaCO3", "salt"), (0.8, 1.4)),
    "2511": Heading("natural barium sulphate (barite)", ("barite",), (1.8, 2.5)),
    "2833": Heading("sulphates (barium sulphate)", ("barite", "salt"), (1.0, 2.5)),
    "2821": Heading("iron oxides", ("iron oxide pigment",), (0.8, 1.6)),
    "3206": Heading("pigments", ("titanium white", "zinc oxide", "iron oxide pigment"), (0.6, 1.2)),
    "2615": Heading("zirconium ores", ("zircon",), (2.5, 3.0)),
    "2817": Heading("zinc oxide", ("zinc oxide",), (0.5, 1.0)),
    # the targets' own headings (an honest declaration of a critical mineral)
    "2846": Heading("rare-earth compounds", RARE_EARTH_TARGETS, (1.2, 2.0)),
    "2825": Heading("inorganic bases, metal oxides (GeO2, Sb2O3)", ("GeO2", "Sb2O3"), (1.2, 2.0)),
    "8112": Heading("gallium, germanium and other metals", ("Ga",), (3.0, 6.0)),
    "8101": Heading("tungsten", ("W powder",), (8.0, 12.0)),
}
# fmt: on


@dataclass
class DeclarationCheck:
    status: str  # consistent | mismatch | absent
    reasons: list[str]
    observed: dict[str, Any]
    source: str | None = None  # "sidecar" | the --declarations file
    # the declaration as read from advance data (``declared_record``): the review page shows it beside the image,
    # where the sidecar holds none. Absent for a sidecar's declaration, which travels with the scan files.
    declared: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        check = {"status": self.status, "priority": "raised" if self.status == "mismatch" else "normal",
                 "reasons": self.reasons, "observed": self.observed, "source": self.source}
        if self.declared is not None:
            check["declared"] = self.declared
        return check


DECLARED_MAX_ITEMS = 20
DECLARED_MAX_TEXT = 200


def declared_record(declaration: Declaration) -> dict[str, Any]:
    """What could be read of a declaration, in the declaration format (``customs.parse_declaration`` reads it back),
    at most ``DECLARED_MAX_ITEMS`` items and ``DECLARED_MAX_TEXT`` characters a text: a verdict line carries it."""
    def text(value: str | None) -> str | None:
        return None if value is None else value[:DECLARED_MAX_TEXT]

    return {"item_id": text(declaration.item_id), "category": declaration.category, "origin": declaration.origin,
            "currency": text(declaration.currency), "gross_weight_kg": declaration.gross_weight_kg,
            "items": [{"description": text(item.description), "hs_code": item.hs_code, "quantity": item.quantity,
                       "net_weight_kg": item.net_weight_kg, "value": item.value}
                      for item in declaration.items[:DECLARED_MAX_ITEMS]]}


# --- advance data ---------------------------------------------------------------------------------------------
CSV_COLUMNS = ("item_id", "category", "origin", "currency", "gross_weight_kg", "description", "hs_code",
               "quantity", "net_weight_kg", "value")


def _csv_number(text: str) -> Any:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text  # the parser reports it as not a number


def load_declarations(path: str | Path, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``--declarations FILE``: {S10 id: raw declaration}. JSON lines (one declaration object per line) or CSV
    (one row per declared item, ``CSV_COLUMNS``, rows of one id grouped). A line that cannot be read is
    reported through ``warn`` and skipped; an id declared twice keeps the conflict as a problem for that id."""
    warn = warn or (lambda message: print(f"parcelscan inspect: {message}", file=sys.stderr))
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ParcelscanError(f"--declarations {path}: larger than {MAX_FILE_BYTES >> 20} MB")
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ParcelscanError(f"--declarations {path}: cannot read it: {error.strerror or error}") from error
    found: dict[str, Any] = {}
    if path.suffix.lower() == ".csv":
        rows = csv.DictReader(io.StringIO(text))
        for number, row in enumerate(rows, start=2):
            item_id = (row.get("item_id") or "").strip()
            if not item_id:
                warn(f"--declarations {path.name}:{number}: no item_id; line ignored")
                continue
            entry = found.setdefault(item_id, {"item_id": item_id, "items": []})
            for key in ("category", "origin", "currency"):
                if row.get(key):
                    entry[key] = row[key].strip()
            if row.get("gross_weight_kg"):
                entry["gross_weight_kg"] = _csv_number(row["gross_weight_kg"])
            entry["items"].append({"description": row.get("description") or "", "hs_code": row.get("hs_code") or None,
                                   "quantity": _csv_number(row.get("quantity", "")),
                                   "net_weight_kg": _csv_number(row.get("net_weight_kg", "")),
                                   "value": _csv_number(row.get("value", ""))})
        return found
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            warn(f"--declarations {path.name}:{number}: not a JSON object; line ignored")
            continue
        item_id = data.get("item_id") if isinstance(data, dict) else None
        if not isinstance(item_id, str) or not item_id:
            warn(f"--declarations {path.name}:{number}: no item_id; line ignored")
            continue
        if item_id in found:
            found[item_id] = {"item_id": item_id, "_conflict": True}
            continue
        found[item_id] = data
    return found


# --- what the scan shows ------------------------------------------------------------------------------------------
def observe(scan: Any, tile_heatmaps: np.ndarray | None, prepared: Any, spec: Any = None) -> dict[str, Any]:
    """The bodies the model localises (mass, signature) and the parcel's X-ray mass; dual-energy scans only.

    Tiles whose heat stays below ``BODY_HEAT`` everywhere hold no body: the heatmap is brought to scan pixels only
    when one reaches it (linear resizing and the max over overlaps never exceed the tiles' own maximum; the margin
    covers float rounding), as it is not on most declared clear parcels — the same bodies, ~0.5 ms less a scan."""
    heat = None
    if tile_heatmaps is not None and prepared is not None and \
            float(np.max(tile_heatmaps)) >= BODY_HEAT * (1.0 - 1e-6):
        heat = heatmap_to_scan(tile_heatmaps, prepared)
    return observe_heat(scan, heat, spec)


# −ln(max(T, 1) / 65535) of every 16-bit grey level, by the very float32 expression of
# ``pseudocolor.transmission_to_log_attenuation``: a weighed scan's logs are table lookups (0.9 → 0.4 ms an image on a
# 2-core Xeon), and only where the weighing reads them (``observe_heat``), the same float32 numbers to the bit
# (tests/test_declaration_speed.py checks all 65,536)
_LOG_ATTENUATION_LUT = transmission_to_log_attenuation(np.arange(65536, dtype=np.uint16))
_LOG_ATTENUATION_LUT.setflags(write=False)


def log_attenuation(image_u16: np.ndarray) -> np.ndarray:
    """``transmission_to_log_attenuation`` of a 16-bit image, read from ``_LOG_ATTENUATION_LUT`` (any other dtype
    takes the function itself)."""
    image = np.asarray(image_u16)
    if image.dtype != np.uint16:
        return transmission_to_log_attenuation(image)
    return _LOG_ATTENUATION_LUT.take(image, mode="wrap")  # "wrap": no range check (the table holds every level)


def _hot_box(hot: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of the heatmap's body pixels, its top-left corner moved up and left to even coordinates;
    None when there are none. Why: labelling only the box costs ~0.1 ms where the whole scan cost ~1.1 ms, and with
    the box on the whole image's 2 × 2 block grid OpenCV numbers the components exactly as over the whole image
    (so bodies of equal area keep their order; tests/test_declaration_speed.py compares both)."""
    x, y, width, height = cv2.boundingRect(hot)
    if width == 0 or height == 0:
        return None
    return slice(y - y % 2, y + height), slice(x - x % 2, x + width)


def _nothing_weighed(note: str | None = None) -> dict[str, Any]:
    """``observed`` of a scan that was not weighed: no bodies, no parcel mass, and why (``note``)."""
    observed: dict[str, Any] = {"bodies": [], "xray_mass_kg": None, "xray_mass_lower_bound": None}
    if note is not None:
        observed["note"] = note
    return observed


def observe_heat(scan: Any, heat: np.ndarray | None, spec: Any = None) -> dict[str, Any]:
    """``observe`` from the model's heatmap already at scan pixels (None: no heatmap).

    Only what the weighing reads is turned into log-attenuation: each body's window (``physics.mass.body_window``:
    its box, grown by what ``body_mass`` reads around it) through the table, and the parcel's blocks pooled straight
    from the grey levels (``parcel_mass``'s ``table``: air blocks are not looked up). Why: the two whole-scan float32
    images and their lookups cost ~1 ms of a weighed scan's ~5.7 ms (postal set 9358, 2-core EPYC), the windows
    ~0.04 ms; every number is that of weighing the whole log images, to the bit (tests/test_declaration_speed.py)."""
    if getattr(scan, "low", None) is None or getattr(scan, "high", None) is None:
        return _nothing_weighed("no dual-energy images: no masses")
    pitch = scan_pitch_mm(scan, spec)
    profile = default_profile()
    low, high = np.asarray(scan.low), np.asarray(scan.high)
    bodies = []
    if heat is not None:
        hot = (heat >= BODY_HEAT).view(np.uint8)  # 0/1, no copy
        box = _hot_box(hot)
        if box is not None:
            count, labels, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(hot[box]), 8)
            pixel_cm2 = pitch[0] * pitch[1] / 100.0
            order = sorted(range(1, count), key=lambda k: -stats[k, cv2.CC_STAT_AREA])
            for k in order[:MAX_BODIES]:
                if stats[k, cv2.CC_STAT_AREA] * pixel_cm2 < MIN_BODY_CM2:
                    continue
                if hot.shape != low.shape or high.shape != low.shape:
                    raise ValueError(f"heatmap {hot.shape}, low {low.shape}, high {high.shape}: not one scan's pixels")
                top, left, height, width = (int(stats[k, i]) for i in (cv2.CC_STAT_TOP, cv2.CC_STAT_LEFT,
                                                                       cv2.CC_STAT_HEIGHT, cv2.CC_STAT_WIDTH))
                rows, cols = body_window(box[0].start + top, box[1].start + left, height, width, low.shape)
                region = np.zeros((rows.stop - rows.start, cols.stop - cols.start), bool)
                at_row, at_col = box[0].start + top - rows.start, box[1].start + left - cols.start
                region[at_row:at_row + height, at_col:at_col + width] = \
                    labels[top:top + height, left:left + width] == k
                measured = body_mass(log_attenuation(low[rows, cols]), log_attenuation(high[rows, cols]), region,
                                     pitch, profile)
                if measured is not None:
                    bodies.append(measured.to_dict())
    if low.dtype == np.uint16 and high.dtype == np.uint16:
        parcel = parcel_mass(low, high, pitch, profile, table=_LOG_ATTENUATION_LUT)
    else:
        parcel = parcel_mass(log_attenuation(low), log_attenuation(high), pitch, profile)
    return {"bodies": bodies, "xray_mass_kg": round(parcel.mass_g / 1000.0, 2),
            "xray_mass_lower_bound": parcel.mass_lower_bound}


# --- the check ---------------------------------------------------------------------------------------------------
def _is_checked(body: dict) -> bool:
    """A body the declaration has to explain: at least ``MIN_BODY_G`` and either read (its core's R could be a target:
    organic, light-inorganic and metal-only readings are what parcels are full of) or beam-stopped (no signature)."""
    if body.get("mass_g", 0.0) < MIN_BODY_G:
        return False
    return _stopped(body) or bool(set(_could_be(body)) & TARGET_NAMES)


def _stopped(body: dict) -> bool:
    return body.get("core_ratio") is None and body.get("opaque_share", 0.0) >= OPAQUE_NO_SIGNATURE


def _could_be(body: dict) -> list[str]:
    """The references the body could be (``physics.mass``: R within its measured tolerance); a body measured by an
    older station (no ``could_be``) falls back to its lookup's nearest and twins."""
    if "could_be" in body:
        return list(body["could_be"])
    return list(dict.fromkeys(n for n in (body.get("nearest"), *body.get("twins", [])) if isinstance(n, str)))


@functools.cache
def _stops_beam(heading: Heading) -> bool:
    """Can the heading's goods stop the beam: does any of its plausible materials, at the heading's highest packed
    density over ``MAX_THICKNESS_CM``, reach A_high ``OPAQUE_A``?"""
    profile = default_profile()
    materials = {name: material for name, _, material in lookup_references(profile)}
    areal = heading.density_g_cm3[1] * MAX_THICKNESS_CM
    for name in heading.plausible:
        if name in materials:
            with np.errstate(over="ignore", divide="ignore"):
                _, a_high = log_attenuation_direct(profile, [materials[name]], np.array([[areal]]))
            if not np.isfinite(a_high[0]) or float(a_high[0]) >= OPAQUE_A:
                return True
    return False


def _line_explains(body: dict, heading: Heading, net_kg: float | None,
                   materials: frozenset[str] | None = None) -> bool:
    """Could this declared line be the body: one of its heading's materials is a reading of the body (for a body
    without signature: the heading's goods can stop the beam), and the body weighed as that material is within
    ``LINE_FACTOR`` × the line's net weight + ``LINE_SLACK_KG`` (a line without a weight is given the benefit)."""
    plausible = [n for n in heading.plausible if materials is None or n in materials]
    if _stopped(body):
        if not _stops_beam(heading):
            return False
        names = plausible
    else:
        names = [n for n in _could_be(body) if n in plausible]
        if not names:
            return False
    return _weight_fits(body, names, net_kg, heading)


def _vague_explains(body: dict, net_kg: float | None) -> bool:
    """A vague line ('gift', 'parts', 'goods'; its code is whatever the sender picked, often the main item's)
    names no goods, so it explains any body that could be benign matter at the line's weight — but never one that
    can only be a target, nor a beam-stopped one (those the line's heading must explain)."""
    if _stopped(body):
        return False
    benign = [n for n in _could_be(body) if n not in TARGET_NAMES]
    return bool(benign) and _weight_fits(body, benign, net_kg)


def _weight_fits(body: dict, names: list[str], net_kg: float | None, heading: Heading | None = None) -> bool:
    """The body, weighed as one of ``names``, is within what a line of ``net_kg`` can hold of it: (``LINE_FACTOR``
    × net + ``LINE_SLACK_KG``) × the share of the line that material can be in the heading's goods (``Heading.shares``:
    the magnets in a device); a line without a weight, or a body not weighed, fits."""
    masses = body.get("mass_as_g")
    if net_kg is None or not isinstance(masses, dict):
        return True
    limit_g = (LINE_FACTOR * net_kg + LINE_SLACK_KG) * 1000.0
    weighed = [(masses[n], n) for n in names if isinstance(masses.get(n), (int, float))]
    return not weighed or any(grams <= limit_g * (heading.share(n) if heading else 1.0) for grams, n in weighed)


def _unexplained(body: dict, lines: list[tuple[Heading, float | None, bool]],
                 materials: frozenset[str] | None = None) -> bool:
    return not any(_line_explains(body, heading, net_kg, materials) or (vague and _vague_explains(body, net_kg))
                   for heading, net_kg, vague in lines)


def _signature_words(body: dict) -> str:
    if _stopped(body):
        return "none readable (the beam is stopped)"
    names = [n for n in _could_be(body) if n in TARGET_NAMES][:4]
    return " or ".join(names) or str(body.get("nearest"))


def _grams_words(bodies: list[dict]) -> str:
    """The bodies' grams together: "≈ 155 g", or "≥ 810 g" when the beam is stopped over part of any of them."""
    return mass_words(sum(b["mass_g"] for b in bodies), any(b.get("mass_lower_bound") for b in bodies), decimals=0)


def _powder_heading(heading: Heading) -> bool:
    """A heading whose goods are a powder the image model is trained to call a target, or its dual-energy twin:
    the targets' own headings, barium sulphate, magnets (sintered NdFeB)."""
    return bool(set(heading.plausible) & POWDER_LIKE)


def check_declaration(raw: Any, scan_item_id: Any, observed: dict[str, Any], source: str | None,
                      score: float | None = None, powder_score: float | None = None,
                      carry_declared: bool = False) -> DeclarationCheck:
    """``declaration_check`` of one scan from its raw declaration (None: absent) and what was observed.
    ``carry_declared``: the check carries the declaration as read (``declared_record``) — for advance data, of
    which the review page has no sidecar copy.

    ``score``: the image model's scan score; ``powder_score``: the policy's declaration operating point
    (``[declaration] powder_score_threshold``). With both given, the image's evidence decides whether there is a
    powder the declaration has to explain (module docstring); without them, every checked body has to be
    explained (the physics alone)."""
    if raw is None:
        return DeclarationCheck("absent", ["no declaration for this item"], observed, None)
    declaration: Declaration = parse_declaration(raw)
    declared = declared_record(declaration) if carry_declared else None
    problems = list(declaration.problems)
    if isinstance(raw, dict) and raw.get("_conflict"):
        problems.append("the advance data declare this item more than once (conflicting declarations)")
    if scan_item_id is not None and not s10_valid(scan_item_id):
        problems.append(f"the scan's item_id {str(scan_item_id)[:20]!r} is not a valid S10 identifier")
    if declaration.item_id is not None and scan_item_id is not None and declaration.item_id != scan_item_id:
        problems.append(f"the declaration is for item {declaration.item_id[:20]!r}, the scan is item "
                        f"{str(scan_item_id)[:20]!r}")
    headings: list[tuple[str, Heading]] = []
    lines: list[tuple[Heading, float | None, bool]] = []
    for item in declaration.items:
        if item.hs_code is None:
            problems.append(f"'{item.description[:40]}' has no HS code")
            continue
        heading = HS_TABLE.get(item.hs_code[:4])
        if heading is None:
            problems.append(f"HS {hs_display(item.hs_code)} is not in the station's table of headings")
            continue
        headings.append((item.hs_code, heading))
        lines.append((heading, item.net_weight_kg, item.description.strip().lower() in VAGUE_DESCRIPTIONS))
    reasons = [f"declaration not usable: {p}" for p in problems]
    note = observed.get("note")  # set only where nothing was weighed (_nothing_weighed)
    if isinstance(note, str):
        reasons.append(f"{declaration.summary()}; nothing was weighed ({note}): the X-ray cannot confirm the "
                       "declaration")
        return DeclarationCheck("mismatch", reasons, observed, source, declared)
    checked = [b for b in observed.get("bodies", []) if _is_checked(b)]
    image_rule = score is not None and powder_score is not None and math.isfinite(score)
    powder_seen = image_rule and score >= powder_score  # type: ignore[operator]
    unexplained = [b for b in checked if _unexplained(b, lines)] if powder_seen or not image_rule else []
    if powder_seen:
        powder_lines = [(h, n, False) for h, n, _ in lines if _powder_heading(h)]
        if not powder_lines or any(_unexplained(b, powder_lines, POWDER_LIKE) for b in checked):
            names = "; ".join(dict.fromkeys(_signature_words(b) for b in checked)) if checked else None
            codes = ", ".join(dict.fromkeys(f"HS {c[:4]}" for c, _ in headings)) or "no usable heading"
            reasons.append(f"{declaration.summary()}; seen: the image model scores {score:.3f} ≥ "
                           f"{powder_score:.3f} (the declaration check's powder operating point)"
                           + (f", {len(checked)} dense bod{'y' if len(checked) == 1 else 'ies'} "
                              f"{_grams_words(checked)}, signature of {names}" if checked else "")
                           + f" — no declared line ({codes}) names a powder that looks like this")
    if unexplained:
        signatures = "; ".join(dict.fromkeys(_signature_words(b) for b in unexplained))
        codes = ", ".join(dict.fromkeys(f"HS {c[:4]}" for c, _ in headings)) or "no usable heading"
        reasons.append(f"{declaration.summary()}; seen: {len(unexplained)} "
                       f"bod{'y' if len(unexplained) == 1 else 'ies'} of dense material {_grams_words(unexplained)}, "
                       "signature "
                       f"of {signatures} — no declared line ({codes}) holds it at its weight")
    xray_kg = observed.get("xray_mass_kg")
    gross = declaration.gross_weight_kg
    if xray_kg is not None and gross is not None and xray_kg > WEIGHT_FACTOR * gross + WEIGHT_SLACK_KG:
        # "≥" where the beam is stopped: a floor above the declared weight proves the excess too
        shown = mass_words(xray_kg, observed.get("xray_mass_lower_bound") is True, decimals=1, unit="kg")
        reasons.append(f"{declaration.summary()}; the X-ray shows {shown} (> {WEIGHT_FACTOR:g} × the "
                       f"declared gross weight + {WEIGHT_SLACK_KG:g} kg): undeclared mass")
    if reasons:
        return DeclarationCheck("mismatch", reasons, observed, source, declared)
    seen = (f"seen: {len(checked)} bod{'y' if len(checked) == 1 else 'ies'} {_grams_words(checked)} "
            "consistent with the declared headings" if checked
            else "seen: no dense body the declaration would have to explain")
    return DeclarationCheck("consistent", [f"{declaration.summary()}; {seen}"], observed, source, declared)


# --- the station hook -----------------------------------------------------------------------------------------------
class DeclarationChecker:
    """Adds ``declaration_check`` (and on a suspect ``powder_mass_g``, ``powder_mass_lower_bound``) to every verdict
    of an Inspector (its ``on_outputs`` hook, chained with any other). Never changes ``verdict``: a mismatch adds
    reason class ``declaration`` to a flagged scan and raises priority; an error here is a mismatch with its
    reason."""

    def __init__(self, advance_data: dict[str, Any] | None = None, source: str | None = None,
                 powder_score: float | None = None):
        self.advance_data = advance_data or {}
        self.source = source
        self.powder_score = powder_score  # the policy's [declaration] operating point (None: physics alone)

    def __call__(self, verdict: Any, outputs: Any) -> None:
        scan = outputs.scan
        meta = getattr(scan, "meta", None) or {}
        item_id = meta.get("item_id")
        raw, source = None, None
        if isinstance(item_id, str) and item_id in self.advance_data:
            raw, source = self.advance_data[item_id], self.source
        elif "declaration" in meta:
            raw, source = meta["declaration"], "sidecar"
        try:
            if scan is None or outputs.prepared is None:
                observed = _nothing_weighed("the scan was not analysed")
            elif raw is None and verdict.verdict != "suspect":
                observed = _nothing_weighed("nothing to weigh: no declaration, not flagged")
            elif getattr(outputs, "observed", None) is not None and \
                    getattr(outputs, "observed_pitch_mm", None) == scan_pitch_mm(scan):
                observed = outputs.observed  # the powder alarm's own look at the same regions (the twin lookup)
            else:
                observed = observe(scan, outputs.tile_heatmaps, outputs.prepared)
            check = check_declaration(raw, item_id, observed, source, verdict.score, self.powder_score,
                                      carry_declared=source == self.source)
        except Exception as error:  # the check must never cost a verdict; it only ever adds
            check = DeclarationCheck("mismatch" if raw is not None else "absent",
                                     [f"declaration check failed: {type(error).__name__}: {error}"],
                                     _nothing_weighed(), source)
        verdict.declaration_check = check.to_dict()
        if verdict.verdict == "suspect":
            bodies = check.observed.get("bodies", [])
            verdict.powder_mass_g = [b["mass_g"] for b in bodies]
            verdict.powder_mass_lower_bound = [bool(b.get("mass_lower_bound")) for b in bodies]
            if check.status == "mismatch" and "declaration" not in verdict.reason_classes:
                verdict.reason_classes.append("declaration")
                verdict.reasons.append("declaration mismatch: " + check.reasons[0])


def attach_declaration_check(inspector: Any, declarations_file: str | Path | None = None) -> DeclarationChecker:
    """Hook the check into ``inspector`` (before any other ``on_outputs``, e.g. the DICOS TDR writer, so that
    what they report includes it)."""
    data = load_declarations(declarations_file) if declarations_file else {}
    policy = getattr(inspector, "policy", None)
    powder_score = None
    if policy is not None:
        model_sha256 = (getattr(inspector, "model_info", None) or {}).get("sha256")
        powder_score = policy.declaration.threshold_for(model_sha256)
        if powder_score is None and policy.declaration.powder_score_threshold is not None:
            print(f"parcelscan inspect: the policy's [declaration] powder_score_threshold was set for model "
                  f"{str(policy.declaration.model_sha256)[:16]}…, not this one: the declaration check uses the "
                  "physics alone", file=sys.stderr)
    checker = DeclarationChecker(data, str(declarations_file) if declarations_file else None, powder_score)
    previous = inspector.on_outputs

    def hook(verdict: Any, outputs: Any) -> None:
        checker(verdict, outputs)
        if previous is not None:
            previous(verdict, outputs)

    # the check only reads the advance data and changes its own scan's verdict: the inspector may run it for the
    # scans of a batch in parallel, unless a hook chained behind it needs them one at a time
    hook.thread_safe = previous is None or bool(getattr(previous, "thread_safe", False))  # type: ignore[attr-defined]
    inspector.on_outputs = hook
    return checker
