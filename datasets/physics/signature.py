"""Material signatures: where a material sits in (A_high, R), and what an honest detector cannot tell it from.

A dual-energy scanner measures per pixel A_high and R = A_low / A_high. R depends on thickness (beam
hardening), so materials are compared at the *same* A_high. Two materials are **dual-energy twins** in a region
when their R difference there is below what the scanner can resolve over that region:

    d' = |ΔR| / σ_R < D_PRIME_TWIN = 4.2     (z(0.99) + z(0.97): the separation that Pd 97 % at Pfa 1 % needs)

``σ_R`` (``sigma_r``) is the R spread an honest detector would see over the region, from four independent
terms whose parameters are frozen in ``RESOLUTION`` (documented there and in the README):

* quantum and electronic noise of the detector over the region's footprint at the profile's nominal dose,
  through everything lying over the region;
* calibration drift of R between calibrations;
* residual tube-voltage error: a station is calibrated at its own spectrum (the simulator's kV, filtration
  and Cu variants are stations, each ΔR is computed under the scan's own variant), but its kV wanders by
  ``kv_sigma_kv`` around it, and R moves with kV differently for each material (a K-edge near the channels);
* the background: what lies over the region (clutter, vessel walls, container) must be subtracted, and its
  estimate from the surroundings is wrong by ``background_error_rel`` of its attenuation.

One function answers every question about a region: ``lookup(region, profile)`` gives the nearest targets and
benign families with their ΔR, σ_R and d' (twin labels in the simulator, alarm reasons, the review app and the
declaration check all call it); ``twins(region, profile)`` the target names among them with d' < 4.2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from parcelscan.datasets.physics.attenuation import log_attenuation_direct
from parcelscan.datasets.physics.materials import LIBRARY, TARGET_MATERIALS, Material, get_material
from parcelscan.datasets.physics.profile import ScannerProfile

D_PRIME_TWIN = 4.2  # z(0.99) + z(0.97) = 2.326 + 1.881: a region must be this far apart for Pd 97 % at Pfa 1 %
KV_STEP = 10.0  # kV: the step used to measure how R moves with the tube voltage (the simulator's kV variants)

# Benign families an alarm reason or a review may name beside the targets: the dense and high-Z goods of the
# simulator's look-alike fills and common parcel contents, as formulas (the physics core does not know the
# simulator's goods list; only the composition matters to the beam).
BENIGN_FAMILIES: dict[str, str] = {
    "barite": "BaSO4",
    "zircon": "ZrSiO4",
    "zinc oxide": "ZnO",
    "iron oxide pigment": "Fe2O3",
    "titanium white": "TiO2",
    "brass": "Cu:0.63+Zn:0.37",
    "copper": "Cu",
    "steel": "Fe",
    "lead": "Pb",
    "bismuth": "Bi",
    "tungsten carbide": "WC:0.94+Co:0.06",
    "CaCO3": "CaCO3",
    "salt": "NaCl",
    "sand": "SiO2",
    "aluminium": "Al",
    "sugar": "C12H22O11",
    "water": "H2O",
}


@dataclass(frozen=True)
class ResolutionModel:
    """What limits the R an honest detector measures over a region. Frozen before any training: changing a
    value changes every twin label, so it is a new generator version, never a tuning knob.

    ``calibration_drift_rel``: 0.3 % of R. Air and dark references are taken every scan, so gain drift cancels;
    what remains is the two layers' different temperature and afterglow drift between daily calibrations.
    ``kv_sigma_kv``: 0.5 kV, the stability of a line scanner's HV generator around the kV it was calibrated at
    (±0.35 % of 140 kV); how far R moves per kV is measured per material from ±``KV_STEP`` spectra.
    ``background_error_rel``: 2 % of the attenuation lying over the region is mis-subtracted (the background
    under a region is interpolated from its surroundings; clutter is not uniform).
    ``dose_scale``: 1 = the profile's nominal ``air_quanta_per_pixel``; electronic noise from the profile.
    """

    calibration_drift_rel: float = 0.003
    kv_sigma_kv: float = 0.5
    background_error_rel: float = 0.02
    dose_scale: float = 1.0


RESOLUTION = ResolutionModel()


@dataclass(frozen=True)
class Region:
    """A region as a detector sees it: its own attenuation (background removed) and what lies over it.

    ``a_high`` and ``ratio`` are the region's own A_high and R; ``pixels`` its footprint; ``over_a_low`` and
    ``over_a_high`` the log-attenuation of everything else on the same rays (clutter, vessel, container).
    ``material``: the region's true material when known (simulator ground truth); it lets σ_R include how the
    region's own R moves with kV. A region measured in a scan leaves it None.
    """

    a_high: float
    ratio: float
    pixels: float = 400.0
    over_a_low: float = 0.0
    over_a_high: float = 0.0
    material: Material | None = None


@dataclass(frozen=True)
class SignatureMatch:
    """One reference material against a region: its R there, the difference, the spread and d'."""

    name: str
    family: str  # "target", or the benign family's name
    ratio: float  # the reference's R at the region's A_high
    delta_r: float  # region R - reference R
    sigma_r: float
    d_prime: float

    @property
    def twin(self) -> bool:
        return self.d_prime < D_PRIME_TWIN


# --- R as a function of A_high ---------------------------------------------------------------------------------
_AREAL_GRID_G_CM2 = np.geomspace(1e-4, 400.0, 320)
_CURVES: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _curve(material: Material, profile: ScannerProfile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log areal, log A_high, R) of a slab of ``material`` over the areal-density grid: noiseless, full
    spectrum, cached per spectrum and composition."""
    key = (profile.physics_key(), material.composition)
    curve = _CURVES.get(key)
    if curve is None:
        with np.errstate(divide="ignore", over="ignore"):  # the thickest slabs stop the beam: filtered below
            # the shipped table when it covers the profile and material (the station: no xraydb), else the physics
            a_low, a_high = log_attenuation_direct(profile, [material], _AREAL_GRID_G_CM2[None, :])
        ok = np.isfinite(a_low) & np.isfinite(a_high) & (a_high > 1e-12)
        curve = (np.log(_AREAL_GRID_G_CM2[ok]), np.log(a_high[ok]), a_low[ok] / a_high[ok])
        if len(_CURVES) < 20000:
            _CURVES[key] = curve
    return curve


def ratio_at(material: Material | str, a_high: float | np.ndarray, profile: ScannerProfile) -> np.ndarray:
    """R of a slab of ``material`` (a Material, a library name, a formula or a mixture) at the given A_high."""
    m = get_material(material) if isinstance(material, str) else material
    _, log_a, ratio = _curve(m, profile)
    return np.interp(np.log(np.maximum(a_high, 1e-12)), log_a, ratio)


def a_high_of(material: Material, areal_g_cm2: float | np.ndarray, profile: ScannerProfile) -> np.ndarray:
    """A_high of ``areal_g_cm2`` g/cm² of ``material`` (noiseless); 0 where there is none."""
    log_areal, log_a, _ = _curve(material, profile)
    areal = np.asarray(areal_g_cm2, dtype=float)
    return np.where(areal > 0, np.exp(np.interp(np.log(np.maximum(areal, 1e-12)), log_areal, log_a)), 0.0)


@functools.lru_cache(maxsize=64)
def _kv_neighbours(profile: ScannerProfile) -> tuple[ScannerProfile, ScannerProfile]:
    """(``profile`` at +KV_STEP, at −KV_STEP, never below 20 kV), made once per profile: a lookup asks for them twice
    per reference (~80 ``dataclasses.replace`` and profile validations a body, ~0.7 ms), and a frozen profile's
    variants never change. Keyed on the profile's value (its ``extra`` aside, which no curve reads)."""
    return (profile.with_changes(tube_kv=profile.tube_kv + KV_STEP),
            profile.with_changes(tube_kv=max(profile.tube_kv - KV_STEP, 20.0)))


def _kv_slope(material: Material, a_high: float, profile: ScannerProfile) -> float:
    """dR/dkV of ``material`` at ``a_high`` (central difference over ±KV_STEP)."""
    up, down = _kv_neighbours(profile)
    return float(ratio_at(material, a_high, up) - ratio_at(material, a_high, down)) / (up.tube_kv - down.tube_kv)


# --- σ_R -----------------------------------------------------------------------------------------------------------
def noise_sigma_r(region: Region, profile: ScannerProfile, model: ResolutionModel = RESOLUTION) -> float:
    """Quantum + electronic noise of the region's mean R over its footprint at nominal dose.

    Per pixel and channel the air-normalised signal t = e^-A has variance e^-A/N0 + (e/N0)² (``forward.detect``),
    so σ_A² = (1/(N0 T) + (e/(N0 T))²); R = A_low/A_high of the region's own attenuation gives
    σ_R² = (σ_AL² + R² σ_AH²) / A_high², averaged over ``pixels`` independent pixels (blur correlates
    neighbours but keeps the variance of a large region's mean)."""
    quanta = profile.air_quanta_per_pixel * model.dose_scale
    electronic = profile.electronic_noise_quanta / quanta
    a_low = region.ratio * region.a_high + region.over_a_low
    a_high = region.a_high + region.over_a_high
    variances = [1.0 / (quanta * math.exp(-a)) + (electronic * math.exp(a)) ** 2 for a in (a_low, a_high)]
    per_pixel = math.sqrt(variances[0] + region.ratio**2 * variances[1]) / max(region.a_high, 1e-9)
    return per_pixel / math.sqrt(max(region.pixels, 1.0))


def sigma_r(region: Region, reference: Material, profile: ScannerProfile, model: ResolutionModel = RESOLUTION,
            reference_slope: float | None = None) -> float:
    """σ_R for telling ``region`` from ``reference`` at the region's A_high: the four terms in quadrature."""
    noise = noise_sigma_r(region, profile, model)
    drift = model.calibration_drift_rel * region.ratio
    slope = _kv_slope(reference, region.a_high, profile) if reference_slope is None else reference_slope
    if region.material is not None:
        slope -= _kv_slope(region.material, region.a_high, profile)
    kv = abs(slope) * model.kv_sigma_kv
    background = (model.background_error_rel * abs(region.over_a_low - region.ratio * region.over_a_high)
                  / max(region.a_high, 1e-9))
    return math.sqrt(noise**2 + drift**2 + kv**2 + background**2)


# --- the lookup ----------------------------------------------------------------------------------------------------
def references(targets: Iterable[str] = TARGET_MATERIALS,
               benign: dict[str, str] | None = None) -> list[tuple[str, str, Material]]:
    """(name, family, material) of the targets and benign families a lookup compares against."""
    out = [(name, "target", LIBRARY[name]) for name in targets]
    for name, formula in (BENIGN_FAMILIES if benign is None else benign).items():
        out.append((name, name, get_material(formula)))
    return out


def lookup(region: Region, profile: ScannerProfile, candidates: Sequence[tuple[str, str, Material]] | None = None,
           model: ResolutionModel = RESOLUTION) -> list[SignatureMatch]:
    """Every candidate (default: all targets and ``BENIGN_FAMILIES``) against ``region``, nearest (smallest d')
    first. A match with ``twin`` set is one the scanner cannot tell from the region there: an alarm reads
    "consistent with La2O3 — or its benign twin barite"."""
    matches = []
    for name, family, material in references() if candidates is None else candidates:
        reference_r = float(ratio_at(material, region.a_high, profile))
        delta = region.ratio - reference_r
        spread = sigma_r(region, material, profile, model)
        matches.append(SignatureMatch(name, family, reference_r, delta, spread, abs(delta) / spread))
    return sorted(matches, key=lambda m: m.d_prime)


def twins(region: Region, profile: ScannerProfile, candidates: Sequence[tuple[str, str, Material]] | None = None,
          model: ResolutionModel = RESOLUTION) -> list[str]:
    """Names of the targets among ``candidates`` (default: every target) that the region is a twin of,
    in the order of ``TARGET_MATERIALS``."""
    candidates = references(benign={}) if candidates is None else candidates
    found = {m.name for m in lookup(region, profile, candidates, model) if m.twin and m.family == "target"}
    return [name for name, _, _ in candidates if name in found]
