"""The body weighing's cached paths (``physics.mass``, ``physics.attenuation``) compute what the uncached ones do.

* ``attenuation.log_attenuation_on_background`` (each reference's transmission over the areal grid kept, the
  background's factored out) equals ``log_attenuation_direct`` of the stacked areal densities to 1e-12 relative,
  on the background of a real body of a sample scan, for the default profile and a ±10 kV variant, and for
  another grid (the cache is keyed by all three).
* The excess curves built from it equal the direct ones to 1e-12 of the attenuation they are differences of (at
  the thinnest grid points the excess is ~1e-4 of the total: no computation reproduces the direct sum's own
  rounding there better than that).
* Every body of the sample scans' ground-truth masks weighs the same with the cached curves as with the direct
  ones: the reported (rounded) numbers identical, every float to 1e-12 relative.
* ``basis_stack``'s evaluator (μ/ρ looked up once) is the direct sum to the bit.
* Reading excesses through a curve by prefix sums over the sorted excesses (``_Ordered``) gives the plain
  ``Σ sign(x)·interp(|x|, curve, grid)`` to 1e-12 relative — plateaus, zeros, pixels beyond the last knot and
  knots falling on pixel values included — and reading through two curves in a row is one read.
* Reading a body's excesses through all reference curves at once (``_Ordered.sums_through``) is reading each alone
  (the per-curve expression) to the bit, and the excess curves made for all references at once are the per-reference
  expression to the bit.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from parcelscan.datasets.physics import attenuation, mass
from parcelscan.datasets.physics.profile import default_profile
from parcelscan.datasets.physics.pseudocolor import transmission_to_log_attenuation
from parcelscan.datasets.scans import scanfile

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scans"


def _bodies() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]]:
    """(A_low, A_high, region, pitch) of every connected body in the sample scans' ground-truth masks."""
    out = []
    for mask_path in sorted(SAMPLES.glob("*_mask.png")):
        scan_id = mask_path.name[: -len("_mask.png")]
        pitch = json.loads((SAMPLES / f"{scan_id}.json").read_text()).get("pixel_pitch_mm", 1.0)
        pitch = (float(pitch), float(pitch)) if np.isscalar(pitch) else (float(pitch[0]), float(pitch[1]))
        a_low = transmission_to_log_attenuation(scanfile.read_png16(SAMPLES / f"{scan_id}_low.png"))
        a_high = transmission_to_log_attenuation(scanfile.read_png16(SAMPLES / f"{scan_id}_high.png"))
        with Image.open(mask_path) as image:
            mask = np.asarray(image) > 0
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        out.extend((a_low, a_high, labels == k, pitch) for k in range(1, count))
    return out


def _direct_excess_curves(profile, refs, t_pe: float, t_fe: float):
    """``mass._excess_curves`` as it was before the cache: one direct full-spectrum sum over every reference's
    grid stacked on the basis thicknesses."""
    basis = attenuation.basis_materials()
    materials = [*basis, *(m for _, _, m in refs)]
    grid = mass._P_GRID_G_CM2
    n, k = len(grid), len(refs)
    stack = np.zeros((len(materials), k * n))
    for j in range(k):
        on = slice(j * n, (j + 1) * n)
        stack[0, on], stack[1, on], stack[2 + j, on] = t_pe, t_fe, grid
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a_low, a_high = attenuation.log_attenuation_direct(profile, materials, stack)
    slabs = mass._slab_ratios(profile, tuple(name for name, _, _ in refs))
    out = []
    for j in range(k):
        low_b, high_b = a_low[j * n:(j + 1) * n], a_high[j * n:(j + 1) * n]
        out.append((np.maximum.accumulate(np.nan_to_num(high_b - high_b[0], posinf=1e3)),
                    np.nan_to_num(low_b - low_b[0], posinf=1e3), slabs[j]))
    return out, (a_low.reshape(k, n), a_high.reshape(k, n))


@pytest.fixture(scope="module")
def bodies():
    found = _bodies()
    assert len(found) >= 3
    return found


@pytest.fixture(scope="module")
def background(bodies):
    """The basis thicknesses (t_pe, t_fe) under the first readable sample body, as ``body_mass`` solves them."""
    profile = default_profile()
    for body in bodies:
        measured = mass.body_mass(*body, profile=profile)
        if measured is not None and measured.core_ratio is not None:
            t_pe, t_fe = mass.basis_stack(profile, np.array([measured.over_a_low]),
                                          np.array([measured.over_a_high]))
            assert float(t_pe[0]) + float(t_fe[0]) > 0  # a real background, not air
            return float(t_pe[0]), float(t_fe[0])
    pytest.fail("no sample body has a readable core")


@pytest.mark.parametrize("kv_step", [0.0, attenuation.KV_STEP, -attenuation.KV_STEP])
@pytest.mark.parametrize("grid", ["weighing", "coarse"])
def test_the_cached_attenuation_on_a_background_is_the_direct_sum(background, kv_step, grid):
    profile = default_profile()
    profile = profile.with_changes(tube_kv=profile.tube_kv + kv_step)
    assert attenuation.covers(profile)
    areal = mass._P_GRID_G_CM2 if grid == "weighing" else np.geomspace(0.01, 50.0, 37)
    refs = mass.lookup_references(default_profile())
    materials = [m for _, _, m in refs]
    basis = attenuation.basis_materials()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(2):  # the first call fills the cache, the second reads it
            low, high = attenuation.log_attenuation_on_background(profile, basis, background, materials, areal)
            assert low.shape == high.shape == (len(materials), len(areal))
            for j, material in enumerate(materials):
                stack = np.zeros((3, len(areal)))
                stack[0], stack[1], stack[2] = background[0], background[1], areal
                direct = attenuation.log_attenuation_direct(profile, [*basis, material], stack)
                for got, want in zip((low[j], high[j]), direct, strict=True):
                    assert np.array_equal(np.isfinite(got), np.isfinite(want))
                    finite = np.isfinite(want)
                    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=0)


def test_the_cached_excess_curves_are_the_direct_ones(background):
    profile = default_profile()
    refs = mass.lookup_references(profile)
    cached = mass._excess_curves(profile, refs, *background)
    direct, (total_low, total_high) = _direct_excess_curves(profile, refs, *background)
    assert len(cached) == len(direct) == len(refs)
    for j, (got, want) in enumerate(zip(cached, direct, strict=True)):
        for i, total in ((0, total_high[j]), (1, total_low[j])):
            scale = np.where(np.isfinite(total), np.abs(total), 1e3)  # 1e3: where the direct sum saturates
            assert np.all(np.abs(got[i] - want[i]) <= 1e-12 * scale), (refs[j][0], i)
        assert got[2] is want[2]  # the slab ratios: the same cached arrays
        assert want[0][-1] > 0.1  # a real curve: the thickest slab attenuates


def test_every_sample_body_weighs_the_same_with_cached_and_direct_curves(bodies, monkeypatch):
    profile = default_profile()
    cached = [mass.body_mass(*body, profile=profile) for body in bodies]
    monkeypatch.setattr(mass, "_excess_curves", lambda *args: _direct_excess_curves(*args)[0])
    direct = [mass.body_mass(*body, profile=profile) for body in bodies]
    assert any(b is not None and b.core_ratio is not None for b in direct)  # the readable path is covered
    assert any(b is not None and b.mass_g > 0 for b in direct)
    for got, want in zip(cached, direct, strict=True):
        assert (got is None) == (want is None)
        if want is None:
            continue
        assert got.to_dict() == want.to_dict()
        for name, value in dataclasses.asdict(want).items():
            other = getattr(got, name)
            if isinstance(value, float):
                assert other == pytest.approx(value, rel=1e-12, abs=1e-300), name
            elif isinstance(value, dict):
                assert list(other) == list(value), name
                for key in value:
                    assert other[key] == pytest.approx(value[key], rel=1e-12, abs=1e-300), (name, key)
            elif isinstance(value, tuple):
                assert other == pytest.approx(value, rel=1e-12), name
            else:
                assert other == value, name


def _plain(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> float:
    return float(np.sum(np.sign(x) * np.interp(np.abs(x), xp, fp)))


@pytest.mark.parametrize("pixels", [1, 40, 5000, 60000])
def test_ordered_reading_is_the_plain_sum(pixels):
    rng = np.random.default_rng(pixels)
    grid = mass._P_GRID_G_CM2
    curve = np.maximum.accumulate(np.minimum(np.sqrt(grid), 2.0))  # plateaus: repeated x-points in interp
    x = np.concatenate([rng.normal(0.2, 0.4, pixels), np.zeros(7), [1e3, 5.0, -1e3], curve[[3, 50, 120]]])  # knots hit
    rng.shuffle(x)
    plain = _plain(x, curve, grid) * 0.25
    assert mass._grams(mass._Ordered.of(x), curve, 0.25) == pytest.approx(plain, rel=1e-12, abs=1e-12)
    low_curve = np.sin(grid / 50.0) * 3.0  # not monotone: an excess A_low curve need not be
    assert mass._Ordered.of(x).sum_through(curve, low_curve) == pytest.approx(_plain(x, curve, low_curve), rel=1e-12,
                                                                             abs=1e-9)
    # the predicted R's two reads (excess A_high → areal density → excess A_low) are one read on the knots
    areal = np.interp(np.abs(x), curve, grid)
    two_reads = float(np.sum(np.sign(x) * np.interp(areal, grid, low_curve)))
    assert mass._Ordered.of(x).sum_through(curve, low_curve) == pytest.approx(two_reads, rel=1e-12, abs=1e-9)


def test_the_basis_evaluator_is_the_direct_sum_to_the_bit(background):
    """``basis_stack``'s Newton solve reads the direct sum through ``direct_evaluator`` (μ/ρ looked up once)."""
    profile = default_profile()
    basis = attenuation.basis_materials()
    evaluate = attenuation.direct_evaluator(profile, basis)
    assert evaluate is not None
    for areal in (np.array([[background[0]], [background[1]]]), np.array([[0.0, 2.0, 400.0], [0.5, 0.0, 30.0]]),
                  np.random.default_rng(1).uniform(0.0, 20.0, (2, 4, 5))):
        with np.errstate(divide="ignore", over="ignore"):
            for got, want in zip(evaluate(areal), attenuation.log_attenuation_direct(profile, basis, areal),
                                 strict=True):
                assert got.shape == want.shape and np.array_equal(got, want)


def test_the_shipped_basis_table_is_a_fresh_build():
    """``profiles/<name>.basis.npz`` (the parcel mass's (A_high, R) table, shipped so that a station process does not
    spend ~1 s solving it on its first parcel) holds what ``_compute_basis_table`` computes here, under the key of
    what it is computed from. Rebuild: ``python -m parcelscan.datasets.physics.mass --write-basis-table``."""
    profile = default_profile()
    assert mass.basis_table_path(profile).is_file()
    shipped = mass._shipped_basis_table(profile)
    assert shipped is not None, "the shipped basis table is stale: rebuild it (see the docstring)"
    fresh, r_axis = mass._compute_basis_table(profile)
    assert shipped.shape == fresh.shape and r_axis is mass._GRID_R
    # the same numbers to rounding: a table written on one CPU and built on another differ by ~1e-13 (numpy's SIMD
    # code paths for exp and log differ between CPUs; 4.6e-13 at most, AMD EPYC against the Intel Xeon that wrote it)
    np.testing.assert_allclose(shipped, fresh, rtol=1e-9, atol=0)
    assert np.array_equal(mass._basis_table(profile)[0], shipped)


def test_a_stale_or_foreign_basis_table_is_computed_not_read(monkeypatch, tmp_path):
    profile = default_profile()
    key = mass.basis_table_key(profile)
    monkeypatch.setattr(mass, "BASIS_TABLE_FORMAT", mass.BASIS_TABLE_FORMAT + 1)  # what it computes changed
    assert mass.basis_table_key(profile) != key and mass._shipped_basis_table(profile) is None
    monkeypatch.undo()
    other = profile.with_changes(tube_kv=profile.tube_kv + attenuation.KV_STEP)  # other physics: another key
    assert mass.basis_table_key(other) not in (None, key)
    wrong = tmp_path / f"{profile.name}.basis.npz"
    np.savez(wrong, table=np.zeros((len(mass._GRID_A_HIGH), len(mass._GRID_R))), key=np.array("0" * 64))
    monkeypatch.setattr(mass, "basis_table_path", lambda _profile: wrong)
    assert mass._shipped_basis_table(profile) is None


@pytest.mark.parametrize("block", [2, 3, 4, 7, 8])
def test_block_mean_is_numpys_mean_to_the_bit(block):
    """``parcel_mass``'s block means (whole-array adds of strided views) are numpy's ``mean(axis=(1, 3))``."""
    rng = np.random.default_rng(block)
    for trial in range(40):
        high = 3 * block if trial % 5 == 0 else 400  # single block rows and columns too (numpy iterates otherwise)
        h, w = int(rng.integers(block, high)), int(rng.integers(block, 400 if trial % 2 else high))
        image = (rng.standard_normal((h, w)) * [1e-3, 1.0, 7.0, 1e4][trial % 4]).astype(np.float32)
        if trial % 3 == 1:
            image = np.asfortranarray(image)  # another layout: numpy's own expression
        elif trial % 3 == 2:
            image = np.abs(image) + np.float32(3.0)
        rows, cols = (h // block) * block, (w // block) * block
        want = image[:rows, :cols].reshape(rows // block, block, cols // block, block).mean(axis=(1, 3))
        got = mass.block_mean(image, rows, cols, block)
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_the_shipped_basis_table_holds_on_a_cpu_whose_grids_differ_in_the_last_bit(monkeypatch):
    """numpy's geomspace takes CPU-specific SIMD paths, so another machine computes the grids a bit apart (an AMD EPYC
    against the Intel Xeon that wrote the table: 6 of 96 points of a like grid, by 1 ulp). The table's key names the
    grids by their definition, so the shipped table is still the one read there."""
    profile = default_profile()
    key = mass.basis_table_key(profile)
    monkeypatch.setattr(mass, "_GRID_A_HIGH", np.nextafter(mass._GRID_A_HIGH, np.inf))
    monkeypatch.setattr(mass, "_GRID_R", np.nextafter(mass._GRID_R, -np.inf))
    assert mass.basis_table_key(profile) == key and mass._shipped_basis_table(profile) is not None
    monkeypatch.setattr(mass, "_GRID_R_SPEC", (0.9, 3.0, 44))  # a grid defined otherwise is another table
    assert mass.basis_table_key(profile) != key and mass._shipped_basis_table(profile) is None


def _sum_through_one(ordered: mass._Ordered, xp: np.ndarray, fp: np.ndarray) -> float:
    """``_Ordered.sum_through`` as it was written for one curve at a time."""
    xp, fp = np.asarray(xp, float), np.asarray(fp, float)
    cut = np.searchsorted(ordered.magnitude, xp, side="left")
    dx = np.diff(xp)
    slope = np.divide(np.diff(fp), dx, out=np.zeros_like(dx), where=dx > 0)
    intercept = fp[:-1] - slope * xp[:-1]
    signs, moments = ordered.signs[cut], ordered.moments[cut]
    return float(fp[0] * signs[0] + fp[-1] * (ordered.signs[-1] - signs[-1])
                 + intercept @ np.diff(signs) + slope @ np.diff(moments))


def test_reading_all_curves_at_once_is_reading_each_to_the_bit(bodies, background):
    profile = default_profile()
    refs = mass.lookup_references(profile)
    curves = mass._excess_curves(profile, refs, *background)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a_low, a_high = attenuation.log_attenuation_on_background(profile, attenuation.basis_materials(), background,
                                                                  [m for _, _, m in refs], mass._P_GRID_G_CM2)
    for j, (high_c, low_c, _) in enumerate(curves):  # the per-reference expression
        assert np.array_equal(high_c, np.maximum.accumulate(mass._finite(a_high[j] - a_high[j][0], posinf=1e3)))
        assert np.array_equal(low_c, mass._finite(a_low[j] - a_low[j][0], posinf=1e3))
    highs, lows = np.stack([c[0] for c in curves]), np.stack([c[1] for c in curves])
    rng = np.random.default_rng(2)
    samples = [rng.normal(0.3, 0.5, n) for n in (1, 40, 5000, 60000)]
    samples.append(np.concatenate([samples[2], highs[3, [0, 7, 100, 240]], -highs[5, [9, 60]], np.zeros(5)]))
    for body in bodies[:3]:
        samples.append((body[1] - mass.background(body[1], mass.grown(body[2])))[body[2]].astype(float))
    for x in samples:
        ordered = mass._Ordered.of(x)
        for fp in (lows, mass._P_GRID_G_CM2):
            got = ordered.sums_through(highs, fp)
            want = [_sum_through_one(ordered, highs[j], fp if fp.ndim == 1 else fp[j]) for j in range(len(highs))]
            assert all(a == b or (np.isnan(a) and np.isnan(b)) for a, b in zip(got, want, strict=True))
            assert ordered.sum_through(highs[4], fp if fp.ndim == 1 else fp[4]) == want[4]
        assert mass._grams_each(ordered, highs[[2, 0]], 0.25) == [mass._grams(ordered, highs[k], 0.25) for k in (2, 0)]
