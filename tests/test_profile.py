from __future__ import annotations

from pathlib import Path

import pytest

from parcelscan.datasets.physics.profile import Layer, ScannerProfile, load_profile, profile_from_dict
from parcelscan.errors import ParcelscanError


def test_default_profile_is_the_issue_spec():
    p = load_profile()
    assert p.name == "postal-dual-140"
    assert (p.tube_kv, p.anode_angle_deg) == (140.0, 12.0)
    assert p.filtration == (Layer("Al", 2.5),)
    assert (p.low_layer, p.interlayer_filter, p.high_layer) == (Layer("CsI", 0.3), Layer("Cu", 0.5), Layer("CsI", 3.0))
    assert (p.pixel_pitch_mm, p.channels, p.air_quanta_per_pixel, p.blur_sigma_px) == (1.0, 640, 20000.0, 0.7)
    assert p == ScannerProfile()  # the dataclass defaults and the shipped file agree


def test_yaml_profile_round_trip(tmp_path):
    import yaml

    data = load_profile().to_dict() | {"name": "custom", "tube_kv": 160.0}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    p = load_profile(path)
    assert p.name == "custom" and p.tube_kv == 160.0 and p.high_layer == Layer("CsI", 3.0)


@pytest.mark.parametrize("data, message", [
    ({"tube_kv": -5.0}, "tube_kv"),
    ({"colour": 1}, "unknown profile key"),
    ({"low_layer": {"material": "CsI"}}, "low_layer"),
    ({"channels": 1.5}, "channels"),
    ({"filtration": [{"material": "Al", "thickness_mm": -1}]}, "thickness_mm"),
])
def test_bad_profile_values_are_refused(data, message):
    with pytest.raises(ParcelscanError, match=message):
        profile_from_dict(data)


def test_missing_and_malformed_profile_files(tmp_path):
    with pytest.raises(ParcelscanError, match="not found"):
        load_profile(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("tube_kv = [\n")
    with pytest.raises(ParcelscanError, match="malformed"):
        load_profile(bad)


def test_a_profile_file_is_parsed_once_per_version(tmp_path):
    """``load_profile`` keeps a file's parse (the station asks for the default profile on every weighed parcel) and
    parses it again when the file changes."""
    import os

    from parcelscan.datasets.physics.profile import PROFILES_DIR, default_profile, load_profile

    assert default_profile() is default_profile()
    path = tmp_path / "station.toml"
    text = (PROFILES_DIR / "postal-dual-140.toml").read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    first = load_profile(path)
    assert load_profile(path) is first
    kv = first.tube_kv
    assert f"tube_kv = {kv}" in text
    path.write_text(text.replace(f"tube_kv = {kv}", f"tube_kv = {kv + 10}"), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert load_profile(path).tube_kv == kv + 10


def test_the_second_scanner_of_the_generalisation_check_is_a_valid_other_scanner():
    """examples/profiles/other-dual-160.toml (README, model cards: a scanner the models never saw) loads, and differs
    from the default where a real second scanner would: tube voltage, filtration, detector layers, dose, blur."""
    other = load_profile(Path(__file__).parents[1] / "examples" / "profiles" / "other-dual-160.toml")
    default = load_profile()
    assert other.name == "other-dual-160" and other.tube_kv == 160.0 != default.tube_kv
    assert other.pixel_pitch_mm == default.pixel_pitch_mm  # same geometry: the station's gates accept its scans
    assert other.low_layer != default.low_layer and other.interlayer_filter != default.interlayer_filter
    assert other.air_quanta_per_pixel != default.air_quanta_per_pixel and other.blur_sigma_px != default.blur_sigma_px
