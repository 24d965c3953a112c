"""End-to-end ``inspect`` throughput on 1,000 station-format scans: decode + preprocess + shield check +
inference, scans/s on this machine's cores (goal ≥ 200 scans/s on 2 cores), and where the time goes.

Scans: ``--scans DIR`` (station pairs, reused as they are), or ``--unique`` simulated scans (default
100) written ``--count`` / ``--unique`` times each under distinct ids into a temporary directory. Model:
``--model``, else the shipped default, else the default architecture untrained (speed does not depend
on the weights; see bench_model.py).

Measured: the Python API (``Inspector.inspect_many``) over all scans in several configurations (scans
per model call, reader threads, onnxruntime threads), the ``parcelscan inspect`` command end to end in a
fresh process (startup included), and a per-stage breakdown on one core.

    python benchmarks/inspect_bench.py [--count 1000] [--unique 100] [--scans DIR] [--model MODEL.onnx]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

CONFIGS = [  # (batch, reader threads, onnxruntime threads)
    (1, 0, 2),
    (1, 1, 2),
    (8, 0, 2),
    (8, 1, 2),
    (8, 1, 1),
    (16, 2, 1),
]


def stage_breakdown(model: Path, refs: list, n: int) -> dict[str, float]:
    """Mean ms per scan of each stage, sequential, onnxruntime on one thread."""
    import numpy as np

    from parcelscan.datasets.preprocess import PreprocessSpec, prepare_scan
    from parcelscan.inference.opaque import check_opaque
    from parcelscan.model.session import open_session

    session = open_session(model, device="cpu", threads=1)
    spec = PreprocessSpec.from_dict(session.metadata.preprocessing)
    totals = {"read (2 PNG + sidecar)": 0.0, "preprocess": 0.0, "shield check": 0.0, "inference": 0.0}
    tiles = 0
    session.run(np.zeros((1, spec.in_channels, spec.tile_rows, spec.tile_cols), np.float32))
    for ref in refs[:n]:
        t0 = time.perf_counter()
        scan = ref.load()
        t1 = time.perf_counter()
        prepared = prepare_scan(scan, spec)
        t2 = time.perf_counter()
        check_opaque(scan)
        t3 = time.perf_counter()
        session.run(prepared.tiles)
        t4 = time.perf_counter()
        for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            totals[key] += dt
        tiles += len(prepared.tiles)
    out = {key: 1000.0 * value / n for key, value in totals.items()}
    out["tiles per scan"] = tiles / n
    return out


def main() -> None:
    from bench_model import benchmark_model, replicate, simulate
    from machine import describe_machine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--unique", type=int, default=100)
    parser.add_argument("--scans", help="reuse this directory of station-format scans")
    parser.add_argument("--model", help="ONNX model (default: shipped default, else untrained default arch)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    from parcelscan.datasets.scans.readers import discover_scans
    from parcelscan.inference.inspector import Inspector
    from parcelscan.inference.opaque import check_opaque

    print(f"machine: {describe_machine()}")
    workdir = Path(tempfile.mkdtemp(prefix="parcelscan-inspectbench-"))
    try:
        if args.scans:
            scans = Path(args.scans)
            source = scans
        else:
            t = time.perf_counter()
            source = simulate(workdir / "unique", args.unique)
            scans = workdir / "scans"
            replicate(source, scans, args.count)
            print(f"scans: {args.count} station-format pairs made from {args.unique} simulated scans "
                  f"({time.perf_counter() - t:.0f} s to simulate and copy)")
        refs = [ref for ref in discover_scans([scans]) if ref.ok]
        model, description = benchmark_model(workdir, source, args.model)
        print(f"model: {description}; {model.stat().st_size / 1e6:.1f} MB")
        sample = [ref.load() for ref in refs[:20]]
        rows = sum(s.shape[0] for s in sample) / len(sample)
        print(f"scan size: {sample[0].shape[1]} channels x {rows:.0f} rows (mean of 20), "
              f"{sum(p.stat().st_size for ref in refs[:20] for p in ref.paths) / 20 / 1e6:.2f} MB of files per scan")

        labels = {}
        for ref in discover_scans([source]):
            if ref.ok and ref.format == "pair":
                scan = ref.load()
                label = (scan.meta.get("labels") or {}).get("label", "?")
                alarm = check_opaque(scan).alarm
                count, alarms = labels.get(label, (0, 0))
                labels[label] = (count + 1, alarms + alarm)
        rates = [f"{label} {alarms}/{count} ({100 * alarms / count:.0f} %)"
                 for label, (count, alarms) in sorted(labels.items())]
        print("shield alarm (opaque ≥ 4 cm²) in the simulated scans: " + ", ".join(rates))

        breakdown = stage_breakdown(model, refs, min(100, len(refs)))
        total = sum(v for k, v in breakdown.items() if k != "tiles per scan")
        print("per scan on one core: " + ", ".join(f"{k} {v:.2f}" + ("" if k == "tiles per scan" else " ms")
                                                   for k, v in breakdown.items()) + f"; sum {total:.1f} ms")

        load = os.getloadavg()[0]
        print(f"\nPython API, {len(refs)} scans (load average {load:.2f} before):")
        print(f"{'batch':>6} {'readers':>8} {'ort thr':>8} {'scans/s':>9} {'p50 ms':>8} {'p95 ms':>8}")
        best = 0.0
        for batch, workers, threads in CONFIGS:
            inspector = Inspector(model, threads=threads, device="cpu")
            list(inspector.inspect_many(refs[:16], batch=batch, workers=workers))  # warm-up
            start = time.perf_counter()
            verdicts = list(inspector.inspect_many(refs, batch=batch, workers=workers))
            wall = time.perf_counter() - start
            latencies = sorted(v.latency_ms for v in verdicts)
            rate = len(verdicts) / wall
            best = max(best, rate)
            assert all(v.error is None for v in verdicts), [v.error for v in verdicts if v.error][:3]
            print(f"{batch:>6} {workers:>8} {threads:>8} {rate:>9.1f} {latencies[len(latencies) // 2]:>8.1f} "
                  f"{latencies[int(0.95 * len(latencies))]:>8.1f}")

        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "parcelscan", "inspect", str(scans), "--model", str(model),
                                 "--batch", "8", "--device", "cpu", "--quiet"], capture_output=True, text=True)
        wall = time.perf_counter() - start
        n_lines = len(result.stdout.splitlines())
        print(f"\n`parcelscan inspect DIR --batch 8` (fresh process, startup included): {n_lines} verdicts in "
              f"{wall:.1f} s = {n_lines / wall:.1f} scans/s (exit {result.returncode})")
        print(f"best API throughput {best:.1f} scans/s; goal 200 scans/s on 2 cores: "
              f"{'met' if best >= 200 else 'NOT met'}; load average {os.getloadavg()[0]:.2f} after")
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
