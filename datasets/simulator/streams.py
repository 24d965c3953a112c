"""The two streams ``parcelscan simulate --mix`` draws from: ``stress`` and ``postal``.

``stress`` is the training law: every scenario equally often, about half the clear parcels carry a scenario's
look-alike (the same vessel with a benign, often dense or high-Z fill), containers follow the scenarios. It
is hard on purpose and its prevalences are not a postal stream's.

``postal`` is a prevalence-realistic stream for evaluation: the frequencies below, one table, frozen in code
before any training and never tuned to a result. ``--suspect-fraction`` still sets the suspect share in both
(a station's real prevalence of concealed critical minerals is unknown and far below anything one can
evaluate on). Twins are not drawn: whether a look-alike's fill is a twin follows from physics
(``simulator.twins``); ``stats.json`` reports the realised twin share of clear parcels per stream.

**The container law of ``postal``: packaging follows the contents, never the label.** Every parcel — suspect,
look-alike clear, ordinary clear — draws its container kind from the one ``POSTAL_TABLE["container"]``,
restricted to the kinds that can carry its contents (``carriers``) and renormalised. A vessel that sets its own
box (a construction sack, PET bottles, a tile stack, a casting, a shielded case) travels in that box whatever
it is filled with; a flat powder pouch fits any kind and draws exactly as an ordinary parcel does (the same
table, the same carton law for a box); an ordinary parcel with a dense metal object cannot be a letter. So the
container kind tells the label only what the contents' physics force (a letter cannot hold a 2 kg tile stack):
among parcels whose contents fit the same kinds, suspect and clear draw alike, and the suspect share per kind
is the group's (``tests/test_streams.py``). ``stress`` keeps its own law (every parcel in a scenario's
packaging, ordinary clears in a random scenario's) and its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from parcelscan.datasets.simulator.containers import CONTAINER_CLASS
from parcelscan.datasets.simulator.contents import BENIGN_KINDS

MIXES = ("stress", "postal")
# postal-2: every parcel's container kind drawn from the container table restricted to its contents' carriers
# (postal-1 packed suspects and look-alikes in their scenario's packaging, so the kind told the label).
# postal-3: the dense metal objects are every benign kind that stops the beam on its own (below), so the table's
# share governs all of them; postal-2 drew castings, brass fittings, fire steels and solder spools as ordinary
# goods besides the table's 8 %, and 9.3 % of clear parcels carried one. The law is in a postal run's identity,
# so a directory of an old law is never resumed under the new one.
POSTAL_LAW = "postal-3"
# The benign kinds that are dense metal objects: tools and machinery parts (metal, mostly thinner than the beam
# stops), and every kind that, alone in a cardboard box under the nominal scanner, raises the shield alarm
# (inference.opaque, the default threat model) in at least a third of 20 draws: motor 14, castings 7 (zinc
# die-castings and thick aluminium), brass fittings 17, fishing weights 19, carbide bits 19, fire steels 13,
# solder spools 20. Every other kind: 0 of 20 (hand tools 0, machinery parts 2). Measured by
# data-independent forward simulation (README "Two streams"); tests/test_streams.py keeps the list honest.
DENSE_METAL_KINDS = ("hand_tools", "machinery_parts", "motor", "fishing_weights", "carbide_bits", "al_casting",
                     "brass_fittings", "fire_steel", "solder_spool")


@dataclass(frozen=True)
class Frequency:
    """One documented number of the postal table: its value and where it comes from."""

    value: float
    reason: str


# fmt: off
POSTAL_TABLE: dict[str, dict[str, Frequency]] = {
    # Share of clear parcels that carry one of the scenarios' look-alikes: a sack of construction powder, bottles
    # of a mineral powder or slurry, a powder pouch between tiles or among papers, a casting with a dense insert.
    "lookalike_share": {
        "clear": Frequency(0.03, "assumption (no public statistics): cosmetics and supplement powders, pigments, "
                           "samples of building materials, fishing lead and machine parts with inserts together make "
                           "a few per cent of parcels; 3 % is the order of magnitude, not a measurement"),
    },
    # Which scenario's look-alike a clear parcel carries (shares of the look-alikes).
    "lookalike_scenario": {
        "mail_pouch": Frequency(0.40, "small powder pouches (cosmetics, supplements, samples) are the most common "
                                "powder item in letters and small parcels (assumption)"),
        "machine_part": Frequency(0.25, "spare parts and castings are a large e-commerce category (assumption)"),
        "water_bottle": Frequency(0.15, "bottled powders and slurries (paints, cleaning powders) (assumption)"),
        "tile_ingredients": Frequency(0.10, "construction powders are heavy and rarely posted (assumption)"),
        "tile_stack": Frequency(0.10, "tiles with adhesive or a sheet between them are rarely posted (assumption)"),
    },
    # Packaging of every parcel whose contents fit any kind (ordinary goods, a flat powder pouch), suspect or
    # clear alike; a parcel whose contents fit fewer kinds draws from this table restricted to them (``carriers``:
    # a scenario's sack, bottles, tiles or casting only a box, a dense metal object no letter). A box's size
    # follows the simulator's carton law (containers.cardboard_box: small, medium, large as 4:4:2), except for
    # a vessel that sets its own box (concealments.scenario_container: what fits the sack, bottles, tiles).
    "container": {
        "box": Frequency(0.45, "cardboard boxes carry most parcel volume (assumption after operators' reports that "
                         "e-commerce small packets are mostly boxes and mailers)"),
        "poly_mailer": Frequency(0.25, "plastic mailers for clothes and soft goods (assumption)"),
        "padded_envelope": Frequency(0.20, "padded envelopes for small hard goods (assumption)"),
        "letter": Frequency(0.10, "large letters and flats with goods (assumption)"),
    },
    # Share of clear parcels without a look-alike whose contents include one dense metal object (DENSE_METAL_KINDS:
    # a hand tool, machinery part, motor, casting, brass fittings, fishing weights, carbide bits, a fire steel or a
    # solder spool): what the shield alarm sees.
    "dense_metal_share": {
        "clear": Frequency(0.08, "tools, hardware, castings, fittings, fishing tackle, camping and soldering gear "
                           "are some 5-10 % of e-commerce orders (assumption after retail category shares); one "
                           "object per such parcel, and no other parcel holds one"),
    },
}
# fmt: on


def _check_table() -> None:
    for group in ("lookalike_scenario", "container"):
        total = sum(f.value for f in POSTAL_TABLE[group].values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"postal table {group} sums to {total}, not 1")


_check_table()


def table_value(group: str, key: str) -> float:
    return POSTAL_TABLE[group][key].value


def table_weights(group: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    names = tuple(POSTAL_TABLE[group])
    return names, tuple(POSTAL_TABLE[group][n].value for n in names)


CONTAINER_KINDS: tuple[str, ...] = tuple(POSTAL_TABLE["container"])

# Which container kinds can carry a scenario's vessel (physics and geometry, not frequencies): the sack
# (>= 300x220x90 mm), the bottles (>= 380x230x110 mm), the tile stack (>= 160x140x50 mm, kilograms of ceramic),
# the casting (>= 180x140x80 mm) and the shielded case need a box (a padded envelope is at most 45 mm thick);
# a flat pouch of 10-200 g, 2-10 mm thick, travels in any of them (concealments.mail_pouch thins it for a letter).
SCENARIO_CARRIERS: dict[str, tuple[str, ...]] = {
    "tile_ingredients": ("box",),
    "water_bottle": ("box",),
    "tile_stack": ("box",),
    "mail_pouch": CONTAINER_KINDS,
    "machine_part": ("box",),
    "shielded": ("box",),
}
# kinds whose container class takes at least one dense metal object (contents.BENIGN_KINDS: no letter)
DENSE_METAL_CARRIERS: tuple[str, ...] = tuple(
    kind for kind in CONTAINER_KINDS
    if any(CONTAINER_CLASS[kind] in BENIGN_KINDS[name].containers for name in DENSE_METAL_KINDS)
)


def carriers(scenario: str | None, dense_metal: bool = False) -> tuple[str, ...]:
    """The container kinds that can carry a parcel's contents: a scenario's vessel (suspect or look-alike alike),
    or ordinary goods (``scenario`` None) with or without one dense metal object."""
    if scenario is not None:
        if scenario not in SCENARIO_CARRIERS:
            raise ValueError(f"no container law for scenario {scenario!r}")
        return SCENARIO_CARRIERS[scenario]
    return DENSE_METAL_CARRIERS if dense_metal else CONTAINER_KINDS


def container_weights(kinds: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The container table restricted to ``kinds`` (renormalised): the law every postal parcel draws from."""
    names = tuple(k for k in CONTAINER_KINDS if k in kinds)
    if not names:
        raise ValueError(f"no container kind of the table can carry these contents ({kinds})")
    total = sum(table_value("container", k) for k in names)
    return names, tuple(table_value("container", k) / total for k in names)
