"""Per-profile attenuation tables shipped as data (``profiles/<name>.attenuation.npz``): the station measures
materials without xraydb or spekpy.

A station needs only a few numbers of the physics: each channel's normalised energy response and the mass
attenuation μ/ρ of the reference materials (targets, ``signature.BENIGN_FAMILIES`` and the background basis
polyethylene + iron) on the spectrum's 0.5 keV grid — for its profile and for the profile at ±``KV_STEP`` kV
(σ_R's tube-voltage term). ``profiles/<name>.attenuation.npz`` holds them; ``python -m
parcelscan.datasets.physics.attenuation`` rebuilds them from xraydb and spekpy (a test checks that the shipped file
equals a fresh build).

``log_attenuation_direct`` is ``ForwardModel.log_attenuation_direct`` (the full-spectrum float64 sum) computed
from the table when the table covers the profile and the materials, and by the forward model otherwise; the
signature lookup's curves go through it, so the simulator and the station compute the same R.
``station_references`` are the lookup's references built from the table's compositions (``get_material`` of a
formula would ask xraydb).

``log_attenuation_on_background`` is the same sum for a grid of areal densities of each of several materials laid
on a fixed background stack (the body-weighing curves of ``mass``): e^{-(b+p)μ} = e^{-bμ}·e^{-pμ}, so the
materials' transmission over the grid is exponentiated once per (physics, compositions, grid) and kept (a bounded
cache), and a call costs two matrix-vector products instead of the exponential of materials × grid ×
spectrum (equal to the direct sum to ~1e-13; a test holds it to 1e-12). The table lookups are cached too
(bounded; ``write_table`` clears them).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import LIBRARY, Material
from parcelscan.datasets.physics.profile import ScannerProfile, default_profile
from parcelscan.datasets.physics.spectrum import channel_responses

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
KV_STEP = 10.0  # = signature.KV_STEP (signature imports this module, so the number is repeated here and tested)
BASIS = {"polyethylene": "C2H4", "iron": "Fe"}  # the background basis (organic + metal) of mass.py


@functools.lru_cache(maxsize=64)
def physics_hash(profile: ScannerProfile) -> str:
    """A stable name of what determines a profile's spectra (``ScannerProfile.physics_key``); cached per profile."""
    return hashlib.sha256(repr(profile.physics_key()).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=4096)
def composition_hash(composition: tuple[tuple[str, float], ...]) -> str:
    """A stable name of a composition (the table's key of its μ/ρ); cached: every attenuation call asks it."""
    return hashlib.sha256(json.dumps([[f, round(x, 12)] for f, x in composition]).encode()).hexdigest()[:16]


def table_path(profile: ScannerProfile) -> Path:
    return PROFILES_DIR / f"{profile.name}.attenuation.npz"


def variants(profile: ScannerProfile) -> list[ScannerProfile]:
    return [profile, profile.with_changes(tube_kv=profile.tube_kv + KV_STEP),
            profile.with_changes(tube_kv=max(profile.tube_kv - KV_STEP, 20.0))]


def build_table(profile: ScannerProfile, refs: Sequence[tuple[str, str, Material]]) -> dict[str, np.ndarray]:
    """The arrays of ``profile``'s table for the references ``(name, family, material)`` (needs xraydb, spekpy)."""
    arrays: dict[str, np.ndarray] = {}
    index = {"profile": profile.name, "variants": [], "references": []}
    for name, family, material in refs:
        index["references"].append({"name": name, "family": family, "composition": material.composition,
                                    "key": composition_hash(material.composition)})
    for variant in variants(profile):
        key = physics_hash(variant)
        r = channel_responses(variant)
        index["variants"].append({"key": key, "tube_kv": variant.tube_kv})
        arrays[f"{key}/energy_kev"] = r.energy_kev
        arrays[f"{key}/low"] = r.low_weight / r.low_weight.sum()
        arrays[f"{key}/high"] = r.high_weight / r.high_weight.sum()
        for _, _, material in refs:
            arrays[f"{key}/mu/{composition_hash(material.composition)}"] = material.mass_attenuation_cm2_g(
                r.energy_kev)
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    return arrays


def write_table(profile: ScannerProfile, refs: Sequence[tuple[str, str, Material]]) -> Path:
    path = table_path(profile)
    np.savez_compressed(path, **build_table(profile, refs))
    _load.cache_clear()
    _table_for.cache_clear()
    _table_by_key.cache_clear()
    _slab_transmission.cache_clear()
    return path


@functools.cache
def _load(path: Path) -> tuple[dict, dict[str, np.ndarray]] | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        arrays = {k: np.asarray(data[k]) for k in data.files}
    index = json.loads(arrays.pop("index").tobytes().decode())
    for array in arrays.values():
        array.setflags(write=False)
    return index, arrays


@functools.lru_cache(maxsize=32)
def _table_for(profile: ScannerProfile) -> dict[str, np.ndarray] | None:
    """The arrays of the shipped table that cover ``profile``'s physics (any shipped profile's file), or None.
    Cached per profile (a body's weighing asks it ~100 times: the directory scan, the key filtering and the
    physics hash cost more than the arithmetic); the arrays are read-only."""
    return _table_by_key(physics_hash(profile))


@functools.lru_cache(maxsize=32)
def _table_by_key(key: str) -> dict[str, np.ndarray] | None:
    """``_table_for`` by the profile's physics hash."""
    for path in sorted(PROFILES_DIR.glob("*.attenuation.npz")):
        loaded = _load(path)
        if loaded is not None and f"{key}/energy_kev" in loaded[1]:
            return {k[len(key) + 1:]: v for k, v in loaded[1].items() if k.startswith(key + "/")}
    return None


def covers(profile: ScannerProfile, materials: Sequence[Material] = ()) -> bool:
    table = _table_for(profile)
    return table is not None and all(f"mu/{composition_hash(m.composition)}" in table for m in materials)


def log_attenuation_direct(profile: ScannerProfile, materials: Sequence[Material],
                           areal_g_cm2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A_low, A_high) of the areal densities ``(M, ...)`` of ``materials``: the forward model's direct
    full-spectrum sum, from the shipped table when it covers them (no xraydb, no spekpy)."""
    table = _table_for(profile)
    if table is None or not all(f"mu/{composition_hash(m.composition)}" in table for m in materials):
        # the simulator's path: xraydb and spekpy, loaded by the forward model only when it computes
        return forward_model(profile).log_attenuation_direct(materials, areal_g_cm2)
    areal = np.asarray(areal_g_cm2, dtype=np.float64)
    shape = areal.shape[1:]
    flat = areal.reshape(len(materials), -1).T
    mu = np.stack([table[f"mu/{composition_hash(m.composition)}"] for m in materials])
    transmission = np.exp(-(flat @ mu))
    return -np.log(transmission @ table["low"]).reshape(shape), -np.log(transmission @ table["high"]).reshape(shape)


def direct_evaluator(profile: ScannerProfile, materials: Sequence[Material]
                     ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """``log_attenuation_direct`` for fixed ``materials``, their μ/ρ looked up once (the same arithmetic, so the
    same numbers to the bit): a Newton solve calls it ~100 times on one pixel, where the lookups cost more than
    the sum. None where the table does not cover them."""
    table = _table_for(profile)
    if table is None or not all(f"mu/{composition_hash(m.composition)}" in table for m in materials):
        return None
    mu = np.stack([table[f"mu/{composition_hash(m.composition)}"] for m in materials])
    low, high, count = table["low"], table["high"], len(materials)

    def evaluate(areal_g_cm2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        areal = np.asarray(areal_g_cm2, dtype=np.float64)
        shape = areal.shape[1:]
        transmission = np.exp(-(areal.reshape(count, -1).T @ mu))
        return -np.log(transmission @ low).reshape(shape), -np.log(transmission @ high).reshape(shape)

    return evaluate


def log_attenuation_on_background(profile: ScannerProfile, background: Sequence[Material],
                                  background_areal_g_cm2: Sequence[float], materials: Sequence[Material],
                                  areal_grid_g_cm2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A_low, A_high), each ``(len(materials), len(grid))``: ``areal_grid_g_cm2`` (1-D) of each of ``materials``
    alone laid on the fixed stack ``background_areal_g_cm2`` of ``background`` — ``log_attenuation_direct`` of
    those stacked areal densities.

    Why not that call: the body-weighing curves (``mass._excess_curves``) depend on the background only through
    its two basis thicknesses, and the direct sum exponentiates materials × grid × spectrum again for every body.
    Here e^{-(b·μ_bg + p·μ)} = e^{-b·μ_bg} · e^{-p·μ}: the materials' factor over the grid is computed once per
    (physics, compositions, grid) and cached (``_slab_transmission``, bounded), the background's per call, and
    each channel's sum is a matrix-vector product. Equal to the direct sum to rounding (~1e-13 relative, a test
    holds it to 1e-12); where the table does not cover the profile or a material, it is the direct sum."""
    grid = np.asarray(areal_grid_g_cm2, dtype=np.float64)
    table = _table_for(profile)
    if grid.ndim != 1 or table is None or not all(f"mu/{composition_hash(m.composition)}" in table
                                                  for m in [*background, *materials]):
        k, n = len(materials), grid.size
        stack = np.zeros((len(background) + k, k * n))
        stack[:len(background)] = np.asarray(background_areal_g_cm2, dtype=np.float64)[:, None]
        for j in range(k):
            stack[len(background) + j, j * n:(j + 1) * n] = grid
        a_low, a_high = log_attenuation_direct(profile, [*background, *materials], stack)
        return a_low.reshape(k, n), a_high.reshape(k, n)
    over = np.zeros(len(table["low"]))
    for m, areal in zip(background, background_areal_g_cm2, strict=True):
        over = over + float(areal) * table[f"mu/{composition_hash(m.composition)}"]
    background_transmission = np.exp(-over)
    slab = _slab_transmission(physics_hash(profile), tuple(m.composition for m in materials), grid.tobytes())
    low_weight, high_weight = background_transmission * table["low"], background_transmission * table["high"]
    shape = (len(materials), grid.size)
    low, high = np.empty(shape), np.empty(shape)
    for j in range(len(materials)):  # one material's block at a time: both channels read it while it is in cache
        block = slab[j * grid.size:(j + 1) * grid.size]
        low[j], high[j] = block @ low_weight, block @ high_weight
    return -np.log(low), -np.log(high)


@functools.lru_cache(maxsize=8)  # one entry per (profile, reference set, grid): 16 MB for 32 × 241 × 256
def _slab_transmission(physics: str, compositions: tuple[tuple[tuple[str, float], ...], ...],
                       grid_bytes: bytes) -> np.ndarray:
    """e^{-p·μ(E)} of each composition over the areal grid (rows: composition-major, then grid) and the table's
    energies (columns), read-only. Keyed by everything it depends on: the profile's physics hash (its table's μ
    and energies), the compositions and the grid's bytes (float64)."""
    table = _table_by_key(physics)
    if table is None:  # the caller checked that the table covers the profile
        raise KeyError(f"no shipped attenuation table for physics {physics}")
    grid = np.frombuffer(grid_bytes, dtype=np.float64)
    out = np.concatenate([np.exp(-(grid[:, None] * table[f"mu/{composition_hash(c)}"][None, :]))
                          for c in compositions])
    out.setflags(write=False)
    return out


def station_references(profile: ScannerProfile | None = None,
                       families: Sequence[str] | None = None) -> list[tuple[str, str, Material]]:
    """The signature lookup's references (targets and benign families; not the basis) from the shipped table of
    ``profile`` (default: the default profile), without xraydb."""
    profile = profile or default_profile()
    key = physics_hash(profile)
    for path in sorted(PROFILES_DIR.glob("*.attenuation.npz")):
        loaded = _load(path)
        if loaded is None or f"{key}/energy_kev" not in loaded[1]:
            continue
        out = []
        for ref in loaded[0]["references"]:
            if ref["family"] == "basis" or (families is not None and ref["family"] not in families):
                continue
            composition = tuple((f, float(x)) for f, x in ref["composition"])
            library = LIBRARY.get(ref["name"]) if ref["family"] == "target" else None
            material = library if library is not None and library.composition == composition else Material(
                ref["name"], composition, 1.0)
            out.append((ref["name"], ref["family"], material))
        return out
    raise FileNotFoundError(f"no shipped attenuation table covers profile {profile.name!r}")


def basis_materials() -> list[Material]:
    return [Material(name, ((formula, 1.0),), 1.0) for name, formula in BASIS.items()]
