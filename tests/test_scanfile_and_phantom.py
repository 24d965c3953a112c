"""Station file format round trips, the phantom read back from disk, and pseudo-colour honesty."""

from __future__ import annotations

import json

import numpy as np
import pytest

from parcelscan.datasets.physics.pseudocolor import apparent_z, pseudocolor
from parcelscan.datasets.scans.scanfile import Scan, read_station_pair, read_tiff, write_station_scan, write_tiff
from parcelscan.errors import ScanReadError


def _random_scan(seed=0, shape=(50, 64)):
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 65536, size=shape, dtype=np.uint16)
    high = rng.integers(0, 65536, size=shape, dtype=np.uint16)
    return Scan("s-001", low, high, {"profile": "postal-dual-140", "pixel_pitch_mm": 1.0})


def test_png_pair_round_trip_is_exact(tmp_path):
    scan = _random_scan()
    files = write_station_scan(scan, tmp_path)
    assert files["low"] == "s-001_low.png" and files["sidecar"] == "s-001.json"
    back = read_station_pair(tmp_path / files["low"])
    assert back.scan_id == "s-001"
    np.testing.assert_array_equal(back.low, scan.low)
    np.testing.assert_array_equal(back.high, scan.high)
    assert back.meta["profile"] == "postal-dual-140"


def test_tiff_round_trip_is_exact(tmp_path):
    scan = _random_scan(1)
    write_tiff(scan, tmp_path / "s-001.tiff")
    back = read_tiff(tmp_path / "s-001.tiff")
    np.testing.assert_array_equal(back.low, scan.low)
    np.testing.assert_array_equal(back.high, scan.high)
    assert back.scan_id == "s-001" and back.meta["pixel_pitch_mm"] == 1.0


def test_bad_pairs_raise_typed_errors(tmp_path):
    import cv2

    scan = _random_scan()
    write_station_scan(scan, tmp_path)
    (tmp_path / "s-001_high.png").unlink()
    with pytest.raises(ScanReadError, match="missing"):
        read_station_pair(tmp_path / "s-001_low.png")
    cv2.imwrite(str(tmp_path / "s-001_high.png"), (scan.high >> 8).astype(np.uint8))
    with pytest.raises(ScanReadError, match="16-bit"):
        read_station_pair(tmp_path / "s-001_low.png")
    cv2.imwrite(str(tmp_path / "s-001_high.png"), scan.high[:40])
    with pytest.raises(ScanReadError, match="differ in size"):
        read_station_pair(tmp_path / "s-001_low.png")


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory, profile):
    from parcelscan.datasets.simulator.phantom import write_phantom

    out = tmp_path_factory.mktemp("phantom")
    write_phantom(out, profile, seed=0)
    return out


def _region_ratios(scan, regions):
    a_low, a_high = scan.log_attenuation()
    ratios = {}
    for region in regions:
        box = region["box"]
        sl = np.s_[box["row0"]:box["row1"], box["col0"]:box["col1"]]
        ratios[region["name"]] = (float(a_low[sl].mean() / a_high[sl].mean()), float(a_high[sl].mean()))
    return ratios


@pytest.mark.parametrize("reader", ["png", "tiff"])
def test_phantom_read_back_gives_the_r_ordering(phantom_dir, reader):
    description = json.loads((phantom_dir / "phantom_regions.json").read_text())
    if reader == "png":
        scan = read_station_pair(phantom_dir / "phantom_low.png")
    else:
        scan = read_tiff(phantom_dir / "phantom.tiff")
    ratios = _region_ratios(scan, description["regions"])
    r = {name.removesuffix(" disc"): v[0] for name, v in ratios.items() if name.endswith(" disc")}
    assert all(0.8 < ratios[f"{m} disc"][1] < 1.3 for m in ["water", "SiO2", "CaCO3", "Fe", "Nd2O3", "Dy2O3"])
    assert r["water"] < r["SiO2"] < r["CaCO3"] < r["Fe"]
    assert r["Dy2O3"] < r["Nd2O3"] < r["Fe"]
    # steel penetration steps get darker step by step
    a_high_steps = [v[1] for name, v in ratios.items() if name.startswith("steel ") and name.endswith(" mm")]
    assert a_high_steps == sorted(a_high_steps)


def test_phantom_files_are_complete(phantom_dir):
    for name in ["phantom_low.png", "phantom_high.png", "phantom_rgb.png", "phantom.json", "phantom.tiff"]:
        assert (phantom_dir / name).stat().st_size > 0
    description = json.loads((phantom_dir / "phantom_regions.json").read_text())
    kinds = {r["kind"] for r in description["regions"]}
    assert kinds == {"wedge_step", "disc", "penetration_step"}


def test_pseudocolour_is_honest_about_k_edges(model, profile):
    """At equal A_high, Nd2O3 and Dy2O3 get a lower apparent Z than iron; water is orange-organic, iron blue."""
    from parcelscan.datasets.physics.materials import get_material

    a = {}
    for name, areal in [("water", 5.5), ("Fe", 1.94), ("Nd2O3", 0.30), ("Dy2O3", 0.245), ("SiO2", 5.3)]:
        a[name] = model.material_attenuation(get_material(name), areal)
    z = {n: float(apparent_z(np.array(v[0]), np.array(v[1]), profile)) for n, v in a.items()}
    assert z["water"] < 9 < z["SiO2"] < 18 < z["Fe"]
    assert z["Dy2O3"] < z["Nd2O3"] < z["Fe"]
    rgb = {n: pseudocolor(np.full((9, 9), v[0]), np.full((9, 9), v[1]), profile)[4, 4].astype(int)
           for n, v in a.items()}
    assert rgb["water"][0] > rgb["water"][2]  # orange: red over blue
    assert rgb["Fe"][2] > rgb["Fe"][0]  # blue
    assert rgb["SiO2"][1] > max(rgb["SiO2"][0], rgb["SiO2"][2])  # green
    assert not (rgb["Nd2O3"][2] > rgb["Nd2O3"][1] + 40)  # not painted as metal
    white = pseudocolor(np.zeros((4, 4)), np.zeros((4, 4)), profile)
    assert np.all(white == 255)
