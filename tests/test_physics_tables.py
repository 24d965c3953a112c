"""The physics tables a station ships instead of xraydb and spekpy (issue 15 part 3): they equal the physics now.

``datasets/physics/tables/<profile>.npz`` hold what the station path needs from the physics (the pseudo-colour
calibration behind every operator image and heatmap). They are data, so they could go stale when a profile, a
table's grid or the physics libraries change; this test recomputes every one from xraydb and spekpy (the dev
install has them: the ``[sim]`` extra) and requires equality, so they never silently do.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from parcelscan.datasets.physics import pseudocolor, tablegen, tables
from parcelscan.datasets.physics.profile import PROFILES_DIR, default_profile, load_profile
from parcelscan.errors import ParcelscanError


def test_every_shipped_profile_has_its_table_and_they_equal_the_physics_now():
    """If this fails after a deliberate change (a profile, a grid, a new xraydb or spekpy):
    ``parcelscan physics --write-tables`` and commit the tables."""
    assert sorted(p.stem for p in tables.TABLES_DIR.glob("*.npz")) == sorted(
        p.stem for p in PROFILES_DIR.glob("*.toml"))
    assert tablegen.stale_tables() == []


def test_a_stale_table_is_reported(tmp_path):
    """The check can fail: a table off by one part in a million, or made for other physics, is stale."""
    profile = default_profile()
    shipped = tables.table_path(profile.name)
    with np.load(shipped, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["pseudocolor_ratio"] = arrays["pseudocolor_ratio"] * (1 + 1e-6)
    np.savez_compressed(tables.table_path(profile.name, tmp_path), **arrays)
    problems = tablegen.stale_tables(tmp_path)
    assert any("pseudocolor_ratio differs from the physics" in p for p in problems), problems

    arrays = {name: np.load(shipped)[name] for name in np.load(shipped).files}
    arrays["physics_key"] = np.array(tables.physics_key_text(profile.with_changes(tube_kv=120.0)))
    np.savez_compressed(tables.table_path(profile.name, tmp_path), **arrays)
    assert any("other physics" in p for p in tablegen.stale_tables(tmp_path))


def test_a_table_is_used_only_for_the_physics_it_was_made_for(tmp_path):
    profile = default_profile()
    assert tables.shipped_tables(profile) is not None
    # noise, blur and geometry do not change the spectra: the same table serves
    assert tables.shipped_tables(profile.with_changes(blur_sigma_px=1.5, pixel_pitch_mm=0.8)) is not None
    # another tube voltage does: no shipped table, the physics is asked (here it is installed)
    other = profile.with_changes(tube_kv=120.0)
    assert tables.shipped_tables(other) is None
    assert not np.array_equal(pseudocolor._calibration(other.physics_key(), other),
                              pseudocolor._calibration(profile.physics_key(), profile))


def test_the_shipped_calibration_gives_the_physics_colours(monkeypatch):
    """The operator image from the shipped table is the one the physics gives, pixel for pixel."""
    profile = load_profile("postal-dual-140")
    rng = np.random.default_rng(3)
    low = rng.integers(1, 65536, (48, 64), dtype=np.uint16)
    high = np.maximum(low, rng.integers(1, 65536, (48, 64), dtype=np.uint16))

    def colours() -> np.ndarray:
        pseudocolor._calibration.cache_clear()
        pseudocolor._rgb_lut.cache_clear()
        return pseudocolor.pseudocolor_from_pair(low, high, profile)

    from_table = colours()
    monkeypatch.setattr(pseudocolor, "shipped_tables", lambda _profile: None)  # as if no table shipped
    from_physics = colours()
    monkeypatch.undo()
    pseudocolor._calibration.cache_clear()
    pseudocolor._rgb_lut.cache_clear()
    assert len(np.unique(from_table.reshape(-1, 3), axis=0)) > 100  # a real picture, not a flat one
    assert np.array_equal(from_table, from_physics)


def test_the_shipped_calibration_is_used_where_numpy_computes_its_grid_a_bit_apart(monkeypatch):
    """numpy's geomspace takes CPU-specific SIMD paths: on another machine the calibration grid differs in its last
    bit (6 of its 96 points on an AMD EPYC against the Intel Xeon that wrote the table). The shipped table is still
    the one used there — a station without the physics libraries must not lose its operator images for that."""
    profile = load_profile("postal-dual-140")
    monkeypatch.setattr(pseudocolor, "A_HIGH_GRID", np.nextafter(pseudocolor.A_HIGH_GRID, np.inf))

    def no_physics(what: str) -> None:
        raise ParcelscanError(f"{what}: computed from the physics, not read from the shipped table")

    monkeypatch.setattr(pseudocolor, "require_physics", no_physics)
    pseudocolor._calibration.cache_clear()
    try:
        table = pseudocolor._calibration(profile.physics_key(), profile)
    finally:
        pseudocolor._calibration.cache_clear()
    assert np.array_equal(table, tables.shipped_tables(profile)["pseudocolor_ratio"])


def test_write_tables_writes_what_the_check_accepts(tmp_path):
    written = tablegen.write_tables(tmp_path)
    assert [p.name for p in written] == [f"{p.stem}.npz" for p in sorted(PROFILES_DIR.glob("*.toml"))]
    assert tablegen.stale_tables(tmp_path) == []
    shutil.copy(written[0], tmp_path / "no-such-profile.npz")
    assert any("no shipped profile" in p for p in tablegen.stale_tables(tmp_path))


def test_without_the_physics_a_profile_no_table_covers_says_which_extra(monkeypatch):
    monkeypatch.setattr(tables, "PHYSICS_MODULES", ("xraydb", "no_such_physics_module"))
    assert not tables.physics_available()
    with pytest.raises(ParcelscanError, match=r"pip install 'parcelscan\[sim\]'"):
        tables.require_physics("the pseudo-colour calibration of scanner profile 'x'")
    with pytest.raises(ModuleNotFoundError) as caught:
        tables.check_physics_installed()
    assert caught.value.name == "no_such_physics_module"
