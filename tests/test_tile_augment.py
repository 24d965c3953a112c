"""Physical augmentation of a prepared tile (``datasets.tile_augment``): the physics it claims, and its place in
the cached training path (deterministic by seed, epoch and index; the mask and label follow; padding stays air)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from parcelscan.datasets.augment import AugmentConfig, XrayAugment
from parcelscan.datasets.manifest import ManifestRecord, append_records
from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.physics.pseudocolor import OPAQUE_A_HIGH
from parcelscan.datasets.physics.signature import RESOLUTION
from parcelscan.datasets.preprocess import PreprocessSpec, excess_attenuation, normalise
from parcelscan.datasets.scans.scanfile import Scan, write_png, write_station_scan
from parcelscan.datasets.tile_augment import TileAugment, TileAugmentConfig
from parcelscan.datasets.torch_dataset import ScanDataset
from parcelscan.errors import ParcelscanError
from parcelscan.training.config import TrainConfig

OFF = dict(gain_p=0.0, noise_p=0.0, blur_p=0.0, stretch_p=0.0)
SPEC = PreprocessSpec.dual_energy()


def _tile(a_low: np.ndarray, a_high: np.ndarray) -> np.ndarray:
    """A normalised (3, h, w) tile from raw log-attenuations, exactly as the preprocessing builds one."""
    raw = np.stack([a_low, a_high, excess_attenuation(a_low, a_high, SPEC.excess_reference)]).astype(np.float32)
    return normalise(raw, SPEC)


def _raw_with(a: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Raw (3, h, w) channels of a material with A_low = A_high = a."""
    return np.stack([a, a, excess_attenuation(a, a, spec.excess_reference)]).astype(np.float32)


def _raw(tile: np.ndarray) -> np.ndarray:
    scale = np.asarray(SPEC.normalisation["scale"], np.float32)[:, None, None]
    offset = np.asarray(SPEC.normalisation["offset"], np.float32)[:, None, None]
    return tile * scale + offset


def test_with_every_step_off_the_tile_comes_back_unchanged():
    rng = np.random.default_rng(0)
    a_high = rng.uniform(0.0, 6.0, (64, 64)).astype(np.float32)
    tile = _tile(a_high * 1.3, a_high)
    mask = (rng.random((64, 64)) > 0.5).astype(np.float32)
    out, out_mask = TileAugment(SPEC, TileAugmentConfig(**OFF))(tile, mask, np.random.default_rng(1))
    np.testing.assert_allclose(out, tile, atol=2e-5)
    np.testing.assert_array_equal(out_mask, mask)


def test_noise_is_that_of_a_lower_dose_averaged_over_the_model_pixel():
    """Mean variance over many draws of N (log-uniform in [N_min, N0]) is E[T (1/N − 1/N0) / b]."""
    transmission, n0, n_min, binning = 0.2, 20000.0, 3000.0, 4.0
    config = TileAugmentConfig(**(OFF | {"noise_p": 1.0, "min_quanta": n_min}))
    augment = TileAugment(SPEC, config)
    a = np.full((128, 128), -math.log(transmission), np.float32)
    tile = _tile(a, a)
    variances, means = [], []
    for seed in range(300):
        out, _ = augment(tile, None, np.random.default_rng(seed), scan_pixels_per_model_pixel=binning,
                         nominal_quanta=n0)
        t_high = np.exp(-_raw(out)[1])
        variances.append(t_high.var())
        means.append(t_high.mean())
    mean_inverse_dose = (1 / n_min - 1 / n0) / math.log(n0 / n_min)  # E[1/N] for log-uniform N
    expected = transmission * (mean_inverse_dose - 1 / n0) / binning
    assert abs(np.mean(variances) / expected - 1) < 0.08
    assert abs(np.mean(means) - transmission) < 1e-4  # unbiased
    assert max(variances) > 4 * min(variances)  # the dose really varies


def test_calibration_residuals_keep_the_material_signal():
    """±1 % air gain, ±2 % attenuation drift, ±0.3 % offset move water's excess far less than a rare-earth
    oxide's (~0.7 at A_high 1), and leave air at (nearly) zero attenuation."""
    augment = TileAugment(SPEC, TileAugmentConfig(**(OFF | {"gain_p": 1.0})))
    water = _tile(np.full((8, 8), 1.25, np.float32), np.full((8, 8), 1.0, np.float32))
    air = _tile(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32))
    for seed in range(30):
        out, _ = augment(water, None, np.random.default_rng(seed))
        assert np.abs(_raw(out)[2]).max() < 0.07
        out_air, _ = augment(air, None, np.random.default_rng(seed))
        assert np.all(_raw(out_air)[:2] < 0.011)


def test_calibration_residuals_stay_within_the_drift_the_twin_labels_allow():
    """The twin labels assume the scanner resolves R to a calibration drift of 0.3 % (ResolutionModel). Neither
    augmentation may move R of a readable region by more than three times that, or it teaches the network to
    ignore differences the labels call resolvable; and neither may turn a stopped beam into a readable one
    (the former ±0.3 % dark offset lifted A_high 11 to ~6, with a random R)."""
    tile_augment = TileAugment(SPEC, TileAugmentConfig(**(OFF | {"gain_p": 1.0})))
    scan_augment = XrayAugment("dual_energy", AugmentConfig(flip_p=0, rot90_p=0, affine_p=0, stretch_p=0,
                                                            gain_p=1.0, noise_p=0))
    bound = 3 * RESOLUTION.calibration_drift_rel
    for a_high in (0.5, 1.0, 2.0, 4.0):
        a_low = 1.3 * a_high
        tile = _tile(np.full((8, 8), a_low, np.float32), np.full((8, 8), a_high, np.float32))
        planes = np.empty((8, 8, 2), np.float32)
        planes[..., 0], planes[..., 1] = math.exp(-a_low), math.exp(-a_high)
        for seed in range(40):
            raw = _raw(tile_augment(tile, None, np.random.default_rng(seed))[0])
            assert np.abs(raw[0] / raw[1] / 1.3 - 1).max() <= bound, a_high
            out, _ = scan_augment(planes, None, np.random.default_rng(seed))
            ratio = np.log(out[..., 0]) / np.log(out[..., 1])
            assert np.abs(ratio / 1.3 - 1).max() <= bound, a_high
    stopped = _tile(np.full((8, 8), 11.09, np.float32), np.full((8, 8), 11.09, np.float32))
    for seed in range(40):
        assert _raw(tile_augment(stopped, None, np.random.default_rng(seed))[0])[1].min() >= OPAQUE_A_HIGH
        out, _ = scan_augment(np.full((8, 8, 2), 1 / 65535, np.float32), None, np.random.default_rng(seed))
        assert (-np.log(out[..., 1])).min() >= OPAQUE_A_HIGH


def test_a_model_with_an_attenuation_ceiling_never_sees_past_it():
    """Dose noise and a dark offset push a stopped beam's reading around; with ``attenuation_ceiling`` the augmented
    tile is clamped again by the preprocessing's own channels: nothing lies beyond the ceiling, and what lies below
    it is the noise a lower dose really adds there (at 3,000 quanta its σ is about T itself at the opaque level)."""
    spec = PreprocessSpec.dual_energy(attenuation_ceiling=OPAQUE_A_HIGH)
    a = np.full((64, 64), OPAQUE_A_HIGH, np.float32)
    a[:, :32] = 2.0  # half readable, half stopped
    stopped = normalise(_raw_with(a, spec), spec)
    config = TileAugmentConfig(**(OFF | {"noise_p": 1.0, "gain_p": 1.0}))
    t_opaque = math.exp(-OPAQUE_A_HIGH)
    sigma_rel = math.sqrt(t_opaque * (1 / config.min_quanta - 1 / 20000.0)) / t_opaque  # σ_T / T at the lowest dose
    for seed in range(20):
        out, _ = TileAugment(spec, config)(stopped, None, np.random.default_rng(seed), nominal_quanta=20000.0)
        raw = _raw(out)  # the same normalisation as SPEC's
        assert raw[:2].max() <= OPAQUE_A_HIGH + 1e-5
        assert raw[:2, :, 40:].min() > OPAQUE_A_HIGH - math.log1p(5 * sigma_rel)  # below it: the dose's noise, < 5 σ
        unclamped, _ = TileAugment(SPEC, config)(normalise(_raw_with(a, SPEC), SPEC), None,
                                                 np.random.default_rng(seed), nominal_quanta=20000.0)
        assert _raw(unclamped)[:2].max() > OPAQUE_A_HIGH + 0.1  # the same draws without the ceiling read past it


def test_belt_stretch_moves_the_mask_with_the_powder():
    augment = TileAugment(SPEC, TileAugmentConfig(**(OFF | {"stretch_p": 1.0})))
    a_high = np.full((96, 96), 0.3, np.float32)
    a_low = a_high * 1.25
    mask = np.zeros((96, 96), np.float32)
    a_low[20:40, 30:50] += 1.5  # a high-Z body: strong excess
    mask[20:40, 30:50] = 1.0
    tile = _tile(a_low, a_high)
    moved = 0
    for seed in range(20):
        out, out_mask = augment(tile, mask, np.random.default_rng(seed))
        body = _raw(out)[2] > 0.8
        assert (body == (out_mask > 0.5)).mean() > 0.99  # the mask is where the powder now is
        assert 0.8 * 400 <= out_mask.sum() <= 1.2 * 400  # stretched along rows by 0.85-1.15 only
        moved += not np.array_equal(out_mask, mask)
    assert moved >= 15


def test_padding_beyond_the_scan_stays_air():
    augment = TileAugment(SPEC, TileAugmentConfig(gain_p=1.0, noise_p=1.0, blur_p=1.0, stretch_p=0.0))
    tile = _tile(np.full((96, 96), 0.5, np.float32), np.full((96, 96), 0.4, np.float32))
    tile[:, 80:, :] = 0.0  # air, as cut_tiles pads
    tile[:, :, 90:] = 0.0
    for seed in range(10):
        out, _ = augment(tile, None, np.random.default_rng(seed), content_rows=80, content_cols=90,
                         scan_pixels_per_model_pixel=16.0, nominal_quanta=20000.0)
        assert np.all(out[:, 80:, :] == 0.0) and np.all(out[:, :, 90:] == 0.0)
        assert np.any(out[:, :80, :90] != tile[:, :80, :90])


def test_pseudo_colour_and_double_augmentation_are_refused():
    with pytest.raises(ParcelscanError, match="dual-energy"):
        TileAugment(PreprocessSpec.pseudo_color())
    with pytest.raises(ParcelscanError, match="tile_augment"):
        TrainConfig(tile_augment=True, augment=True).validate()
    with pytest.raises(ParcelscanError, match="tile_augment"):
        TrainConfig(tile_augment=True, augment=False, input_kind="pseudo_color").validate()
    TrainConfig(tile_augment=True, augment=False).validate()


@pytest.fixture(scope="module")
def data(tmp_path_factory, model, profile) -> Path:
    root = tmp_path_factory.mktemp("tileaug")
    rng = np.random.default_rng(0)
    materials = [get_material("cardboard"), get_material("Nd2O3")]
    records = []
    for i in range(4):
        areal = np.zeros((2, 140, 160), np.float32)
        areal[0, 5:-5, 5:-5] = 0.4
        mask = np.zeros((140, 160), np.uint8)
        if i % 2 == 0:
            areal[1, 20:60, 90:130] = 0.4
            mask[20:60, 90:130] = 255
        low, high = model.scan(materials, areal, rng)
        files = write_station_scan(Scan(f"t{i}", low, high, {"pixel_pitch_mm": 1.0, "profile": profile.name}), root)
        mask_name = None
        if i % 2 == 0:
            mask_name = f"t{i}_mask.png"
            write_png(root / mask_name, mask)
        label = "suspect" if i % 2 == 0 else "clear"
        records.append(ManifestRecord(f"t{i}", files, label, "mail_pouch" if label == "suspect" else "none",
                                      "Nd2O3" if label == "suspect" else None, mask=mask_name, parcel_id=f"t{i}",
                                      split="train", provenance={"air_quanta_per_pixel": 15000.0}))
    append_records(root / "manifest.jsonl", records)
    return root


def test_cached_items_are_augmented_per_epoch_and_deterministic(data, tmp_path):
    spec = PreprocessSpec.dual_energy()
    plain = ScanDataset(data, spec, cache_root=tmp_path)
    a = ScanDataset(data, spec, cache_root=tmp_path, tile_augment=True, seed=3)
    b = ScanDataset(data, spec, cache_root=tmp_path, tile_augment=True, seed=3)
    for index in range(len(a)):
        image, label, mask, _ = a[index]
        again, label_again, mask_again, _ = b[index]
        assert torch.equal(image, again) and torch.equal(mask, mask_again) and label == label_again
        assert not torch.equal(image, plain[index][0])  # augmented after the cache
        assert label == plain[index][1]  # the powder stays in the tile: the label follows the mask
        a.set_epoch(1)
        assert not torch.equal(a[index][0], image)  # a new realisation each epoch
        a.set_epoch(0)
