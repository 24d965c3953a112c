"""One simulated scan, start to finish: plan → parcel → belt → raster → physics → detector → labels.

Scan ``i`` of a run depends only on ``(seed, i)`` and the run's settings: its generator is
``SeedSequence([seed, i])``, spawned into independent streams for the plan (label, scenario, material),
the parcel, and the scanner (spectral variant, quanta, blur, noise). Nothing about the label reaches
the scan size, the container, the object count, the margins or the noise: clear parcels carry the
scenario's look-alike (same vessel, benign fill) at ``lookalike_share``, and clutter is laid over the
fill by the same rule in positives and look-alikes. The container follows the contents, never the label:
in ``stress`` every parcel travels in a scenario's packaging (ordinary clears in a random scenario's); in
``postal`` every parcel draws its kind from the one container table restricted to what can carry its
contents (``streams.carriers``), so a pouch, suspect or not, draws its kind as an ordinary parcel does.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import TARGET_MATERIALS
from parcelscan.datasets.physics.profile import Layer, ScannerProfile
from parcelscan.datasets.physics.pseudocolor import pseudocolor_from_pair
from parcelscan.datasets.simulator import shielded
from parcelscan.datasets.simulator.concealments import (
    BUILDERS,
    SCENARIOS,
    Concealment,
    build_concealment,
    scenario_container,
)
from parcelscan.datasets.simulator.containers import (
    Container,
    cardboard_box,
    letter,
    packing_fill,
    padded_envelope,
    poly_mailer,
    rotated_extent,
)
from parcelscan.datasets.simulator.contents import BENIGN_KINDS, LETTER_SAFE, make_item, place, random_kind
from parcelscan.datasets.simulator.scene import Grid, Part, Raster, rasterise, rotation
from parcelscan.datasets.simulator.shapes import choice, log_uniform, uniform
from parcelscan.datasets.simulator.streams import (
    DENSE_METAL_KINDS,
    MIXES,
    POSTAL_LAW,
    SCENARIO_CARRIERS,
    carriers,
    container_weights,
    table_value,
    table_weights,
)
from parcelscan.datasets.simulator.twins import fill_signature

# scene-2: the labels gained twin_of and the provenance mix, fill_signature, dense_metal_objects; a stress scan's
# pixels are those of scene-1 for the same seed and index
# scene-3: goods that stopped the beam by a geometry error (contents.py: a transformer's winding inside its iron,
# a motor's armature denser than copper, a watch closed in gold, 10 mm bangles, solid solder spools, thick
# zamak and brass walls) have their real dimensions; scans carrying them change, the others keep their pixels
GENERATOR_VERSION = "scene-3"


# Settings a run's identity names only when they differ from these values, so that the scans made before a setting
# existed keep their provenance and can be resumed (``generate.resume_state`` reads an absent key as its default).
IDENTITY_DEFAULTS = {"operator_image": True}


@dataclass(frozen=True)
class SimConfig:
    """The settings of a run (everything a scan depends on besides its index)."""

    profile: ScannerProfile
    seed: int = 0
    suspect_fraction: float = 0.5
    scenarios: tuple[str, ...] = SCENARIOS
    materials: tuple[str, ...] = TARGET_MATERIALS
    lookalike_share: float = 0.5  # of clear parcels
    overlap_probability: float = 0.5  # clutter laid over the fill (positives and look-alikes alike)
    spectral_variants: bool = True
    mix: str = "stress"  # the stream (simulator.streams): stress (the training law) or postal
    # write the operator image (``_rgb.png``, what a pseudo-colour station exports) beside the pair; a dual-energy
    # training set does without it (~15 % of a scan's simulation time, 13 % of its disk); no pixel of the pair
    # depends on it
    operator_image: bool = True

    def __post_init__(self) -> None:
        if self.mix not in MIXES:
            raise ValueError(f"unknown mix {self.mix!r}; choose from {', '.join(MIXES)}")

    def identity(self) -> dict:
        """What must match for a directory to be resumed (it is in every scan's provenance)."""
        physics = json.dumps(self.profile.to_dict(), sort_keys=True).encode()
        return {
            "profile": self.profile.name,
            "profile_sha256": hashlib.sha256(physics).hexdigest()[:16],
            "seed": self.seed,
            "suspect_fraction": self.suspect_fraction,
            "scenarios": list(self.scenarios),
            "generator_version": GENERATOR_VERSION,
            "mix": self.mix,
        } | ({"postal_law": POSTAL_LAW} if self.mix == "postal" else {}) | \
            {key: value for key, value in {"operator_image": self.operator_image}.items()
             if value != IDENTITY_DEFAULTS[key]}


@dataclass
class Plan:
    label: str  # clear | suspect
    scenario: str  # a scenario, or "none"
    material: str | None
    lookalike: str | None  # the scenario whose look-alike a clear parcel carries
    packaging: str  # the scenario whose packaging the parcel uses (every parcel draws one)
    container_kind: str | None = None  # postal: every parcel's packaging, drawn by its contents (stress: None)
    dense_metal: bool = False  # postal: an ordinary parcel carrying one dense metal object


@dataclass
class SimulatedScan:
    scan_id: str
    low: np.ndarray
    high: np.ndarray
    rgb: np.ndarray | None  # the operator image (None: ``SimConfig.operator_image`` off)
    mask: np.ndarray | None  # uint8 0/255 for suspects
    labels: dict
    provenance: dict
    seconds: dict = field(default_factory=dict)  # CPU seconds per stage (this process, waits excluded)
    fill_mask: np.ndarray | None = None  # where the vessel's filling lies, target or benign (not written)
    scene: Scene | None = field(default=None, repr=False, compare=False)  # what it was made from (not written)


def scan_id_for(seed: int, index: int) -> str:
    return f"sim{seed}-{index:06d}"


def plan_scan(rng: np.random.Generator, config: SimConfig) -> Plan:
    if config.mix == "postal":
        return plan_postal(rng, config)
    suspect = rng.random() < config.suspect_fraction
    scenario = choice(rng, config.scenarios)
    material = choice(rng, config.materials)
    lookalike = rng.random() < config.lookalike_share
    if suspect:
        return Plan("suspect", scenario, material, None, scenario)
    return Plan("clear", "none", None, scenario if lookalike else None, scenario)


def plan_postal(rng: np.random.Generator, config: SimConfig) -> Plan:
    """The postal stream's law: the frequencies of ``streams.POSTAL_TABLE``; suspects as in stress. The contents
    are drawn first, then the container kind from the table restricted to the kinds that can carry them (the
    same draw for a suspect, a look-alike and an ordinary parcel whose contents fit the same kinds)."""
    suspect = rng.random() < config.suspect_fraction
    scenario = choice(rng, config.scenarios)
    material = choice(rng, config.materials)
    lookalike = rng.random() < table_value("lookalike_share", "clear")
    names, weights = table_weights("lookalike_scenario")
    allowed = [(n, w) for n, w in zip(names, weights, strict=True) if n in config.scenarios]
    lookalike_scenario = choice(rng, [n for n, _ in allowed], [w for _, w in allowed])
    dense_metal = rng.random() < table_value("dense_metal_share", "clear")
    if suspect:
        contents: tuple[str, ...] = carriers(scenario)
    elif lookalike:
        contents = carriers(lookalike_scenario)
    else:
        contents = carriers(None, dense_metal)
    kinds, kind_weights = container_weights(contents)
    container_kind = choice(rng, kinds, kind_weights)
    if suspect:
        return Plan("suspect", scenario, material, None, scenario, container_kind)
    if lookalike:
        return Plan("clear", "none", None, lookalike_scenario, lookalike_scenario, container_kind)
    return Plan("clear", "none", None, None, scenario, container_kind, dense_metal)


def container_of_kind(rng: np.random.Generator, kind: str) -> Container:
    """A postal parcel's packaging of the given kind."""
    if kind == "box":
        return cardboard_box(rng)
    return {"padded_envelope": padded_envelope, "poly_mailer": poly_mailer, "letter": letter}[kind](rng)


# --- parcels --------------------------------------------------------------------------------------------
def _object_count(rng: np.random.Generator, container: Container) -> int:
    """How many objects a parcel holds (vessel and companions of a scenario included)."""
    if container.kind == "letter":
        return int(rng.integers(1, 3))
    if container.kind != "box":
        return int(rng.integers(2, 6))
    volume_l = float(np.prod(container.size_mm)) / 1e6
    return int(rng.integers(2, 4 + min(int(volume_l / 6), 6)))


def _add_items(
    rng, container: Container, count: int, parts: list[Part], next_id: int, kinds: tuple[str, ...] = (),
    drawn: list[str] | None = None,
) -> int:
    for _ in range(count):
        if container.kind == "letter":
            kind = choice(rng, LETTER_SAFE, [6, 1, 1, 0.5, 0.5, 0.5])
        elif kinds and rng.random() < 0.4:
            kind = choice(rng, kinds)
        else:
            kind = random_kind(rng, container.container_class)
        if drawn is not None:
            drawn.append(kind)
        parts.extend(place(rng, make_item(rng, kind, container.fit), container.interior, item_id=next_id))
        next_id += 1
    return next_id


def _postal_items(rng, container: Container, count: int, parts: list[Part], next_id: int, dense_metal: bool,
                  drawn: list[str]) -> int:
    """Ordinary goods without dense metal objects, and one of them when the plan says so (postal stream)."""
    cls = container.container_class
    ordinary = [n for n, k in BENIGN_KINDS.items() if cls in k.containers and n not in DENSE_METAL_KINDS]
    dense = [n for n in DENSE_METAL_KINDS if cls in BENIGN_KINDS[n].containers]
    for k in range(count):
        if dense_metal and k == 0 and dense:
            kind = choice(rng, dense, [BENIGN_KINDS[n].weight for n in dense])
        elif container.kind == "letter":
            kind = choice(rng, LETTER_SAFE, [6, 1, 1, 0.5, 0.5, 0.5])
        else:
            kind = choice(rng, ordinary, [BENIGN_KINDS[n].weight for n in ordinary])
        drawn.append(kind)
        parts.extend(place(rng, make_item(rng, kind, container.fit), container.interior, item_id=next_id))
        next_id += 1
    return next_id


@dataclass
class Parcel:
    container: Container
    parts: list[Part]
    concealment: Concealment | None
    objects: int  # contents, vessel and companions included (packaging and packing fill not)
    kinds: list[str] = field(default_factory=list)  # kinds of the goods drawn (not the scenario's companions)


def generic_parcel(rng: np.random.Generator, packaging: str, container_kind: str | None = None,
                   dense_metal: bool = False) -> Parcel:
    """A parcel of ordinary goods, in the packaging of the scenario ``packaging`` (stress), or of
    ``container_kind`` with or without one dense metal object (postal)."""
    if container_kind is not None:
        container = container_of_kind(rng, container_kind)
    elif packaging in shielded.OPTIONAL_SCENARIOS:  # an optional scenario (simulator.shielded) packs its own way
        container = shielded.shielded_container(rng)
    else:
        container = scenario_container(rng, packaging)
    parts = list(container.parts)
    count = _object_count(rng, container)
    next_id = 0
    drawn: list[str] = []
    if container.kind == "letter":
        parts.extend(place(rng, make_item(rng, "documents", container.fit), container.interior, item_id=0))
        next_id, count = 1, count - 1
        drawn.append("documents")
    if container_kind is None:
        next_id = _add_items(rng, container, count, parts, next_id, drawn=drawn)
    else:
        next_id = _postal_items(rng, container, count, parts, next_id, dense_metal, drawn)
    parts.extend(packing_fill(rng, container))
    return Parcel(container, parts, None, next_id, drawn)


def postal_concealment(rng: np.random.Generator, scenario: str, target: str | None, container_kind: str) -> Concealment:
    """``concealments.build_concealment`` with the postal container law: a vessel that needs a box travels in
    its scenario's box (sized for the sack, bottles, tiles or casting), a pouch in a container of
    ``container_kind`` drawn exactly as an ordinary parcel's. Same stream split: geometry before the fill."""
    if container_kind not in SCENARIO_CARRIERS[scenario]:
        raise ValueError(f"a {scenario} vessel cannot travel in a {container_kind}")
    if scenario in shielded.OPTIONAL_SCENARIOS:  # packs its own box
        return shielded.build(rng, scenario, target)
    if target is not None and target not in TARGET_MATERIALS:
        raise ValueError(f"unknown target material {target!r}")
    geo, pay = rng.spawn(2)
    if SCENARIO_CARRIERS[scenario] == ("box",):
        container = scenario_container(geo, scenario)
    else:
        container = container_of_kind(geo, container_kind)
    return BUILDERS[scenario](geo, pay, target, container)


def themed_parcel(rng: np.random.Generator, scenario: str, target: str | None, overlap_probability: float,
                  container_kind: str | None = None) -> Parcel:
    """A scenario's vessel with a target (positive) or benign fill (look-alike), its companions and clutter;
    in the scenario's packaging (stress) or in a container of ``container_kind`` (postal)."""
    if container_kind is not None:
        concealment = postal_concealment(rng, scenario, target, container_kind)
    elif scenario in shielded.OPTIONAL_SCENARIOS:  # registered optional scenarios (simulator.shielded)
        concealment = shielded.build(rng, scenario, target)
    else:
        concealment = build_concealment(rng, scenario, target)
    container = concealment.container
    parts = list(container.parts) + concealment.parts
    extra = max(_object_count(rng, container) - concealment.objects, 0)
    overlap = rng.random() < overlap_probability
    drawn: list[str] = []
    next_id = _add_items(
        rng, container, extra - 1 if overlap and extra else extra, parts, 100, concealment.clutter_kinds, drawn
    )
    if overlap:  # clutter over (or under) the fill
        if container.kind == "box":
            kind = choice(rng, (*concealment.clutter_kinds, "clothing", "book", "electronics", "hand_tools"))
        else:
            kind = choice(rng, ("documents", "jewellery", "coins", "keys", "clothing", "cable"))
        drawn.append(kind)
        item = make_item(rng, kind, container.fit)
        focus = np.asarray(concealment.focus_xy) + rng.normal(0.0, 20.0, 2)
        parts.extend(place(rng, item, container.interior, xy=focus, item_id=next_id))
        next_id += 1
    parts.extend(packing_fill(rng, container))
    return Parcel(container, parts, concealment, concealment.objects + next_id - 100, drawn)


def build_parcel(rng: np.random.Generator, plan: Plan, config: SimConfig) -> Parcel:
    if plan.label == "suspect":
        return themed_parcel(rng, plan.scenario, plan.material, config.overlap_probability, plan.container_kind)
    if plan.lookalike:
        return themed_parcel(rng, plan.lookalike, None, config.overlap_probability, plan.container_kind)
    return generic_parcel(rng, plan.packaging, plan.container_kind, plan.dense_metal)


# --- the belt and the scanner -----------------------------------------------------------------------------
@dataclass
class BeltPlacement:
    grid: Grid
    parts: list[Part]
    yaw_deg: float
    lead_mm: float
    trail_mm: float


def place_on_belt(rng: np.random.Generator, parcel: Parcel, profile: ScannerProfile) -> BeltPlacement:
    """Turn the parcel on the belt, set it across the tunnel, add leading and trailing margins."""
    tunnel_mm = profile.channels * profile.pixel_pitch_mm
    length, width, _ = parcel.container.size_mm
    best = None
    for _ in range(8):
        yaw = (math.pi / 2 if rng.random() < 0.3 else 0.0) + float(np.clip(rng.normal(0, 0.3), -0.8, 0.8))
        along, across = rotated_extent((length, width), yaw)
        if best is None or across < best[2]:
            best = (yaw, along, across)
        if across <= tunnel_mm - 10:
            break
    yaw, along, across = best
    lead, trail = uniform(rng, 25, 110), uniform(rng, 25, 110)
    y_centre = uniform(rng, min(across / 2 + 5, tunnel_mm / 2), max(tunnel_mm - across / 2 - 5, tunnel_mm / 2))
    offset = np.array([lead + along / 2, y_centre, 0.0])
    rz = rotation(yaw)
    rows = max(math.ceil((lead + along + trail) / profile.pixel_pitch_mm), 16)
    parts = [part.moved(rz, offset) for part in parcel.parts]
    return BeltPlacement(Grid(rows, profile.channels, profile.pixel_pitch_mm), parts, math.degrees(yaw), lead, trail)


SPECTRAL_VARIANTS = ("base", "kv-10", "kv+10", "filter+40%", "cu-20%")


def scanner_variant(
    rng: np.random.Generator, base: ScannerProfile, enabled: bool = True
) -> tuple[ScannerProfile, str, float, float]:
    """(physics profile, variant name, air quanta, blur σ px) of one scan: stations differ in tube output,
    filtration, dose and focus; so does one station over its life."""
    variant = choice(rng, SPECTRAL_VARIANTS, [5, 1.25, 1.25, 1.25, 1.25]) if enabled else "base"
    quanta = base.air_quanta_per_pixel * log_uniform(rng, 0.5, 2.0)
    blur = base.blur_sigma_px * uniform(rng, 0.7, 1.45)
    if variant == "kv-10":
        profile = base.with_changes(tube_kv=base.tube_kv - 10)
    elif variant == "kv+10":
        profile = base.with_changes(tube_kv=base.tube_kv + 10)
    elif variant == "filter+40%":
        profile = base.with_changes(filtration=tuple(Layer(f.material, f.thickness_mm * 1.4) for f in base.filtration))
    elif variant == "cu-20%":
        f = base.interlayer_filter
        profile = base.with_changes(interlayer_filter=Layer(f.material, f.thickness_mm * 0.8))
    else:
        profile = base
    return profile, variant, quanta, blur


# --- one scan ---------------------------------------------------------------------------------------------
@dataclass
class Scene:
    """Scan ``index`` of a run before the scanner sees it: plan, parcel, placement, projected areal maps."""

    plan: Plan
    parcel: Parcel
    belt: BeltPlacement
    raster: Raster
    scanner_rng: np.random.Generator
    noise_rng: np.random.Generator


def _streams(config: SimConfig, index: int) -> list[np.random.Generator]:
    """Independent generators of scan ``index``: plan, parcel, belt, scanner, detector noise."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, index])).spawn(5)


def plan_for(config: SimConfig, index: int) -> Plan:
    """What scan ``index`` will be (label, scenario, material, look-alike), without building it."""
    return plan_scan(_streams(config, index)[0], config)


def build_scene(config: SimConfig, index: int, seconds: dict[str, float] | None = None) -> Scene:
    seconds = {} if seconds is None else seconds
    start = time.process_time()
    plan_rng, parcel_rng, belt_rng, scanner_rng, noise_rng = _streams(config, index)
    plan = plan_scan(plan_rng, config)
    parcel = build_parcel(parcel_rng, plan, config)
    belt = place_on_belt(belt_rng, parcel, config.profile)
    seconds["scene"] = time.process_time() - start
    start = time.process_time()
    raster = rasterise(belt.parts, belt.grid)
    seconds["rasterise"] = time.process_time() - start
    return Scene(plan, parcel, belt, raster, scanner_rng, noise_rng)


def simulate_scan(config: SimConfig, index: int) -> SimulatedScan:
    seconds: dict[str, float] = {}
    scene = build_scene(config, index, seconds)
    plan, parcel, belt, raster = scene.plan, scene.parcel, scene.belt, scene.raster
    scanner_rng, noise_rng = scene.scanner_rng, scene.noise_rng

    physics, variant, quanta, blur = scanner_variant(scanner_rng, config.profile, config.spectral_variants)
    start = time.process_time()
    model = forward_model(physics)
    a_low, a_high = model.log_attenuation(raster.materials, raster.areal_g_cm2)
    seconds["forward"] = time.process_time() - start
    start = time.process_time()
    low, high = model.detect(a_low, a_high, noise_rng, air_quanta_per_pixel=quanta, blur_sigma_px=blur)
    seconds["detect"] = time.process_time() - start
    start = time.process_time()
    rgb = pseudocolor_from_pair(low, high, physics) if config.operator_image else None
    seconds["pseudocolor"] = time.process_time() - start

    scan_id = scan_id_for(config.seed, index)
    concealment = parcel.concealment
    mask = None
    labels = {
        "label": plan.label,
        "scenario": plan.scenario,
        "material": plan.material,
        "mass_g": None,
        "mass_fraction": None,
        "mask": None,
        "lookalike": plan.lookalike,
        "twin_of": [],  # suspects and parcels without a look-alike fill are nobody's twin
    }
    signature = None
    if plan.lookalike is not None and concealment is not None:
        start = time.process_time()
        signature = fill_signature(concealment.fill, raster.fill_g_cm2, a_low, a_high, physics)
        labels["twin_of"] = signature.twin_of
        seconds["twins"] = time.process_time() - start
    overlap = None
    if plan.label == "suspect":
        powder = raster.target_g_cm2 > 0
        mask = np.where(powder, 255, 0).astype(np.uint8)
        labels["mass_g"] = round(raster.target_mass_g, 2)
        labels["mass_fraction"] = round(concealment.fill.mass_fraction, 4)
        labels["mask"] = f"{scan_id}_mask.png"
        overlap = float((raster.clutter & powder).sum() / max(int(powder.sum()), 1))
    provenance = {
        **config.identity(),
        "index": index,
        "scanner_variant": variant,
        "tube_kv": physics.tube_kv,
        "air_quanta_per_pixel": round(quanta, 1),
        "blur_sigma_px": round(blur, 3),
        "container": parcel.container.kind,
        "parcel_size_mm": [round(v, 1) for v in parcel.container.size_mm],
        "objects": parcel.objects,
        "yaw_deg": round(belt.yaw_deg, 1),
        "rows": belt.grid.rows,
        "materials_in_scene": len(raster.materials),
        "dense_metal_objects": sum(kind in DENSE_METAL_KINDS for kind in parcel.kinds),
    }
    if concealment is not None:
        provenance.update(
            {"concealment_variant": concealment.variant, "fill": concealment.fill.name, "details": concealment.notes}
        )
    if signature is not None:
        provenance["fill_signature"] = signature.provenance()
    if overlap is not None:
        provenance["clutter_overlap"] = round(overlap, 4)
        provenance["mask_pixels"] = int((mask > 0).sum())
    fill_mask = raster.fill if concealment is not None else None
    return SimulatedScan(scan_id, low, high, rgb, mask, labels, provenance, seconds, fill_mask, scene)
