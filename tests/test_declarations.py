"""Customs declarations: the S10 id and CN23 format (``scans.customs``), the simulator's declarations
(``simulator.declarations``: own random stream, documented rates, shared vocabulary) and the station's check
(``inference.declaration``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from parcelscan.datasets.manifest import MANIFEST_NAME, read_manifest, record_from_dict
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.scans.customs import make_s10, parse_declaration, s10_check_digit, s10_valid
from parcelscan.datasets.scans.scanfile import read_png16
from parcelscan.datasets.simulator.declarations import (
    COVER_WORDS,
    DECLARATION_TABLE,
    FILL_ALTERNATIVES,
    FILL_WORDS,
    GOODS_WORDS,
    VAGUE_WORDS,
    VESSEL_WORDS,
    declare,
)
from parcelscan.datasets.simulator.generate import run_simulate
from parcelscan.datasets.simulator.parcel import SimConfig, simulate_scan
from parcelscan.errors import ParcelscanError


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
    other, _ = declare(SimConfig(coarse_profile, seed=6, mix="postal", suspect_fraction=1.0), 1, scan)
    assert other["item_id"] != first["item_id"]
    if "declaration" in first:
        # the concealment's line weighs what the scale shows: at least the concealed powder's mass
        lines = first["declaration"]["items"]
        assert lines[0]["net_weight_kg"] * 1000 >= scan.labels["mass_g"] * 0.99
        assert truth["declaration_honest"] is (truth["draws"]["cover"] == "honest")


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
