"""Customs declarations: the S10 id and CN23 format (``scans.customs``), the simulator's declarations
(``simulator.declarations``: own random stream, documented rates, shared vocabulary) and the station's check
(``inference.declaration``)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parcelscan.datasets.manifest import MANIFEST_NAME, read_manifest, record_from_dict
from parcelscan.datasets.physics.attenuation import station_references
from parcelscan.datasets.physics.materials import TARGET_MATERIALS
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.preprocess import scan_pitch_mm
from parcelscan.datasets.scans.customs import make_s10, parse_declaration, s10_check_digit, s10_valid
from parcelscan.datasets.scans.scanfile import read_png16
from parcelscan.datasets.simulator.concealments import LOOKALIKE_FILLS
from parcelscan.datasets.simulator.contents import BENIGN_KINDS
from parcelscan.datasets.simulator.declarations import (
    COVER_WORDS,
    DECLARATION_TABLE,
    FILL_ALTERNATIVES,
    FILL_WORDS,
    GOODS_WORDS,
    TARGET_WORDS,
    VAGUE_WORDS,
    VESSEL_WORDS,
    declare,
    part_mass_g,
)
from parcelscan.datasets.simulator.generate import run_simulate
from parcelscan.datasets.simulator.parcel import SimConfig, simulate_scan
from parcelscan.errors import ParcelscanError
from parcelscan.inference.declaration import HS_TABLE, DeclarationChecker, check_declaration, load_declarations
from parcelscan.inference.verdict import Verdict

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scans"
ITEM = "RR123456785CN"
TARGETS = set(TARGET_MATERIALS)


@pytest.fixture(scope="module")
def coarse_profile():
    return default_profile().with_changes(channels=256, pixel_pitch_mm=2.5)


def _simulate(out: Path, profile, count: int, seed: int, mix: str, suspect_fraction: float = 0.5) -> list:
    out.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(count=count, seed=seed, workers=1, suspect_fraction=suspect_fraction, scenarios=None,
                              no_progress=True, mix=mix)
    assert run_simulate(args, profile, out) == 0
    return read_manifest(out / MANIFEST_NAME)


# --- the format ------------------------------------------------------------------------------------------------
def test_s10_check_digit_of_the_upu_example_and_what_is_refused():
    assert s10_check_digit("12345678") == 5 and s10_valid("RR123456785CN")
    assert make_s10("RR", 12345678, "CN") == "RR123456785CN"
    assert s10_check_digit("00000000") == 5  # 11 - 0 -> 11 -> 5
    assert not s10_valid("RR123456784CN")  # wrong check digit
    for bad in ("rr123456785CN", "RR12345678CN", "RR123456785C", 123, None, "RR123456785CN " * 3):
        assert not s10_valid(bad)


def test_a_well_formed_declaration_reads_without_problems():
    declaration = parse_declaration({
        "item_id": "RR123456785CN", "category": "sale_of_goods", "origin": "CN", "currency": "USD",
        "gross_weight_kg": 2.0,
        "items": [{"description": "machinery parts", "hs_code": "8487.90", "quantity": 2, "net_weight_kg": 1.8,
                   "value": 40}]})
    assert declaration.problems == []
    assert declaration.items[0].hs_code == "848790" and declaration.net_weight_kg == pytest.approx(1.8)
    assert "'machinery parts' (HS 8487.90), 1.8 kg" in declaration.summary()


# --- the simulator -----------------------------------------------------------------------------------------------
# Scans of seed 7 under the coarse profile made by the generator before --mix and declarations existed (the
# values of tests/test_streams.py STRESS_BEFORE): index, label, rows and the sums of the low and high images.
PIXELS_BEFORE = [
    (2, "clear", 192, 2663614017, 2673790680),
    (3, "suspect", 195, 2581910599, 2602383827),
    (5, "clear", 317, 5019760892, 5066774868),
]


def test_declarations_leave_the_pixels_of_existing_seeds_unchanged(tmp_path, coarse_profile):
    """Through the whole `simulate` path (the declaration hook included), the PNGs written for seed 7 are those of
    the generator before declarations existed."""
    records = {r.scan_id: r for r in _simulate(tmp_path, coarse_profile, 6, 7, "stress")}
    for index, label, rows, low_sum, high_sum in PIXELS_BEFORE:
        record = records[f"sim7-{index:06d}"]
        low = read_png16(tmp_path / record.files["low"])
        high = read_png16(tmp_path / record.files["high"])
        assert record.label == label and low.shape[0] == rows
        assert abs(int(low.astype(np.int64).sum()) - low_sum) < 2000
        assert abs(int(high.astype(np.int64).sum()) - high_sum) < 2000
        sidecar = json.loads((tmp_path / record.files["sidecar"]).read_text())
        assert s10_valid(sidecar["item_id"])


def test_every_parcel_has_an_s10_id_and_declarations_follow_the_table(tmp_path, coarse_profile):
    records = _simulate(tmp_path, coarse_profile, 40, 11, "postal")
    declared = {"clear": [0, 0], "suspect": [0, 0]}
    ids = set()
    for record in records:
        sidecar = json.loads((tmp_path / record.files["sidecar"]).read_text())
        assert s10_valid(sidecar["item_id"])
        ids.add(sidecar["item_id"])
        declared[record.label][1] += 1
        if "declaration" not in sidecar:
            assert record.declaration_honest is None and record.declaration_names_twin is None
            continue
        declared[record.label][0] += 1
        declaration = parse_declaration(sidecar["declaration"])
        assert declaration.problems == [], declaration.problems
        assert declaration.item_id == sidecar["item_id"]
        assert all(item.hs_code and len(item.hs_code) == 6 for item in declaration.items)
        assert declaration.gross_weight_kg >= declaration.net_weight_kg * 0.99
        if record.label == "clear":
            assert record.declaration_honest is True and record.declaration_names_twin is None
        else:
            cover = record.provenance["declaration"]["cover"]
            assert record.declaration_honest is (cover == "honest")
            assert record.declaration_names_twin is cover.startswith("barium sulphate")
    assert len(ids) == len(records)
    # 40 scans: the declared shares are within sampling error of the table (binomial, 4 σ)
    for label, (yes, total) in declared.items():
        p = DECLARATION_TABLE["declared"][label].value
        assert abs(yes - p * total) <= 4 * np.sqrt(total * p * (1 - p)) + 1, (label, yes, total)


def test_the_declaration_comes_from_its_own_stream_and_is_deterministic(coarse_profile):
    config = SimConfig(coarse_profile, seed=5, mix="postal", suspect_fraction=1.0)
    scan = simulate_scan(config, 1)
    first, truth = declare(config, 1, scan)
    again, _ = declare(config, 1, simulate_scan(config, 1))
    assert first == again
    # simulate's path hands over the scan's own scene instead of rebuilding it: the same declaration
    assert scan.scene is not None and declare(config, 1, scan, scan.scene) == (first, truth)
    other, _ = declare(SimConfig(coarse_profile, seed=6, mix="postal", suspect_fraction=1.0), 1, scan)
    assert other["item_id"] != first["item_id"]
    if "declaration" in first:
        # the concealment's line weighs what the scale shows: at least the concealed powder's mass
        lines = first["declaration"]["items"]
        assert lines[0]["net_weight_kg"] * 1000 >= scan.labels["mass_g"] * 0.99
        assert truth["declaration_honest"] is (truth["draws"]["cover"] == "honest")


def test_parts_are_weighed_from_the_raster_exactly_as_by_projecting_them_again(coarse_profile):
    """The declaration weighs each part from the path-length sums ``rasterise`` took on the same grid: the same
    grams to the bit as projecting the part a second time (what it did before session 18)."""
    config = SimConfig(coarse_profile, seed=11, mix="postal", suspect_fraction=0.5)
    weighed = 0
    for index in range(6):
        scene = simulate_scan(config, index).scene
        parts, sums = scene.belt.parts, scene.raster.part_path_sums_mm
        assert len(sums) == len(parts)
        for part, path_sum in zip(parts, sums, strict=True):
            assert part_mass_g(part, scene.belt.grid, path_sum) == part_mass_g(part, scene.belt.grid)
            weighed += path_sum > 0
    assert weighed > 20


def test_honest_and_false_declarations_share_one_vocabulary():
    benign = {w for words, _ in GOODS_WORDS.values() for w in words} | set(VAGUE_WORDS)
    alternatives = [(words, code) for words, code, _ in FILL_ALTERNATIVES.values()]
    benign |= {w for words, _ in (*FILL_WORDS.values(), *VESSEL_WORDS.values(), *alternatives) for w in words}
    benign_codes = {code for _, code in (*GOODS_WORDS.values(), *FILL_WORDS.values(), *VESSEL_WORDS.values(),
                                         *alternatives)}
    for name, (words, code, _, _) in COVER_WORDS.items():
        assert set(words) & benign, name  # a cover's words are also what honest senders write
        assert code in benign_codes, name
    rates = DECLARATION_TABLE["suspect_cover"]
    assert set(rates) == {*COVER_WORDS, "honest"}


def test_the_manifest_refuses_a_non_boolean_declaration_flag():
    line = {"scan_id": "a", "files": {"low": "a_low.png", "high": "a_high.png"}, "label": "clear"}
    assert record_from_dict({**line, "declaration_honest": True}).declaration_honest is True
    with pytest.raises(ParcelscanError, match="declaration_honest"):
        record_from_dict({**line, "declaration_honest": "yes"})


# --- the station's check ---------------------------------------------------------------------------------------
def _declared(description: str, hs: str, net_kg: float = 1.0, gross_kg: float = 1.2, item_id=ITEM) -> dict:
    return {"item_id": item_id, "category": "sale_of_goods", "origin": "CN", "currency": "USD",
            "gross_weight_kg": gross_kg,
            "items": [{"description": description, "hs_code": hs, "quantity": 1, "net_weight_kg": net_kg,
                       "value": 10}]}


def _body(nearest: str, twins: list[str], mass_g: float = 800.0) -> dict:
    return {"mass_g": mass_g, "nearest": nearest, "twins": twins, "targets": [t for t in twins if t in TARGETS]}


def test_every_kind_of_goods_and_every_look_alike_fill_has_its_words():
    """A renamed or new kind of goods without words would be declared 'goods' under an unknown code."""
    assert sorted(set(BENIGN_KINDS) - set(GOODS_WORDS)) == []
    fills = {name for variants in LOOKALIKE_FILLS.values() for options in variants.values() for name, _ in options}
    vessel_declared = {name for name, _ in LOOKALIKE_FILLS["machine_part"]["cavity"]}
    vessel_declared |= {name for name, _ in LOOKALIKE_FILLS["tile_stack"]["sheet"]}
    vessel_declared |= {name for name, _ in LOOKALIKE_FILLS["tile_stack"]["pouch"]}
    assert sorted(fills - vessel_declared - set(FILL_WORDS)) == []


def test_the_hs_table_covers_every_code_the_simulator_writes():
    codes = {code for _, code in (*GOODS_WORDS.values(), *FILL_WORDS.values(), *VESSEL_WORDS.values())}
    codes |= {code for _, code in TARGET_WORDS.values()} | {code for _, code, _, _ in COVER_WORDS.values()}
    codes |= {code for _, code, _ in FILL_ALTERNATIVES.values()}
    assert sorted(c for c in codes if c[:4] not in HS_TABLE) == []
    references = {name for name, _, _ in station_references()}
    assert {name for heading in HS_TABLE.values() for name in heading.plausible} <= references


def test_rare_earth_oxide_declared_as_machinery_parts_is_a_mismatch_in_words():
    observed = {"bodies": [_body("Nd2O3", ["Nd2O3", "Pr6O11"], 1400.0)], "xray_mass_kg": 2.4}
    check = check_declaration(_declared("machinery parts", "8487.90", 2.0, 2.5), ITEM, observed, "sidecar")
    assert check.status == "mismatch" and check.to_dict()["priority"] == "raised"
    assert "declared 'machinery parts' (HS 8487.90), 2 kg" in check.reasons[0]
    assert "signature of Nd2O3 or Pr6O11" in check.reasons[0] and "1400 g" in check.reasons[0]
    honest = check_declaration(_declared("neodymium oxide", "2846.90", 1.4, 2.5), ITEM, observed, "sidecar")
    assert honest.status == "consistent"


def test_a_twin_declaration_is_consistent_and_never_lowers_the_alarm():
    observed = {"bodies": [_body("La2O3", ["La2O3", "barite", "CeO2"])], "xray_mass_kg": 1.0}
    check = check_declaration(_declared("barium sulphate, natural", "2511.10"), ITEM, observed, "sidecar")
    assert check.status == "consistent"
    verdict = _verdict("suspect")
    DeclarationChecker({ITEM: _declared("barium sulphate, natural", "2511.10")})(verdict, _outputs(ITEM, observed))
    assert verdict.verdict == "suspect" and verdict.declaration_check["status"] == "consistent"
    assert "declaration" not in verdict.reason_classes
    # the same parcel not analysed: its declaration cannot be confirmed (a mismatch that raises priority only)
    unread = Verdict(scan_id="a", inputs=[], verdict="manual_inspection", score=None, threshold=0.5, model=None,
                     error="unreadable", reasons=["not analysed: the model gave no score, a person must look"],
                     reason_classes=["unreadable"])
    DeclarationChecker({ITEM: _declared("barium sulphate, natural", "2511.10")})(unread, _outputs(ITEM))
    assert unread.verdict == "manual_inspection" and unread.declaration_check["status"] == "mismatch"
    assert "the scan was not analysed" in unread.declaration_check["reasons"][-1]


def test_absent_and_undeclared_mass():
    assert check_declaration(None, ITEM, {"bodies": []}, None).status == "absent"
    heavy = check_declaration(_declared("t-shirt", "6109.10", 0.3, 0.4), ITEM, {"bodies": [], "xray_mass_kg": 9.0},
                              "sidecar")
    assert heavy.status == "mismatch" and "undeclared mass" in heavy.reasons[0] and "≈ 9.0 kg" in heavy.reasons[0]
    floor = check_declaration(_declared("t-shirt", "6109.10", 0.3, 0.4), ITEM,
                              {"bodies": [], "xray_mass_kg": 9.0, "xray_mass_lower_bound": True}, "sidecar")
    assert floor.status == "mismatch" and "shows ≥ 9.0 kg" in floor.reasons[0]  # a floor proves the excess too
    organic = check_declaration(_declared("machinery parts", "8487.90"), ITEM,
                                {"bodies": [_body("sugar", ["sugar"])], "xray_mass_kg": 1.0}, "sidecar")
    assert organic.status == "consistent"  # organic bodies (food, packaging) are not what the check is about


def test_advance_data_files_json_lines_and_csv(tmp_path):
    jsonl = tmp_path / "advance.jsonl"
    jsonl.write_text(json.dumps(_declared("tiles", "6907.21")) + "\nnot json\n" + json.dumps({"no": "id"}) + "\n")
    warnings: list[str] = []
    data = load_declarations(jsonl, warnings.append)
    assert list(data) == [ITEM] and len(warnings) == 2
    table = tmp_path / "advance.csv"
    table.write_text("item_id,category,origin,currency,gross_weight_kg,description,hs_code,quantity,net_weight_kg,"
                     f"value\n{ITEM},gift,CN,USD,2.5,machinery parts,8487.90,1,1.0,20\n"
                     f"{ITEM},gift,CN,USD,2.5,tools,8205.59,1,1.2,15\n")
    declaration = parse_declaration(load_declarations(table)[ITEM])
    assert declaration.problems == [] and [i.hs_code for i in declaration.items] == ["848790", "820559"]


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                     lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                       max_size=4), max_leaves=12)
_FIELD = st.sampled_from(["item_id", "category", "items", "gross_weight_kg", "origin", "currency"])
_ITEM_FIELD = st.sampled_from(["description", "hs_code", "quantity", "net_weight_kg", "value"])
_HOSTILE = st.one_of(
    st.just("x" * 200_000), st.just(1e308), st.just(-5.0), st.just(float("nan")), st.just(float("inf")),
    st.just("9999.99"), st.just("RR123456784CN"), st.just(10**400), st.just([]), st.just({}), _JSON)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.dictionaries(_FIELD, _HOSTILE, max_size=6),
       item_fields=st.lists(st.dictionaries(_ITEM_FIELD, _HOSTILE, max_size=5), max_size=3),
       raw_instead=st.one_of(st.none(), _JSON), scan_id=st.one_of(st.just(ITEM), st.just("EE000000005DE"), _JSON),
       flagged=st.booleans())
def test_hostile_declarations_are_reported_and_never_clear_a_flagged_scan(fields, item_fields, raw_instead, scan_id,
                                                                         flagged):
    raw = raw_instead if raw_instead is not None else {**_declared("gift", "9503.00"), **fields,
                                                       "items": item_fields or fields.get("items")}
    verdict = _verdict("suspect" if flagged else "clear")
    meta = {"item_id": scan_id, "declaration": raw}
    DeclarationChecker()(verdict, SimpleNamespace(scan=SimpleNamespace(meta=meta, low=None, high=None),
                                                  prepared=None, tile_heatmaps=None))
    check = verdict.declaration_check
    assert verdict.verdict == ("suspect" if flagged else "clear")  # never cleared, never flagged by the check alone
    assert check["status"] in ("consistent", "mismatch")
    assert all(isinstance(r, str) and len(r) < 5000 for r in check["reasons"])
    if parse_declaration(raw).problems:
        assert check["status"] == "mismatch" and check["reasons"][0].startswith("declaration not usable")
    if flagged and check["status"] == "mismatch":
        assert "declaration" in verdict.reason_classes
    json.dumps(verdict.to_dict(), allow_nan=False)


def test_inspect_with_hostile_advance_data_keeps_every_alarm(tmp_path):
    """The sample scans through `parcelscan inspect`, once plain and once with each scan named in a hostile
    --declarations file: the same verdicts, every one with a declaration_check; hostile lines are reported."""
    scans = tmp_path / "scans"
    shutil.copytree(EXAMPLES, scans)
    ids = {}
    for n, sidecar in enumerate(sorted(scans.glob("sim*.json"))):
        data = json.loads(sidecar.read_text())
        ids[data["scan_id"]] = data["item_id"] = make_s10("RR", 10_000_000 + n, "CN")
        sidecar.write_text(json.dumps(data))
    hostile = [
        {"item_id": ids["sim31-000074"], "items": "machinery parts", "gross_weight_kg": "two"},
        {"item_id": ids["sim31-000077"], "items": [{"description": "x" * 100_000, "hs_code": "9999.99",
                                                    "net_weight_kg": 1e9}], "gross_weight_kg": -1},
        {"item_id": ids["sim31-000286"], "category": "gift", "items": [{"description": "tiles", "hs_code": [6907]}]},
        {**_declared("ceramic tiles", "6907.21", item_id="RR999999990CN"), "item_id": ids["sim31-000415"]},
        _declared("barium sulphate, natural", "2511.10", item_id=ids["sim31-000592"]),
    ]
    advance = tmp_path / "advance.jsonl"
    advance.write_text("".join(json.dumps(h) + "\n" for h in hostile) + "[1, 2]\n")
    plain = _inspect([str(scans)])
    checked = _inspect([str(scans), "--declarations", str(advance)])
    assert plain.returncode == checked.returncode and "Traceback" not in checked.stderr
    before = {v["scan_id"]: v for v in map(json.loads, plain.stdout.splitlines())}
    after = {v["scan_id"]: v for v in map(json.loads, checked.stdout.splitlines())}
    assert {k: v["verdict"] for k, v in before.items()} == {k: v["verdict"] for k, v in after.items()}
    assert all(v["declaration_check"]["status"] in ("consistent", "mismatch", "absent") for v in after.values())
    for scan_id in ("sim31-000074", "sim31-000077", "sim31-000286"):
        assert after[scan_id]["declaration_check"]["status"] == "mismatch"
        assert after[scan_id]["declaration_check"]["reasons"][0].startswith("declaration not usable")
    assert after["sim31-000141"]["declaration_check"]["status"] == "absent"
    assert "advance.jsonl:6: no item_id; line ignored" in checked.stderr  # the line [1, 2]
    for verdict in after.values():
        if verdict["verdict"] == "suspect":
            assert isinstance(verdict["powder_mass_g"], list)
    # what was read of each advance-data declaration travels in the check (the review page has no sidecar copy),
    # its texts cut and its numbers finite; an absent one carries none
    for scan_id, raw in zip(("sim31-000074", "sim31-000077", "sim31-000286", "sim31-000415", "sim31-000592"),
                            hostile, strict=True):
        declared = after[scan_id]["declaration_check"]["declared"]
        assert declared["item_id"] == raw["item_id"] and len(json.dumps(declared, allow_nan=False)) < 5000
    description = after["sim31-000077"]["declaration_check"]["declared"]["items"][0]["description"]
    assert set(description) == {"x"} and len(description) <= 200  # of 100,000
    assert after["sim31-000592"]["declaration_check"]["declared"]["items"][0]["hs_code"] == "251110"
    assert "declared" not in after["sim31-000141"]["declaration_check"]


def _inspect(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parcelscan", "inspect", *args, "--quiet"], capture_output=True,
                          text=True, timeout=600)


def _verdict(kind: str) -> Verdict:
    if kind == "clear":
        return Verdict(scan_id="a", inputs=[], verdict="clear", score=0.1, threshold=0.5, model=None)
    return Verdict(scan_id="a", inputs=[], verdict="suspect", score=0.9, threshold=0.5, model=None,
                   reasons=["score 0.9 ≥ threshold 0.5"], reason_classes=["powder"])


def _outputs(item_id: str, observed: dict | None = None) -> SimpleNamespace:
    """What the inspector hands the check: an analysed scan (``prepared``) with the powder alarm's own look at it
    (``observed``, weighed at the scan's pitch), or, without ``observed``, a scan that was not analysed."""
    scan = SimpleNamespace(meta={"item_id": item_id, "pixel_pitch_mm": 1.0}, low=None, high=None)
    if observed is None:
        return SimpleNamespace(scan=scan, prepared=None, tile_heatmaps=None)
    return SimpleNamespace(scan=scan, prepared=object(), tile_heatmaps=None, observed=observed,
                           observed_pitch_mm=scan_pitch_mm(scan))
