"""The declaration check at the image model's own operating point (``[declaration] powder_score_threshold``): the
image decides whether there is a powder the declaration has to name; a powder heading (a target's own, barium
sulphate, magnets) names it only where the physics allows it, at its weight; below the point the physics does not
accuse a sender alone; the policy carries the point for one model, and the station hook uses it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from parcelscan.datasets.preprocess import scan_pitch_mm
from parcelscan.errors import ParcelscanError
from parcelscan.inference.declaration import DeclarationChecker, attach_declaration_check, check_declaration
from parcelscan.inference.inspector import Inspector
from parcelscan.inference.policy import DEFAULT_POLICY_PATH, DeclarationPolicy, load_policy
from parcelscan.inference.verdict import Verdict
from parcelscan.model.registry import default_model_path

ITEM = "RR123456785CN"
POINT = 0.59  # the shipped policy's point for the shipped dual model (inference/policies/default.toml)


def _declared(*lines: tuple[str, str, float]) -> dict:
    items = [{"description": d, "hs_code": hs, "quantity": 1, "net_weight_kg": kg, "value": 10} for d, hs, kg in lines]
    return {"item_id": ITEM, "category": "sale_of_goods", "origin": "CN", "currency": "USD",
            "gross_weight_kg": round(sum(kg for _, _, kg in lines) + 0.5, 2), "items": items}


def _read(could_be: list[str], mass_g: float = 300.0) -> dict:
    return {"mass_g": mass_g, "nearest": could_be[0], "twins": could_be, "opaque_share": 0.0, "core_ratio": 1.6,
            "could_be": could_be, "mass_as_g": {name: mass_g for name in could_be}}


def _stopped(mass_g: float = 900.0) -> dict:
    return {"mass_g": mass_g, "nearest": None, "twins": [], "opaque_share": 0.6, "core_ratio": None, "could_be": [],
            "mass_as_g": {"steel": mass_g * 1.5, "barite": mass_g * 1.2, "Nd2O3": mass_g}}


def _check(raw: dict, bodies: list[dict], score: float | None, point: float | None = POINT):
    return check_declaration(raw, ITEM, {"bodies": bodies, "xray_mass_kg": 3.0}, "sidecar", score, point)


def test_a_bottle_the_beam_stops_declared_as_machinery_parts_is_a_mismatch_when_the_image_sees_powder():
    """The physics alone cannot tell: 'machinery parts' can stop the beam. The image model, at the check's own
    point, says powder: no declared line names one."""
    raw = _declared(("machinery parts", "8487.90", 2.0))
    assert _check(raw, [_stopped()], None).status == "consistent"  # the physics alone
    check = _check(raw, [_stopped()], 0.80)
    assert check.status == "mismatch" and check.to_dict()["priority"] == "raised"
    assert f"scores 0.800 ≥ {POINT:.3f}" in check.reasons[0] and "HS 8487" in check.reasons[0]
    assert _check(raw, [_stopped()], POINT - 0.1).status == "consistent"  # below the point: nothing to name


def test_powder_seen_without_a_localised_body_needs_a_powder_heading():
    assert _check(_declared(("gift", "9503.00", 1.0)), [], 0.95).status == "mismatch"
    assert _check(_declared(("barium sulphate, natural", "2511.10", 1.0)), [], 0.95).status == "consistent"
    assert _check(_declared(("neodymium oxide", "2846.90", 1.0)), [], 0.95).status == "consistent"


def test_a_powder_heading_names_the_body_only_where_the_physics_allows_it_at_its_weight():
    """Declared barium sulphate explains a body that could be barite (the twin: the image alarm stands, the
    declaration is consistent with the scan), not one that can only be a rare-earth oxide; an honest line of the
    oxide's own heading explains it at its weight, not at a twentieth of it."""
    twin_body = _read(["La2O3", "barite", "CeO2"], 800.0)
    oxide_body = _read(["Nd2O3", "Pr6O11"], 1400.0)
    barite = _declared(("barium sulphate, natural", "2511.10", 1.0))
    assert _check(barite, [twin_body], 0.95).status == "consistent"
    assert _check(barite, [oxide_body], 0.95).status == "mismatch"
    assert _check(_declared(("neodymium oxide", "2846.90", 1.4)), [oxide_body], 0.95).status == "consistent"
    assert _check(_declared(("neodymium oxide", "2846.90", 0.05)), [oxide_body], 0.95).status == "mismatch"


def test_at_the_point_a_powder_heading_names_the_body_only_by_its_powder():
    """A speaker line is a powder heading because its magnets are NdFeB: at the image's point it names a body that
    could be NdFeB, not one it could only hold as steel or ferrite — the image says powder, and a speaker's steel is
    not one. Without the point, the physics alone lets any of the line's materials explain the body, as before."""
    raw = _declared(("speaker", "8518.22", 1.0), ("ceramic tiles", "6907.21", 2.0))
    steel_like = _read(["Dy2O3", "steel", "iron oxide pigment"], 200.0)
    assert _check(raw, [steel_like], 0.90).status == "mismatch"
    assert _check(raw, [steel_like], None).status == "consistent"
    assert _check(raw, [_read(["Dy2O3", "NdFeB powder"], 200.0)], 0.90).status == "consistent"


def test_below_the_point_a_small_oxide_reading_in_electronics_does_not_accuse_the_sender():
    """On development data the physics alone called honest senders false through small bodies in batteries and
    phones read as oxides; at the image's point a low score leaves them consistent. Without a point (another
    model, a policy without one, a scan without a finite score) the physics alone holds every body, as before."""
    raw = _declared(("power bank", "8507.60", 0.3), ("books", "4901.99", 0.3))
    body = _read(["Sm2O3"], 20.0)
    assert _check(raw, [body], 0.20).status == "consistent"
    assert _check(raw, [body], None).status == "mismatch"
    assert _check(raw, [body], float("nan")).status == "mismatch"
    assert _check(raw, [body], 0.20, None).status == "mismatch"
    assert _check(raw, [body], 0.90).status == "mismatch"


def test_unusable_and_heavy_declarations_are_mismatches_whatever_the_score():
    assert _check({"item_id": ITEM, "items": "parts"}, [], 0.01).status == "mismatch"
    heavy = check_declaration(_declared(("t-shirt", "6109.10", 0.3)), ITEM, {"bodies": [], "xray_mass_kg": 9.0},
                              "sidecar", 0.01, POINT)
    assert heavy.status == "mismatch" and "undeclared mass" in heavy.reasons[0]


def _verdict(kind: str, score: float) -> Verdict:
    if kind == "clear":
        return Verdict(scan_id="a", inputs=[], verdict="clear", score=score, threshold=0.8891, model=None)
    return Verdict(scan_id="a", inputs=[], verdict="suspect", score=score, threshold=0.8891, model=None,
                   reasons=["score ≥ threshold"], reason_classes=["powder"])


def _outputs(observed: dict) -> SimpleNamespace:
    """What the inspector hands the hook for a scan whose bodies the powder alarm already weighed (at the pitch the
    hook's own rule gives, so the hook reuses them as at the station)."""
    scan = SimpleNamespace(meta={"item_id": ITEM, "declaration": _declared(("machinery parts", "8487.90", 2.0))},
                           low=None, high=None)
    return SimpleNamespace(scan=scan, prepared=object(), tile_heatmaps=None, observed=observed,
                           observed_pitch_mm=scan_pitch_mm(scan))


def test_the_hook_reads_the_verdicts_score_and_never_changes_a_verdict():
    """A clear verdict whose score reaches the check's point gets a mismatch (priority raised) and stays clear; a
    suspect gets reason class declaration and stays suspect."""
    checker = DeclarationChecker(powder_score=POINT)
    clear = _verdict("clear", 0.80)
    checker(clear, _outputs({"bodies": [_stopped()], "xray_mass_kg": 3.0}))
    assert clear.verdict == "clear" and clear.declaration_check["status"] == "mismatch"
    assert clear.declaration_check["priority"] == "raised" and "declaration" not in clear.reason_classes
    low = _verdict("clear", 0.30)
    checker(low, _outputs({"bodies": [_stopped()], "xray_mass_kg": 3.0}))
    assert low.verdict == "clear" and low.declaration_check["status"] == "consistent"
    flagged = _verdict("suspect", 0.95)
    checker(flagged, _outputs({"bodies": [_stopped()], "xray_mass_kg": 3.0}))
    assert flagged.verdict == "suspect" and "declaration" in flagged.reason_classes


def test_the_shipped_policy_sets_the_point_for_the_shipped_dual_model_only(tmp_path):
    policy = load_policy()
    sha = Path(str(default_model_path("dual_energy")) + ".sha256").read_text().split()[0]
    assert policy.declaration.powder_score_threshold == POINT and policy.declaration.model_sha256 == sha
    assert policy.declaration.threshold_for(sha) == POINT
    assert policy.declaration.threshold_for("0" * 64) is None and policy.declaration.threshold_for(None) is None
    assert DeclarationPolicy(0.5).threshold_for("anything") == 0.5
    assert any("declaration check" in line for line in policy.describe())
    text = DEFAULT_POLICY_PATH.read_text()
    for value, ok in (('"off"', True), ("0.4", True), ("1.5", False), ('"high"', False), ("-0.1", False)):
        path = tmp_path / "p.toml"
        path.write_text(text.replace(f"powder_score_threshold = {POINT}", f"powder_score_threshold = {value}"))
        if ok:
            expected = None if value == '"off"' else float(value)
            assert load_policy(path).declaration.powder_score_threshold == expected
        else:
            with pytest.raises(ParcelscanError, match="powder_score_threshold"):
                load_policy(path)
    path.write_text(text.replace(f'model_sha256 = "{sha}"', 'model_sha256 = "xyz"'))
    with pytest.raises(ParcelscanError, match="model_sha256"):
        load_policy(path)
    path.write_text(text.replace("[declaration]\n", "[declaration]\nbonus = 1\n"))
    with pytest.raises(ParcelscanError, match="bonus"):
        load_policy(path)
    path.write_text(text.split("[declaration]")[0])
    assert load_policy(path).declaration == DeclarationPolicy()  # a policy without the section: physics alone


def test_the_station_hook_takes_the_point_for_its_own_model_only(tmp_path, capsys):
    inspector = Inspector()
    assert attach_declaration_check(inspector).powder_score == POINT
    other = tmp_path / "other.toml"
    other.write_text(DEFAULT_POLICY_PATH.read_text().replace(load_policy().declaration.model_sha256, "a" * 64))
    inspector = Inspector(policy=load_policy(other))
    assert attach_declaration_check(inspector).powder_score is None
    assert "uses the physics alone" in capsys.readouterr().err
