"""Dual-energy twin labels from the simulator's ground truth: which targets a look-alike's fill cannot be told from.

A clear parcel's benign fill is a twin of a target when, over that fill's own footprint and at the A_high its
pixels actually present, an honest detector cannot separate its R from the target's (``physics.signature``,
d' < 4.2). The comparison is like for like: a pure fill against the pure target powder; a fill mixed into a
carrier (5–60 % in grout, a slurry) against the target mixed into the same carrier at the same mass fraction,
which is what a positive in that vessel would hold. Everything else on the fill's rays (vessel walls, the
carrier's sack, clutter, the container) lies *over* it: it costs quanta and must be subtracted.

A fill presents a range of A_high (a bottle is thin at its edges, thick in the middle) and R curves of
different materials cross, so the check runs at ``A_HIGH_QUANTILES`` of the fill's own A_high over its
footprint, each with the pixels around it; a fill is a twin of a target only when d' < 4.2 at *every* one of
them (a detector may use the most telling thickness). Only look-alike fills count: never goods such as brass
fittings or coins, never a suspect's powder, never an empty cavity (air). Pixels where the beam is stopped
(total A_high >= ``pseudocolor.OPAQUE_A_HIGH``) carry no R at all: a fill seen only through such pixels is
*opaque*, not a twin (``twin_of`` []; the station's opaque alarm, never the signature, deals with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parcelscan.datasets.physics.materials import LIBRARY, TARGET_MATERIALS, Material, mix_materials
from parcelscan.datasets.physics.profile import ScannerProfile
from parcelscan.datasets.physics.pseudocolor import OPAQUE_A_HIGH
from parcelscan.datasets.physics.signature import D_PRIME_TWIN, Region, a_high_of, lookup, ratio_at
from parcelscan.datasets.simulator.concealments import Fill

A_HIGH_QUANTILES = (0.2, 0.5, 0.8)  # of the fill's own A_high over its footprint
MIN_OWN_A_HIGH = 0.005  # pixels where the fill attenuates less than this carry no signature (edges, foil)


@dataclass(frozen=True)
class FillSignature:
    """The twin check of one look-alike fill: its twins and, for the record, where it sits."""

    twin_of: list[str]
    a_high: float  # median of the fill's own A_high over its footprint
    ratio: float  # its R there
    pixels: int
    nearest: str | None  # the target with the smallest largest-d'
    d_prime: float | None  # that target's d' (the largest over the quantiles)
    opaque: bool = False  # the fill lies only under pixels where the beam is stopped

    def provenance(self) -> dict:
        return {"a_high": round(self.a_high, 4), "ratio": round(self.ratio, 4), "pixels": self.pixels,
                "nearest_target": self.nearest,
                "d_prime": None if self.d_prime is None else round(self.d_prime, 2), "opaque": self.opaque}


def fill_material(fill: Fill) -> Material:
    """The whole filling as one material: the fill alone, or the fill with its carrier at their partial densities."""
    if not fill.admixture:
        return fill.material
    parts = [(fill.material, fill.density_g_cm3), *fill.admixture]
    return mix_materials(f"{fill.name} fill", parts)


def counterpart(target: str, fill: Fill) -> Material:
    """What a positive in the same vessel would hold: the target pure, or in the fill's carrier at its fraction."""
    if not fill.admixture:
        return LIBRARY[target]
    return mix_materials(f"{target} in carrier", [(LIBRARY[target], fill.density_g_cm3), *fill.admixture])


def fill_signature(fill: Fill, fill_g_cm2: np.ndarray, a_low: np.ndarray, a_high: np.ndarray,
                   profile: ScannerProfile, targets: tuple[str, ...] = TARGET_MATERIALS) -> FillSignature:
    """Twin check of a look-alike ``fill`` whose whole-filling areal density map is ``fill_g_cm2``, in a scan
    whose noiseless log-attenuations are ``a_low``/``a_high``, under the scan's own spectrum ``profile``."""
    material = fill_material(fill)
    footprint = fill_g_cm2 > 0
    own_high = a_high_of(material, fill_g_cm2[footprint], profile)
    signal = own_high >= MIN_OWN_A_HIGH
    keep = signal & (a_high[footprint] < OPAQUE_A_HIGH)
    if fill.name == "air" or keep.sum() < 4:
        median = float(np.median(own_high)) if own_high.size else 0.0
        opaque = fill.name != "air" and int(signal.sum()) >= 4
        return FillSignature([], median, 0.0, int(keep.sum()), None, None, opaque)
    own_high = own_high[keep]
    own_low = ratio_at(material, own_high, profile) * own_high
    over_high = np.maximum(a_high[footprint][keep] - own_high, 0.0)
    over_low = np.maximum(a_low[footprint][keep] - own_low, 0.0)
    order = np.argsort(own_high, kind="stable")
    bins = np.array_split(order, len(A_HIGH_QUANTILES))  # pixels around each quantile share its noise
    regions = []
    for quantile, pixels in zip(A_HIGH_QUANTILES, bins, strict=True):
        level = float(np.quantile(own_high, quantile))
        regions.append(Region(level, float(ratio_at(material, level, profile)), float(len(pixels)),
                              float(np.median(over_low[pixels])), float(np.median(over_high[pixels])), material))
    candidates = [(name, "target", counterpart(name, fill)) for name in targets]
    worst: dict[str, float] = dict.fromkeys(targets, 0.0)
    for region in regions:
        for match in lookup(region, profile, candidates):
            worst[match.name] = max(worst[match.name], match.d_prime)
    nearest = min(targets, key=lambda name: worst[name])
    median = float(np.median(own_high))
    return FillSignature([name for name in targets if worst[name] < D_PRIME_TWIN], median,
                         float(ratio_at(material, median, profile)), int(keep.sum()), nearest, worst[nearest])
