"""Threat image projection in the forward model (datasets/simulator/projection.py), against the simulator.

The composite of a real-as-rendered background and a threat must look like the scan the simulator renders
directly from the same parcel with the same concealment inside it: over the concealment, A_high and
A_low agree within the noise (a paired comparison, pixel by pixel, the same background geometry), and so
does the noise itself. The control: multiplying by the threat's stand-alone transmission (the naive
composite) is many standard errors off on the same pixels, so the comparison can tell.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.simulator import projection as tip
from parcelscan.datasets.simulator.parcel import SimConfig, build_scene, plan_for

AIR_QUANTA, BLUR_PX = 12000.0, 0.85  # not the profile's (20000, 0.7): the composite must measure them


@pytest.fixture(scope="module")
def background(profile):
    """A clear simulated parcel (no look-alike), its areal maps and its noisy 16-bit scan."""
    config = SimConfig(profile, seed=3, suspect_fraction=0.0, spectral_variants=False)
    index = next(i for i in range(50) if plan_for(config, i).lookalike is None)
    scene = build_scene(config, index)
    model = forward_model(profile)
    a_low, a_high = model.log_attenuation(scene.raster.materials, scene.raster.areal_g_cm2)
    low, high = model.detect(a_low, a_high, np.random.default_rng(1), air_quanta_per_pixel=AIR_QUANTA,
                             blur_sigma_px=BLUR_PX)
    return scene.raster, low, high


def _attenuation(image: np.ndarray) -> np.ndarray:
    return -np.log(np.maximum(image / 65535.0, 1e-6))


def _direct(profile, raster, threat, position):
    """The simulator's own scan of the parcel with the threat inside: areal densities added, rendered, detected."""
    model = forward_model(profile)
    h, w = threat.shape
    r0, c0 = position
    materials = list(raster.materials) + list(threat.materials)
    maps = np.zeros((len(materials), *raster.areal_g_cm2.shape[1:]), np.float32)
    maps[:len(raster.materials)] = raster.areal_g_cm2
    maps[len(raster.materials):, r0:r0 + h, c0:c0 + w] = threat.areal_g_cm2
    a_low, a_high = model.log_attenuation(materials, maps)
    return model.detect(a_low, a_high, np.random.default_rng(9), air_quanta_per_pixel=AIR_QUANTA,
                        blur_sigma_px=BLUR_PX)


def test_the_detector_is_measured_on_the_scans_own_air(profile):
    model = forward_model(profile)
    air = np.zeros((300, 300), np.float32)
    for quanta, blur in ((20000.0, 0.7), (12000.0, 0.85), (40000.0, 1.0), (8000.0, 0.5)):
        low, high = model.detect(air, air, np.random.default_rng(1), air_quanta_per_pixel=quanta, blur_sigma_px=blur)
        measured = tip.measure_detector(low, high, profile)
        assert measured.air_quanta_per_pixel == pytest.approx(quanta, rel=0.05)
        assert measured.blur_sigma_px == pytest.approx(blur, abs=0.05)


@pytest.mark.parametrize("scenario", ["mail_pouch", "water_bottle", "tile_ingredients"])
def test_a_composite_matches_the_simulators_direct_scan_within_noise(profile, background, scenario):
    raster, low, high = background
    for seed in range(20):  # a threat whose powder lies where the beam still carries information
        threat = tip.make_threat(np.random.default_rng([7, seed]), scenario, "Dy2O3", profile.pixel_pitch_mm)
        position = tip.choose_position(low, high, threat, np.random.default_rng(seed))
        if position is None:
            continue
        composite = tip.project(low, high, threat, position, profile, np.random.default_rng(5))
        direct_low, direct_high = _direct(profile, raster, threat, position)
        inner = cv2.erode(composite.mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        region = inner & (_attenuation(direct_high) < 6.0)
        if region.sum() >= 800:
            break
    else:
        pytest.fail(f"no {scenario} threat over a background the beam gets through")
    assert composite.provenance["air_quanta_per_pixel"] == pytest.approx(AIR_QUANTA, rel=0.05)
    naive_low, naive_high = tip.naive_composite(low, high, threat, position, profile)
    blocks = region.sum() / 4.0  # the detector blur correlates neighbours: ~4 pixels per independent sample

    def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        d = (_attenuation(a) - _attenuation(b))[region]
        return float(d.mean()), float(d.std() / np.sqrt(blocks))

    naive_misses = []
    for ours, naive, theirs in ((composite.high, naive_high, direct_high), (composite.low, naive_low, direct_low)):
        bias, standard_error = paired(ours, theirs)
        # within the noise, plus 0.5 % of A: the detector blur of the direct scan over the powder's own
        # structure (measured: −0.3 % at A_high ≈ 4) and the two-basis estimate (+0.1 % without noise or blur)
        tolerance = 4 * standard_error + 0.005 * float(_attenuation(theirs)[region].mean())
        assert abs(bias) < tolerance, (scenario, bias, standard_error, tolerance)
        naive_bias, _naive_error = paired(naive, theirs)
        naive_misses.append((round(naive_bias, 4), round(tolerance, 4)))
    # the control: the naive composite fails the same comparison (so the comparison can fail)
    assert any(abs(bias) > 1.5 * tolerance for bias, tolerance in naive_misses), (scenario, naive_misses)
    ratio = {name: _attenuation(lo)[region].mean() / _attenuation(hi)[region].mean()
             for name, lo, hi in (("ours", composite.low, composite.high), ("direct", direct_low, direct_high))}
    assert ratio["ours"] == pytest.approx(ratio["direct"], abs=0.01)

    def grain(image: np.ndarray) -> float:  # the noise: the pixel minus its 5x5 neighbourhood
        a = _attenuation(image)
        return float((a - cv2.blur(a, (5, 5)))[region].std())

    assert grain(composite.high) == pytest.approx(grain(direct_high), rel=0.12)
    assert grain(composite.low) == pytest.approx(grain(direct_low), rel=0.12)
    # outside the threat's footprint (and its blur) the scan is untouched, bit for bit
    r0, r1, c0, c1 = composite.box
    outside = np.ones(low.shape, bool)
    outside[r0:r1, c0:c1] = False
    assert np.array_equal(composite.low[outside], low[outside]) and np.array_equal(composite.high[outside],
                                                                                    high[outside])


def test_the_library_holds_every_scenario_and_reads_back(tmp_path, profile):
    paths = tip.make_library(tmp_path, profile.pixel_pitch_mm, seed=1, targets=("Dy2O3", "Nd2O3"))
    index = tip.read_library(tmp_path)
    assert sorted({(line["scenario"], line["target"]) for line in index}) == sorted(
        (s, t) for s in tip.SCENARIOS for t in ("Dy2O3", "Nd2O3"))
    for path, line in zip(paths, index, strict=True):
        threat = tip.ThreatImage.load(path)
        assert (threat.scenario, threat.target, threat.name) == (line["scenario"], line["target"], line["name"])
        pixel_cm2 = (profile.pixel_pitch_mm / 10) ** 2
        assert float(threat.target_g_cm2.sum()) * pixel_cm2 == pytest.approx(threat.mass_g, rel=0.01, abs=0.1)
        assert threat.mass_g >= 10.0 and "g" in threat.describe()
