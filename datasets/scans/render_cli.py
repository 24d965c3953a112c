"""``parcelscan render``: a scan as the screening pseudo-colour image, with its mask outlined if it has one."""

from __future__ import annotations

import argparse
from pathlib import Path

from parcelscan.datasets.scans.render import render_scan_file
from parcelscan.datasets.scans.scanfile import write_png


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan", help="a scan: <id>_low.png, <id>.tiff, <id>.json or any file of the scan")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--mask", help="8-bit mask PNG to outline (default: the sidecar's mask, if any)")
    parser.add_argument("--no-mask", action="store_true", help="do not outline a mask")
    parser.add_argument("--profile", help="scanner profile for the colour calibration (default: the scan's)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    rgb = render_scan_file(Path(args.scan), mask_path=Path(args.mask) if args.mask else None,
                           outline_mask=not args.no_mask, profile_path=args.profile)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, np.ascontiguousarray(rgb))
    print(out)
    return 0
