"""The declaration check's rules (``inference.declaration``) on bodies as ``physics.mass`` reports them: what
honest senders write (vague words, the main item's code, rounded weights) is not called a lie; a body that could be
a target and that no declared line can be — by material, or by weight — is."""

from __future__ import annotations

from parcelscan.inference.declaration import (
    HS_TABLE,
    MAGNET_SHARE,
    MIN_BODY_G,
    _nothing_weighed,
    _stops_beam,
    check_declaration,
)

ITEM = "RR123456785CN"


def _declared(*lines: tuple[str, str, float], gross_kg: float | None = None) -> dict:
    items = [{"description": d, "hs_code": hs, "quantity": 1, "net_weight_kg": kg, "value": 10} for d, hs, kg in lines]
    return {"item_id": ITEM, "category": "gift", "origin": "CN", "currency": "USD",
            "gross_weight_kg": gross_kg or round(sum(kg for _, _, kg in lines) + 0.2, 2), "items": items}


def _read(could_be: list[str], mass_g: float = 300.0, **mass_as: float) -> dict:
    """A body with a readable core: the references its R allows and its grams as each."""
    return {"mass_g": mass_g, "nearest": could_be[0] if could_be else "water", "twins": could_be, "opaque_share": 0.0,
            "core_ratio": 1.6, "could_be": could_be,
            "mass_as_g": {name: mass_as.get(name.replace(" ", "_"), mass_g) for name in could_be}}


def _stopped(mass_g: float = 900.0) -> dict:
    """A body the beam does not cross readably: no signature; its grams as anything are lower bounds."""
    return {"mass_g": mass_g, "nearest": None, "twins": [], "opaque_share": 0.6, "core_ratio": None, "could_be": [],
            "mass_lower_bound": True,
            "mass_as_g": {"steel": mass_g * 1.5, "sand": mass_g * 2.0, "sugar": mass_g * 3.0}}


def _status(raw: dict, *bodies: dict) -> str:
    return check_declaration(raw, ITEM, {"bodies": list(bodies), "xray_mass_kg": 1.0}, "sidecar").status


def test_bodies_that_could_not_be_a_target_never_accuse_a_vague_declaration():
    """'gift' with the main item's code (food) and a steel or aluminium body (a forgotten tool, a can): the check
    is about dense powder that could be a target, not about every item a sender leaves out."""
    vague = _declared(("gift", "1905.90", 2.0))
    assert _status(vague, _read(["steel", "iron oxide pigment"])) == "consistent"
    assert _status(vague, _read(["aluminium"]), _read(["sugar", "water"])) == "consistent"


def test_a_target_reading_no_declared_material_explains_is_a_mismatch():
    raw = _declared(("machinery parts", "8487.90", 2.0))
    check = check_declaration(raw, ITEM, {"bodies": [_read(["Nd2O3", "Pr6O11"], 1400.0)], "xray_mass_kg": 2.4},
                              "sidecar")
    assert check.status == "mismatch" and "signature of Nd2O3 or Pr6O11" in check.reasons[0]
    assert "1400 g" in check.reasons[0]


def test_a_target_reading_that_is_also_a_declared_material_is_consistent_at_the_declared_weight():
    """R cannot tell Nd2O3 from iron oxide pigment there (dual-energy twins): 'samples' (HS 3824, pigments) of
    0.5 kg explain a 300 g body; of 0.05 kg they do not (the body weighs 280 g as iron oxide)."""
    body = _read(["Nd2O3", "iron oxide pigment"], 300.0, iron_oxide_pigment=280.0)
    assert _status(_declared(("samples", "3824.99", 0.5)), body) == "consistent"
    assert _status(_declared(("samples", "3824.99", 0.05), ("chocolate", "1806.90", 1.0)), body) == "mismatch"


def test_rounded_weights_are_tolerated():
    """A line rounded to 0.1 kg against a body the scan weighs 40 % heavier than it is still explains it."""
    body = _read(["CeO2", "zircon"], 140.0, zircon=140.0)
    assert _status(_declared(("ceramic tiles", "6907.21", 0.1)), body) == "consistent"


def test_magnets_in_phones_and_speakers_are_not_powder():
    body = _read(["NdFeB powder", "Nd2O3"], 40.0)
    assert _status(_declared(("mobile phone", "8517.13", 0.3)), body) == "consistent"
    assert _status(_declared(("t-shirt", "6109.10", 0.3)), body) == "mismatch"


def test_a_device_explains_magnet_readings_only_at_the_magnets_share_of_its_weight():
    """A phone or a motor holds magnets, not its weight in magnet powder (``MAGNET_SHARE`` of the line at most):
    a 0.4 kg phone explains a 40 g NdFeB reading, not 400 g; a line of magnets (HS 8505) explains them at its whole
    weight; the device's other materials still explain a body at the line's whole weight."""
    assert HS_TABLE["8517"].share("NdFeB powder") == MAGNET_SHARE < 1.0 and HS_TABLE["8517"].share("steel") == 1.0
    heavy = _read(["NdFeB powder", "Nd2O3"], 400.0)
    assert _status(_declared(("mobile phone", "8517.13", 0.4)), _read(["NdFeB powder", "Nd2O3"], 40.0)) == "consistent"
    assert _status(_declared(("mobile phone", "8517.13", 0.4)), heavy) == "mismatch"
    assert _status(_declared(("motor", "8501.10", 0.4)), heavy) == "mismatch"
    assert _status(_declared(("magnets", "8505.11", 0.4)), heavy) == "consistent"
    assert _status(_declared(("motor", "8501.10", 0.4)), _read(["NdFeB powder", "Nd2O3", "steel"], 400.0)) == \
        "consistent"


def test_a_beam_stopping_body_is_explained_only_by_goods_that_can_stop_the_beam():
    assert _stops_beam(HS_TABLE["8487"]) and not _stops_beam(HS_TABLE["1905"]) and not _stops_beam(HS_TABLE["6109"])
    assert _status(_declared(("spare parts", "8487.90", 5.0)), _stopped()) == "consistent"
    assert _status(_declared(("snacks", "1905.90", 5.0), ("clothes", "6109.10", 1.0)), _stopped()) == "mismatch"
    # … and only at a weight that can hold it: 0.1 kg of 'wrench' does not explain ≥ 1.35 kg of steel
    assert _status(_declared(("wrench", "8205.59", 0.1), ("snacks", "1905.90", 5.0)), _stopped()) == "mismatch"


def test_the_reasons_write_a_lower_bound_as_one():
    """A body behind a stopped beam weighs "≥" its grams in the reasons, a readable one "≈"."""
    observed = {"bodies": [_stopped(900.0)], "xray_mass_kg": 1.0}
    stopped = check_declaration(_declared(("snacks", "1905.90", 5.0)), ITEM, observed, "sidecar")
    assert stopped.status == "mismatch" and "body of dense material ≥ 900 g" in stopped.reasons[0]
    readable = check_declaration(_declared(("cerium oxide", "2846.10", 0.5)), ITEM,
                                 {"bodies": [_read(["CeO2"], 300.0)], "xray_mass_kg": 1.0}, "sidecar")
    assert readable.status == "consistent" and "1 body ≈ 300 g consistent" in readable.reasons[0]


def test_small_bodies_and_older_body_records():
    raw = _declared(("clothes", "6109.10", 0.5))
    assert _status(raw, _read(["Nd2O3"], MIN_BODY_G * 0.9)) == "consistent"
    older = {"mass_g": 500.0, "nearest": "Nd2O3", "twins": ["Nd2O3"], "targets": ["Nd2O3"]}  # no could_be, mass_as_g
    assert _status(raw, older) == "mismatch"
    assert _status(_declared(("neodymium oxide", "2846.90", 0.5)), older) == "consistent"


def test_a_vague_line_explains_benign_readings_but_not_a_body_only_a_target_can_be():
    """'gift' under the main item's code (food) with a 60 g body that could be zircon or CeO2 (a glazed mug, a
    forgotten item): vague words name no goods, so benign matter at the line's weight is explained. A body that
    can only be a target — or one the beam does not cross — is not."""
    vague = _declared(("gift", "1905.90", 2.0))
    assert _status(vague, _read(["CeO2", "zircon"], 60.0)) == "consistent"
    assert _status(_declared(("biscuits", "1905.90", 2.0)), _read(["CeO2", "zircon"], 60.0)) == "mismatch"
    assert _status(vague, _read(["CeO2", "La2O3"], 60.0)) == "mismatch"
    assert _status(vague, _stopped()) == "mismatch"
    assert _status(_declared(("gift", "1905.90", 0.01)), _read(["CeO2", "zircon"], 600.0)) == "mismatch"


def test_a_declaration_is_never_consistent_with_a_scan_nothing_was_weighed_of():
    """A scan not analysed (unreadable, refused by a gate) or without dual-energy images shows nothing: its
    declaration cannot be confirmed, so the check says so as a mismatch (fail closed), never "consistent" with "no
    dense body" that nobody looked for. Without a declaration it stays absent."""
    raw = _declared(("ceramic tiles", "6907.21", 0.9))
    for note in ("the scan was not analysed", "no dual-energy images: no masses"):
        check = check_declaration(raw, ITEM, _nothing_weighed(note), "sidecar")
        assert check.status == "mismatch" and check.to_dict()["priority"] == "raised"
        assert f"nothing was weighed ({note})" in check.reasons[-1] and "ceramic tiles" in check.reasons[-1]
        assert check_declaration(None, ITEM, _nothing_weighed(note), None).status == "absent"
    assert _status(raw) == "consistent"  # weighed, nothing to explain: consistent
