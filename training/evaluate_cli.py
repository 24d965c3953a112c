"""``parcelscan evaluate``: screening metrics of a checkpoint or ONNX model on one split of a dataset.

An ONNX model is evaluated with onnxruntime only (no PyTorch needed), a checkpoint with PyTorch; both
through the same ``prepare_scan`` and max-over-tiles scoring as the station.
"""

from __future__ import annotations

import argparse

from parcelscan.errors import ParcelscanError
from parcelscan.training.evaluate import evaluate  # no torch at its top: passive_omp_wait still runs first
from parcelscan.training.train_cli import passive_omp_wait


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint (.pt, e.g. runs/train/exp/weights/best.pt) or "
                                                       "exported model (.onnx)")
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
    cal = s["calibration"]
    print(f"ECE {cal['ece_uncalibrated']:.4f} → {cal['ece_calibrated']:.4f} (T = {cal['temperature']:.3g})")
    print(f"report: {run_dir / 'report.md'}")
    return 0
