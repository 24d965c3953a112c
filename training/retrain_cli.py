"""``parcelscan retrain``: fine-tune on new seizures with replay, compare with the base, register."""

from __future__ import annotations

import argparse
import sys

from parcelscan.errors import ParcelscanError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True,
                        help="base model: a checkpoint (.pt), an ONNX file with its .pt beside it (the shipped "
                             "defaults have one), or a registered model id (name@version)")
    parser.add_argument("--new", required=True, help="directory of new labelled scans (manifest.jsonl), "
                                                     "e.g. `parcelscan review export`")
    parser.add_argument("--replay", help="the original training data (manifest with splits): replayed to "
                                         "prevent forgetting, and its test split is the original test")
    parser.add_argument("--original-test", help="directory whose test split is the original test (default --replay)")
    parser.add_argument("--name", default="retrain",
                        help="run name under runs/retrain/ (auto-incremented) and the candidate's registry name")
    parser.add_argument("--project", default="runs/retrain")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--replay-ratio", type=float, default=2.0, help="original scans replayed per new scan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--registry", help="model store directory (default $PARCELSCAN_MODEL_DIR)")
    parser.add_argument("--no-register", action="store_true", help="do not add the candidate to the registry")
    parser.add_argument("--min-holdout-suspect", type=int, default=None,
                        help="refuse when the held-out new data has fewer suspect scans than this (default 5)")


def run(args: argparse.Namespace) -> int:
    # loads torch: imported here so that `retrain --help` works without the train extra
    from parcelscan.training.retrain import MIN_HOLDOUT_SUSPECT, RetrainConfig, retrain

    if args.epochs < 1 or args.lr <= 0 or args.replay_ratio < 0:
        raise ParcelscanError("--epochs must be >= 1, --lr > 0 and --replay-ratio >= 0")
    config = RetrainConfig(base=args.base, new=args.new, replay=args.replay, original_test=args.original_test,
                           name=args.name, project=args.project, epochs=args.epochs, lr=args.lr,
                           replay_ratio=args.replay_ratio, seed=args.seed, device=args.device,
                           register=not args.no_register, registry=args.registry,
                           min_holdout_suspect=MIN_HOLDOUT_SUSPECT if args.min_holdout_suspect is None
                           else args.min_holdout_suspect)
    comparison = retrain(config, log=lambda line: print(line, file=sys.stderr))
    for key in ("original_test", "new_holdout"):
        print(f"{key:14s} Pd at operating point: base {comparison[key]['base_pd']:.3f} → candidate "
              f"{comparison[key]['candidate_pd']:.3f}")
    problems = comparison["gate_problems"]
    print("promotion gate: " + ("passes" if not problems else "fails: " + "; ".join(problems)))
    if comparison.get("registered_as"):
        print(f"registered {comparison['registered_as']}; `parcelscan models promote {comparison['registered_as']}`")
    print(f"report: {comparison['run_dir']}/report.md")
    return 0
