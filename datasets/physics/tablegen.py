"""Compute the shipped physics tables from the physics: ``parcelscan physics --write-tables`` (``--check-tables``).

Needs the ``[sim]`` extra (xraydb, spekpy). For every shipped scanner profile (``profiles/*.toml``) it
computes each table the station path reads (``TABLE_BUILDERS``) from the forward model and writes
``tables/<profile>.npz`` with the profile's physics key (see ``tables``). Run it after changing a profile's
physics, a table's grid or the physics libraries' versions; ``tests/test_physics_tables.py`` fails until then.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from parcelscan.datasets.physics import forward, pseudocolor, spectrum
from parcelscan.datasets.physics.profile import PROFILES_DIR, ScannerProfile, load_profile
from parcelscan.datasets.physics.tables import TABLE_FORMAT, TABLES_DIR, physics_key_text, table_path

# table builders: profile -> {table name: array}; each computes from the physics, never from a shipped table
TABLE_BUILDERS: tuple[Callable[[ScannerProfile], dict[str, np.ndarray]], ...] = (
    pseudocolor.calibration_tables,
)


def shipped_profiles() -> list[ScannerProfile]:
    """Every profile parcelscan ships (``profiles/*.toml``), by name."""
    return [load_profile(path.stem) for path in sorted(PROFILES_DIR.glob("*.toml"))]


@contextlib.contextmanager
def _fresh_physics() -> Iterator[None]:
    """Compute from spekpy and xraydb themselves: the channel responses are otherwise read from the on-disk
    cache (``spectrum``), whose key does not hold the libraries' versions, so a spectrum cached under an
    older spekpy could make a table that no longer matches the physics."""
    saved = os.environ.get("PARCELSCAN_CACHE")
    with tempfile.TemporaryDirectory(prefix="parcelscan-tables-") as scratch:
        os.environ["PARCELSCAN_CACHE"] = scratch
        spectrum._responses_cached.cache_clear()
        forward._MODELS.clear()
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("PARCELSCAN_CACHE", None)
            else:
                os.environ["PARCELSCAN_CACHE"] = saved
            spectrum._responses_cached.cache_clear()
            forward._MODELS.clear()


def build_tables(profile: ScannerProfile) -> dict[str, np.ndarray]:
    """Every table of ``profile``, computed now from the physics (xraydb, spekpy; no cached spectrum)."""
    tables: dict[str, np.ndarray] = {}
    with _fresh_physics():
        built_all = [builder(profile) for builder in TABLE_BUILDERS]
    for built in built_all:
        clash = set(built) & set(tables)
        if clash:
            raise ValueError(f"two table builders make {sorted(clash)}")
        tables.update(built)
    return tables


def write_tables(directory: Path = TABLES_DIR) -> list[Path]:
    """Compute and write ``<profile>.npz`` for every shipped profile; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for profile in shipped_profiles():
        arrays = {"format": np.array(TABLE_FORMAT), "profile": np.array(profile.name),
                  "physics_key": np.array(physics_key_text(profile)), **build_tables(profile)}
        path = table_path(profile.name, directory)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        written.append(path)
    return written


def stale_tables(directory: Path = TABLES_DIR, rtol: float = 1e-9) -> list[str]:
    """What differs between the shipped tables and the physics now (empty: up to date). ``rtol`` only
    absorbs last-bit differences of floating point between machines; a physics change is far larger."""
    problems = []
    expected_files = set()
    for profile in shipped_profiles():
        path = table_path(profile.name, directory)
        expected_files.add(path.name)
        if not path.exists():
            problems.append(f"{path.name}: missing")
            continue
        with np.load(path, allow_pickle=False) as data:
            shipped = {name: data[name] for name in data.files}
        if int(shipped.pop("format", -1)) != TABLE_FORMAT:
            problems.append(f"{path.name}: table format is not {TABLE_FORMAT}")
        if str(shipped.pop("profile", "")) != profile.name:
            problems.append(f"{path.name}: written for another profile name")
        if str(shipped.pop("physics_key", "")) != physics_key_text(profile):
            problems.append(f"{path.name}: written for other physics than profiles/{profile.name}.toml")
        computed = build_tables(profile)
        for name in sorted(set(shipped) | set(computed)):
            if name not in shipped or name not in computed:
                problems.append(f"{path.name}: table {name!r} is {'missing' if name not in shipped else 'extra'}")
            elif shipped[name].shape != computed[name].shape or shipped[name].dtype != computed[name].dtype:
                problems.append(f"{path.name}: {name} is {shipped[name].dtype}{shipped[name].shape}, the physics "
                                f"gives {computed[name].dtype}{computed[name].shape}")
            elif computed[name].dtype.kind in "fc":
                if not np.allclose(shipped[name], computed[name], rtol=rtol, atol=0.0):
                    worst = float(np.max(np.abs(shipped[name] - computed[name]) / np.maximum(
                        np.abs(computed[name]), 1e-300)))
                    problems.append(f"{path.name}: {name} differs from the physics (max relative {worst:.3g})")
            elif not np.array_equal(shipped[name], computed[name]):
                problems.append(f"{path.name}: {name} differs from the physics")
    for path in sorted(directory.glob("*.npz")):
        if path.name not in expected_files:
            problems.append(f"{path.name}: no shipped profile of that name")
    return problems
