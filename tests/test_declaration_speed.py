"""The weighing's speed-ups (issue 15 part 4) give the same numbers as the plain expressions they replace.

* ``declaration.log_attenuation`` reads −ln(max(T, 1)/65535) from a table: every one of the 65,536 grey levels,
  and real and odd-shaped images, equal ``pseudocolor.transmission_to_log_attenuation`` to the bit.
* ``observe_heat`` labels the heatmap's bodies inside their even-aligned bounding box only: the labels, and so the
  order of bodies of equal area, are those of labelling the whole scan; the observation of a sample scan with
  several bodies (two of equal area) equals the one made the plain way (whole-image labels, the logs computed).
* ``signature``'s kV neighbours are made once per profile and are the profile at ±KV_STEP.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from parcelscan.datasets.physics import signature
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


def test_the_kv_neighbours_are_made_once_per_profile():
    profile = default_profile()
    up, down = signature._kv_neighbours(profile)
    assert (up.tube_kv, down.tube_kv) == (profile.tube_kv + signature.KV_STEP, profile.tube_kv - signature.KV_STEP)
    assert up == profile.with_changes(tube_kv=profile.tube_kv + signature.KV_STEP)
    assert signature._kv_neighbours(profile)[0] is up  # cached, not rebuilt per lookup
    low = profile.with_changes(tube_kv=25.0)
    assert signature._kv_neighbours(low)[1].tube_kv == 20.0
