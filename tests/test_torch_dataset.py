"""The torch Dataset: shapes, tile choice and labels, mask alignment under augmentation, determinism."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from parcelscan.datasets.augment import AugmentConfig, XrayAugment
from parcelscan.datasets.manifest import ManifestRecord, append_records
from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.physics.pseudocolor import pseudocolor_from_pair
from parcelscan.datasets.preprocess import PreprocessSpec
from parcelscan.datasets.scans.scanfile import Scan, write_png, write_station_scan
from parcelscan.datasets.torch_dataset import (
    ScanDataset,
    balanced_sampler,
    class_balanced_weights,
    collate,
    scan_scores,
)
from parcelscan.errors import ParcelscanError

POWDER = (slice(15, 55), slice(100, 140))  # 40 × 40 mm of Nd2O3, off-centre in the short parcels


def _write(root: Path, model, profile, scan_id: str, rows: int, cols: int, powder: tuple[slice, slice] | None,
           rng: np.random.Generator, label: str, with_mask: bool = True, scenario: str = "tin_can") -> ManifestRecord:
    materials = [get_material("cardboard"), get_material("water"), get_material("Nd2O3")]
    areal = np.zeros((3, rows, cols), np.float32)
    areal[0, 5:-5, 5:-5] = 0.4
    areal[1, 80:120, 10:50] = 3.0  # a water bottle: strong in A_low/A_high, ~0 in a_excess
    mask = np.zeros((rows, cols), np.uint8)
    if powder is not None:
        areal[2][powder] = 0.4
        mask[powder] = 255
    low, high = model.scan(materials, areal, rng)
    files = write_station_scan(Scan(scan_id, low, high, {"pixel_pitch_mm": 1.0, "profile": profile.name}), root,
                               rgb=pseudocolor_from_pair(low, high, profile))
    mask_name = None
    if with_mask and label == "suspect":
        mask_name = f"{scan_id}_mask.png"
        write_png(root / mask_name, mask)
    return ManifestRecord(scan_id, files, label, scenario if label == "suspect" else "none",
                          "Nd2O3" if label == "suspect" else None, mask=mask_name, parcel_id=scan_id, split="train")


@pytest.fixture(scope="module")
def data(tmp_path_factory, model, profile) -> Path:
    root = tmp_path_factory.mktemp("torchdata")
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        suspect = i % 2 == 0
        records.append(_write(root, model, profile, f"s{i}", 140, 160, POWDER if suspect else None, rng,
                              "suspect" if suspect else "clear"))
    # a long parcel (900 mm): two tiles at 2 mm; the powder only in the second
    records.append(_write(root, model, profile, "long", 900, 200, (slice(800, 860), slice(60, 120)), rng, "suspect"))
    # the same long parcel labelled suspect but without a mask
    records.append(_write(root, model, profile, "nomask", 900, 200, (slice(800, 860), slice(60, 120)), rng,
                          "suspect", with_mask=False))
    append_records(root / "manifest.jsonl", records)
    return root


@pytest.fixture(scope="module")
def spec() -> PreprocessSpec:
    return PreprocessSpec.dual_energy()


def test_items_have_the_contract_shapes_and_types(data, spec):
    dataset = ScanDataset(data, spec, split="train", augment=True, seed=3)
    assert len(dataset) == 8
    image, label, mask, meta = dataset[0]
    assert image.shape == (3, 320, 320) and image.dtype == torch.float32
    assert isinstance(label, int) and label == 1
    assert mask.shape == (1, 320, 320) and mask.dtype == torch.float32
    assert {"has_mask", "scan_id", "scenario", "material", "lookalike"} <= set(meta)
    assert meta["scan_id"] == "s0" and meta["has_mask"] and meta["material"] == "Nd2O3"
    images, labels, masks, metas = collate([dataset[i] for i in range(4)])
    assert images.shape == (4, 3, 320, 320) and labels.tolist() == [1, 0, 1, 0] and masks.shape == (4, 1, 320, 320)
    assert [m["scan_id"] for m in metas] == ["s0", "s1", "s2", "s3"]
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate)
    assert next(iter(loader))[0].shape == (4, 3, 320, 320)


def test_pseudo_colour_items(data):
    dataset = ScanDataset(data, PreprocessSpec.pseudo_color(), augment=True, seed=0)
    image, _, mask, _ = dataset[2]
    assert image.shape == (3, 320, 320) and image.dtype == torch.float32
    assert float(image.min()) >= -1e-6 and float(image.max()) <= 1.0 + 1e-6
    assert float(mask.sum()) > 100


def test_tile_choice_and_tile_labels_of_a_long_parcel(data, spec):
    dataset = ScanDataset(data, spec)
    index = [r.scan_id for r in dataset.records].index("long")
    item = dataset.prepared(index)
    assert item.tiles.shape == (2, 3, 320, 320) and item.prepared.tile_origins == [(0, 0), (130, 0)]
    assert item.tile_labels == [0, 1] and item.label == 1  # mask known: the first tile holds no powder
    _, label, mask, meta = dataset[index]
    assert meta["tile_index"] == 1 and label == 1 and float(mask.sum()) == pytest.approx(30 * 30, rel=0.02)
    # without a mask the scan label is all we know, for every tile
    nomask = [r.scan_id for r in dataset.records].index("nomask")
    assert dataset.prepared(nomask).tile_labels == [1, 1]
    _, label, mask, meta = dataset[nomask]
    assert label == 1 and not meta["has_mask"] and float(mask.sum()) == 0.0


def test_all_tiles_and_max_aggregation(data, spec):
    dataset = ScanDataset(data, spec)
    tiles = dataset.all_tiles()
    assert len(tiles) == 6 + 2 + 2
    indices = np.array([tiles[i][3]["index"] for i in range(len(tiles))])
    assert np.bincount(indices).tolist() == [1, 1, 1, 1, 1, 1, 2, 2]
    per_tile = np.array([float(tiles[i][2].sum()) for i in range(len(tiles))])  # powder area as the "score"
    scores = scan_scores(per_tile, indices)
    assert scores[6] == pytest.approx(per_tile[indices == 6].max()) and scores[1] == 0.0


def test_mask_stays_aligned_with_the_powder_under_augmentation(data, spec):
    """The powder is the only thing with a large a_excess: after augmentation the transformed mask must
    sit exactly where the transformed image shows it, whatever flips, rotations, stretch and shift did."""
    dataset = ScanDataset(data, spec, augment=True, seed=11)
    centres = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for index in (0, 2, 4):
            image, label, mask, _ = dataset[index]
            powder = image[2] * 0.5 > 0.3  # a_excess: Nd2O3 0.4 g/cm² gives ~0.9, water and cardboard ~0
            truth = mask[0] > 0.5
            assert label == 1 and truth.sum() > 200
            iou = (powder & truth).sum() / (powder | truth).sum()
            assert iou > 0.8, (epoch, index, float(iou))
            rows, cols = torch.nonzero(truth, as_tuple=True)
            centres.add((int(rows.float().mean()), int(cols.float().mean())))
    spread = np.ptp(np.array(sorted(centres)), axis=0)
    assert len(centres) > 12 and spread.min() > 30  # the augmentation really moved things around


def test_augmentation_is_deterministic_by_seed_epoch_and_index(data, spec):
    a = ScanDataset(data, spec, augment=True, seed=5)
    b = ScanDataset(data, spec, augment=True, seed=5)
    assert torch.equal(a[1][0], b[1][0]) and torch.equal(a[2][2], b[2][2])
    assert not torch.equal(a[1][0], ScanDataset(data, spec, augment=True, seed=6)[1][0])
    b.set_epoch(1)
    assert not torch.equal(a[1][0], b[1][0])
    plain = ScanDataset(data, spec)
    first = plain[1][0]
    plain.set_epoch(4)
    assert torch.equal(first, plain[1][0])  # no augmentation: epoch does not matter
    # worker processes give the same items as the main process
    loader = torch.utils.data.DataLoader(a, batch_size=2, num_workers=2, collate_fn=collate)
    batch = next(iter(loader))
    assert torch.equal(batch[0][1], a[1][0])


def test_class_balanced_weights_and_sampler(data, spec):
    dataset = ScanDataset(data, spec)
    weights = class_balanced_weights(dataset)
    labels = dataset.labels
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())
    assert weights.mean() == pytest.approx(1.0)
    drawn = list(balanced_sampler(dataset, num_samples=4000, seed=1))
    assert abs(np.mean(labels[drawn]) - 0.5) < 0.03
    assert drawn == list(balanced_sampler(dataset, num_samples=4000, seed=1))


def test_dual_energy_model_refuses_pseudo_colour_only_records(data, spec, tmp_path):
    import shutil

    root = tmp_path / "mixed"
    shutil.copytree(data, root)
    append_records(root / "manifest.jsonl", [ManifestRecord("photo", {"rgb": "s1_rgb.png"}, "clear",
                                                            kind="pseudo_color", source="station")])
    with pytest.raises(ParcelscanError, match="pseudo-colour-only"):
        ScanDataset(root, spec)
    assert len(ScanDataset(root, spec, skip_incompatible=True)) == 8
    rgb = ScanDataset(root, PreprocessSpec.pseudo_color())
    assert len(rgb) == 9 and rgb[8][0].shape == (3, 320, 320)


# --- augmentation physics ----------------------------------------------------------------------------
def test_quantum_noise_is_that_of_a_lower_dose():
    config = AugmentConfig(flip_p=0, rot90_p=0, affine_p=0, stretch_p=0, gain_p=0, noise_p=1.0, min_quanta=2000)
    augment = XrayAugment("dual_energy", config)
    planes = np.full((256, 256, 2), 0.25, np.float32)
    variances = []
    for seed in range(12):
        out, _ = augment(planes, None, np.random.default_rng(seed), nominal_quanta=20000)
        variances.append(out.var(axis=(0, 1)))
        assert abs(out.mean() - 0.25) < 1e-3  # noise only, no bias
    variances = np.array(variances)
    # variance T (1/N - 1/N0) for N in [2000, 20000]: between 0 and 0.25 * 4.5e-4
    assert variances.max() < 0.25 * (1 / 2000 - 1 / 20000) * 1.1
    assert variances.max() > 5 * variances.min()  # the dose really varies


def test_gain_jitter_keeps_the_channel_physics():
    """Calibration residuals (±1 % air gain, ±2 % attenuation scale, ±0.3 % dark offset) move a_excess by far less
    than a rare-earth powder's signal, and leave air at (nearly) zero attenuation."""
    from parcelscan.datasets.preprocess import excess_attenuation

    spec = PreprocessSpec.dual_energy()
    config = AugmentConfig(flip_p=0, rot90_p=0, affine_p=0, stretch_p=0, gain_p=1.0, noise_p=0)
    augment = XrayAugment("dual_energy", config)
    planes = np.empty((16, 16, 2), np.float32)
    planes[..., 0], planes[..., 1] = np.exp(-1.25), np.exp(-1.0)  # water at A_high = 1
    for seed in range(20):
        out, _ = augment(planes, None, np.random.default_rng(seed))
        excess = excess_attenuation(-np.log(out[..., 0]), -np.log(out[..., 1]), spec.excess_reference)
        assert np.abs(excess).max() < 0.07  # Nd2O3 at the same A_high: ~0.7
    air, _ = augment(np.ones((4, 4, 2), np.float32), None, np.random.default_rng(0))
    assert np.all(-np.log(air) < 0.011)


# --- the prepared-scan cache and tile flips ----------------------------------------------------------
def test_cache_returns_exactly_what_the_preprocessing_computes(data, spec, tmp_path):
    plain = ScanDataset(data, spec, split="train")
    cached = ScanDataset(data, spec, split="train", cache_root=tmp_path)
    for index in range(len(plain)):
        first = cached.prepared(index)  # miss: computes and stores
        again = cached.prepared(index)  # hit: read back
        reference = plain.prepared(index)
        for item in (first, again):
            assert torch.equal(item.tiles, reference.tiles)
            assert item.tile_labels == reference.tile_labels
            assert item.prepared.tile_origins == reference.prepared.tile_origins
            assert item.prepared.content_shape == reference.prepared.content_shape
            assert (item.masks is None) == (reference.masks is None)
            if item.masks is not None:
                assert torch.equal(item.masks, reference.masks)
    entries = list((tmp_path / f"prepared-{spec.fingerprint()}").glob("*.prepared"))
    assert len(entries) == len(plain)


def test_cache_hit_skips_decoding_and_a_changed_file_is_recomputed(data, spec, tmp_path, monkeypatch):
    dataset = ScanDataset(data, spec, split="train", cache_root=tmp_path)
    dataset.prepared(0)
    calls = []
    original = ScanDataset._prepare
    monkeypatch.setattr(ScanDataset, "_prepare", lambda self, i, rng: calls.append(i) or original(self, i, rng))
    dataset.prepared(0)
    assert calls == []  # served from the cache
    low = data / dataset.records[0].files["low"]
    stat = low.stat()
    try:
        import os

        os.utime(low, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the scan file was replaced
        dataset.prepared(0)
        assert calls == [0]
    finally:
        os.utime(low, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_torn_or_foreign_cache_entry_is_recomputed_never_served(data, spec, tmp_path):
    """An entry whose bytes do not match its header (cut short, longer, not an entry at all) is a miss: the scan is
    prepared again, exactly, and the entry rewritten whole."""
    dataset = ScanDataset(data, spec, split="train", cache_root=tmp_path)
    reference = ScanDataset(data, spec, split="train").prepared(0)
    dataset.prepared(0)
    entry = dataset.cache.path(dataset.records[0])
    whole = entry.read_bytes()
    header = whole[:whole.index(b"\n") + 1]
    for damaged in (whole[:-1], whole[:len(header) + 7], whole + b"\0\0\0\0", header, b"PK\x03\x04 not an entry",
                    b"", b"[1, 2]\n", whole.replace(b'"tiles_shape": [', b'"tiles_shape": [-', 1)):
        entry.write_bytes(damaged)
        assert dataset.cache.get(dataset.records[0], data) is None
        item = dataset.prepared(0)
        assert torch.equal(item.tiles, reference.tiles)
        assert entry.read_bytes() == whole


def test_cache_masks_are_deflated_and_format_2_entries_still_serve(data, spec, tmp_path):
    """Format 3 stores the mask tiles deflated (almost all zeros: a quarter of a raw entry's bytes), and reads back the
    very same floats; an entry written by the format-2 code (every array raw) is still served, unchanged."""
    dataset = ScanDataset(data, spec, split="train", cache_root=tmp_path)
    index = next(i for i in range(len(dataset)) if dataset.records[i].mask)
    reference = ScanDataset(data, spec, split="train").prepared(index)
    dataset.prepared(index)
    entry = dataset.cache.path(dataset.records[index])
    whole = entry.read_bytes()
    header = json.loads(whole[:whole.index(b"\n")])
    raw_mask_bytes = int(np.prod(header["mask_shape"])) * 4
    assert header["format"] == 3 and 0 < header["mask_deflated_bytes"] < raw_mask_bytes / 20
    assert reference.masks is not None and reference.masks.sum() > 0  # a mask with powder in it, not only zeros
    tiles_end = whole.index(b"\n") + 1 + int(np.prod(header["tiles_shape"])) * 4
    format_2 = dict(header, format=2)
    del format_2["mask_deflated_bytes"]
    entry.write_bytes(json.dumps(format_2).encode() + b"\n" + whole[whole.index(b"\n") + 1:tiles_end]
                      + reference.masks.numpy().astype("<f4").tobytes())
    served = dataset.cache.get(dataset.records[index], data)
    assert served is not None
    assert torch.equal(torch.from_numpy(served[0].tiles), reference.tiles)
    assert torch.equal(torch.from_numpy(served[1]), reference.masks)
    entry.write_bytes(whole[:tiles_end] + zlib.compress(b"\0" * (raw_mask_bytes + 4)))  # inflates to another length
    assert dataset.cache.get(dataset.records[index], data) is None


def test_cache_is_per_spec_and_never_serves_augmented_items(data, spec, tmp_path):
    other = PreprocessSpec.dual_energy(pixel_pitch_mm=4.0, tile_rows=160, tile_cols=160)
    ScanDataset(data, spec, split="train", cache_root=tmp_path).prepared(0)
    small = ScanDataset(data, other, split="train", cache_root=tmp_path).prepared(0)
    assert small.tiles.shape[-2:] == (160, 160)
    assert len(list(tmp_path.glob("prepared-*"))) == 2
    augmented = ScanDataset(data, spec, split="train", augment=True, seed=1, cache_root=tmp_path)
    augmented.set_epoch(1)
    a, b = augmented[0][0], augmented[0][0]
    augmented.set_epoch(2)
    assert torch.equal(a, b) and not torch.equal(a, augmented[0][0])  # still augmented per epoch


def test_tile_flips_move_image_and_mask_together_and_vary_by_epoch(data, spec, tmp_path):
    plain = ScanDataset(data, spec, split="train")
    flipping = ScanDataset(data, spec, split="train", tile_flips=True, seed=5, cache_root=tmp_path)
    image0, label0, mask0, _ = plain[0]
    seen = set()
    for epoch in range(12):
        flipping.set_epoch(epoch)
        image, label, mask, _ = flipping[0]
        assert label == label0
        variants = {(r, c): (torch.flip(image0, [d for d, f in ((-2, r), (-1, c)) if f]) if r or c else image0,
                             torch.flip(mask0, [d for d, f in ((-2, r), (-1, c)) if f]) if r or c else mask0)
                    for r in (0, 1) for c in (0, 1)}
        match = [k for k, (img, msk) in variants.items() if torch.equal(img, image) and torch.equal(msk, mask)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) >= 3  # flips actually happen, on both axes


# --- twins and training windows (issue 14) ------------------------------------------------------------------
def _with_twins(data: Path, name: str) -> Path:
    """The fixture's manifest with clear scans s1 and s3 marked as twin fills and s5's twin_of unknown."""
    from dataclasses import replace

    from parcelscan.datasets.manifest import read_manifest, write_manifest

    twin_of = {"s1": ["La2O3"], "s3": ["GeO2", "Ga"], "s5": None}
    records = [replace(r, twin_of=twin_of.get(r.scan_id, [] if r.label == "clear" else r.twin_of))
               for r in read_manifest(data)]
    path = data / name
    write_manifest(path, records)
    return path


def test_twin_policies(data, spec):
    from parcelscan.datasets.torch_dataset import is_twin

    path = _with_twins(data, "twins.jsonl")
    negative = ScanDataset(path, spec, twin_policy="negative")
    assert [r.scan_id for r in negative.records if is_twin(r)] == ["s1", "s3"]  # s5: unknown is not a twin
    ignore = ScanDataset(path, spec, twin_policy="ignore")
    assert ignore.twins_left_out == 2 and {r.scan_id for r in ignore.records} == \
        {r.scan_id for r in negative.records} - {"s1", "s3"}
    positive = ScanDataset(path, spec, twin_policy="positive")
    by_id = {r.scan_id: i for i, r in enumerate(positive.records)}
    for scan_id, label in (("s1", 1), ("s3", 1), ("s5", 0), ("s0", 1)):
        index = by_id[scan_id]
        _, tile_label, _, meta = positive[index]
        assert tile_label == label and positive.labels[index] == label, scan_id
        # a twin's fill has no mask: no mask loss (has_mask False), never an all-zero "nothing here" mask
        assert meta["has_mask"] == (scan_id != "s1" and scan_id != "s3") and meta["twin"] == (label and scan_id != "s0")
    assert negative[by_id["s1"]][1] == 0 and negative[by_id["s1"]][3]["has_mask"]
    with pytest.raises(ParcelscanError, match="twin_policy"):
        ScanDataset(path, spec, twin_policy="maybe")


def test_training_windows_hold_the_powder_and_keep_image_and_mask_aligned(data, spec):
    dataset = ScanDataset(data, spec, crop=64, tile_flips=True)
    suspects = [i for i, r in enumerate(dataset.records) if r.mask is not None]
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            image, label, mask, meta = dataset[index]
            assert image.shape == (spec.in_channels, 64, 64) and mask.shape == (1, 64, 64)
            assert label == int(mask.sum() >= 1) or not meta["has_mask"]
            if index in suspects:  # the window is centred on powder (jitter ≤ a quarter window): it holds some
                assert label == 1 and mask.sum() > 0
                # the powder's excess attenuation lies under the mask, not beside it
                excess = image[spec.channels.index("a_excess")]
                assert excess[mask[0] > 0.5].mean() > excess[mask[0] == 0].mean() + 0.2
    with pytest.raises(ParcelscanError, match="crop"):
        ScanDataset(data, spec, crop=48)
