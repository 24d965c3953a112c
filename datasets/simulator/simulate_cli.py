"""``parcelscan simulate``: parcel scans with concealments and labels, or the physics test phantom."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from parcelscan.datasets.physics.profile import load_profile
from parcelscan.datasets.physics.tables import check_physics_installed
from parcelscan.datasets.simulator.generate import config_from_args, run_simulate
from parcelscan.datasets.simulator.phantom import write_phantom
from parcelscan.errors import ParcelscanError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--phantom", action="store_true", help="write the ASTM F792-like test phantom instead")
    parser.add_argument("--count", type=int, default=100, help="number of scans (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; scan i depends only on (seed, i)")
    parser.add_argument("--start", type=int, default=0,
                        help="first scan index (default 0): writes scans START … START+COUNT-1 of the seed, so a data "
                             "set can be extended without simulating its first scans again")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default: all cores)")
    parser.add_argument("--mix", choices=("stress", "postal"), default="stress",
                        help="stream: stress (the training law, default) or postal (prevalence-realistic, see README)")
    parser.add_argument("--suspect-fraction", type=float, default=0.5, help="share of scans with a concealment")
    parser.add_argument("--scenarios", nargs="+", metavar="SCENARIO", help="restrict the concealment scenarios")
    parser.add_argument("--profile", help="scanner profile file or shipped name (default postal-dual-140)")
    parser.add_argument("--no-operator-image", action="store_true",
                        help="write only the dual-energy pair, no pseudo-colour operator image (_rgb.png): for a "
                             "dual-energy training set (the same pairs, ~15 %% faster, 13 %% less disk)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ParcelscanError(f"cannot create output directory {path}: {error.strerror or error}") from error
    if not os.access(path, os.W_OK):
        raise ParcelscanError(f"output directory {path} is not writable")
    return path


def run(args: argparse.Namespace) -> int:
    check_physics_installed()  # without the [sim] extra: the install advice, before anything is on disk
    profile = load_profile(args.profile)
    if args.phantom:
        out = _writable_dir(Path(args.out))
        description = write_phantom(out, profile, seed=args.seed)
        print(f"phantom written to {out}: {', '.join(description['files'].values())}, phantom_regions.json "
              f"({len(description['regions'])} regions)")
        return 0
    config_from_args(args, profile)  # refuse bad arguments before anything is created on disk
    return run_simulate(args, profile, _writable_dir(Path(args.out)))
