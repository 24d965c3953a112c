"""A powder alarm names the material its region looks like, and its benign twin (issue 15 part 1, reason class
``twin``): "powder signature consistent with La2O3 — or its benign twin barite: confirm by XRF or opening".

The words come from ``verdict.signature_reason``; the numbers from the declaration check's own observation of the
bodies the model localises (``declaration.observe`` → ``physics.mass.body_mass`` → ``physics.signature.lookup``),
on real simulated scans of La2O3 pouches (dev seed 6300), in the dev install and in a station interpreter where
xraydb, spekpy and scipy cannot be imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from parcelscan.datasets.physics.materials import TARGET_MATERIALS
from parcelscan.datasets.scans.readers import discover_scans
from parcelscan.inference.declaration import observe
from parcelscan.inference.inspector import Inspector
from parcelscan.inference.policy import DEFAULT_POLICY_PATH, load_policy
from parcelscan.inference.verdict import Verdict, signature_reason
from parcelscan.model.registry import SHIPPED_DEFAULT

sys.path.insert(0, str(Path(__file__).parent))
from test_station_install import _CLI, _station_python

SEED, COUNT = 6300, 6
THRESHOLD = 0.5  # below every score of these scans: each is a powder alarm, so each body is looked up


def _body(nearest, twins, targets, area_cm2=12.5, mass_g=48.0, d_prime=0.8):
    return {"nearest": nearest, "twins": twins, "targets": targets, "area_cm2": area_cm2, "mass_g": mass_g,
            "d_prime": d_prime}


# --- the words ------------------------------------------------------------------------------------------------------
def test_a_target_with_a_benign_twin_is_named_with_it():
    words, twin = signature_reason([_body("La2O3", ["La2O3", "barite", "CeO2"], ["La2O3", "CeO2"])])
    assert twin
    assert words == ("powder signature consistent with La2O3 or CeO2 — or its benign twin barite: confirm by XRF "
                     "or opening (region 12.5 cm², ≈ 48 g)")


def test_the_other_cases_say_what_they_are():
    only_targets, twin = signature_reason([_body("Nd2O3", ["Nd2O3", "Pr6O11"], ["Nd2O3", "Pr6O11"]),
                                           _body("steel", ["steel"], [])])
    assert not twin and only_targets.startswith("powder signature consistent with Nd2O3 or Pr6O11, no benign")
    assert "the largest of 2" in only_targets
    benign, twin = signature_reason([_body("barite", ["barite", "zircon"], [])])
    assert twin and benign.startswith("powder signature consistent with benign barite or zircon, no target")
    alone, twin = signature_reason([_body("lead", [], [], d_prime=6.3)])
    assert not twin and alone.startswith("powder signature matches no listed material: nearest lead at d′ 6.3, a "
                                         "match needs d′ < 4.2 — clutter over the region or a material outside")
    assert signature_reason([]) == ("powder signature not named: the model localised no region to weigh", False)
    assert not signature_reason([_body(None, [], [])])[1]


def test_a_mass_behind_a_partly_stopped_beam_is_written_as_a_lower_bound():
    body = {**_body("Nd2O3", ["Nd2O3"], ["Nd2O3"]), "opaque_share": 0.08, "mass_lower_bound": True}
    words, _ = signature_reason([body])
    assert words.endswith("(region 12.5 cm², ≥ 48 g)")


def test_the_grams_say_which_material_they_assume_and_a_twin_alarm_gives_the_benign_reading_too():
    """The same attenuation is ~13 times the mass as salt as it is as Dy2O3 (the demo's sim31-000641): a number
    alone would tell an inspector to expect 181 g where a benign filling would weigh 2.1-2.5 kg."""
    body = {**_body("sand", ["sand"], [], area_cm2=188.1, mass_g=181.3), "mass_material": "Dy2O3",
            "mass_range_g": [181.3, 181.3],
            "mass_as_g": {"Dy2O3": 181.3, "titanium white": 2091.1, "CaCO3": 2399.2, "salt": 2512.6}}
    words, twin = signature_reason([body])
    assert twin
    assert words.endswith("(region 188.1 cm², ≈ 181.3 g as Dy2O3; ≈ 2091–2513 g as titanium white or CaCO3 or salt)")
    several = {**_body("Nd2O3", ["Nd2O3", "Pr6O11"], ["Nd2O3", "Pr6O11"]), "mass_material": "Nd2O3",
               "mass_range_g": [40.0, 61.0], "mass_as_g": {"Nd2O3": 44.0}}
    words, twin = signature_reason([several])
    assert not twin  # no benign twin: no benign reading is added
    assert words.endswith("(region 12.5 cm², ≈ 48 g as a target powder (40–61 g over the targets it reads as))")


def test_a_region_the_beam_does_not_cross_readably_is_not_called_empty():
    """A body without signature is either empty (no grams) or full of matter the scan cannot name (the demo's first
    suspect: 1.26 kg behind a casting, stopped over 51 % of its region). Only the first may be called "no material"."""
    empty = {**_body(None, [], [], mass_g=0.0), "opaque_share": 0.0}
    assert signature_reason([empty]) == (
        "powder signature not named: the localised region shows no material over its surroundings", False)
    behind_metal = {**_body(None, [], [], area_cm2=500.3, mass_g=1257.6), "opaque_share": 0.514,
                    "mass_lower_bound": True}
    words, twin = signature_reason([empty, behind_metal])
    assert not twin
    assert words == ("powder signature not readable: the beam is stopped over 51% of the localised region, so what it "
                     "holds cannot be named (region 500.3 cm², ≥ 1257.6 g as a target powder)")
    thin = {**_body(None, [], [], mass_g=14.0), "opaque_share": 0.0, "mass_lower_bound": False}
    words, _ = signature_reason([thin])
    assert words.startswith("powder signature not readable: too few of the localised region's pixels are read")
    assert words.endswith("(region 12.5 cm², ≈ 14 g as a target powder)")


# --- real simulated scans -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pouches(tmp_path_factory):
    """La2O3 in mail pouches (the simulator's own scenario), written as station scans."""
    from parcelscan.datasets.physics.profile import default_profile
    from parcelscan.datasets.simulator.generate import write_simulated
    from parcelscan.datasets.simulator.parcel import SimConfig, simulate_scan

    out = tmp_path_factory.mktemp("pouches")
    profile = default_profile()
    config = SimConfig(profile, seed=SEED, suspect_fraction=1.0, scenarios=("mail_pouch",), materials=("La2O3",),
                       spectral_variants=False)
    for index in range(COUNT):
        scan = simulate_scan(config, index)
        assert scan.labels["label"] == "suspect"
        write_simulated(scan, out, profile)
    return out


@pytest.fixture(scope="module")
def judged(pouches):
    inspector = Inspector(SHIPPED_DEFAULT, threshold=THRESHOLD, threads=1)
    outputs = {}
    inspector.on_outputs = lambda verdict, out: outputs.__setitem__(verdict.scan_id, out)
    verdicts = list(inspector.inspect_many(discover_scans([pouches]), workers=0))
    assert len(verdicts) == COUNT
    return verdicts, outputs


def test_every_powder_alarm_names_the_signature_of_its_region(judged):
    verdicts, outputs = judged
    named_target = twins = 0
    for verdict in verdicts:
        Verdict.from_dict(verdict.to_dict())  # the contract holds with class twin
        assert verdict.verdict == "suspect" and "powder" in verdict.reason_classes
        words = [r for r in verdict.reasons if r.startswith("powder signature")]
        assert len(words) == 1, verdict.reasons
        out = outputs[verdict.scan_id]
        # the observation the reason was made from rides on the outputs, and is the declaration check's own
        assert out.observed is not None
        again = observe(out.scan, out.tile_heatmaps, out.prepared)
        assert again["bodies"] == out.observed["bodies"]
        bodies = [b for b in out.observed["bodies"] if b["nearest"]]
        assert bodies, f"{verdict.scan_id}: the model localised no body in a pouch of La2O3"
        body = bodies[0]
        benign = [n for n in body["twins"] if n not in body["targets"]]
        assert ("twin" in verdict.reason_classes) == bool(benign)
        assert (words[0], bool(benign)) == signature_reason(out.observed["bodies"])
        if benign:
            twins += 1
            assert f"benign twin {benign[0]}" in words[0] or f"benign twins {benign[0]}" in words[0] or \
                f"benign {benign[0]}" in words[0]
        named_target += body["nearest"] in TARGET_MATERIALS
    # the physics on these six pouches: most bodies read as a (rare-earth) target, and some also as a benign family
    assert named_target >= COUNT // 2 and twins >= 1


def test_only_flagged_scans_pay_for_the_lookup_and_a_policy_can_leave_twin_out(pouches, tmp_path):
    refs = discover_scans([pouches])[:2]
    quiet = Inspector(SHIPPED_DEFAULT, threshold=1.0, threads=1)  # nothing reaches the threshold
    seen = []
    quiet.on_outputs = lambda verdict, out: seen.append(out.observed)
    for verdict in quiet.inspect_many(refs, workers=0):
        assert "powder" not in verdict.reason_classes
        assert not any(r.startswith("powder signature") for r in verdict.reasons)
    assert seen == [None, None]
    policy = tmp_path / "no-twin.toml"
    policy.write_text(DEFAULT_POLICY_PATH.read_text().replace('"powder", "twin", ', '"powder", '))
    assert "twin" not in load_policy(policy).alarm_reasons
    plain = Inspector(SHIPPED_DEFAULT, threshold=THRESHOLD, threads=1, policy=load_policy(policy))
    for verdict in plain.inspect_many(refs, workers=0):
        assert verdict.reason_classes[0] == "powder" and "twin" not in verdict.reason_classes
        assert not any(r.startswith("powder signature") for r in verdict.reasons)


def test_the_station_install_names_the_same_twins_without_the_physics_libraries(pouches, judged):
    """The lookup runs from the shipped tables: xraydb, spekpy, scipy (and torch) cannot be imported here."""
    args = ["inspect", str(pouches), "--threshold", str(THRESHOLD), "--threads", "1", "--workers", "0"]
    station = _station_python(_CLI, *args)
    assert station.returncode == 1, station.stderr[-2000:]
    lines = {line["scan_id"]: line for line in map(json.loads, station.stdout.splitlines())}
    verdicts, _ = judged
    for verdict in verdicts:
        line = lines[verdict.scan_id]
        assert [r for r in line["reasons"] if r.startswith("powder signature")] == \
            [r for r in verdict.reasons if r.startswith("powder signature")]
        assert ("twin" in line["reason_classes"]) == ("twin" in verdict.reason_classes)
    assert any("twin" in line["reason_classes"] for line in lines.values())
    assert "consistent with" in station.stderr  # the per-scan summary line carries the words
