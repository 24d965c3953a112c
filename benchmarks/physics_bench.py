"""Forward-model throughput: a 640×480 scan with 8 materials, fast path vs the direct spectral sum.

Prints scans/s for one process and for two processes (both cores), and the fast/direct ratio measured
side by side in this run.

    python benchmarks/physics_bench.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.physics.profile import default_profile

MATERIALS = ["cardboard", "water", "steel", "Nd2O3", "SiO2", "CaCO3", "PET", "Al"]
SCALE_G_CM2 = [0.3, 6.0, 1.5, 0.5, 3.0, 2.0, 0.2, 1.0]
ROWS, CHANNELS = 480, 640


def _areal(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coverage = rng.random((len(MATERIALS), ROWS, CHANNELS)) < 0.6
    return (rng.random((len(MATERIALS), ROWS, CHANNELS)) * np.array(SCALE_G_CM2)[:, None, None] * coverage).astype(
        np.float32)


def _run_fast(repeats: int, seed: int = 0) -> float:
    model = forward_model(default_profile())
    materials = [get_material(n) for n in MATERIALS]
    areal = _areal(seed)
    rng = np.random.default_rng(seed)
    model.scan(materials, areal, rng)  # warm caches
    start = time.perf_counter()
    for _ in range(repeats):
        model.scan(materials, areal, rng)
    return time.perf_counter() - start


def _warm() -> None:
    forward_model(default_profile())


def main() -> None:
    from machine import describe_machine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    model = forward_model(default_profile())
    materials = [get_material(n) for n in MATERIALS]
    areal = _areal(0)
    model.log_attenuation(materials, areal)

    start = time.perf_counter()
    for _ in range(args.repeats):
        model.log_attenuation(materials, areal)
    fast_s = (time.perf_counter() - start) / args.repeats
    rows = 48
    start = time.perf_counter()
    model.log_attenuation_direct(materials, areal[:, :rows])
    direct_s = (time.perf_counter() - start) * ROWS / rows
    print(f"physics only ({ROWS}x{CHANNELS}, {len(MATERIALS)} materials, {model.n_super_bins} super-bins vs "
          f"{len(model.responses.energy_kev)} fine bins): fast {fast_s * 1e3:.1f} ms, direct {direct_s * 1e3:.0f} ms, "
          f"speed-up {direct_s / fast_s:.1f}x")

    one = _run_fast(args.repeats)
    print(f"full forward model (physics + noise + blur + 16-bit), 1 process: {args.repeats / one:.1f} scans/s")
    with ProcessPoolExecutor(2, initializer=_warm) as pool:
        start = time.perf_counter()
        list(pool.map(_run_fast, [args.repeats] * 2, [1, 2]))
        both = time.perf_counter() - start
    print(f"full forward model, 2 processes: {2 * args.repeats / both:.1f} scans/s "
          f"(scaling {2 * args.repeats / both / (args.repeats / one):.2f}x)")


if __name__ == "__main__":
    main()
