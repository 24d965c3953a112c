"""Tube spectrum (spekpy) and the energy response of each detector channel.

A dual-layer detector's low channel is the front scintillator; the high channel is the rear one,
behind the front layer and a metal filter. Pixels integrate deposited energy, so each channel's
response to a photon of energy E is ``Φ(E) · E · (absorbed fraction in its layer) · (transmission of
the layers in front)``. Computing the spekpy spectrum takes about a second, so channel responses are
cached in memory and on disk (``~/.cache/parcelscan`` or ``$PARCELSCAN_CACHE``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.physics.profile import Layer, ScannerProfile

SPECTRUM_BIN_KEV = 0.5
CACHE_VERSION = 1


@dataclass(frozen=True)
class ChannelResponses:
    """Energy grid and the (unnormalised) energy responses of the low and high channels."""

    energy_kev: np.ndarray  # (E,) bin centres
    low_weight: np.ndarray  # (E,) Φ(E)·E·absorbed fraction, low layer
    high_weight: np.ndarray  # (E,) same for the high layer, after the low layer and the filter

    def mean_energy_kev(self) -> tuple[float, float]:
        """Absorbed-energy-weighted mean energy of each channel."""
        return (float(np.sum(self.energy_kev * self.low_weight) / self.low_weight.sum()),
                float(np.sum(self.energy_kev * self.high_weight) / self.high_weight.sum()))


def _cache_dir() -> Path:
    return Path(os.environ.get("PARCELSCAN_CACHE", Path.home() / ".cache" / "parcelscan"))


def _layer_transmission(layer: Layer, energy_kev: np.ndarray) -> np.ndarray:
    material = get_material(layer.material)
    mu_per_cm = material.mass_attenuation_cm2_g(energy_kev) * material.density_g_cm3
    return np.exp(-mu_per_cm * layer.thickness_mm / 10.0)


def _layer_absorption(layer: Layer, energy_kev: np.ndarray) -> np.ndarray:
    """Fraction of photons interacting in a scintillator (photoelectric + incoherent, as deposited energy
    proxy; coherent scattering deposits nothing)."""
    import xraydb

    material = get_material(layer.material)
    energy_ev = energy_kev * 1000.0
    mu_rho = np.zeros_like(energy_kev)
    for formula, fraction in material.composition:
        for kind in ("photo", "incoh"):
            mu_rho += fraction * np.asarray(xraydb.material_mu(formula, energy_ev, density=1.0, kind=kind))
    return 1.0 - np.exp(-mu_rho * material.density_g_cm3 * layer.thickness_mm / 10.0)


def tube_spectrum(profile: ScannerProfile) -> tuple[np.ndarray, np.ndarray]:
    """Photon fluence per keV after filtration (spekpy W anode, xraydb filters)."""
    import spekpy

    spek = spekpy.Spek(kvp=profile.tube_kv, th=profile.anode_angle_deg, dk=SPECTRUM_BIN_KEV)
    energy_kev, fluence = spek.get_spectrum()
    energy_kev = np.asarray(energy_kev, dtype=float)
    fluence = np.asarray(fluence, dtype=float)
    for layer in profile.filtration:
        fluence = fluence * _layer_transmission(layer, energy_kev)
    return energy_kev, fluence


def _compute_responses(profile: ScannerProfile) -> ChannelResponses:
    energy_kev, fluence = tube_spectrum(profile)
    low = fluence * energy_kev * _layer_absorption(profile.low_layer, energy_kev)
    behind_low = _layer_transmission(profile.low_layer, energy_kev) * _layer_transmission(
        profile.interlayer_filter, energy_kev)
    high = fluence * energy_kev * behind_low * _layer_absorption(profile.high_layer, energy_kev)
    # Keep bins that carry signal in either channel; below ~15 keV the filtered beam is empty.
    keep = (low / low.sum() > 1e-7) | (high / high.sum() > 1e-7)
    return ChannelResponses(energy_kev[keep], low[keep], high[keep])


def _cache_key(profile: ScannerProfile) -> str:
    text = json.dumps([CACHE_VERSION, SPECTRUM_BIN_KEV, repr(profile.physics_key())])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@functools.lru_cache(maxsize=16)
def _responses_cached(physics_key: tuple, profile: ScannerProfile) -> ChannelResponses:
    path = _cache_dir() / f"responses-{_cache_key(profile)}.npz"
    if path.exists():
        try:
            with np.load(path) as data:
                return ChannelResponses(data["energy_kev"], data["low_weight"], data["high_weight"])
        except Exception:
            pass  # a torn or stale cache file is recomputed
    responses = _compute_responses(profile)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, energy_kev=responses.energy_kev, low_weight=responses.low_weight,
                 high_weight=responses.high_weight)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home still works, just slower
    return responses


def channel_responses(profile: ScannerProfile) -> ChannelResponses:
    """The low/high channel energy responses of a profile (cached)."""
    return _responses_cached(profile.physics_key(), profile)
