"""``parcelscan physics``: noiseless A_low, A_high and R of a material slab under a scanner profile.

``--write-tables`` recomputes the physics tables a station install ships instead of xraydb and spekpy
(``tables/<profile>.npz``, see ``tablegen``); ``--check-tables`` says whether they still equal the physics.
Both need the ``[sim]`` extra, like every other use of this verb.
"""

from __future__ import annotations

import argparse
import json

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import LIBRARY, get_material
from parcelscan.datasets.physics.profile import load_profile
from parcelscan.datasets.physics.tablegen import stale_tables, write_tables
from parcelscan.datasets.physics.tables import TABLES_DIR, check_physics_installed
from parcelscan.errors import ParcelscanError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--material",
                        help="library name, chemical formula, or mixture like Nd2O3:0.05+water:0.95")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--areal-density", type=float, nargs="+", metavar="G_CM2",
                        help="areal density(ies) in g/cm² along the beam")
    amount.add_argument("--thickness-cm", type=float, nargs="+", metavar="CM",
                        help="thickness(es) in cm at the material's density (bulk density for powders)")
    parser.add_argument("--profile",
                        help="scanner profile file (.toml/.yaml) or shipped name (default postal-dual-140)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--list", action="store_true", help="list the material library and exit")
    tables = parser.add_mutually_exclusive_group()
    tables.add_argument("--write-tables", action="store_true",
                        help="recompute the shipped physics tables (tables/<profile>.npz) of every shipped profile")
    tables.add_argument("--check-tables", action="store_true",
                        help="compare the shipped physics tables with the physics now; exit 1 if any is stale")


def run(args: argparse.Namespace) -> int:
    if not args.list:
        check_physics_installed()  # without the [sim] extra: the install advice, before any work
    if args.write_tables:
        for path in write_tables():
            print(f"wrote {path} ({path.stat().st_size} bytes)")
        return 0
    if args.check_tables:
        problems = stale_tables()
        for problem in problems:
            print(f"stale: {problem}")
        if not problems:
            print(f"physics tables in {TABLES_DIR} equal the physics now")
        return 1 if problems else 0
    if args.list:
        for material in LIBRARY.values():
            bulk = f"{material.bulk_density_g_cm3:g}" if material.bulk_density_g_cm3 else "-"
            formula = " + ".join(f"{f}:{w:.3g}" for f, w in material.composition)
            print(f"{material.name:16s} {material.family:9s} ρ={material.density_g_cm3:<7g} bulk={bulk:<5s} {formula}")
        return 0
    if not args.material:
        raise ParcelscanError("--material is required (or --list)")
    if not args.areal_density and not args.thickness_cm:
        raise ParcelscanError("give --areal-density G_CM2 or --thickness-cm CM")
    values = args.areal_density or args.thickness_cm
    if any(not (v >= 0) or v == float("inf") for v in values):
        raise ParcelscanError(f"areal density and thickness must be finite and >= 0, got {values}")
    material = get_material(args.material)
    profile = load_profile(args.profile)
    model = forward_model(profile)
    density = material.packed_density_g_cm3
    rows = []
    for value in values:
        areal = value if args.areal_density else value * density
        a_low, a_high = model.material_attenuation(material, areal)
        rows.append({
            "material": material.name, "profile": profile.name, "areal_density_g_cm2": round(areal, 6),
            "thickness_cm": round(areal / density, 6), "A_low": round(a_low, 6), "A_high": round(a_high, 6),
            "R": round(a_low / a_high, 6) if a_high > 0 else None,
        })
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    low_e, high_e = model.responses.mean_energy_kev()
    print(f"profile {profile.name}: {profile.tube_kv:g} kV; channel mean absorbed energy low {low_e:.1f} keV, "
          f"high {high_e:.1f} keV")
    print(f"{'material':16s} {'g/cm2':>9s} {'cm':>8s} {'A_low':>8s} {'A_high':>8s} {'R':>7s}")
    for row in rows:
        ratio = f"{row['R']:7.3f}" if row["R"] is not None else "      -"
        print(f"{row['material']:16s} {row['areal_density_g_cm2']:9.4f} {row['thickness_cm']:8.4f} "
              f"{row['A_low']:8.4f} {row['A_high']:8.4f} {ratio}")
    return 0
