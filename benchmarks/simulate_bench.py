"""``parcelscan simulate`` throughput: scans/s on 2 worker processes at the default profile, and where the
time goes (scene building, rasterisation, physics, detector, pseudo-colour, PNG encoding and writing).

It writes real station files into a temporary directory (the same code path as the CLI), after a warm-up
that builds the spectra and colour tables. Stage figures are CPU time of the worker processes (time spent
waiting for a core excluded); throughput is wall time. The load average is printed with the figures:
other work on the machine slows the wall-time figures, and the CPU-time estimate says what two free cores
would do.

    python benchmarks/simulate_bench.py [--scans 300] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    from machine import describe_machine

    from parcelscan.datasets.manifest import read_manifest
    from parcelscan.datasets.physics.profile import default_profile
    from parcelscan.datasets.simulator.generate import STAGES, generate
    from parcelscan.datasets.simulator.parcel import SimConfig

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"machine: {describe_machine()}")
    profile = default_profile()
    config = SimConfig(profile, seed=args.seed)
    out = Path(tempfile.mkdtemp(prefix="parcelscan-simbench-"))
    try:
        generate(config, out, list(range(4)), 1, progress=False)  # warm-up: spectra, colour tables, imports
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        timing = generate(config, out, list(range(4, 4 + args.scans)), args.workers, progress=False)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()[0]
        records = [r for r in read_manifest(out) if r.provenance["index"] >= 4]
        pixels = sum(r.provenance["rows"] * profile.channels for r in records)
        size = sum((out / name).stat().st_size for r in records for name in (*r.files.values(), r.mask) if name)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    rate = args.scans / wall
    print(f"profile {profile.name}: {profile.channels} channels, {profile.pixel_pitch_mm} mm pitch; "
          f"{args.scans} scans, mean {pixels / args.scans / profile.channels:.0f} rows "
          f"({pixels / args.scans / 1e3:.0f} kpixel), {size / args.scans / 1e6:.2f} MB of files per scan")
    print(f"throughput: {timing['steady_scans_per_s']:.1f} scans/s steady state on {args.workers} worker processes "
          f"({rate:.1f} scans/s over the whole run of {wall:.1f} s, of which {timing['startup_s']:.1f} s until the "
          f"first scan: process start and warm-up); goal 20 scans/s")
    print(f"load average {load_before:.1f} before, {load_after:.1f} after (on {os.cpu_count()} cores: other work "
          "on the machine slows every figure here)")
    stage = timing["stage_s"]
    busy = sum(stage.get(key, 0.0) for key in STAGES)
    cpu_ms = stage["cpu"] / args.scans * 1e3
    print(f"CPU time per scan (the worker's own, waits for the CPU excluded): {cpu_ms:.0f} ms, so "
          f"{args.workers} uncontended cores would give about {args.workers / cpu_ms * 1e3:.1f} scans/s")
    print(f"where the time goes (CPU time per scan and stage, {busy / args.scans * 1e3:.0f} ms in all):")
    names = {"scene": "scene building (parcel, contents, pose)", "rasterise": "scene rasterisation (areal maps)",
             "forward": "forward model (spectral Beer-Lambert)", "detect": "detector noise, blur, 16-bit",
             "pseudocolor": "pseudo-colour", "twins": "look-alike fill signature (twin_of)",
             "declaration": "customs declaration (part masses)", "png": "PNG encoding + atomic writes"}
    for key in STAGES:
        value = stage.get(key, 0.0)
        print(f"  {names[key]:42s} {value / args.scans * 1e3:7.1f} ms  {100 * value / busy:5.1f} %")
    steady_ms = args.workers / timing["steady_scans_per_s"] * 1e3
    print(f"  wall time per scan and worker in the steady state: {steady_ms:.0f} ms (the rest: waiting for a core")
    print("  the operating system gave to other processes, manifest appends, the process pool)")


if __name__ == "__main__":
    main()
