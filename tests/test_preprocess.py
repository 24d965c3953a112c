"""The one preprocessing: spec round trip, the a_excess channel's physics, resampling, tiling, heatmaps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.physics.pseudocolor import transmission_to_log_attenuation
from parcelscan.datasets.preprocess import (
    PreprocessSpec,
    channels_from_planes,
    excess_attenuation,
    heatmap_to_scan,
    normalise,
    prepare_mask,
    prepare_scan,
    resample,
    scan_pitch_mm,
    scan_planes,
    tile_starts,
)
from parcelscan.datasets.scans.scanfile import Scan
from parcelscan.errors import ParcelscanError, ScanReadError
from parcelscan.inference.opaque import check_opaque


@pytest.fixture(scope="module")
def spec() -> PreprocessSpec:
    return PreprocessSpec.dual_energy()


def _scan(rows: int, cols: int, seed: int = 0, **meta) -> Scan:
    rng = np.random.default_rng(seed)
    low = rng.integers(2000, 65535, (rows, cols), dtype=np.uint16)
    high = rng.integers(2000, 65535, (rows, cols), dtype=np.uint16)
    return Scan(f"s{seed}", low, high, dict(meta))


def _auc(negative: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of the best single threshold, either direction (Mann-Whitney)."""
    scores = np.concatenate([negative, positive])
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(scores) + 1)
    auc = (ranks[len(negative):].sum() - len(positive) * (len(positive) + 1) / 2) / (len(negative) * len(positive))
    return max(auc, 1.0 - auc)


# --- the spec ---------------------------------------------------------------------------------------
def test_spec_defaults_and_json_round_trip(spec):
    assert spec.input_kind == "dual_energy" and spec.channels == ["a_low", "a_high", "a_excess"]
    assert (spec.pixel_pitch_mm, spec.tile_rows, spec.tile_cols, spec.tile_overlap) == (2.0, 320, 320, 0.5)
    text = spec.to_json()
    assert PreprocessSpec.from_json(text) == spec
    assert PreprocessSpec.from_dict(json.loads(text)).fingerprint() == spec.fingerprint()
    rgb = PreprocessSpec.pseudo_color()
    assert rgb.channels == ["r", "g", "b"] and rgb.excess_reference == {}
    assert PreprocessSpec.from_json(rgb.to_json()) == rgb
    assert rgb.fingerprint() != spec.fingerprint()


@pytest.mark.parametrize("change, message", [
    ({"version": 99}, "version 99"),
    ({"tile_rows": 300}, "multiple of 32"),
    ({"channels": ["a_low", "r"]}, "channels"),
    ({"tile_overlap": 0.95}, "tile_overlap"),
    ({"extra_field": 1}, "unknown field"),
    ({"excess_reference": {}}, "excess_reference"),
    ({"attenuation_ceiling": 2.0}, "attenuation_ceiling"),
    ({"attenuation_ceiling": 12.0}, "attenuation_ceiling"),
    ({"attenuation_ceiling": "8"}, "attenuation_ceiling"),
])
def test_bad_specs_are_refused(spec, change, message):
    data = spec.to_dict() | change
    with pytest.raises(ParcelscanError, match=message):
        PreprocessSpec.from_dict(data)


def test_attenuation_ceiling_is_absent_from_json_unless_set(spec):
    """Specs written before the field existed (the shipped models' metadata) keep their JSON and fingerprint."""
    assert "attenuation_ceiling" not in spec.to_json()
    clamped = PreprocessSpec.dual_energy(attenuation_ceiling=8.0)
    assert json.loads(clamped.to_json())["attenuation_ceiling"] == 8.0
    assert PreprocessSpec.from_json(clamped.to_json()) == clamped
    assert clamped.fingerprint() != spec.fingerprint()
    with pytest.raises(ParcelscanError, match="attenuation_ceiling"):
        PreprocessSpec.pseudo_color(attenuation_ceiling=8.0)


def test_attenuation_ceiling_makes_the_dark_end_one_value(spec):
    """Beyond the ceiling a reading is dark noise: two stopped beams with different residuals give one tensor,
    and what the beam still reads is untouched."""
    clamped = PreprocessSpec.dual_energy(attenuation_ceiling=8.0)
    readable = np.array([[[np.exp(-2.3), np.exp(-1.9)]]], np.float32)
    stopped = [np.array([[[t_low, t_high]]], np.float32) for t_low, t_high in ((2e-5, 3e-4), (9e-5, 4e-5))]
    np.testing.assert_array_equal(channels_from_planes(readable, clamped), channels_from_planes(readable, spec))
    dark = [channels_from_planes(planes, clamped) for planes in stopped]
    np.testing.assert_array_equal(dark[0], dark[1])
    np.testing.assert_allclose(dark[0][:2].ravel(), [8.0, 8.0])
    assert not np.array_equal(*(channels_from_planes(planes, spec) for planes in stopped))


# --- the derived channel ----------------------------------------------------------------------------
def test_excess_reference_is_the_forward_models_water_ratio(spec, model):
    water = get_material("water")
    areal = np.array([[0.5, 2.0, 8.0, 25.0]])
    a_low, a_high = model.log_attenuation_direct([water], areal)
    excess = excess_attenuation(a_low, a_high, spec.excess_reference)
    # water of any thickness has (almost) no excess; a rare-earth oxide of the same A_high has a lot
    assert np.abs(excess).max() < 0.01
    nd_low, nd_high = model.log_attenuation_direct([get_material("Nd2O3")], np.array([[0.3]]))
    assert excess_attenuation(nd_low, nd_high, spec.excess_reference)[0] > 0.5


def test_excess_separates_nd2o3_slurry_from_water_better_than_raw_channels(spec, model):
    """5 % Nd2O3 slurry layer (1 g/cm²) under 1–25 g/cm² of water-like clutter, against water with the same
    A_high range, with the detector's noise. Single-channel ROC AUC: a_excess ≈ 0.97, R ≈ 0.94,
    a_low ≈ 0.58, a_high ≈ 0.53 (the ratio is thickness-dependent and diluted by clutter)."""
    rng = np.random.default_rng(0)
    n = 3000
    water, slurry = get_material("water"), get_material("Nd2O3:0.05+water:0.95")

    def detected(materials, areal):
        a_low, a_high = model.log_attenuation(materials, areal)
        low, high = model.detect(a_low[None], a_high[None], rng)
        return transmission_to_log_attenuation(low)[0], transmission_to_log_attenuation(high)[0]

    clutter = rng.uniform(1, 25, n)
    pos_low, pos_high = detected([slurry, water], np.stack([np.full(n, 1.0), clutter]))
    neg_low, neg_high = detected([water], (clutter + rng.uniform(0, 3.0, n))[None])
    auc = {
        "a_low": _auc(neg_low, pos_low),
        "a_high": _auc(neg_high, pos_high),
        "ratio": _auc(neg_low / neg_high, pos_low / pos_high),
        "a_excess": _auc(excess_attenuation(neg_low, neg_high, spec.excess_reference),
                         excess_attenuation(pos_low, pos_high, spec.excess_reference)),
    }
    assert auc["a_excess"] > 0.95
    assert auc["a_excess"] > max(auc["a_low"], auc["a_high"]) + 0.3
    assert auc["a_excess"] >= auc["ratio"]


# --- planes, resampling, normalisation ------------------------------------------------------------
def test_air_is_zero_and_channels_are_physical(spec):
    air = Scan("air", np.full((40, 64), 65535, np.uint16), np.full((40, 64), 65535, np.uint16), {})
    prepared = prepare_scan(air, spec)
    assert prepared.tiles.shape == (1, 3, 320, 320) and prepared.tiles.dtype == np.float32
    assert np.abs(prepared.tiles).max() == 0.0  # air and the air padding are both exactly 0
    half = Scan("half", np.full((40, 64), 65535 // 4, np.uint16), np.full((40, 64), 65535 // 2, np.uint16), {})
    tiles = prepare_scan(half, spec).tiles[0]
    assert tiles[0, 0, 0] == pytest.approx(np.log(4) / 2.5, rel=1e-3)  # a_low / scale
    assert tiles[1, 0, 0] == pytest.approx(np.log(2) / 2.0, rel=1e-3)


def test_resampling_is_area_averaging_of_transmission(spec):
    # a 1 mm checkerboard of T=1 and T=0.25: a 2 mm pixel integrates T=0.625, not exp(mean(log T))
    board = np.where((np.indices((64, 64)).sum(0) % 2) == 0, 65535, 65535 // 4).astype(np.uint16)
    prepared = prepare_scan(Scan("board", board, board, {"pixel_pitch_mm": 1.0}), spec)
    a_low = prepared.tiles[0, 0, :32, :32] * 2.5
    assert prepared.content_shape == (32, 32)
    assert np.allclose(a_low, -np.log(0.625), atol=1e-3)


@pytest.mark.parametrize("pitch_mm", [0.8, 1.0, 1.5, 2.5])
def test_other_pitches_keep_physical_size(spec, pitch_mm):
    """A 120 mm × 60 mm object is 60 × 30 model pixels at 2 mm whatever the scanner's pitch."""
    rows, cols = round(400 / pitch_mm), round(300 / pitch_mm)
    low = np.full((rows, cols), 65535, np.uint16)
    r0, c0 = round(100 / pitch_mm), round(100 / pitch_mm)
    low[r0:r0 + round(120 / pitch_mm), c0:c0 + round(60 / pitch_mm)] = 6553
    scan = Scan("p", low, low.copy(), {"pixel_pitch_mm": pitch_mm})
    prepared = prepare_scan(scan, spec)
    assert prepared.content_shape == (200, 150)
    assert prepared.scale == pytest.approx((rows / 200, cols / 150))
    a_high = prepared.tiles[0, 1] * 2.0
    covered = a_high > np.log(10) / 2  # more than half of the pixel is the object
    assert covered.sum() == pytest.approx(60 * 30, rel=0.04)
    absorbed = (1.0 - np.exp(-a_high)).sum() / 0.9  # resampling conserves the absorbed fraction × area
    assert absorbed == pytest.approx(60 * 30, rel=0.01)


def test_row_pitch_along_the_belt_differs(spec):
    scan = _scan(300, 200, pixel_pitch_mm=1.0, row_pitch_mm=2.0)
    assert prepare_scan(scan, spec).content_shape == (300, 100)


def test_bad_pitch_is_a_scan_read_error(spec):
    with pytest.raises(ScanReadError, match="pixel_pitch_mm"):
        prepare_scan(_scan(64, 64, pixel_pitch_mm=-1), spec)
    with pytest.raises(ScanReadError, match="pixel_pitch_mm"):
        prepare_scan(_scan(64, 64, pixel_pitch_mm="1mm"), spec)


# --- size policy -------------------------------------------------------------------------------------
def test_tile_starts_cover_and_align_last_tile_to_the_end():
    assert tile_starts(200, 320, 0.5) == [0]
    assert tile_starts(320, 320, 0.5) == [0]
    assert tile_starts(750, 320, 0.5) == [0, 160, 320, 430]
    assert tile_starts(1000, 320, 0.0) == [0, 320, 640, 680]


@pytest.mark.parametrize("rows, cols", [(2400, 640), (500, 896), (100, 1500)])
def test_tiling_a_long_parcel_keeps_every_pixel(spec, rows, cols):
    """Rebuild the resampled image from the tiles: every model pixel is present and exact; nothing squashed."""
    scan = _scan(rows, cols, seed=rows)
    prepared = prepare_scan(scan, spec)
    expected = normalise(channels_from_planes(resample(scan_planes(scan, spec), prepared.content_shape), spec), spec)
    assert prepared.content_shape == (rows // 2, cols // 2)  # 1 mm → 2 mm, no other scaling
    seen = np.zeros(prepared.content_shape, bool)
    for tile, (r, c) in zip(prepared.tiles, prepared.tile_origins, strict=True):
        assert tile.shape == (3, 320, 320)
        h = min(320, prepared.content_shape[0] - r)
        w = min(320, prepared.content_shape[1] - c)
        assert np.array_equal(tile[:, :h, :w], expected[:, r:r + h, c:c + w])
        assert not tile[:, h:, :].any() and not tile[:, :, w:].any()  # beyond the content only air
        seen[r:r + h, c:c + w] = True
    assert seen.all()


def test_heatmap_round_trip_on_a_known_mask(spec):
    """Mask → tiles → stride-8 heatmaps (the model's output grid) → scan pixels matches the mask."""
    import cv2

    rows, cols = 1900, 700
    scan = _scan(rows, cols, seed=3)
    mask = np.zeros((rows, cols), np.uint8)
    cv2.circle(mask, (500, 1400), 90, 255, -1)  # powder in the 5th tile region, near a tile border
    mask[200:320, 60:260] = 255
    prepared = prepare_scan(scan, spec)
    tiles = prepare_mask(mask, scan, spec)
    assert tiles.shape == (prepared.n_tiles, 320, 320) and tiles.dtype == np.float32
    heat = np.stack([cv2.resize(t, (40, 40), interpolation=cv2.INTER_AREA) for t in tiles])  # stride 8
    back = heatmap_to_scan(heat, prepared)
    assert back.shape == (rows, cols) and back.dtype == np.float32
    predicted = back > 0.5
    truth = mask > 0
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert iou > 0.9
    # full resolution heatmaps come back exactly onto the scan grid (up to the 2x resize)
    exact = heatmap_to_scan(tiles, prepared) > 0.5
    assert (exact & truth).sum() / (exact | truth).sum() > 0.97


def test_heatmap_takes_the_max_over_overlapping_tiles(spec):
    scan = _scan(1000, 640, seed=4)
    prepared = prepare_scan(scan, spec)
    assert prepared.n_tiles == 3  # origins 0, 160, 180 in model rows
    maps = np.zeros((3, 10, 10), np.float32)
    maps[1] = 0.7
    maps[2, :5] = 0.9  # model rows 180-340 of tile 2 overlap tile 1
    back = heatmap_to_scan(maps, prepared)
    assert back[2 * 200, 100] == pytest.approx(0.9)
    assert back[2 * 400, 100] == pytest.approx(0.7)
    assert back[2 * 100, 100] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        heatmap_to_scan(maps[:2], prepared)


# --- kinds -------------------------------------------------------------------------------------------
def test_wrong_kind_is_refused(spec):
    rgb = np.full((50, 60, 3), 200, np.uint8)
    image = Scan("photo", None, None, {}, kind="pseudo_color", rgb=rgb)
    with pytest.raises(ScanReadError, match="pseudo-colour image given to a dual-energy model"):
        prepare_scan(image, spec)
    prepared = prepare_scan(image, PreprocessSpec.pseudo_color())
    assert prepared.tiles.shape == (1, 3, 320, 320)
    assert prepared.tiles[0, :, 0, 0] == pytest.approx(1 - 200 / 255)  # white (air) → 0, dark → 1
    assert not prepared.tiles[0, :, 30:, :].any()  # padded with white = air


def test_dual_energy_scan_to_a_pseudo_colour_model_uses_its_operator_image(profile):
    from parcelscan.datasets.physics.pseudocolor import pseudocolor_from_pair

    scan = _scan(64, 64, seed=5, profile=profile.name)
    prepared = prepare_scan(scan, PreprocessSpec.pseudo_color(pixel_pitch_mm=1.0))
    expected = 1.0 - pseudocolor_from_pair(scan.low, scan.high, profile).astype(np.float32) / 255.0
    assert np.allclose(prepared.tiles[0, :, :64, :64], expected.transpose(2, 0, 1), atol=1e-6)


def test_nan_planes_are_refused(spec):
    from parcelscan.datasets.preprocess import prepare_planes

    planes = np.ones((64, 64, 2), np.float32)
    planes[3, 3, 0] = np.nan
    with pytest.raises(ScanReadError, match="NaN"):
        prepare_planes(planes, (1.0, 1.0), spec, "bad")


def test_for_kind_takes_overrides_of_any_field():
    spec = PreprocessSpec.for_kind("dual_energy", tile_rows=256, normalisation={"offset": [0, 0], "scale": [3, 2]},
                                   pad_value=[0, 0], channels=["a_low", "a_high"])
    assert spec.tile_rows == 256 and spec.channels == ["a_low", "a_high"] and spec.excess_reference == {}
    assert PreprocessSpec.for_kind("pseudo_color", pixel_pitch_mm=1.5).pixel_pitch_mm == 1.5
    with pytest.raises(ParcelscanError, match="unknown input kind"):
        PreprocessSpec.for_kind("single_energy")


def test_station_side_modules_do_not_import_torch():
    """The station install has no PyTorch: preprocessing and the data tools must run without it."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from parcelscan.datasets import preprocess, datatools, check, split, importers, stats, data_cli\n"
        "from parcelscan.datasets.scans.scanfile import Scan\n"
        "spec = preprocess.PreprocessSpec.from_json(sys.stdin.read())\n"
        "scan = Scan('x', np.full((700, 640), 30000, np.uint16), np.full((700, 640), 40000, np.uint16), {})\n"
        "assert preprocess.prepare_scan(scan, spec).tiles.shape == (2, 3, 320, 320)\n"
        "assert 'torch' not in sys.modules and 'albumentations' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], input=PreprocessSpec.dual_energy().to_json(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- one rule for a scan's pixel pitch (issue 12) ---------------------------------------------------------------
def test_one_pitch_rule_for_preprocessing_and_the_shield_check():
    """``row_pitch_mm`` 2, ``pixel_pitch_mm`` 1: a 30×30 px opaque block is 60 × 30 mm = 18 cm². The shield check
    once read only ``pixel_pitch_mm`` (9 cm²) while preprocessing read both: one function now serves both."""
    high = np.full((200, 200), 30000, np.uint16)
    high[50:80, 60:90] = 3
    scan = Scan("s", high.copy(), high, {"pixel_pitch_mm": 1.0, "row_pitch_mm": 2.0})
    spec = PreprocessSpec.dual_energy()
    assert scan_pitch_mm(scan, spec) == (2.0, 1.0)
    result = check_opaque(scan)
    # 18 cm² less the block's corners, which the pouch-shaped opening of the shield rule trims (9 under the old rule)
    assert result.alarm and result.largest_cm2 == pytest.approx(18.0, rel=0.02)
    assert result.pitch_mm == scan_pitch_mm(scan, spec)
    # no sidecar pitch: both assume the spec's assumed scan pitch
    bare = Scan("b", high.copy(), high, {})
    assert check_opaque(bare).pitch_mm == scan_pitch_mm(bare, spec) == (1.0, 1.0)
    # nonsense is refused by both, never silently replaced by a default in one of them
    for meta in ({"pixel_pitch_mm": float("nan")}, {"pixel_pitch_mm": 1.0, "row_pitch_mm": "2"},
                 {"pixel_pitch_mm": True}, {"row_pitch_mm": 500.0}):
        odd = Scan("o", high.copy(), high, meta)
        with pytest.raises(ScanReadError, match="pitch"):
            scan_pitch_mm(odd, spec)
        with pytest.raises(ScanReadError, match="pitch"):
            check_opaque(odd)
