"""The two streams ``parcelscan simulate --mix`` draws from: ``stress`` and ``postal``.

``stress`` is the training law: every scenario equally often, about half the clear parcels carry a scenario's
look-alike (the same vessel with a benign, often dense or high-Z fill), containers follow the scenarios. It
is hard on purpose and its prevalences are not a postal stream's.

``postal`` is a prevalence-realistic stream for evaluation: the frequencies below, one table, frozen in code
before any training and never tuned to a result. ``--suspect-fraction`` still sets the suspect share in both
(a station's real prevalence of concealed critical minerals is unknown and far below anything one can
evaluate on). Twins are not drawn: whether a look-alike's fill is a twin follows from physics
(``simulator.twins``); ``stats.json`` reports the realised twin share of clear parcels per stream.
"""

from __future__ import annotations

from dataclasses import dataclass

MIXES = ("stress", "postal")
DENSE_METAL_KINDS = ("hand_tools", "machinery_parts", "motor", "fishing_weights", "carbide_bits")


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
    # Packaging of clear parcels without a look-alike (those with one travel in their scenario's packaging);
    # a box's size follows the simulator's carton law (containers.cardboard_box: small, medium, large as 4:4:2).
    "container": {
        "box": Frequency(0.45, "cardboard boxes carry most parcel volume (assumption after operators' reports that "
                         "e-commerce small packets are mostly boxes and mailers)"),
        "poly_mailer": Frequency(0.25, "plastic mailers for clothes and soft goods (assumption)"),
        "padded_envelope": Frequency(0.20, "padded envelopes for small hard goods (assumption)"),
        "letter": Frequency(0.10, "large letters and flats with goods (assumption)"),
    },
    # Share of clear parcels without a look-alike whose contents include one dense metal object (a hand tool,
    # machinery part, motor, fishing weights or carbide bits): what the shield alarm sees.
    "dense_metal_share": {
        "clear": Frequency(0.08, "tools, hardware and car parts are some 5-10 % of e-commerce orders "
                           "(assumption after retail category shares); one object per such parcel"),
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
