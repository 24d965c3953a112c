"""Per-scenario statistics of a simulated set, and the label-leak checks a person should look at.

Counts, target materials, mass and concentration ranges per scenario; the look-alike share of clear
parcels; how often clutter overlaps the concealed powder; and, side by side for clear and suspect scans,
the things that must *not* tell the label (scan length, object count, container types, noise level); and per
stream (``--mix``) the realised frequencies: look-alikes, dual-energy twins, dense metal objects, scenarios,
containers, beside the postal table's documented values with their sampling error; and the container kind
per label, with (postal) the suspect share per kind among parcels whose contents fit the same kinds, which
must be the group's own within sampling error (the container follows the contents, never the label).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from parcelscan.datasets.manifest import ManifestRecord
from parcelscan.datasets.simulator.streams import CONTAINER_KINDS, POSTAL_TABLE, carriers

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
        "stream": stream_stats(records),
    }


def _share(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def _shares(counter: Counter) -> dict:
    total = sum(counter.values())
    return {k: {"count": v, "share": _share(v, total)} for k, v in sorted(counter.items(), key=lambda kv: str(kv[0]))}


def stream_stats(records: list[ManifestRecord]) -> dict:
    """Realised frequencies of the stream, the twin share of clear parcels, and for ``postal`` each documented
    frequency beside its realised value with the binomial standard error (|z| <= 2: within sampling error)."""
    clears = [r for r in records if r.label == "clear"]
    lookalikes = [r for r in clears if r.lookalike]
    ordinary = [r for r in clears if not r.lookalike]
    twins = [r for r in clears if r.twin_of]
    fills = Counter(r.provenance.get("fill") for r in lookalikes)
    twin_fills = Counter(r.provenance.get("fill") for r in twins)
    mixes = sorted({str(r.provenance.get("mix", "stress")) for r in records})
    out = {
        "mix": mixes[0] if len(mixes) == 1 else mixes,
        "suspect_share": _share(len(records) - len(clears), len(records)),
        "lookalike_share_of_clears": _share(len(lookalikes), len(clears)),
        "twin_share_of_clears": _share(len(twins), len(clears)),
        "twin_share_of_lookalikes": _share(len(twins), len(lookalikes)),
        "twin_of_unknown": sum(r.twin_of is None for r in records),
        "twins_per_target": dict(sorted(Counter(t for r in twins for t in r.twin_of).items())),
        "twin_fills": {name: {"lookalikes": n, "twins": twin_fills.get(name, 0)} for name, n in sorted(
            fills.items(), key=lambda kv: str(kv[0]))},
        "dense_metal_share_of_ordinary_clears": _share(
            sum(r.provenance.get("dense_metal_objects", 0) > 0 for r in ordinary), len(ordinary)),
        "lookalike_scenarios": _shares(Counter(r.lookalike for r in lookalikes)),
        "containers_of_ordinary_clears": _shares(Counter(r.provenance.get("container") for r in ordinary)),
        "containers_by_label": {label: _shares(Counter(r.provenance.get("container") for r in records
                                                       if r.label == label)) for label in ("clear", "suspect")},
    }
    if out["mix"] == "postal":
        out["postal_table"] = _against_table(out, records)
        out["container_leak"] = container_leak(records)
    return out


def _carriers_of(record: ManifestRecord) -> tuple[str, ...] | None:
    """The container kinds the postal law let this parcel draw from (None: a scenario without a law)."""
    scenario = record.scenario if record.label == "suspect" else record.lookalike
    try:
        return carriers(scenario or None, record.provenance.get("dense_metal_objects", 0) > 0)
    except ValueError:
        return None


def container_leak(records: list[ManifestRecord]) -> dict:
    """What the container kind tells about the label beyond the contents. Parcels are grouped by the kinds
    that can carry their contents (``streams.carriers``); in each group the suspect share per kind against
    the group's (binomial z), and I(kind; label | group) in bits (0 when suspect and clear draw alike; under
    independence its expected value from sampling alone is about (kinds-1)/(2 N ln 2))."""
    groups: dict[str, list[ManifestRecord]] = {}
    for record in records:
        allowed = _carriers_of(record)
        if allowed is not None:
            groups.setdefault("+".join(allowed), []).append(record)
    total = sum(len(g) for g in groups.values())
    out: dict = {"groups": {}}
    information = 0.0
    for name, group in sorted(groups.items()):
        n = len(group)
        share = sum(r.label == "suspect" for r in group) / n
        kinds = {}
        for kind in CONTAINER_KINDS:
            in_kind = [r for r in group if r.provenance.get("container") == kind]
            if not in_kind:
                continue
            k = sum(r.label == "suspect" for r in in_kind)
            se = float(np.sqrt(share * (1 - share) / len(in_kind)))
            kinds[kind] = {"parcels": len(in_kind), "suspect_share": _share(k, len(in_kind)),
                           "z": round((k / len(in_kind) - share) / se, 2) if se else None}
            for count, label_share in ((k, share), (len(in_kind) - k, 1 - share)):
                if count:
                    information += count / total * float(np.log2(count / (len(in_kind) * label_share)))
        out["groups"][name] = {"parcels": n, "suspect_share": round(share, 4), "kinds": kinds}
    out["conditional_mutual_information_bits"] = round(information, 5) if total else None
    return out


def _against_table(out: dict, records: list[ManifestRecord]) -> dict:
    """Each documented frequency beside its realised value. The container table is checked on the parcels whose
    contents fit every kind (ordinary goods without a dense metal object, powder pouches), suspect or clear:
    those draw from it unrestricted."""
    clears = [r for r in records if r.label == "clear"]
    lookalikes = [r for r in clears if r.lookalike]
    ordinary = [r for r in clears if not r.lookalike]
    unrestricted = [r for r in records if _carriers_of(r) == CONTAINER_KINDS]
    realised = {
        ("lookalike_share", "clear"): (len(lookalikes), len(clears)),
        ("dense_metal_share", "clear"): (sum(r.provenance.get("dense_metal_objects", 0) > 0 for r in ordinary),
                                         len(ordinary)),
    }
    for name in POSTAL_TABLE["lookalike_scenario"]:
        realised[("lookalike_scenario", name)] = (sum(r.lookalike == name for r in lookalikes), len(lookalikes))
    for kind in POSTAL_TABLE["container"]:
        realised[("container", kind)] = (sum(r.provenance.get("container") == kind for r in unrestricted),
                                         len(unrestricted))
    table = {}
    for (group, key), (count, total) in realised.items():
        p = POSTAL_TABLE[group][key].value
        se = float(np.sqrt(p * (1 - p) / total)) if total else None
        share = count / total if total else None
        table[f"{group}.{key}"] = {
            "documented": p, "realised": None if share is None else round(share, 4), "count": count, "of": total,
            "standard_error": None if se is None else round(se, 4),
            "z": None if not se else round((share - p) / se, 2),
        }
    return table


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
    stream = stats.get("stream")
    if stream:
        lines.append(
            f"stream {stream['mix']}: look-alikes in {_pct(stream['lookalike_share_of_clears'])} of clear parcels, "
            f"dual-energy twins in {_pct(stream['twin_share_of_clears'])} of clear parcels "
            f"({_pct(stream['twin_share_of_lookalikes'])} of look-alikes), a dense metal object in "
            f"{_pct(stream['dense_metal_share_of_ordinary_clears'])} of ordinary clear parcels"
        )
        for key, row in stream.get("postal_table", {}).items():
            lines.append(f"  {key:32s} documented {row['documented']:.3f}  realised {row['realised']} "
                         f"({row['count']}/{row['of']}, z {row['z']})")
        leak = stream.get("container_leak")
        if leak:
            for name, group in leak["groups"].items():
                kinds = ", ".join(f"{k} {v['suspect_share']} (z {v['z']})" for k, v in group["kinds"].items())
                lines.append(f"  contents fit {name}: suspect share {group['suspect_share']:.3f}; per kind {kinds}")
            lines.append(f"  I(container kind; label | contents) = {leak['conditional_mutual_information_bits']} bits")
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
