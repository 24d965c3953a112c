"""Which target powders can dual-energy physics tell from which benign look-alikes?

A dual-energy scanner measures, per pixel, the high-energy attenuation A_high and the ratio
R = A_low / A_high. R depends on thickness (beam hardening), so materials are compared at the *same*
A_high. This prints R of target powders and of the simulator's dense look-alike fills at A_high =
0.5, 1, 2 and 4 under a scanner profile, from the exact (full-spectrum) forward model, with the
look-alike nearest to each target at A_high = 2 (a pouch or bottle under typical clutter).

Where a target and a look-alike differ by less than the noise of R over a region (~0.01–0.03 for a few
hundred pixels under typical clutter), no classifier working from the scan alone can separate them at a
low false-alarm rate; only shape, quantity or context can.

    python examples/separability.py [--profile postal-dual-140]
"""

from __future__ import annotations

import argparse

import numpy as np

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.physics.profile import load_profile

A_HIGH_POINTS = (0.5, 1.0, 2.0, 4.0)
TARGETS = ("La2O3", "CeO2", "Pr6O11", "Nd2O3", "Sm2O3", "Gd2O3", "Tb4O7", "Dy2O3", "Y2O3", "Sb2O3", "GeO2",
           "W", "Ga")
# dense fills the simulator uses for benign look-alikes (datasets/simulator/concealments.py, goods.py)
LOOKALIKES = {"barite": "BaSO4", "zircon": "ZrSiO4", "zinc oxide": "ZnO", "iron oxide pigment": "Fe2O3",
              "titanium white": "TiO2", "CaCO3": "CaCO3", "salt": "NaCl", "lead": "Pb", "bismuth": "Bi",
              "brass": "Cu0.65Zn0.35", "copper": "Cu", "steel": "Fe", "tungsten carbide": "WC"}


def ratio_at_a_high(model, material_name: str, a_high_points=A_HIGH_POINTS) -> np.ndarray:
    """R = A_low/A_high of a slab of the material at the given A_high values (noiseless, full spectrum)."""
    areal_g_cm2 = np.geomspace(1e-3, 200.0, 800)
    a_low, a_high = model.log_attenuation_direct([get_material(material_name)], areal_g_cm2[None, :])
    ok = np.isfinite(a_low) & np.isfinite(a_high) & (a_high > 0)
    return np.interp(a_high_points, a_high[ok], a_low[ok] / a_high[ok])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help="scanner profile (default postal-dual-140)")
    args = parser.parse_args()
    model = forward_model(load_profile(args.profile))
    looks = {name: ratio_at_a_high(model, formula) for name, formula in LOOKALIKES.items()}
    header = " ".join(f"A_high={a:<4g}" for a in A_HIGH_POINTS)
    at2 = A_HIGH_POINTS.index(2.0)
    print(f"{'material':<28} {header}  nearest look-alike at A_high=2 (|ΔR| there; largest |ΔR|)")
    for target in TARGETS:
        r = ratio_at_a_high(model, target)
        nearest = min(looks, key=lambda name: abs(r[at2] - looks[name][at2]))
        gap, worst = abs(r[at2] - looks[nearest][at2]), float(np.abs(r - looks[nearest]).max())
        print(f"{target:<28} " + " ".join(f"{x:<11.3f}" for x in r) + f" {nearest} ({gap:.3f}; {worst:.3f})")
    print()
    for name, r in looks.items():
        print(f"{name + ' (' + LOOKALIKES[name] + ')':<28} " + " ".join(f"{x:<11.3f}" for x in r))


if __name__ == "__main__":
    main()
