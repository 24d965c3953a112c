"""What does a station's calibration fault do to the score, and which gate sees it? Apply one fault at a time to the
16-bit readings of every scan in a data set — a flat-field (gain) error on both channels or one, a dark offset, one
layer exported as both images, the two layers out of register by a pixel or two — then print ROC AUC, Pd at Pfa 1 %
over the non-twin clear scans, Pd and Pfa at the model's stored threshold, and how many of the faulted scans the
station's physics gate refuses.

The scores are the model's on the faulted scans *without* the gates (the scan score: the highest tile probability,
as ``inspect`` computes it), so the table shows what a fault would cost were it not refused. The faults act on the
readings as a detector reports them: a gain multiplies the transmission, an offset adds grey levels, and both are
clipped to 0-65535 (README, "Fail closed": calibration faults).

    python examples/calibration_faults.py MODEL.onnx DATA_DIR [DATA_DIR ...] [--attenuation-ceiling A] [--only NAME ...]

``--attenuation-ceiling A`` scores with the model's preprocessing clamped at A instead of its own ceiling (a probe
at test time: where does the model read a fault from? The model was trained at its own ceiling). ``--only NAME``
runs the faults whose name starts with NAME (repeatable; e.g. ``--only none --only "dark offset +20"``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from parcelscan.datasets.datatools import load_record_scan
from parcelscan.datasets.manifest import read_manifest
from parcelscan.datasets.preprocess import PreprocessSpec, prepare_scan
from parcelscan.datasets.scans.scanfile import Scan
from parcelscan.inference.gates import GateError, check_physics
from parcelscan.model.operating_point import threshold_at_pfa
from parcelscan.model.session import open_session
from parcelscan.training.metrics import roc_auc

Readings = tuple[np.ndarray, np.ndarray]


def gain(image: np.ndarray, factor: float) -> np.ndarray:
    """Every transmission times ``factor`` (a flat-field error), rounded and clipped as a detector reports it."""
    return np.clip(np.round(image.astype(np.float64) * factor), 0, 65535).astype(np.uint16)


def offset(image: np.ndarray, grey_levels: int) -> np.ndarray:
    """A dark-offset error of ``grey_levels`` (of 65,535), clipped."""
    return np.clip(image.astype(np.int64) + grey_levels, 0, 65535).astype(np.uint16)


FAULTS: list[tuple[str, Callable[[np.ndarray, np.ndarray], Readings]]] = [
    ("none", lambda low, high: (low, high)),
    *((f"gain -{g:g} %, both channels", lambda low, high, g=g: (gain(low, 1 - g / 100), gain(high, 1 - g / 100)))
      for g in (0.5, 1, 2, 4, 8)),
    ("gain -1 %, low channel only", lambda low, high: (gain(low, 0.99), high)),
    ("gain -2 %, high channel only", lambda low, high: (low, gain(high, 0.98))),
    *((f"dark offset {d:+d} grey, both", lambda low, high, d=d: (offset(low, d), offset(high, d)))
      for d in (20, 50, 100, 200, 2000, -20)),
    ("low layer written as both", lambda low, high: (low, low.copy())),
    *((f"high layer {d:+d} px along the belt", lambda low, high, d=d: (low, np.roll(high, d, axis=0)))
      for d in (1, 2)),
    *((f"high layer {d:+d} px across", lambda low, high, d=d: (low, np.roll(high, d, axis=1))) for d in (1, 2)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path, nargs="+")
    parser.add_argument("--attenuation-ceiling", type=float, default=None, metavar="A",
                        help="clamp both attenuations at A when scoring (default: the model's own ceiling)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only the faults whose name starts with NAME (repeatable; default: every fault)")
    args = parser.parse_args()
    faults = [(name, fault) for name, fault in FAULTS if not args.only or name.startswith(tuple(args.only))]
    if not faults:
        parser.error(f"no fault starts with {' or '.join(map(repr, args.only))}; the faults: "
                     + "; ".join(name for name, _ in FAULTS))
    session = open_session(args.model, threads=2)
    spec = PreprocessSpec.from_dict(session.metadata.preprocessing)
    if args.attenuation_ceiling is not None:
        spec = dataclasses.replace(spec, attenuation_ceiling=args.attenuation_ceiling)
    stored = float(session.metadata.threshold)
    items = [(record, folder) for folder in args.data for record in read_manifest(folder / "manifest.jsonl")]
    scans = [load_record_scan(record, folder) for record, folder in items]
    suspect = np.array([record.label == "suspect" for record, _ in items])
    non_twin_clear = np.array([record.label == "clear" and not record.twin_of for record, _ in items])
    scored = suspect | non_twin_clear
    print(f"{args.model.name} (stored threshold {stored:.4f}; attenuation ceiling {spec.attenuation_ceiling}) on "
          f"{', '.join(map(str, args.data))}: "
          f"{int(suspect.sum())} suspects, {int(non_twin_clear.sum())} non-twin clears")
    print(f"{'fault':32s} {'AUC':>7s} {'Pd@Pfa1%':>9s} {'Pd@stored':>10s} {'Pfa@stored':>11s} {'gate refuses':>13s}")

    def judge(scan: Scan, fault) -> tuple[float, bool]:
        low, high = fault(scan.low, scan.high)
        faulted = Scan(scan.scan_id, low, high, dict(scan.meta), kind="dual_energy")
        try:
            check_physics(faulted)
            refused = False
        except GateError:
            refused = True
        probability = session.run(prepare_scan(faulted, spec).tiles)[0]
        return float(np.max(probability)), refused

    with ThreadPoolExecutor(2) as pool:
        for name, fault in faults:
            results = list(pool.map(lambda scan, fault=fault: judge(scan, fault), scans))
            scores = np.array([score for score, _ in results])
            refused = sum(flag for _, flag in results)
            threshold = threshold_at_pfa(scores[non_twin_clear], 0.01)
            print(f"{name:32s} {roc_auc(suspect[scored], scores[scored]):7.4f} "
                  f"{100 * float((scores[suspect] >= threshold).mean()):8.1f}% "
                  f"{100 * float((scores[suspect] >= stored).mean()):9.1f}% "
                  f"{100 * float((scores[non_twin_clear] >= stored).mean()):10.2f}% "
                  f"{refused:6d} of {len(scans)}", flush=True)


if __name__ == "__main__":
    main()
