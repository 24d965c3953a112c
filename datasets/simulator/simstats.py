"""Per-scenario statistics of a simulated set, and the label-leak checks a person should look at.

Counts, target materials, mass and concentration ranges per scenario; the look-alike share of clear
parcels; how often clutter overlaps the concealed powder; and, side by side for clear and suspect scans,
the things that must *not* tell the label (scan length, object count, container types, noise level).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from parcelscan.datasets.manifest import ManifestRecord

SMALL_MASS_G = 100.0
LOW_FRACTION = 0.2


def _range(values: list[float]) -> dict | None:
    if not values:
        return None
    v = np.asarray(values, float)
    return {"min": round(float(v.min()), 3), "median": round(float(np.median(v)), 3), "max": round(float(v.max()), 3)}


def scenario_stats(records: list[ManifestRecord], overlap_min_share: float = 0.10) -> dict:
    suspects = [r for r in records if r.label == "suspect"]
    clears = [r for r in records if r.label == "clear"]
    lookalikes = Counter(r.lookalike for r in clears if r.lookalike)
    scenarios: dict[str, dict] = {}
    for name in sorted({r.scenario for r in suspects} | set(lookalikes)):
        positives = [r for r in suspects if r.scenario == name]
        masses = [r.mass_g for r in positives if r.mass_g is not None]
        fractions = [r.mass_fraction for r in positives if r.mass_fraction is not None]
        overlaps = [r.provenance.get("clutter_overlap", 0.0) for r in positives]
        scenarios[name] = {
            "suspects": len(positives),
            "lookalike_clears": lookalikes.get(name, 0),
            "materials": dict(sorted(Counter(r.material for r in positives).items())),
            "variants": dict(sorted(Counter(r.provenance.get("concealment_variant") for r in positives).items())),
            "mass_g": _range(masses),
            "mass_fraction": _range(fractions),
            "small_mass_share": round(float(np.mean([m < SMALL_MASS_G for m in masses])), 3) if masses else None,
            "low_fraction_share": round(float(np.mean([f < LOW_FRACTION for f in fractions])), 3)
            if fractions
            else None,
            "clutter_overlap_share": round(float(np.mean([o >= overlap_min_share for o in overlaps])), 3)
            if overlaps
            else None,
            "lookalike_fills": dict(
                sorted(Counter(r.provenance.get("fill") for r in clears if r.lookalike == name).items())
            ),
        }
    overlaps = [r.provenance.get("clutter_overlap", 0.0) for r in suspects]
    return {
        "scans": len(records),
        "suspects": len(suspects),
        "clears": len(clears),
        "lookalike_share_of_clears": round(sum(lookalikes.values()) / len(clears), 3) if clears else None,
        "clutter_overlap_share_of_suspects": round(float(np.mean([o >= overlap_min_share for o in overlaps])), 3)
        if overlaps
        else None,
        "materials": dict(sorted(Counter(r.material for r in suspects).items())),
        "scenarios": scenarios,
        "leak_checks": {label: _leak_check([r for r in records if r.label == label]) for label in ("clear", "suspect")},
    }


def _leak_check(records: list[ManifestRecord]) -> dict | None:
    if not records:
        return None
    p = [r.provenance for r in records]
    return {
        "rows": _range([x.get("rows", 0) for x in p]),
        "objects": _range([x.get("objects", 0) for x in p]),
        "air_quanta_per_pixel": _range([x.get("air_quanta_per_pixel", 0) for x in p]),
        "containers": dict(sorted(Counter(x.get("container") for x in p).items())),
    }


def format_stats(stats: dict) -> str:
    """A plain-text table for the terminal."""
    lines = [
        f"{stats['scans']} scans: {stats['suspects']} suspect, {stats['clears']} clear; look-alikes in "
        f"{_pct(stats['lookalike_share_of_clears'])} of clear parcels; clutter over the powder in "
        f"{_pct(stats['clutter_overlap_share_of_suspects'])} of suspects"
    ]
    header = (
        f"{'scenario':18s} {'susp':>5s} {'look':>5s} {'mass g (min/med/max)':>24s} {'fraction min/max':>17s} "
        f"{'<100g':>6s} {'<20%':>6s} {'overlap':>8s}  materials"
    )
    lines += [header, "-" * len(header)]
    for name, s in stats["scenarios"].items():
        mass = s["mass_g"]
        frac = s["mass_fraction"]
        mass_text = f"{mass['min']:.0f}/{mass['median']:.0f}/{mass['max']:.0f}" if mass else "-"
        frac_text = f"{frac['min']:.2f}/{frac['max']:.2f}" if frac else "-"
        lines.append(
            f"{name:18s} {s['suspects']:5d} {s['lookalike_clears']:5d} {mass_text:>24s} {frac_text:>17s} "
            f"{_pct(s['small_mass_share']):>6s} {_pct(s['low_fraction_share']):>6s} "
            f"{_pct(s['clutter_overlap_share']):>8s}  {len(s['materials'])}"
        )
    lines.append("materials: " + ", ".join(f"{k} {v}" for k, v in stats["materials"].items()))
    for label, check in stats["leak_checks"].items():
        if check:
            lines.append(
                f"{label:8s} rows {check['rows']['median']:.0f} (median), objects {check['objects']['median']:.0f}, "
                f"containers {check['containers']}"
            )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"
