"""The material library: what parcels, their contents and the concealed powders are made of.

Every material is a mixture of chemical formulas by mass fraction, with a solid density and (for
powders and granular goods) a bulk density. Mass attenuation coefficients come from xraydb's Elam
tables (total, coherent scattering included, as NIST XCOM's "total with coherent").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from parcelscan.errors import ParcelscanError


@dataclass(frozen=True)
class Material:
    """A material as the beam sees it.

    ``composition`` lists (formula, mass fraction) pairs summing to 1. ``density_g_cm3`` is the solid
    density; ``bulk_density_g_cm3`` that of the loose powder or granular good as packed in a parcel.
    """

    name: str
    composition: tuple[tuple[str, float], ...]
    density_g_cm3: float
    bulk_density_g_cm3: float | None = None
    family: str = "inorganic"
    description: str = ""

    @property
    def packed_density_g_cm3(self) -> float:
        return self.bulk_density_g_cm3 or self.density_g_cm3

    def mass_attenuation_cm2_g(self, energy_kev: np.ndarray) -> np.ndarray:
        """μ/ρ (cm²/g) at the given energies (keV)."""
        return _mass_attenuation(self.composition, tuple(np.asarray(energy_kev, dtype=float).ravel()))


@functools.lru_cache(maxsize=4096)
def _mass_attenuation(composition: tuple[tuple[str, float], ...], energy_kev: tuple[float, ...]) -> np.ndarray:
    total = np.zeros(len(energy_kev))
    for formula, fraction in composition:
        total += fraction * _formula_mass_attenuation(formula, energy_kev)
    total.setflags(write=False)
    return total


@functools.lru_cache(maxsize=8192)  # ~100 formulas × a profile's 5 spectral variants, a few profiles
def _formula_mass_attenuation(formula: str, energy_kev: tuple[float, ...]) -> np.ndarray:
    """μ/ρ (cm²/g) of one chemical formula, cached apart from the mixtures that hold it.

    The simulator's fills are mixtures at a fresh fraction in every scene (5 % oxide in water, 23 % in
    grout), so a cache keyed by the whole composition missed for nearly every scene and xraydb's Elam
    splines were most of a scan's simulation time; the formulas themselves are a few dozen. The sum
    above adds the same arrays in the same order, so every value is the same to the bit."""
    import xraydb

    energy_ev = np.asarray(energy_kev) * 1000.0
    mu = np.asarray(xraydb.material_mu(formula, energy_ev, density=1.0, kind="total"), dtype=float)
    mu.setflags(write=False)
    return mu


def mixture(name: str, parts: dict[str, float], density_g_cm3: float, bulk_density_g_cm3: float | None = None,
            family: str = "inorganic", description: str = "") -> Material:
    """A material from {formula: mass fraction}; fractions are normalised to sum to 1."""
    total = sum(parts.values())
    if total <= 0 or any(v < 0 for v in parts.values()):
        raise ParcelscanError(f"material {name!r}: mass fractions must be >= 0 and not all zero")
    composition = tuple((formula, fraction / total) for formula, fraction in parts.items() if fraction > 0)
    return Material(name, composition, density_g_cm3, bulk_density_g_cm3, family, description)


def mix_materials(name: str, parts: list[tuple[Material, float]], family: str | None = None) -> Material:
    """Mix library materials by mass fraction (e.g. 15 % Nd2O3 in tile adhesive).

    The packed density of a powder mixture follows the mass-weighted specific volumes of the parts.
    """
    total = sum(fraction for _, fraction in parts)
    composition: dict[str, float] = {}
    specific_volume = 0.0
    bulk_specific_volume = 0.0
    for material, fraction in parts:
        share = fraction / total
        for formula, f in material.composition:
            composition[formula] = composition.get(formula, 0.0) + share * f
        specific_volume += share / material.density_g_cm3
        bulk_specific_volume += share / material.packed_density_g_cm3
    family = family or max(parts, key=lambda p: p[1])[0].family
    return Material(name, tuple(composition.items()), 1.0 / specific_volume, 1.0 / bulk_specific_volume, family)


def _m(name: str, parts: dict[str, float], density: float, bulk: float | None, family: str,
       description: str) -> Material:
    return mixture(name, parts, density, bulk, family, description)


# fmt: off
_LIBRARY: list[Material] = [
    # --- organics (low Z) ---
    _m("air", {"N": 0.7553, "O": 0.2318, "Ar": 0.0129}, 0.001205, None, "organic", "dry air at sea level"),
    _m("water", {"H2O": 1}, 1.0, None, "organic", "water"),
    _m("PET", {"C10H8O4": 1}, 1.38, None, "organic", "PET bottle plastic"),
    _m("polyethylene", {"C2H4": 1}, 0.94, None, "organic", "polyethylene (mailers, bags)"),
    _m("polypropylene", {"C3H6": 1}, 0.90, None, "organic", "polypropylene"),
    _m("ABS", {"C15H17N": 1}, 1.05, None, "organic", "ABS plastic (toys, housings)"),
    _m("acetal", {"CH2O": 1}, 1.41, None, "organic", "acetal (POM), phantom organic wedge"),
    _m("rubber", {"C5H8": 1}, 1.1, None, "organic", "rubber (shoe soles)"),
    _m("cardboard", {"C6H10O5": 1}, 0.70, None, "organic", "corrugated cardboard / paper (cellulose)"),
    _m("paper", {"C6H10O5": 0.9, "CaCO3": 0.1}, 0.90, None, "organic", "printing paper with CaCO3 filler"),
    _m("textile", {"C6H10O5": 0.5, "C10H8O4": 0.5}, 1.45, 0.35, "organic", "cotton/polyester fabric"),
    _m("wood", {"C6H10O5": 1}, 0.60, None, "organic", "wood"),
    _m("sugar", {"C12H22O11": 1}, 1.59, 0.85, "organic", "sucrose"),
    _m("flour", {"C6H10O5": 0.88, "H2O": 0.12}, 1.45, 0.59, "organic", "wheat flour (starch + moisture)"),
    _m("rice", {"C6H10O5": 0.88, "H2O": 0.12}, 1.45, 0.85, "organic", "rice grains"),
    _m("coffee", {"C6H10O5": 0.95, "K2CO3": 0.05}, 1.2, 0.40, "organic", "ground coffee"),
    _m("juice", {"H2O": 0.88, "C6H12O6": 0.12}, 1.05, None, "organic", "fruit juice"),
    _m("oil", {"C57H104O6": 1}, 0.92, None, "organic", "vegetable oil"),
    _m("shampoo", {"H2O": 0.8, "C12H25NaO4S": 0.15, "NaCl": 0.05}, 1.02, None, "organic", "shampoo"),
    _m("cosmetic cream", {"H2O": 0.7, "C3H8O3": 0.15, "C16H34O": 0.1, "TiO2": 0.05}, 1.0, None, "organic", "cosmetics"),
    # --- inorganics (light elements, Z ~ 10-20) ---
    _m("salt", {"NaCl": 1}, 2.165, 1.2, "inorganic", "table salt"),
    _m("baking soda", {"NaHCO3": 1}, 2.2, 1.0, "inorganic", "sodium bicarbonate"),
    _m("talc", {"Mg3Si4O12H2": 1}, 2.75, 0.8, "inorganic", "talc powder"),
    _m("CaCO3", {"CaCO3": 1}, 2.71, 1.2, "inorganic", "calcium carbonate (chalk, filler)"),
    _m("SiO2", {"SiO2": 1}, 2.65, 1.5, "inorganic", "quartz / silica"),
    _m("sand", {"SiO2": 0.92, "CaCO3": 0.05, "Fe2O3": 0.03}, 2.65, 1.6, "inorganic", "sand"),
    _m("detergent", {"Na2CO3": 0.3, "Na2SO4": 0.3, "C18H29NaO3S": 0.2, "Na2Al2Si2O8": 0.2}, 2.0, 0.7,
       "inorganic", "laundry detergent powder"),
    _m("cement", {"Ca3SiO5": 0.55, "Ca2SiO4": 0.2, "Ca3Al2O6": 0.1, "CaSO4": 0.05, "Fe2O3": 0.03, "CaCO3": 0.07},
       3.15, 1.4, "inorganic", "Portland cement"),
    _m("grout", {"SiO2": 0.6, "Ca3SiO5": 0.25, "CaCO3": 0.13, "Fe2O3": 0.02}, 2.6, 1.5, "inorganic",
       "cementitious tile grout (sand + cement + limestone)"),
    _m("tile adhesive", {"SiO2": 0.52, "Ca3SiO5": 0.3, "CaCO3": 0.15, "C6H10O5": 0.03}, 2.6, 1.4, "inorganic",
       "cement-based tile adhesive (C1/C2) with cellulose ether"),
    _m("clay", {"Al2Si2O9H4": 0.75, "SiO2": 0.2, "Fe2O3": 0.05}, 2.6, 1.3, "inorganic", "kaolinitic clay"),
    _m("ceramic tile", {"Al2Si2O7": 0.55, "SiO2": 0.35, "CaO": 0.05, "Fe2O3": 0.05}, 2.3, None, "inorganic",
       "fired ceramic tile body"),
    _m("glass", {"SiO2": 0.73, "Na2O": 0.14, "CaO": 0.09, "MgO": 0.04}, 2.5, None, "inorganic", "soda-lime glass"),
    _m("PCB", {"SiO2": 0.45, "C15H16O2": 0.35, "Cu": 0.15, "Sn": 0.05}, 1.9, None, "inorganic",
       "circuit board (FR-4 + copper + solder)"),
    _m("Li-ion cell", {"LiCoO2": 0.3, "C": 0.18, "Cu": 0.15, "Al": 0.07, "LiPF6": 0.02, "C3H4O3": 0.1, "Fe": 0.18},
       2.7, None, "metal", "Li-ion cell (cathode, graphite, foils, electrolyte, steel can)"),
    # --- metals ---
    _m("Al", {"Al": 1}, 2.699, None, "metal", "aluminium (castings, cans)"),
    _m("steel", {"Fe": 0.98, "C": 0.005, "Mn": 0.015}, 7.85, None, "metal", "carbon steel"),
    _m("stainless steel", {"Fe": 0.70, "Cr": 0.18, "Ni": 0.10, "Mn": 0.02}, 8.0, None, "metal", "stainless steel"),
    _m("Fe", {"Fe": 1}, 7.874, None, "metal", "iron"),
    _m("Cu", {"Cu": 1}, 8.96, None, "metal", "copper"),
    _m("brass", {"Cu": 0.63, "Zn": 0.37}, 8.5, None, "metal", "brass fittings"),
    _m("zamak", {"Zn": 0.96, "Al": 0.04}, 6.6, None, "metal", "zinc die-cast (toys, fittings)"),
    _m("cupronickel", {"Cu": 0.75, "Ni": 0.25}, 8.9, None, "metal", "coin alloy"),
    _m("silver", {"Ag": 0.925, "Cu": 0.075}, 10.4, None, "metal", "sterling silver jewellery"),
    _m("gold", {"Au": 0.75, "Ag": 0.125, "Cu": 0.125}, 15.6, None, "metal", "18k gold jewellery"),
    _m("Pb", {"Pb": 1}, 11.35, None, "metal", "lead (fishing weights)"),
    _m("W", {"W": 1}, 19.3, None, "metal", "tungsten"),
    _m("WC", {"WC": 0.94, "Co": 0.06}, 15.6, None, "metal", "tungsten carbide (drill bits)"),
    _m("ferrite", {"SrFe12O19": 1}, 4.9, None, "metal", "strontium ferrite magnet"),
    _m("NdFeB magnet", {"Nd2Fe14B": 1}, 7.5, None, "metal", "sintered NdFeB magnet (speakers, motors)"),
    # --- detector and phantom materials ---
    _m("CsI", {"CsI": 1}, 4.51, None, "inorganic", "caesium iodide scintillator"),
    _m("GOS", {"Gd2O2S": 1}, 7.32, None, "inorganic", "gadolinium oxysulfide scintillator"),
    _m("CdWO4", {"CdWO4": 1}, 7.9, None, "inorganic", "cadmium tungstate scintillator"),
    # --- targets: critical minerals ---
    _m("Nd2O3", {"Nd2O3": 1}, 7.24, 1.9, "target", "neodymium oxide"),
    _m("Pr6O11", {"Pr6O11": 1}, 6.5, 1.6, "target", "praseodymium oxide"),
    _m("Dy2O3", {"Dy2O3": 1}, 7.8, 2.0, "target", "dysprosium oxide"),
    _m("Tb4O7", {"Tb4O7": 1}, 7.3, 1.9, "target", "terbium oxide"),
    _m("CeO2", {"CeO2": 1}, 7.22, 1.6, "target", "cerium oxide"),
    _m("La2O3", {"La2O3": 1}, 6.51, 1.3, "target", "lanthanum oxide"),
    _m("Y2O3", {"Y2O3": 1}, 5.01, 1.2, "target", "yttrium oxide"),
    _m("Gd2O3", {"Gd2O3": 1}, 7.41, 1.9, "target", "gadolinium oxide"),
    _m("Sm2O3", {"Sm2O3": 1}, 8.35, 2.0, "target", "samarium oxide"),
    _m("NdFeB powder", {"Nd2Fe14B": 1}, 7.5, 3.5, "target", "NdFeB magnet powder"),
    _m("RE carbonate", {"La2C3O9": 0.35, "Ce2C3O9": 0.50, "Nd2C3O9": 0.15}, 3.0, 1.2, "target",
       "mixed rare-earth carbonate (La, Ce, Nd)"),
    _m("Sb2O3", {"Sb2O3": 1}, 5.2, 1.9, "target", "antimony trioxide"),
    _m("GeO2", {"GeO2": 1}, 4.23, 1.4, "target", "germanium dioxide"),
    _m("Ga", {"Ga": 1}, 5.91, 3.5, "target", "gallium metal (pellets)"),
    _m("W powder", {"W": 1}, 19.3, 9.0, "target", "tungsten metal powder"),
]
# fmt: on

LIBRARY: dict[str, Material] = {m.name: m for m in _LIBRARY}
TARGET_MATERIALS: tuple[str, ...] = tuple(m.name for m in _LIBRARY if m.family == "target")
RARE_EARTH_TARGETS: tuple[str, ...] = (
    "Nd2O3", "Pr6O11", "Dy2O3", "Tb4O7", "CeO2", "La2O3", "Y2O3", "Gd2O3", "Sm2O3", "NdFeB powder", "RE carbonate",
)

_MIX_PART = re.compile(r"^\s*([^:]+?)\s*:\s*([0-9.eE+-]+)\s*$")


def get_material(name_or_formula: str) -> Material:
    """A library material by name (case-insensitive), a chemical formula, or a mixture.

    Mixtures are written ``part:fraction+part:fraction`` with parts being library names or formulas,
    e.g. ``Nd2O3:0.05+water:0.95``.
    """
    text = name_or_formula.strip()
    if not text:
        raise ParcelscanError("empty material name")
    by_lower = {k.lower(): v for k, v in LIBRARY.items()}
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    if "+" in text or ":" in text:
        parts = []
        for piece in text.split("+"):
            match = _MIX_PART.match(piece)
            if not match:
                raise ParcelscanError(
                    f"bad mixture part {piece!r}: write name:mass_fraction, e.g. Nd2O3:0.05+water:0.95")
            fraction = float(match.group(2))
            if fraction <= 0:
                raise ParcelscanError(f"mixture fraction must be > 0 in {piece!r}")
            parts.append((get_material(match.group(1)), fraction))
        return mix_materials(text, parts)
    return Material(text, ((_checked_formula(text), 1.0),), _formula_density(text), None, "inorganic", "formula")


def _checked_formula(formula: str) -> str:
    import xraydb

    try:
        parsed = xraydb.chemparse(formula)
        if not parsed:
            raise ValueError("no elements")
        for element in parsed:
            xraydb.atomic_number(element)
    except Exception as error:
        raise ParcelscanError(
            f"unknown material {formula!r}: not in the library ({len(LIBRARY)} materials, see "
            "`parcelscan physics --list`) and not a chemical formula"
        ) from error
    return formula


def _formula_density(formula: str) -> float:
    """Density of a pure element from xraydb when known; 1.0 otherwise (only areal densities matter)."""
    import xraydb

    try:
        return float(xraydb.atomic_density(formula))
    except Exception:
        return 1.0
