"""Where the body mass's error is *not*: given the simulator's true background under a body and the body's true
material, ``physics.mass``'s conversion of excess attenuation into grams weighs the powder of a real simulated
postal scan (noise, blur, and a scanner variant whose spectrum is not the station profile's) to a few per cent.

Why this test: the estimator reads a median ~50 % off on the ground-truth masks of pure-powder suspects, and the
error was taken apart on dev sets 7400 / 7402 (238 / 230 pure-powder suspects, README "What the scan shows, in
grams"): with the true background and the true material the readable bodies weigh to a median 1.2 % / 2.2 %;
with the estimator's own background 11 % / 8 %; with the reference its R reading picks, 43 % / 37 %. The errors
are the choice of reference (R does not tell the targets' areal-density classes apart) and the stopped beam,
not the spectra, the hardening or the unit conversion — this test keeps that true."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.mass import OPAQUE_A, areal_from_excess, grown
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.physics.pseudocolor import transmission_to_log_attenuation
from parcelscan.datasets.simulator.parcel import SimConfig, build_scene, scanner_variant, simulate_scan


def _blurred(log_att: np.ndarray, blur_px: float) -> np.ndarray:
    """The noiseless image as the detector's blur sees it (the blur acts on transmission)."""
    transmission = np.exp(-log_att.astype(np.float32))
    if blur_px > 0:
        transmission = cv2.GaussianBlur(transmission, (0, 0), blur_px, borderType=cv2.BORDER_REPLICATE)
    return -np.log(np.maximum(transmission, 1e-30))


# dev seed 7400 (never a bar seed): scan 1 is a 19 g GeO2 mail pouch scanned by a "cu-20%" variant, scan 9 a 49 g
# RE-carbonate bag in a tile stack under the base spectrum (its estimator's background reads 74 % too much)
@pytest.mark.parametrize("index", [1, 9])
def test_true_background_and_material_weigh_the_powder(index):
    profile = default_profile()
    config = SimConfig(profile=profile, seed=7400, suspect_fraction=1.0, mix="postal")
    scan = simulate_scan(config, index)
    scene = build_scene(config, index)  # the same streams: the same scene, scanner variant and blur
    physics, _, _, blur = scanner_variant(scene.scanner_rng, profile, config.spectral_variants)
    raster = scene.raster
    material_name = scan.labels["material"]
    truth_g = scan.labels["mass_g"]
    assert scan.labels["mass_fraction"] == 1.0 and truth_g > 0
    without = raster.areal_g_cm2.copy()
    material = None
    for k, candidate in enumerate(raster.materials):
        if candidate.name == material_name:
            without[k] = np.maximum(without[k] - raster.target_g_cm2, 0.0)
            material = candidate
    assert material is not None
    bg_low, bg_high = (_blurred(a, blur) for a in forward_model(physics).log_attenuation(raster.materials, without))
    a_high = transmission_to_log_attenuation(scan.high)
    body = grown(scan.mask > 0)
    assert (a_high[body] < OPAQUE_A).all()  # a readable body: the beam crosses all of it
    pitch_mm = profile.pixel_pitch_mm
    areal = areal_from_excess(profile, material, float(bg_low[body].mean()), float(bg_high[body].mean()),
                              (a_high - bg_high)[body])
    weighed_g = float(areal.sum()) * pitch_mm * pitch_mm / 100.0
    assert abs(weighed_g - truth_g) / truth_g < 0.05, (weighed_g, truth_g)
