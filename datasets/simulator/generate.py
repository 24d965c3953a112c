"""``parcelscan simulate`` (scene mode): write a labelled set of simulated parcel scans.

Per scan: the station files (``<id>_low.png``, ``<id>_high.png``, ``<id>_rgb.png``, ``<id>.json``),
for suspects ``<id>_mask.png`` (255 where the concealed powder lies), and one manifest line. A worker
writes a scan's files first (each atomically); the main process then appends its manifest line (one
write + fsync). So a scan is finished exactly when its line exists, and a rerun completes a partial
directory without rewriting finished scans: it drops lines whose files vanished, heals a torn last
line, and refuses a directory made with other settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from parcelscan.datasets.manifest import (
    MANIFEST_NAME,
    ManifestRecord,
    append_records,
    read_manifest,
    record_files,
    write_manifest,
)
from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import LIBRARY
from parcelscan.datasets.physics.profile import ScannerProfile
from parcelscan.datasets.physics.pseudocolor import pseudocolor
from parcelscan.datasets.scans.scanfile import (
    Scan,
    check_scan_id,
    pair_paths,
    validate_pair,
    write_bytes_atomic,
    write_sidecar,
)
from parcelscan.datasets.simulator.concealments import SCENARIOS
from parcelscan.datasets.simulator.declarations import attach_declaration
from parcelscan.datasets.simulator.goods import GOODS
from parcelscan.datasets.simulator.parcel import (
    IDENTITY_DEFAULTS,
    SPECTRAL_VARIANTS,
    SimConfig,
    SimulatedScan,
    scan_id_for,
    scanner_variant,
    simulate_scan,
)
from parcelscan.datasets.simulator.shielded import OPTIONAL_SCENARIOS
from parcelscan.datasets.simulator.simstats import format_stats, scenario_stats
from parcelscan.datasets.simulator.streams import MIXES
from parcelscan.errors import ParcelscanError

STATS_NAME = "stats.json"
STAGES = ("scene", "rasterise", "forward", "detect", "pseudocolor", "twins", "declaration", "png")
# PNG settings: the SUB filter with run-length deflate encodes a noisy 16-bit scan ~3x faster than the
# default adaptive filtering, and its files are no larger (quantum noise fills the low bits anyway).
_PNG_PARAMS: list[int] | None = None


def _png_params() -> list[int]:
    import cv2

    global _PNG_PARAMS
    if _PNG_PARAMS is None:
        _PNG_PARAMS = [
            cv2.IMWRITE_PNG_COMPRESSION,
            1,
            cv2.IMWRITE_PNG_FILTER,
            cv2.IMWRITE_PNG_FILTER_SUB,
            cv2.IMWRITE_PNG_STRATEGY,
            cv2.IMWRITE_PNG_STRATEGY_RLE,
        ]
    return _PNG_PARAMS


def encode_png(image: np.ndarray, params: list[int]) -> bytes:
    import cv2

    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])  # OpenCV wants BGR
    ok, encoded = cv2.imencode(".png", image, params)
    if not ok:
        raise OSError("PNG encoding failed")
    return encoded.tobytes()


def write_simulated(
    scan: SimulatedScan, out_dir: Path, profile: ScannerProfile, png_params: list[int] | None = None,
    customs: dict | None = None,
) -> dict[str, str]:
    """The station files of one scan (the format of ``scanfile.write_station_scan``, faster PNG settings)."""
    check_scan_id(scan.scan_id)
    validate_pair(scan.low, scan.high, scan.scan_id)
    params = _png_params() if png_params is None else png_params
    low_path, high_path, sidecar_path, rgb_path = pair_paths(out_dir, scan.scan_id)
    write_bytes_atomic(low_path, encode_png(scan.low, params))
    write_bytes_atomic(high_path, encode_png(scan.high, params))
    files = {"low": low_path.name, "high": high_path.name}
    if scan.rgb is not None:
        write_bytes_atomic(rgb_path, encode_png(scan.rgb, params))
        files["rgb"] = rgb_path.name
    if scan.mask is not None:
        write_bytes_atomic(out_dir / scan.labels["mask"], encode_png(scan.mask, params))
    meta = {
        "profile": profile.name,
        "pixel_pitch_mm": profile.pixel_pitch_mm,
        "source": "simulated",
        "labels": scan.labels,
        "scanner_variant": scan.provenance["scanner_variant"],
        **(customs or {}),  # item_id and the declaration (simulator.declarations)
    }
    write_sidecar(sidecar_path, Scan(scan.scan_id, scan.low, scan.high, meta))
    files["sidecar"] = sidecar_path.name
    return files


def make_record(scan: SimulatedScan, files: dict[str, str]) -> ManifestRecord:
    labels = scan.labels
    return ManifestRecord(
        scan_id=scan.scan_id,
        files=files,
        label=labels["label"],
        scenario=labels["scenario"],
        material=labels["material"],
        mass_g=labels["mass_g"],
        mass_fraction=labels["mass_fraction"],
        mask=labels["mask"],
        lookalike=labels["lookalike"],
        parcel_id=scan.scan_id,
        split=None,
        source="simulated",
        provenance=scan.provenance,
        twin_of=list(labels["twin_of"]),
        declaration_honest=labels.get("declaration_honest"),
        declaration_names_twin=labels.get("declaration_names_twin"),
    )


# --- workers ------------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(config: SimConfig, out_dir: Path, warm: bool = False, tables: bool = True) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core: threads inside a worker only fight over the cores
    _WORKER["config"], _WORKER["out"] = config, out_dir
    if warm:
        _warm(config, tables)


@contextlib.contextmanager
def _single_threaded_children():
    """Spawned workers read these before numpy and OpenCV start their thread pools."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(_THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _work(index: int) -> tuple[ManifestRecord, dict[str, float]]:
    config, out_dir = _WORKER["config"], _WORKER["out"]
    cpu_start = time.process_time()
    scan = simulate_scan(config, index)
    start = time.process_time()
    customs = attach_declaration(scan, config, index)  # its own random stream: the pixels are unchanged
    scan.seconds["declaration"] = time.process_time() - start
    start = time.process_time()
    files = write_simulated(scan, out_dir, config.profile, customs=customs)
    scan.seconds["png"] = time.process_time() - start
    scan.seconds["cpu"] = time.process_time() - cpu_start  # this process's own CPU time, waits excluded
    return make_record(scan, files), scan.seconds


def _warm(config: SimConfig, tables: bool = True) -> None:
    """Build the spectra and colour tables of every scanner variant once per process, before its first scan;
    with ``tables`` also the attenuation tables of every material (a long run needs them all; a short
    in-process one builds the few it meets on the way)."""
    everything = [*LIBRARY.values(), *GOODS.values()]
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(200):
        physics, variant, _, _ = scanner_variant(rng, config.profile, config.spectral_variants)
        if variant in seen:
            continue
        seen.add(variant)
        model = forward_model(physics)
        if tables:
            model.mass_attenuation_super(everything)
        pseudocolor(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32), physics)
        if len(seen) == (len(SPECTRAL_VARIANTS) if config.spectral_variants else 1):
            break


# --- resume -------------------------------------------------------------------------------------------------
def resume_state(out_dir: Path, config: SimConfig) -> dict[str, ManifestRecord]:
    """Finished scans of a previous run in ``out_dir``; rewrites the manifest if a line was torn or a
    listed scan lost a file. A directory made with other settings is an error, never merged."""
    path = out_dir / MANIFEST_NAME
    if not path.exists():
        return {}
    records = read_manifest(path)
    expected = IDENTITY_DEFAULTS | config.identity()
    for record in records:
        found = {key: record.provenance.get(key, IDENTITY_DEFAULTS.get(key)) for key in expected}
        if found != expected:
            differing = ", ".join(
                f"{k}={found[k]!r} (now {expected[k]!r})" for k in expected if found[k] != expected[k]
            )
            raise ParcelscanError(
                f"{out_dir} holds scans made with other settings ({differing}); use another --out or the same settings"
            )
    kept = [r for r in records if _files_present(out_dir, r)]
    raw = path.read_bytes()
    torn = bool(raw) and not raw.endswith(b"\n")
    if len(kept) != len(records) or torn:
        write_manifest(path, kept)
    return {r.scan_id: r for r in kept}


def _files_present(out_dir: Path, record: ManifestRecord) -> bool:
    return all((out_dir / name).is_file() for name in record_files(record))


# --- the command ----------------------------------------------------------------------------------------------
def config_from_args(args: argparse.Namespace, profile: ScannerProfile) -> SimConfig:
    if args.count is None or args.count <= 0:
        raise ParcelscanError(f"--count must be a positive number of scans, got {args.count}")
    if not 0.0 <= args.suspect_fraction <= 1.0:
        raise ParcelscanError(f"--suspect-fraction must be within [0, 1], got {args.suspect_fraction}")
    if args.seed < 0:
        raise ParcelscanError(f"--seed must be >= 0, got {args.seed}")
    if getattr(args, "start", 0) < 0:
        raise ParcelscanError(f"--start must be >= 0, got {args.start}")
    if args.workers is not None and args.workers < 0:
        raise ParcelscanError(f"--workers must be >= 0 (0: all cores), got {args.workers}")
    mix = getattr(args, "mix", "stress")
    if mix not in MIXES:
        raise ParcelscanError(f"unknown --mix {mix!r}; choose from {', '.join(MIXES)}")
    scenarios = tuple(args.scenarios) if args.scenarios else SCENARIOS
    unknown = [s for s in scenarios if s not in SCENARIOS + OPTIONAL_SCENARIOS]
    if unknown:
        raise ParcelscanError(f"unknown scenario(s) {', '.join(unknown)}; choose from "
                              f"{', '.join(SCENARIOS + OPTIONAL_SCENARIOS)}")
    if mix == "postal" and not set(scenarios) & set(SCENARIOS):
        raise ParcelscanError(f"--mix postal draws its look-alikes from {', '.join(SCENARIOS)}: add one of them to "
                              f"--scenarios {' '.join(scenarios)}")
    return SimConfig(
        profile=profile,
        seed=args.seed,
        suspect_fraction=float(args.suspect_fraction),
        scenarios=tuple(dict.fromkeys(scenarios)),
        mix=mix,
        operator_image=not getattr(args, "no_operator_image", False),
    )


def run_simulate(args: argparse.Namespace, profile: ScannerProfile, out_dir: Path) -> int:
    config = config_from_args(args, profile)
    out_dir = Path(out_dir)
    _check_writable(out_dir)
    done = resume_state(out_dir, config)
    start = getattr(args, "start", 0)
    todo = [i for i in range(start, start + args.count) if scan_id_for(config.seed, i) not in done]
    workers = min(args.workers or os.cpu_count() or 1, max(len(todo), 1))
    if done:
        print(f"resuming {out_dir}: {len(done)} scans already written, {len(todo)} to go", file=sys.stderr)
    seconds = {"scans": 0}
    if todo:
        seconds = generate(config, out_dir, todo, workers, progress=not args.no_progress, total=args.count)
    records = read_manifest(out_dir / MANIFEST_NAME)
    stats = scenario_stats(records)
    if seconds["scans"]:
        stats["timing"] = seconds
    write_bytes_atomic(out_dir / STATS_NAME, (json.dumps(stats, indent=1) + "\n").encode())
    print(format_stats(stats))
    print(
        f"wrote {len(todo)} scans ({len(records)} in {out_dir / MANIFEST_NAME}); statistics in {out_dir / STATS_NAME}"
    )
    return 0


def _check_writable(out_dir: Path) -> None:
    probe = out_dir / f".write-test.{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ParcelscanError(f"cannot write to output directory {out_dir}: {error.strerror or error}") from error


def generate(
    config: SimConfig, out_dir: Path, indices: list[int], workers: int, progress: bool = True, total: int | None = None
) -> dict:
    """Simulate and write the scans ``indices``; returns time per stage (seconds summed over scans)."""
    from tqdm import tqdm

    manifest = out_dir / MANIFEST_NAME
    totals = dict.fromkeys(STAGES, 0.0)
    total = total if total is not None else len(indices)
    bar = tqdm(
        total=total,
        initial=total - len(indices),
        unit="scan",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    start = time.perf_counter()
    done: list[float] = []
    try:
        if workers <= 1:
            _warm(config, tables=len(indices) > 200)
            _WORKER["config"], _WORKER["out"] = config, out_dir
            results = map(_work, indices)
            pool = None
        else:
            import multiprocessing

            # spawn, not fork: a forked child inherits OpenBLAS/OpenCV thread pools mid-state and can hang
            with _single_threaded_children():
                pool = multiprocessing.get_context("spawn").Pool(
                    workers, _init_worker, (config, out_dir, True, len(indices) > 200)
                )
            results = pool.imap_unordered(_work, indices, chunksize=1)
        try:
            for record, scan_seconds in results:
                done.append(time.perf_counter())
                append_records(manifest, [record])
                for stage, value in scan_seconds.items():
                    totals[stage] = totals.get(stage, 0.0) + value
                bar.update(1)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    except OSError as error:
        raise ParcelscanError(f"cannot write to {out_dir}: {error.strerror or error}") from error
    finally:
        bar.close()
    wall = time.perf_counter() - start
    # steady state: from the first finished scan per worker on (process start-up and warm-up excluded)
    warm = min(workers, len(done) - 1)
    steady = (len(done) - 1 - warm) / (done[-1] - done[warm]) if len(done) > warm + 2 else None
    return {
        "scans": len(indices),
        "workers": workers,
        "wall_s": round(wall, 3),
        "scans_per_s": round(len(indices) / wall, 2) if wall > 0 and indices else None,
        "steady_scans_per_s": round(steady, 2) if steady else None,
        "startup_s": round(done[0] - start, 3) if done else None,
        "stage_s": {k: round(v, 3) for k, v in totals.items()},
    }
