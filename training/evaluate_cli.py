"""``parcelscan evaluate``: screening metrics of a checkpoint or ONNX model on one split of a dataset.

An ONNX model is evaluated with onnxruntime only (no PyTorch needed), a checkpoint with PyTorch; both
through the same ``prepare_scan`` and max-over-tiles scoring as the station. ``--verdicts FILE`` scores the
station's own output instead (``parcelscan inspect DIR > FILE``; only each verdict's ``score`` is read).
"""

from __future__ import annotations

import argparse

from parcelscan.errors import ParcelscanError
from parcelscan.training.evaluate import (  # no torch at its top: passive_omp_wait still runs first
    evaluate,
    evaluate_verdicts,
)
from parcelscan.training.train_cli import passive_omp_wait


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="checkpoint (.pt, e.g. runs/train/exp/weights/best.pt) or "
                                         "exported model (.onnx); or give --verdicts")
    parser.add_argument("--verdicts", help="score `parcelscan inspect` output (JSON lines) against --data instead of "
                                           "running a model: only each verdict's score is read")
    parser.add_argument("--data", required=True, help="dataset directory with a split manifest.jsonl")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                        help="split to evaluate (default test; all = every scan, for a separately simulated test set)")
    parser.add_argument("--name", default="exp", help="report name under runs/evaluate/ (auto-incremented)")
    parser.add_argument("--project", default="runs/evaluate", help="parent directory of reports")
    parser.add_argument("--target-pfa", type=float, default=0.01,
                        help="false-alarm rate for the 'threshold on this set' operating point (default 0.01)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    parser.add_argument("--workers", type=int, default=2, help="scan-decoding threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="tiles per inference batch (default 32)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for CIs (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--heatmaps", type=int, default=8, help="scans shown in heatmaps.png (default 8, 0 = none)")
    parser.add_argument("--no-plots", action="store_true", help="no PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    passive_omp_wait()  # before torch / onnxruntime load OpenMP (see train_cli)

    if args.bootstrap < 1 or args.batch_size < 1 or args.workers < 0:
        raise ParcelscanError("--bootstrap and --batch-size must be >= 1, --workers >= 0")
    if bool(args.model) == bool(args.verdicts):
        raise ParcelscanError("give either --model or --verdicts")
    if args.verdicts:
        run_dir, v = evaluate_verdicts(args.verdicts, args.data, split=args.split, name=args.name,
                                       project=args.project, n_boot=args.bootstrap, seed=args.seed)
        print_twin_summary(v["twin_aware"])
        print(f"report: {run_dir / 'report.md'}")
        return 0
    run_dir, s = evaluate(args.model, args.data, split=args.split, name=args.name, project=args.project,
                          target_pfa=args.target_pfa, device=args.device, workers=args.workers,
                          batch_tiles=args.batch_size, n_boot=args.bootstrap, seed=args.seed,
                          plots=not args.no_plots, progress=not args.no_progress, heatmaps=args.heatmaps)

    def pct(value: float, ci: list[float]) -> str:
        return f"{100 * value:.2f} % [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"

    print(f"{s['split']}: {s['n_scans']} scans ({s['n_suspect']} suspect, {s['n_clear']} clear), "
          f"{s['unreadable_scans']} unreadable (flagged)")
    print(f"ROC AUC {s['roc_auc']:.4f} [{s['roc_auc_ci'][0]:.4f}, {s['roc_auc_ci'][1]:.4f}], "
          f"AP {s['average_precision']:.4f}")
    for key, value in s["pd_at_pfa"].items():
        print(f"Pd at Pfa {100 * float(key):g} %: {pct(value['pd'], value['pd_ci'])}")
    op = s["stored_operating_point"]
    print(f"stored threshold {op['threshold']:.6g}: Pd {pct(op['pd'], op['pd_ci'])}, "
          f"Pfa {pct(op['pfa'], op['pfa_ci'])}")
    print_twin_summary(s["twin_aware"])
    cal = s["calibration"]
    print(f"ECE {cal['ece_uncalibrated']:.4f} → {cal['ece_calibrated']:.4f} (T = {cal['temperature']:.3g})")
    print(f"report: {run_dir / 'report.md'}")
    return 0


def print_twin_summary(tw: dict) -> None:
    """The bar's lines: Pd at Pfa on non-twin clears, twin alarm rate, per scenario (Wilson 95 %)."""
    def rate(v: dict) -> str:
        return f"{100 * v['rate']:.2f} % [{100 * v['ci'][0]:.2f}, {100 * v['ci'][1]:.2f}] ({v['flagged']}/{v['n']})"

    print(f"twins left out of Pfa: {tw['n_clear_non_twin']} non-twin clear, {tw['n_twin']} twin-filled clear "
          f"({tw['n_clear_twin_unknown']} clear with twin_of unknown, counted as non-twin); "
          f"AUC vs non-twin clears {tw['roc_auc_non_twin']:.4f}")
    points = [(f"Pfa {100 * float(k):g} % (non-twin)", v) for k, v in tw["at_pfa"].items()]
    if "stored" in tw:
        points.append(("stored threshold", tw["stored"]))
    for name, v in points:
        print(f"{name}: threshold {v['threshold']:.6g}, Pd {rate(v['pd'])}, Pfa non-twin {rate(v['pfa_non_twin'])}, "
              f"all clears {rate(v['pfa_all_clears'])}, twin alarms {rate(v['twin_alarm_rate'])}")
        for group, g in {**v["pd_by_scenario"], **v["pd_by_fraction"]}.items():
            print(f"    Pd {group}: {100 * g['rate']:.1f} % [{100 * g['ci_low']:.1f}, {100 * g['ci_high']:.1f}] "
                  f"({g['flagged']}/{g['n']})")
