"""Materials of ordinary goods that the physics library does not list, with honest compositions.

The library (``materials.py``) holds what the physics tests and the target list need; parcels also carry
PVC cables, leather shoes, foam, wax, jam, alkaline cells, pigments and blasting media. Several of the
benign fillers here are *dense or high-Z on purpose* (barite, zircon, iron-oxide pigment, lead shot,
bismuth, ferrocerium): they are real, legal goods that a rare-earth detector must not flag.
"""

from __future__ import annotations

import functools

from parcelscan.datasets.physics.materials import LIBRARY, Material, mixture

# fmt: off
_GOODS: list[Material] = [
    mixture("PVC", {"C2H3Cl": 1}, 1.38, None, "organic", "PVC (cable sheaths, blister packs)"),
    mixture("leather", {"C": 0.50, "H": 0.07, "O": 0.25, "N": 0.17, "S": 0.01}, 0.86, None, "organic", "leather"),
    mixture("EPS foam", {"C8H8": 1}, 0.02, None, "organic", "expanded polystyrene"),
    mixture("PU foam", {"C25H42N2O6": 1}, 0.03, None, "organic", "polyurethane foam"),
    mixture("nylon", {"C12H22N2O2": 1}, 1.14, None, "organic", "nylon"),
    mixture("silicone", {"C2H6OSi": 1}, 1.1, None, "organic", "silicone rubber"),
    mixture("paraffin wax", {"C25H52": 1}, 0.9, None, "organic", "candles, lipstick base"),
    mixture("soap", {"C18H35NaO2": 0.85, "H2O": 0.15}, 1.05, None, "organic", "bar soap"),
    mixture("jam", {"C12H22O11": 0.6, "H2O": 0.4}, 1.3, None, "organic", "jam, honey"),
    mixture("canned food", {"H2O": 0.8, "C6H10O5": 0.14, "C57H104O6": 0.05, "NaCl": 0.01}, 1.05, None, "organic",
            "canned soup, beans, fish"),
    mixture("chocolate", {"C12H22O11": 0.5, "C57H104O6": 0.32, "C6H10O5": 0.18}, 1.3, None, "organic", "chocolate"),
    mixture("tea", {"C6H10O5": 0.94, "K2CO3": 0.03, "CaCO3": 0.03}, 1.3, 0.35, "organic", "dry tea leaves"),
    mixture("protein powder", {"C": 0.50, "H": 0.07, "O": 0.25, "N": 0.16, "Ca3P2O8": 0.02}, 1.3, 0.45, "organic",
            "whey protein powder"),
    mixture("nuts", {"C57H104O6": 0.5, "C6H10O5": 0.3, "C": 0.1, "H2O": 0.1}, 1.1, 0.6, "organic", "nuts, dried food"),
    mixture("ethanol", {"C2H6O": 0.8, "H2O": 0.2}, 0.85, None, "organic", "perfume, spirits"),
    mixture("pills", {"C6H10O5": 0.55, "CaCO3": 0.4, "MgC18H34O2": 0.05}, 1.4, 0.8, "organic",
            "tablets (calcium supplements)"),
    mixture("paper pulp", {"C6H10O5": 1}, 0.9, None, "organic", "crumpled paper, moulded pulp"),
    mixture("alkaline cell", {"Zn": 0.16, "MnO2": 0.38, "KOH": 0.06, "H2O": 0.08, "C": 0.07, "Fe": 0.25}, 2.9, None,
            "metal", "AA/AAA alkaline cell"),
    mixture("Li-polymer cell", {"LiCoO2": 0.35, "C": 0.2, "Cu": 0.14, "Al": 0.09, "LiPF6": 0.02, "C3H4O3": 0.14,
                                "C2H4": 0.06}, 2.4, None, "metal", "pouch Li-ion cell (phones, power banks)"),
    mixture("epoxy chip", {"SiO2": 0.7, "C15H16O2": 0.25, "Si": 0.03, "Cu": 0.02}, 1.9, None, "inorganic",
            "IC package"),
    mixture("transformer core", {"Fe": 0.97, "Si": 0.03}, 7.65, None, "metal", "electrical steel laminations"),
    mixture("solder", {"Sn": 0.6, "Pb": 0.4}, 8.5, None, "metal", "tin-lead solder"),
    mixture("bismuth", {"Bi": 1}, 9.78, None, "metal", "bismuth (lead-free fishing weights)"),
    mixture("ferrocerium", {"Ce": 0.38, "La": 0.19, "Nd": 0.12, "Pr": 0.04, "Fe": 0.19, "Mg": 0.08}, 6.7, None,
            "metal", "ferrocerium fire-starter rod (mischmetal + iron)"),
    mixture("flexible magnet", {"SrFe12O19": 0.85, "C5H8": 0.15}, 3.6, None, "metal", "fridge magnet sheet"),
    mixture("cast iron", {"Fe": 0.94, "C": 0.035, "Si": 0.025}, 7.2, None, "metal", "grey cast iron"),
    mixture("mug ceramic", {"Al2Si2O7": 0.5, "SiO2": 0.4, "K2O": 0.05, "ZrSiO4": 0.05}, 2.4, None, "inorganic",
            "glazed stoneware"),
    # benign dense and high-Z fillers (construction, ceramics, blasting, fishing, drilling)
    mixture("barite", {"BaSO4": 1}, 4.48, 2.0, "inorganic", "barite filler (paints, drilling mud, plastics)"),
    mixture("zircon", {"ZrSiO4": 1}, 4.6, 2.6, "inorganic", "zircon sand / glaze opacifier"),
    mixture("iron oxide pigment", {"Fe2O3": 1}, 5.24, 1.0, "inorganic", "red iron-oxide pigment (grout colour)"),
    mixture("titanium white", {"TiO2": 1}, 4.23, 0.8, "inorganic", "TiO2 pigment"),
    mixture("zinc oxide", {"ZnO": 1}, 5.6, 0.7, "inorganic", "zinc oxide powder (cosmetics, rubber)"),
    mixture("lead shot", {"Pb": 0.98, "Sb": 0.02}, 11.0, 6.8, "metal", "lead shot (fishing, ballast)"),
    mixture("steel shot", {"Fe": 0.98, "C": 0.01, "Mn": 0.01}, 7.8, 4.6, "metal", "steel blasting shot"),
    mixture("glass beads", {"SiO2": 0.73, "Na2O": 0.14, "CaO": 0.09, "MgO": 0.04}, 2.5, 1.5, "inorganic",
            "glass blasting beads"),
    mixture("brass swarf", {"Cu": 0.63, "Zn": 0.37}, 8.5, 2.2, "metal", "brass turnings"),
    mixture("foundry sand", {"SiO2": 0.9, "Al2Si2O9H4": 0.07, "C": 0.03}, 2.6, 1.5, "inorganic", "bonded sand core"),
    mixture("grease", {"C30H62": 0.9, "LiC18H35O3": 0.1}, 0.9, None, "organic", "lithium grease"),
    mixture("brine", {"H2O": 0.74, "NaCl": 0.26}, 1.2, None, "organic", "saturated salt water"),
    mixture("syrup", {"H2O": 0.35, "C12H22O11": 0.65}, 1.32, None, "organic", "sugar syrup"),
]
# fmt: on

GOODS: dict[str, Material] = {m.name: m for m in _GOODS}


@functools.cache
def material(name: str) -> Material:
    """A material by name from the physics library or the goods above (one shared object per name, so a
    scene groups all parts of one material into one areal-density map)."""
    if name in GOODS:
        return GOODS[name]
    return LIBRARY[name]
