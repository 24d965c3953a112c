"""``parcelscan data check|split|import|convert|merge|stats``: the dataset tools.

Exit codes: 0 fine, 1 ``check`` found errors (or ``import``/``convert`` skipped unreadable files),
2 bad usage or a user error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from parcelscan.datasets.check import check_dataset
from parcelscan.datasets.datatools import format_table
from parcelscan.datasets.importers import import_scans
from parcelscan.datasets.merge import merge_datasets
from parcelscan.datasets.scans.readers import convert_scan
from parcelscan.datasets.split import split_manifest, split_table
from parcelscan.datasets.stats import dataset_stats
from parcelscan.errors import ScanReadError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    check = sub.add_parser("check", help="validate a data set: files, pairs, bit depth, duplicates, leakage, balance",
                           description="Decode every scan of DIR/manifest.jsonl and report problems. "
                                       "Exit 1 when there are errors.")
    check.add_argument("dir", help="data set directory (with manifest.jsonl)")
    check.add_argument("--workers", type=int, default=None, help="decoding processes (default: up to 4)")
    check.add_argument("--max-items", type=int, default=50, help="list at most this many errors/warnings each")

    split = sub.add_parser("split", help="assign train/val/test: grouped by parcel, stratified, deterministic",
                           description="Group by parcel_id, stratify by label and scenario, rewrite the manifest "
                                       "atomically. Existing splits are kept unless --reassign.")
    split.add_argument("dir", help="data set directory (with manifest.jsonl)")
    split.add_argument("--val", type=float, default=0.1, help="validation share (default 0.1)")
    split.add_argument("--test", type=float, default=0.1, help="test share (default 0.1)")
    split.add_argument("--seed", type=int, default=0, help="seed of the deterministic order (default 0)")
    split.add_argument("--reassign", action="store_true", help="ignore existing splits and redo all")
    split.add_argument("--dry-run", action="store_true", help="show the result without writing")

    imp = sub.add_parser("import", help="import scans: ImageFolder tree, CSV of labels, or station-format folder",
                         description="Copy (or convert) scans into DIR in the station format and append them to "
                                     "DIR/manifest.jsonl with source=station and provenance.")
    imp.add_argument("src", help="clear/ + suspect/ tree, a CSV (path,label[,scenario,parcel_id]) or a scan folder")
    imp.add_argument("--out", required=True, help="data set directory to import into")
    imp.add_argument("--from", dest="layout", choices=("auto", "imagefolder", "csv", "station"), default="auto",
                     help="source layout (default: detect)")
    imp.add_argument("--label", choices=("clear", "suspect"),
                     help="label for station scans whose sidecar carries none")
    imp.add_argument("--source", choices=("station", "review", "simulated"), default="station",
                     help="manifest source of the imported scans (default station)")
    imp.add_argument("--skip-bad", action="store_true",
                     help="skip unreadable files (listed; exit 1) instead of stopping at the first")

    convert = sub.add_parser("convert", help="convert scans between station PNG pair, TIFF, DICOS and RGB",
                             description="Convert each SRC scan to FORMAT in OUT (see README 'Data formats').")
    convert.add_argument("src", nargs="+", help="scan files (one file of each scan is enough)")
    convert.add_argument("--to", required=True, dest="fmt", metavar="FORMAT",
                         help="pair (station PNG pair + sidecar), tiff, dicos or rgb (operator image)")
    convert.add_argument("--out", required=True, help="output directory")

    merge = sub.add_parser("merge", help="several data sets as one (hard links, no pixels copied)",
                           description="Bring every scan of each SRC into OUT (hard links; copies across file "
                                       "systems; --move moves) and append their manifest lines to OUT's. Refused, "
                                       "with nothing written, when a scan id appears twice, a named file is "
                                       "missing or a file name holds different contents in two sets.")
    merge.add_argument("out", help="data set directory to merge into (created; an existing set is kept)")
    merge.add_argument("src", nargs="+", help="data set directories (each with manifest.jsonl)")
    merge.add_argument("--move", action="store_true",
                       help="move the files instead of linking them, and remove the emptied sources' manifests")

    stats = sub.add_parser("stats", help="counts, sizes and tiles per split",
                           description="Counts by split, label, scenario, material, source and kind; scan sizes and "
                                       "model tiles per scan. Reads image headers only.")
    stats.add_argument("dir", help="data set directory (with manifest.jsonl)")


def run(args: argparse.Namespace) -> int:
    command = args.data_command
    if command == "check":
        return _check(args)
    if command == "split":
        return _split(args)
    if command == "import":
        return _import(args)
    if command == "convert":
        return _convert(args)
    if command == "merge":
        return _merge(args)
    return _stats(args)


def _check(args: argparse.Namespace) -> int:
    report = check_dataset(Path(args.dir), workers=args.workers)
    print(report.render(max_items=args.max_items))
    return 0 if report.ok else 1


def _split(args: argparse.Namespace) -> int:
    records = split_manifest(Path(args.dir), args.val, args.test, args.seed, args.reassign, args.dry_run)
    header, rows = split_table(records)
    print(format_table(header, rows))
    action = "would write" if args.dry_run else "wrote"
    print(f"{action} {Path(args.dir) / 'manifest.jsonl'} (seed {args.seed}, grouped by parcel_id, "
          "stratified by label and scenario)")
    return 0


def _import(args: argparse.Namespace) -> int:
    result = import_scans(Path(args.src), Path(args.out), layout=args.layout, default_label=args.label,
                          source=args.source, skip_bad=args.skip_bad)
    print(result.render())
    return 1 if result.skipped else 0


def _convert(args: argparse.Namespace) -> int:
    out = Path(args.out)
    failed = 0
    for src in args.src:
        try:
            written = convert_scan(Path(src), args.fmt, out)
        except ScanReadError as error:
            print(f"parcelscan data convert: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{src} -> {', '.join(str(p) for p in written)}")
    return 1 if failed else 0


def _merge(args: argparse.Namespace) -> int:
    print(merge_datasets(Path(args.out), [Path(s) for s in args.src], move=args.move).render())
    return 0


def _stats(args: argparse.Namespace) -> int:
    print(dataset_stats(Path(args.dir)))
    return 0
