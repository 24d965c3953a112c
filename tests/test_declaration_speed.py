"""The weighing's speed-ups (issue 15 part 4) give the same numbers as the plain expressions they replace.

* ``declaration.log_attenuation`` reads −ln(max(T, 1)/65535) from a table: every one of the 65,536 grey levels,
  and real and odd-shaped images, equal ``pseudocolor.transmission_to_log_attenuation`` to the bit.
* ``observe_heat`` labels the heatmap's bodies inside their even-aligned bounding box only: the labels, and so the
  order of bodies of equal area, are those of labelling the whole scan; the observation of a sample scan with
  several bodies (two of equal area) equals the one made the plain way (whole-image labels, the logs computed).
* A body weighed from its window (``mass.body_window``: the images and the region cut to it) is the body weighed
  from the whole images, every float to the bit — regions at the images' edges and corners, ragged and thin ones,
  one beyond the beam included.
* ``parcel_mass`` from the grey levels through the log table (air blocks skipped, the rest pooled from the levels)
  is ``parcel_mass`` of the log images to the bit: sample scans, random scans with air, content and stopped beam,
  blocks at the air level and one level darker, every block size ``block_mean`` reads itself, images too small for it,
  odd sizes and other layouts.
* ``signature``'s kV neighbours are made once per profile and are the profile at ±KV_STEP.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np

from parcelscan.datasets.physics import mass, signature
from parcelscan.datasets.physics.mass import body_mass, parcel_mass
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.physics.pseudocolor import transmission_to_log_attenuation
from parcelscan.datasets.scans.readers import discover_scans
from parcelscan.inference import declaration

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scans"


def test_the_log_table_is_the_float32_expression_to_the_bit():
    levels = np.arange(65536, dtype=np.uint16)
    assert np.array_equal(declaration.log_attenuation(levels), transmission_to_log_attenuation(levels))
    rng = np.random.default_rng(7)
    image = rng.integers(0, 65536, (123, 457), dtype=np.uint16)
    for view in (image, image[::3, 1::2], image.T, image[:1, :1]):
        got = declaration.log_attenuation(view)
        assert got.dtype == np.float32 and got.shape == view.shape
        assert np.array_equal(got, transmission_to_log_attenuation(view))
    scan = next(ref for ref in discover_scans([SAMPLES]) if ref.ok and ref.format == "pair").load()
    for channel in (scan.low, scan.high):
        assert np.array_equal(declaration.log_attenuation(channel), transmission_to_log_attenuation(channel))
    other = rng.integers(0, 65536, (9, 11)).astype(np.float64)  # not 16-bit: the expression itself
    assert np.array_equal(declaration.log_attenuation(other), transmission_to_log_attenuation(other))


def _whole_labels(hot: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hot, 8)
    return count, labels, stats


def test_labelling_the_box_numbers_the_bodies_as_the_whole_image():
    rng = np.random.default_rng(11)
    for _ in range(150):
        rows, cols = int(rng.integers(40, 900)), int(rng.integers(40, 700))
        hot = np.zeros((rows, cols), np.uint8)
        for _ in range(int(rng.integers(0, 10))):
            r, c = int(rng.integers(0, rows)), int(rng.integers(0, cols))
            hot[r:r + int(rng.integers(1, 60)), c:c + int(rng.integers(1, 60))] = 1
        if rng.random() < 0.5:  # ragged bodies: many small components, diagonal contacts
            hot &= (rng.random((rows, cols)) < 0.6).astype(np.uint8)
        count, labels, stats = _whole_labels(hot)
        box = declaration._hot_box(hot)
        if box is None:
            assert count == 1
            continue
        assert box[0].start % 2 == 0 and box[1].start % 2 == 0
        count_box, labels_box, stats_box, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(hot[box]), 8)
        placed = np.zeros_like(labels)
        placed[box] = labels_box
        assert count_box == count
        assert np.array_equal(placed, labels)
        assert np.array_equal(stats_box[1:, cv2.CC_STAT_AREA], stats[1:, cv2.CC_STAT_AREA])  # 0: the background


def _plain_observe_heat(scan, heat: np.ndarray, pitch: tuple[float, float]) -> dict:
    """``observe_heat`` as it was written before the speed-ups: logs computed, the whole scan labelled."""
    profile = default_profile()
    a_low = transmission_to_log_attenuation(scan.low)
    a_high = transmission_to_log_attenuation(scan.high)
    count, labels, stats = _whole_labels((heat >= declaration.BODY_HEAT).astype(np.uint8))
    pixel_cm2 = pitch[0] * pitch[1] / 100.0
    bodies = []
    for k in sorted(range(1, count), key=lambda k: -stats[k, cv2.CC_STAT_AREA])[:declaration.MAX_BODIES]:
        if stats[k, cv2.CC_STAT_AREA] * pixel_cm2 < declaration.MIN_BODY_CM2:
            continue
        measured = body_mass(a_low, a_high, labels == k, pitch, profile)
        if measured is not None:
            bodies.append(measured.to_dict())
    parcel = parcel_mass(a_low, a_high, pitch, profile)
    return {"bodies": bodies, "xray_mass_kg": round(parcel.mass_g / 1000.0, 2),
            "xray_mass_lower_bound": parcel.mass_lower_bound}


def test_observe_heat_weighs_the_same_bodies_in_the_same_order_as_the_plain_way():
    refs = [ref for ref in discover_scans([SAMPLES]) if ref.ok and ref.format == "pair"]
    assert refs
    for ref in refs[:3]:
        scan = ref.load()
        rows, cols = scan.low.shape
        heat = np.zeros((rows, cols), np.float32)
        dense = np.argsort(scan.high, axis=None)[: rows * cols // 50]  # over the parcel's densest content
        r, c = np.unravel_index(dense[0], (rows, cols))
        heat[max(r - 12, 0):r + 12, max(c - 12, 0):c + 12] = 0.9
        heat[5:25, 31:51] = 0.8  # two bodies of equal area (20 × 20): their order is the labels' order
        heat[rows - 27:rows - 7, cols - 57:cols - 37] = 0.7
        heat[rows // 2:rows // 2 + 3, 3:6] = 0.95  # too small to weigh
        pitch = declaration.scan_pitch_mm(scan)
        got = declaration.observe_heat(scan, heat)
        assert got == _plain_observe_heat(scan, heat, pitch)
        assert len(got["bodies"]) >= 2
    empty = declaration.observe_heat(scan, np.zeros_like(heat))
    assert empty["bodies"] == [] and empty["xray_mass_kg"] == _plain_observe_heat(scan, np.zeros_like(heat),
                                                                                  pitch)["xray_mass_kg"]


def test_tiles_below_the_body_heat_are_not_brought_to_scan_pixels():
    """``observe`` skips the upsampling where no tile reaches ``BODY_HEAT``: linear resizing and the max over
    overlaps never exceed the tiles' maximum (random heat up to just below it, on a scan of overlapping tiles), so
    the bodies are the ones the full path finds — none — and a tile at the body heat still finds its body."""
    from parcelscan.datasets.preprocess import PreprocessSpec, heatmap_to_scan, prepare_scan

    scan = next(ref for ref in discover_scans([SAMPLES]) if ref.ok and ref.format == "pair").load()
    prepared = prepare_scan(scan, PreprocessSpec())
    rng = np.random.default_rng(3)
    for top in (0.3, declaration.BODY_HEAT * (1.0 - 2e-6)):
        tiles = rng.uniform(0.0, top, (prepared.n_tiles, 1, 40, 40)).astype(np.float32)
        tiles.reshape(-1)[rng.integers(0, tiles.size, 50)] = top
        full = heatmap_to_scan(tiles, prepared)
        assert float(full.max()) <= top * (1.0 + 1e-6)
        assert declaration.observe(scan, tiles, prepared) == declaration.observe_heat(scan, full)
    hot = np.zeros((prepared.n_tiles, 1, 40, 40), np.float32)
    hot[0, 0, 10:30, 10:30] = declaration.BODY_HEAT
    got = declaration.observe(scan, hot, prepared)
    assert got == declaration.observe_heat(scan, heatmap_to_scan(hot, prepared)) and got["bodies"]


def test_the_kv_neighbours_are_made_once_per_profile():
    profile = default_profile()
    up, down = signature._kv_neighbours(profile)
    assert (up.tube_kv, down.tube_kv) == (profile.tube_kv + signature.KV_STEP, profile.tube_kv - signature.KV_STEP)
    assert up == profile.with_changes(tube_kv=profile.tube_kv + signature.KV_STEP)
    assert signature._kv_neighbours(profile)[0] is up  # cached, not rebuilt per lookup
    low = profile.with_changes(tube_kv=25.0)
    assert signature._kv_neighbours(low)[1].tube_kv == 20.0


def _bit_equal(a, b) -> bool:
    """The same value to the bit: floats compared by their bits (NaN equal to NaN, −0 not +0), containers by item."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1.0, a) == math.copysign(1.0, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_bit_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_bit_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _random_region(rng: np.random.Generator, rows: int, cols: int, trial: int, dense: tuple) -> np.ndarray:
    """A rectangle at an edge, a corner or inside (over the densest pixel for trial 7), ragged for odd trials."""
    region = np.zeros((rows, cols), bool)
    height, width = int(rng.integers(1, 60)), int(rng.integers(1, 60))
    top = [0, rows - height, int(rng.integers(0, rows - height))][trial % 3]
    left = [0, cols - width, int(rng.integers(0, cols - width)), 3][trial % 4]
    if trial == 7:
        top, left = max(0, int(dense[0]) - 10), max(0, int(dense[1]) - 10)
    region[top:top + height, left:left + width] = True
    if trial % 2:  # ragged: diagonal contacts, holes (body_mass does not require one connected body)
        region &= rng.random((rows, cols)) < 0.7
    return region


def test_a_body_weighs_the_same_from_its_window_as_from_the_whole_scan():
    profile = default_profile()
    rng = np.random.default_rng(5)
    weighed = readable = 0
    for ref in [ref for ref in discover_scans([SAMPLES]) if ref.ok and ref.format == "pair"]:
        scan = ref.load()
        a_low, a_high = declaration.log_attenuation(scan.low), declaration.log_attenuation(scan.high)
        rows, cols = a_low.shape
        dense = np.unravel_index(np.argmax(a_high), a_high.shape)  # the densest pixel: the beam stopped, if anywhere
        regions = []
        mask_path = SAMPLES / f"{ref.scan_id}_mask.png"
        if mask_path.is_file():  # the ground truth's pouches: readable ones and ones behind a stopped beam
            count, labels = cv2.connectedComponents((cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0)
                                                    .astype(np.uint8), connectivity=8)
            for k in range(1, count):  # each pouch, its core and its left part
                pouch = labels == k
                left_part = pouch & (np.arange(pouch.shape[1]) < np.median(np.nonzero(pouch)[1]))[None, :]
                regions += [pouch, cv2.erode(pouch.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0, left_part]
        for trial in range(8 + len(regions)):
            if trial >= 8:
                region = regions[trial - 8]
                if region.shape != (rows, cols):
                    continue
            else:
                region = _random_region(rng, rows, cols, trial, dense)
            if not region.any():
                continue
            ys, xs = np.nonzero(region)
            window = mass.body_window(int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1),
                                      int(xs.max() - xs.min() + 1), region.shape)
            whole = body_mass(a_low, a_high, region, (0.8, 1.1), profile)
            cut = body_mass(a_low[window], a_high[window], region[window], (0.8, 1.1), profile)
            assert whole is not None and cut is not None
            assert _bit_equal(dataclasses.asdict(cut), dataclasses.asdict(whole)), (ref.scan_id, trial)
            weighed += 1
            readable += whole.core_ratio is not None
    assert weighed >= 50 and readable >= 4  # the readable path (the signature, the lookup) is covered


def _log_parcel(low, high, pitch, profile, block):
    table = declaration._LOG_ATTENUATION_LUT
    return parcel_mass(table.take(low), table.take(high), pitch, profile, block)


def test_the_parcel_weighs_the_same_from_its_grey_levels_as_from_its_log_images():
    profile = default_profile()
    table = declaration._LOG_ATTENUATION_LUT
    air = mass._air_level(table, 4)
    assert 60000 < air < 65535 and table[air] <= 0.02 < table[air - 1]  # ~ −ln(0.98): what reads as air
    assert mass._air_level(table, 4) == air  # kept: the table is read-only
    for ref in [ref for ref in discover_scans([SAMPLES]) if ref.ok and ref.format == "pair"]:
        scan = ref.load()
        got = parcel_mass(scan.low, scan.high, (0.8, 1.1), profile, table=table)
        want = _log_parcel(scan.low, scan.high, (0.8, 1.1), profile, 4)
        assert got.mass_g > 0 and _bit_equal(dataclasses.asdict(got), dataclasses.asdict(want)), ref.scan_id
    rng = np.random.default_rng(3)
    weighed = stopped = 0
    for trial in range(120):
        block = [4, 2, 3, 5, 6, 7, 1, 8][trial % 8]  # 1 and 8: block_mean's numpy path; so the table's take
        rows, cols = int(rng.integers(1, 140)), int(rng.integers(1, 140))
        low = rng.integers(air, 65536, (rows, cols)).astype(np.uint16)  # air, and belt noise
        high = rng.integers(air, 65536, (rows, cols)).astype(np.uint16)
        for _ in range(int(rng.integers(0, 4))):  # content: a patch of any darkness, stopped beam included
            r, c = int(rng.integers(0, rows)), int(rng.integers(0, cols))
            h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
            dark = int(rng.integers(0, 65536)) if rng.random() < 0.7 else int(rng.integers(0, 30))  # 22: A 8
            high[r:r + h, c:c + w] = rng.integers(0, dark + 1, (min(h, rows - r), min(w, cols - c)))
            low[r:r + h, c:c + w] = high[r:r + h, c:c + w] // 2
        if trial % 7 == 3:  # blocks one level darker than air, single pixels: content only if the sum says so
            high[rng.random((rows, cols)) < 0.05] = air - 1
        if trial % 11 == 5:
            high[:] = air  # all air: nothing to weigh
        for low_view, high_view in ((low, high), (low.T, high.T), (low[::-1, 1:], high[::-1, 1:])):
            got = parcel_mass(low_view, high_view, (1.0, 0.9), profile, block, table=table)
            want = _log_parcel(low_view, high_view, (1.0, 0.9), profile, block)
            assert _bit_equal(dataclasses.asdict(got), dataclasses.asdict(want)), (trial, block)
            weighed += got.mass_g > 0
            stopped += got.mass_lower_bound
    assert weighed > 100 and stopped > 10
