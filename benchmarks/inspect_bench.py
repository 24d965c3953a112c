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

``--ratio N`` measures issue 15's throughput bar instead, side by side in one run on the same files: decoding
the 2·N PNG files of N scans once with Pillow in one process, against ``parcelscan inspect --workers 2`` over
those N scans (a fresh process, startup and model load included, and the in-process API without them), and
prints the ratios (bar: inspect ≤ 0.8 × the Pillow decode). ``--workers 2`` is two forked worker processes on a
folder (``inspect_cli.parallelism``); the API row is ``inspect_many(workers=2)``, two reader threads in one process.
``--also OPTIONS`` times further ``inspect`` option sets in the same runs (their verdicts must equal ``--workers 2``'s,
timing fields aside), e.g. the threads with ``--processes 1 --workers 2``. ``--against CHECKOUT`` times the same
``inspect --workers 2`` run by the code of another checkout of this repository (e.g. ``git worktree add /tmp/base
<commit>``), interleaved in the same runs, and requires its verdicts to be this checkout's, timing fields aside: a
speed change measured side by side, on the same files, under the same load.

    python benchmarks/inspect_bench.py --ratio 400 --scans DIR [--model MODEL.onnx] [--also '--processes 1 --workers 2']
        [--against CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
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


def decode_ratio(scans: Path, n: int, model: str | None, workdir: Path, policy_path: str | None = None,
                 also: list[str] | None = None, against: Path | None = None) -> None:
    """The bar of issue 15 part 4, measured side by side (module docstring); ``also``: further ``inspect`` option
    sets (e.g. ``"--workers 1 --processes 2"``) timed in the same runs, each a fresh process on the same files;
    ``against``: another checkout whose ``inspect --workers 2`` is timed in the same runs."""
    import numpy as np
    from PIL import Image

    from parcelscan.datasets.scans.readers import discover_scans
    from parcelscan.inference.inspector import Inspector
    from parcelscan.inference.policy import load_policy

    refs = [ref for ref in discover_scans([scans]) if ref.ok and ref.format == "pair"][:n]
    if len(refs) < n:
        raise SystemExit(f"{scans}: only {len(refs)} station pairs, {n} asked")
    subset = workdir / "ratio"
    subset.mkdir()
    for ref in refs:  # the same files, alone in a folder (hard links: no copy, same page cache)
        for path in ref.paths:
            try:
                os.link(path, subset / path.name)
            except OSError:
                shutil.copy(path, subset / path.name)
    images = sorted(p for p in subset.iterdir() if p.name.endswith(("_low.png", "_high.png")))
    blobs = [p.read_bytes() for p in images]  # warm the page cache for both sides
    model_args = (["--model", model] if model else []) + (["--policy", policy_path] if policy_path else [])
    policy = load_policy(policy_path)
    print(f"policy: {policy.path} (alarm classes: {', '.join(policy.alarm_reasons)})")
    print(f"ratio: {len(refs)} scans, {len(images)} PNG files, {sum(map(len, blobs)) / 1e6:.1f} MB; "
          f"load average {os.getloadavg()[0]:.2f} before")
    rows = []
    best_also: dict[str, float] = {}
    # The inspect processes run as an installed station does: its sources compiled once (pip byte-compiles a wheel
    # at install), not on every start — a shell with PYTHONDONTWRITEBYTECODE would otherwise compile them in every
    # timed run (~0.2 s). The bytecode goes to a cache in the work folder, filled by an untimed run on a few scans.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    warm_up = workdir / "warm-up"
    warm_up.mkdir()
    for ref in refs[:4]:
        for path in ref.paths:
            shutil.copy(path, warm_up / path.name)
    against_env = None
    if against is not None:  # `-m parcelscan` resolves to the other checkout: PYTHONPATH precedes the editable install
        (workdir / "against").mkdir()
        (workdir / "against" / "parcelscan").symlink_to(against.resolve(), target_is_directory=True)
        against_env = {**env, "PYTHONPATH": str(workdir / "against")}
        print(f"against: the checkout {against.resolve()} ({_describe_checkout(against)})")
    for environment in [env] + ([against_env] if against_env else []):
        subprocess.run([sys.executable, "-m", "parcelscan", "inspect", str(warm_up), "--workers", "2", "--device",
                        "cpu", "--quiet", *model_args], capture_output=True, text=True, env=environment)
    for attempt in range(2):  # twice, interleaved: a shared machine's load moves both sides alike
        start = time.perf_counter()
        for path in images:
            with Image.open(path) as image:
                np.asarray(image)
        pillow = time.perf_counter() - start
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "parcelscan", "inspect", str(subset), "--workers", "2",
                                 "--device", "cpu", "--quiet", *model_args], capture_output=True, text=True, env=env)
        command = time.perf_counter() - start
        if result.returncode not in (0, 1) or len(result.stdout.splitlines()) != len(refs):
            raise SystemExit(f"inspect failed ({result.returncode}): {result.stderr[-2000:]}")
        others = []
        if against_env is not None:
            start = time.perf_counter()
            other = subprocess.run([sys.executable, "-m", "parcelscan", "inspect", str(subset), "--workers", "2",
                                    "--device", "cpu", "--quiet", *model_args], capture_output=True, text=True,
                                   env=against_env)
            others.append(("--workers 2 [against]", time.perf_counter() - start))
            if other.returncode not in (0, 1) or _verdicts(other.stdout) != _verdicts(result.stdout):
                raise SystemExit(f"the other checkout's inspect failed or gave other verdicts ({other.returncode}): "
                                 f"{other.stderr[-2000:]}")
        for options in also or []:
            start = time.perf_counter()
            other = subprocess.run([sys.executable, "-m", "parcelscan", "inspect", str(subset), "--device", "cpu",
                                    "--quiet", *shlex.split(options), *model_args], capture_output=True, text=True,
                                   env=env)
            others.append((options, time.perf_counter() - start))
            if other.returncode not in (0, 1) or _verdicts(other.stdout) != _verdicts(result.stdout):
                raise SystemExit(f"inspect {options} failed or gave other verdicts ({other.returncode}): "
                                 f"{other.stderr[-2000:]}")
        inspector = Inspector(model, device="cpu", policy=policy)  # the API: no declaration check hooked
        list(inspector.inspect_many(discover_scans([subset])[:8], batch=8, workers=2))  # warm-up
        start = time.perf_counter()
        verdicts = list(inspector.inspect_many(discover_scans([subset]), batch=8, workers=2))
        api = time.perf_counter() - start
        assert len(verdicts) == len(refs) and all(v.error is None for v in verdicts)
        rows.append((pillow, command, api))
        print(f"  run {attempt + 1}: Pillow decode of {len(images)} files {pillow:.2f} s "
              f"({1000 * pillow / len(images):.1f} ms/file) | inspect --workers 2: {command:.2f} s "
              f"({len(refs) / command:.1f} scans/s, ratio {command / pillow:.2f}) | API workers=2 (threads) without "
              f"startup "
              f"{api:.2f} s ({len(refs) / api:.1f} scans/s, ratio {api / pillow:.2f})")
        for options, seconds in others:
            print(f"         inspect {options}: {seconds:.2f} s ({len(refs) / seconds:.1f} scans/s, ratio "
                  f"{seconds / pillow:.2f}; verdicts equal to --workers 2's)")
            best_also[options] = min(best_also.get(options, math.inf), seconds / pillow)
    best = min(r[1] / r[0] for r in rows)
    print(f"bar inspect ≤ 0.8 × Pillow decode: best ratio {best:.2f} — {'met' if best <= 0.8 else 'NOT met'}; "
          + "".join(f"inspect {options}: best ratio {ratio:.2f}; " for options, ratio in best_also.items())
          + f"load average {os.getloadavg()[0]:.2f} after")


def _describe_checkout(path: Path) -> str:
    """The commit a checkout is at (and whether it has changes), or what git says."""
    result = subprocess.run(["git", "-C", str(path), "describe", "--always", "--dirty"], capture_output=True,
                            text=True)
    return result.stdout.strip() or result.stderr.strip() or "not a git checkout"


def _verdicts(stdout: str) -> list[dict]:
    """Verdict lines without their timing fields (latency_ms, scanned_at)."""
    out = []
    for line in stdout.splitlines():
        data = json.loads(line)
        data.pop("latency_ms", None)
        data.pop("scanned_at", None)
        out.append(data)
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
    parser.add_argument("--policy", metavar="FILE", help="--ratio: the station policy inspect runs under")
    parser.add_argument("--also", action="append", metavar="OPTIONS",
                        help="--ratio: also time `inspect OPTIONS` in the same runs (repeatable), e.g. "
                             "'--processes 1 --workers 2' (the threads)")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="--ratio: also time inspect --workers 2 run by another checkout of this repository "
                             "(its verdicts must equal this one's)")
    parser.add_argument("--ratio", type=int, metavar="N",
                        help="only the issue-15 bar: Pillow decode of N scans' files vs inspect --workers 2")
    args = parser.parse_args()
    if args.ratio:
        if not args.scans:
            raise SystemExit("--ratio needs --scans DIR")
        print(f"machine: {describe_machine()}")
        workdir = Path(tempfile.mkdtemp(prefix="parcelscan-ratio-"))
        try:
            decode_ratio(Path(args.scans), args.ratio, args.model, workdir, args.policy, args.also, args.against)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return

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
        print("shield alarm (default policy) in the simulated scans: " + ", ".join(rates))

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
