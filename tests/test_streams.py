"""``simulate --mix stress|postal`` and per-scan twin labels: the stress law keeps its pixels, the postal law
draws its documented frequencies, every simulated manifest line carries ``twin_of``, stats.json reports the
realised frequencies and the twin share of clear parcels."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from parcelscan.datasets.manifest import MANIFEST_NAME, ManifestRecord, read_manifest, record_from_dict
from parcelscan.datasets.physics.materials import TARGET_MATERIALS
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.simulator.generate import run_simulate
from parcelscan.datasets.simulator.parcel import (
    SimConfig,
    _streams,
    build_parcel,
    build_scene,
    plan_for,
    postal_concealment,
    simulate_scan,
)
from parcelscan.datasets.simulator.simstats import container_leak
from parcelscan.datasets.simulator.streams import CONTAINER_KINDS, POSTAL_TABLE, carriers, container_weights
from parcelscan.errors import ParcelscanError


@pytest.fixture(scope="module")
def coarse_profile():
    return default_profile().with_changes(channels=256, pixel_pitch_mm=2.5)


def _run(out: Path, profile, count: int, seed: int, mix: str, suspect_fraction: float = 0.5) -> list:
    out.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(count=count, seed=seed, workers=1, suspect_fraction=suspect_fraction, scenarios=None,
                              no_progress=True, mix=mix)
    assert run_simulate(args, profile, out) == 0
    return read_manifest(out / MANIFEST_NAME)


# Scans 0-7 of seed 7 under the coarse profile, made by the generator *before* --mix and twin labels existed
# (commit 3ad6590; scan 4 re-pinned at scene-3, whose only change is the geometry of a few goods): label,
# scenario, material, look-alike, fill, spectral variant, container, rows, and the sums of the low and high
# images. The sums tolerate a float rounding difference of a grey level here and there on another CPU, not
# another noise draw (which moves them by ~1e5).
STRESS_BEFORE = [
    (0, "clear", "none", None, None, None, "cu-20%", "box", 244, 3574561059, 3641135753),
    (1, "clear", "none", None, None, None, "kv+10", "box", 255, 3896626758, 3958898302),
    (2, "clear", "none", None, "tile_stack", "Pb", "kv-10", "box", 192, 2663614017, 2673790680),
    (3, "suspect", "machine_part", "Dy2O3", None, "Dy2O3", "base", "box", 195, 2581910599, 2602383827),
    # scene-3: scan 4's brass-fitting companion has the real (thinner) walls of contents.brass_fittings
    (4, "suspect", "water_bottle", "Y2O3", None, "Y2O3", "base", "box", 191, 2802303399, 2854514213),
    (5, "clear", "none", None, "mail_pouch", "zinc oxide", "base", "poly_mailer", 317, 5019760892, 5066774868),
    (6, "clear", "none", None, "tile_stack", "cardboard", "kv-10", "box", 208, 2613998672, 2690142279),
    (7, "clear", "none", None, None, None, "base", "box", 183, 2986381763, 3001152940),
]


def test_stress_mix_gives_the_pixels_of_the_generator_before_it(coarse_profile):
    config = SimConfig(coarse_profile, seed=7, mix="stress")
    for index, label, scenario, material, lookalike, fill, variant, container, rows, low, high in STRESS_BEFORE:
        scan = simulate_scan(config, index)
        p = scan.provenance
        assert (scan.labels["label"], scan.labels["scenario"], scan.labels["material"], scan.labels["lookalike"],
                p.get("fill"), p["scanner_variant"], p["container"], p["rows"]) == (
            label, scenario, material, lookalike, fill, variant, container, rows)
        assert abs(int(scan.low.astype(np.int64).sum()) - low) < 2000
        assert abs(int(scan.high.astype(np.int64).sum()) - high) < 2000
        assert p["mix"] == "stress"
        if label == "suspect" or lookalike is None:
            assert scan.labels["twin_of"] == []
    # a zinc-oxide pouch is a twin of germanium dioxide
    assert "GeO2" in simulate_scan(config, 5).labels["twin_of"]


def _lookalike_scans(profile, fill: str, wanted: int, limit: int = 400) -> list:
    """Look-alike scans whose fill is ``fill`` (scenes are cheap to plan: only matching ones are scanned)."""
    config = SimConfig(profile, seed=2024, suspect_fraction=0.0, lookalike_share=1.0)
    found = []
    for index in range(limit):
        if build_scene(config, index).parcel.concealment.fill.name == fill:
            found.append(simulate_scan(config, index))
            if len(found) == wanted:
                break
    assert len(found) == wanted, f"only {len(found)} {fill} fills in {limit} look-alikes"
    return found


def test_zinc_oxide_fills_are_twins_of_germanium_dioxide_and_salt_fills_of_nothing(coarse_profile):
    for scan in _lookalike_scans(coarse_profile, "zinc oxide", 3):
        assert "GeO2" in scan.labels["twin_of"], scan.provenance["fill_signature"]
    for scan in _lookalike_scans(coarse_profile, "salt", 3):
        assert scan.labels["twin_of"] == [], scan.provenance["fill_signature"]


def test_every_simulated_line_has_twin_of_and_stats_report_the_twin_share(tmp_path, coarse_profile):
    records = _run(tmp_path, coarse_profile, 10, seed=41, mix="stress")
    for record in records:
        assert isinstance(record.twin_of, list) and set(record.twin_of) <= set(TARGET_MATERIALS)
        if record.label == "suspect" or record.lookalike is None:
            assert record.twin_of == []
        line = json.loads(next(x for x in (tmp_path / MANIFEST_NAME).read_text().splitlines()
                               if record.scan_id in x))
        assert "twin_of" in line and line["provenance"]["mix"] == "stress"
    stream = json.loads((tmp_path / "stats.json").read_text())["stream"]
    clears = [r for r in records if r.label == "clear"]
    assert stream["mix"] == "stress"
    assert stream["twin_share_of_clears"] == pytest.approx(sum(bool(r.twin_of) for r in clears) / len(clears),
                                                           abs=1e-4)
    assert stream["twin_of_unknown"] == 0 and "postal_table" not in stream


def test_imported_and_real_scans_have_unknown_twins_and_suspects_are_nobodys_twin():
    record = ManifestRecord("x", {"low": "x_low.png", "high": "x_high.png"}, "clear", source="station")
    assert json.loads(record.to_json())["twin_of"] is None
    data = json.loads(record.to_json())
    assert record_from_dict(data).twin_of is None
    with pytest.raises(ParcelscanError, match="twin_of"):
        record_from_dict({**data, "twin_of": "GeO2"})
    with pytest.raises(ParcelscanError, match="nobody's twin"):
        record_from_dict({**data, "label": "suspect", "scenario": "mail_pouch", "twin_of": ["GeO2"]})


def test_postal_plans_draw_the_documented_frequencies(coarse_profile):
    """4,000 plans of the postal law (no scans: plans are cheap) against the table, within 3.5 standard errors."""
    config = SimConfig(coarse_profile, seed=5, suspect_fraction=0.2, mix="postal")
    plans = [plan_for(config, i) for i in range(4000)]
    clears = [p for p in plans if p.label == "clear"]
    ordinary = [p for p in clears if p.lookalike is None]
    lookalikes = [p for p in clears if p.lookalike is not None]

    def within(count: int, total: int, expected: float) -> None:
        se = math.sqrt(expected * (1 - expected) / total)
        assert abs(count / total - expected) < 3.5 * se, (count, total, expected)

    within(len(plans) - len(clears), len(plans), 0.2)  # --suspect-fraction still sets the suspect share
    within(len(lookalikes), len(clears), POSTAL_TABLE["lookalike_share"]["clear"].value)
    within(sum(p.dense_metal for p in ordinary), len(ordinary), POSTAL_TABLE["dense_metal_share"]["clear"].value)
    # parcels whose contents fit every kind (ordinary goods, pouches; suspect or clear) draw the table itself
    unrestricted = [p for p in plans if _contents_carriers(p) == CONTAINER_KINDS]
    for kind, frequency in POSTAL_TABLE["container"].items():
        within(sum(p.container_kind == kind for p in unrestricted), len(unrestricted), frequency.value)
    # an ordinary parcel with a dense metal object draws the table without letters
    dense = [p for p in ordinary if p.dense_metal]
    for kind, weight in zip(*container_weights(carriers(None, True)), strict=True):
        within(sum(p.container_kind == kind for p in dense), len(dense), weight)
    for scenario, frequency in POSTAL_TABLE["lookalike_scenario"].items():
        within(sum(p.lookalike == scenario for p in lookalikes), len(lookalikes), frequency.value)
    assert all(f.reason for group in POSTAL_TABLE.values() for f in group.values())


def test_postal_run_writes_its_frequencies_beside_the_table(tmp_path, coarse_profile):
    records = _run(tmp_path, coarse_profile, 12, seed=8, mix="postal", suspect_fraction=0.25)
    assert all(r.provenance["mix"] == "postal" and isinstance(r.twin_of, list) for r in records)
    stream = json.loads((tmp_path / "stats.json").read_text())["stream"]
    assert stream["mix"] == "postal"
    table = stream["postal_table"]
    assert table["lookalike_share.clear"]["documented"] == POSTAL_TABLE["lookalike_share"]["clear"].value
    assert set(table) >= {f"container.{kind}" for kind in POSTAL_TABLE["container"]}
    for row in table.values():
        assert row["of"] == 0 or row["realised"] == pytest.approx(row["count"] / row["of"], abs=1e-4)
    # the same seed under the other mix is another stream, never resumed into this directory
    with pytest.raises(ParcelscanError, match="mix"):
        _run(tmp_path, coarse_profile, 12, seed=8, mix="stress", suspect_fraction=0.25)


def _contents_carriers(plan) -> tuple[str, ...]:
    scenario = plan.scenario if plan.label == "suspect" else plan.lookalike
    return carriers(scenario, plan.dense_metal)


def test_postal_container_kind_tells_the_label_nothing_beyond_the_contents(coarse_profile):
    """4,000 postal plans at suspect share 0.5. Every parcel's container kind is one that can carry its contents,
    and among parcels whose contents fit the same kinds the suspect share of each kind is the group's within
    3.5 standard errors (the old law, suspects in their scenario's packaging and ordinary clears from the
    table, put 30 % suspects in padded envelopes against 18 % overall: z 7 on seed 6400). A kind the contents
    force (a tile stack only in a box) is the only thing the container may tell."""
    config = SimConfig(coarse_profile, seed=6410, suspect_fraction=0.5, mix="postal")
    plans = [plan_for(config, i) for i in range(4000)]
    groups: dict[tuple[str, ...], list] = {}
    for plan in plans:
        allowed = _contents_carriers(plan)
        assert plan.container_kind in allowed, (plan, allowed)
        groups.setdefault(allowed, []).append(plan)
    pouches = [p for p in plans if "mail_pouch" in (p.scenario, p.lookalike)]
    assert {p.label for p in groups[CONTAINER_KINDS]} == {"clear", "suspect"} and pouches
    assert {p.container_kind for p in groups[("box",)]} == {"box"}
    tested = 0
    for allowed, group in groups.items():
        share = sum(p.label == "suspect" for p in group) / len(group)
        if len(allowed) < 2 or share in (0.0, 1.0):
            continue
        for kind in allowed:
            in_kind = [p for p in group if p.container_kind == kind]
            se = math.sqrt(share * (1 - share) / len(in_kind))
            z = (sum(p.label == "suspect" for p in in_kind) / len(in_kind) - share) / se
            assert abs(z) < 3.5, (allowed, kind, len(in_kind), share, z)
            tested += 1
    assert tested == len(CONTAINER_KINDS)
    # the same check as stats.json reports it, on manifest-like records of these plans
    records = [ManifestRecord(f"p{i}", {}, p.label, scenario=p.scenario, lookalike=p.lookalike,
                              provenance={"container": p.container_kind, "dense_metal_objects": int(p.dense_metal)})
               for i, p in enumerate(plans)]
    leak = container_leak(records)
    assert all(abs(v["z"]) < 3.5 for g in leak["groups"].values() for v in g["kinds"].values() if v["z"] is not None)
    assert leak["conditional_mutual_information_bits"] < 0.005  # the old law: 0.0175 bits


def test_postal_parcels_travel_in_the_planned_kind(coarse_profile):
    """The plan's container kind is the parcel's (parcel stage only: no raster), a pouch in any kind included."""
    config = SimConfig(coarse_profile, seed=6411, suspect_fraction=0.5, mix="postal")
    seen = set()
    for index in range(60):
        _, parcel_rng, *_ = _streams(config, index)
        plan = plan_for(config, index)
        parcel = build_parcel(parcel_rng, plan, config)
        assert parcel.container.kind == plan.container_kind, (index, plan)
        if plan.label == "suspect" or plan.lookalike:
            seen.add((plan.scenario if plan.label == "suspect" else plan.lookalike, parcel.container.kind))
    assert {kind for scenario, kind in seen if scenario == "mail_pouch"} - {"box"}, seen
    with pytest.raises(ValueError, match="cannot travel"):
        postal_concealment(np.random.default_rng(0), "tile_stack", None, "letter")
