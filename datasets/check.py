"""``parcelscan data check DIR``: is this data set fit to train and evaluate on?

Errors (exit 1): manifest lines that fail validation; a scan_id listed twice; a file that is missing,
unreadable or corrupt (every scan is decoded through the readers); a missing half of a pair; wrong bit
depth; a sidecar whose size disagrees with the images; a mask that is unreadable or of another size, or
non-empty on a clear scan; the same image (by decoded-pixel sha256) in two different splits; a
parcel in two splits (group leakage: two views of one parcel would let test scores flatter the model).

Warnings: the same image twice within one split; a sidecar naming another scan id; an operator image
that is not an 8-bit RGB PNG of the scan's size; half pairs or scans on disk that the manifest does
not list; scans without a split; a split without suspects or without clears; a suspect scenario seen
in training but absent from val/test; a suspect whose mask is empty.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parcelscan.datasets.datatools import (
    content_hash,
    format_table,
    load_record_mask,
    load_record_scan,
    record_path,
)
from parcelscan.datasets.manifest import SPLITS, ManifestRecord, manifest_path, read_manifest_lenient
from parcelscan.datasets.scans.scanfile import png_header, read_sidecar
from parcelscan.errors import ParcelscanError, ScanReadError

UNSPLIT = "(none)"


@dataclass
class CheckReport:
    directory: Path
    n_records: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    balance: list[list[Any]] = field(default_factory=list)
    scenarios: list[list[Any]] = field(default_factory=list)
    split_names: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self, max_items: int = 50) -> str:
        lines = [f"data check: {self.directory} ({self.n_records} scans in manifest)", ""]
        if self.balance:
            lines.append(format_table(["split", "scans", "parcels", "clear", "suspect", "suspect%", "masks"],
                                      self.balance))
            lines.append("")
        if self.scenarios:
            lines.append("suspect scans per scenario:")
            lines.append(format_table(["scenario", *self.split_names], self.scenarios))
            lines.append("")
        for title, items in (("errors", self.errors), ("warnings", self.warnings)):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {item}" for item in items[:max_items])
                if len(items) > max_items:
                    lines.append(f"  ... and {len(items) - max_items} more")
                lines.append("")
        verdict = "FAILED" if self.errors else "OK"
        lines.append(f"{verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


@dataclass
class _ScanResult:
    """What checking one record found (runs in a worker process)."""

    scan_id: str
    digest: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    has_mask_pixels: bool | None = None


def _check_record(record: ManifestRecord, root: Path) -> _ScanResult:
    result = _ScanResult(record.scan_id)
    missing = [f"{role} ({name})" for role, name in record.files.items() if not record_path(root, name).exists()]
    if missing:
        pair = {"low", "high"} & {m.split(" ")[0] for m in missing}
        what = "missing pair half" if pair and len(pair) == 1 else "missing file"
        result.errors.append(f"{record.scan_id}: {what}: {', '.join(missing)}")
        return result
    try:
        scan = load_record_scan(record, root)
    except ScanReadError as error:
        result.errors.append(f"{record.scan_id}: unreadable: {error}")
        return result
    result.digest = content_hash(scan)
    shape = tuple(scan.shape)
    sidecar_name = record.files.get("sidecar")
    if sidecar_name:
        try:
            sidecar = read_sidecar(record_path(root, sidecar_name))
            if sidecar.get("scan_id") not in (None, record.scan_id):
                result.warnings.append(f"{record.scan_id}: sidecar {sidecar_name} names scan {sidecar['scan_id']!r}")
        except ScanReadError as error:
            result.errors.append(f"{record.scan_id}: {error}")
    if record.kind == "dual_energy" and record.files.get("rgb"):
        result.warnings.extend(_check_operator_image(record, root, shape))
    try:
        mask = load_record_mask(record, root, shape)
    except ScanReadError as error:
        result.errors.append(f"{record.scan_id}: mask: {error}")
        mask = None
    if mask is not None:
        result.has_mask_pixels = bool(mask.any())
        if record.label == "clear" and result.has_mask_pixels:
            result.errors.append(f"{record.scan_id}: labelled clear but its mask {record.mask} marks powder")
        if record.label == "suspect" and not result.has_mask_pixels:
            result.warnings.append(f"{record.scan_id}: suspect with an empty mask {record.mask}")
    return result


def _check_operator_image(record: ManifestRecord, root: Path, shape: tuple[int, int]) -> list[str]:
    path = record_path(root, record.files["rgb"])
    try:
        width, height, bit_depth, colour_type = png_header(path)
    except ScanReadError as error:
        return [f"{record.scan_id}: operator image: {error}"]
    if (height, width) != shape or bit_depth != 8 or colour_type != 2:
        return [f"{record.scan_id}: operator image {path.name} is not an 8-bit RGB PNG of the scan's size"]
    return []


def _orphans(root: Path, records: list[ManifestRecord]) -> list[str]:
    """Station files on disk the manifest does not list, and half pairs among them."""
    listed = {record_path(root, name).resolve() for r in records for name in r.files.values()}
    warnings = []
    for path in sorted(root.glob("*_low.png")) + sorted(root.glob("*_high.png")):
        if path.resolve() in listed:
            continue
        stem, _, energy = path.stem.rpartition("_")
        other = path.with_name(f"{stem}_{'high' if energy == 'low' else 'low'}.png")
        if not other.exists():
            warnings.append(f"{path.name}: half a pair on disk ({other.name} is missing), not in the manifest")
        elif energy == "low":
            warnings.append(f"{stem}: scan on disk but not in the manifest")
    return warnings


def check_dataset(directory: Path, workers: int | None = None) -> CheckReport:
    """Run every check on DIR/manifest.jsonl and the files it lists."""
    path = manifest_path(Path(directory))
    if not path.exists():
        raise ParcelscanError(f"no manifest: {path} does not exist")
    root = path.parent
    records, problems = read_manifest_lenient(path)
    report = CheckReport(Path(directory), n_records=len(records) + len(problems))
    report.errors.extend(f"manifest: {p}" for p in problems)

    counts = Counter(r.scan_id for r in records)
    for scan_id, n in sorted(counts.items()):
        if n > 1:
            report.errors.append(f"{scan_id}: listed {n} times in the manifest")

    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if workers > 1 and len(records) > 8:
        # spawn, not fork: the caller may hold threads (PyTorch, OpenMP) that a forked child would deadlock on
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_check_record, records, [root] * len(records), chunksize=8))
    else:
        results = [_check_record(r, root) for r in records]
    for result in results:
        report.errors.extend(result.errors)
        report.warnings.extend(result.warnings)
    report.warnings.extend(_orphans(root, records))

    by_id = {r.scan_id: r for r in records}
    _duplicates(results, by_id, report)
    _leakage(records, report)
    _balance(records, results, report)
    return report


def _split_name(record: ManifestRecord) -> str:
    return record.split or UNSPLIT


def _duplicates(results: list[_ScanResult], by_id: dict[str, ManifestRecord], report: CheckReport) -> None:
    groups: dict[str, list[str]] = defaultdict(list)
    for result in results:
        if result.digest:
            groups[result.digest].append(result.scan_id)
    for digest, ids in sorted(groups.items(), key=lambda item: sorted(item[1])):
        if len(ids) < 2:
            continue
        splits = sorted({_split_name(by_id[i]) for i in ids})
        where = ", ".join(f"{i} ({_split_name(by_id[i])})" for i in sorted(ids))
        real_splits = [s for s in splits if s != UNSPLIT]
        if len(real_splits) > 1:
            report.errors.append(f"duplicate image across splits {'/'.join(real_splits)}: {where} "
                                 f"(pixel sha256 {digest[:12]})")
        else:
            report.warnings.append(f"duplicate image within split {splits[0]}: {where} (pixel sha256 {digest[:12]})")


def _leakage(records: list[ManifestRecord], report: CheckReport) -> None:
    by_parcel: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.split:
            by_parcel[record.parcel_id][record.split].append(record.scan_id)
    for parcel, splits in sorted(by_parcel.items()):
        if len(splits) > 1:
            where = "; ".join(f"{s}: {', '.join(sorted(ids))}" for s, ids in sorted(splits.items()))
            report.errors.append(f"parcel leak: parcel {parcel} is in {len(splits)} splits ({where})")


def _balance(records: list[ManifestRecord], results: list[_ScanResult], report: CheckReport) -> None:
    present = [s for s in (*SPLITS, UNSPLIT) if any(_split_name(r) == s for r in records)]
    report.split_names = present
    by_split: dict[str, list[ManifestRecord]] = {s: [r for r in records if _split_name(r) == s] for s in present}
    for split, items in by_split.items():
        suspects = sum(r.label == "suspect" for r in items)
        masks = sum(r.mask is not None for r in items)
        share = f"{100.0 * suspects / len(items):.1f}%"
        report.balance.append([split, len(items), len({r.parcel_id for r in items}), len(items) - suspects,
                               suspects, share, masks])
        if split != UNSPLIT and items and (suspects == 0 or suspects == len(items)):
            which = "suspect" if suspects == 0 else "clear"
            report.warnings.append(f"split {split} has no {which} scans")
    total = len(records)
    report.balance.append(["all", total, len({r.parcel_id for r in records}),
                           sum(r.label == "clear" for r in records), sum(r.label == "suspect" for r in records),
                           f"{100.0 * sum(r.label == 'suspect' for r in records) / max(total, 1):.1f}%",
                           sum(r.mask is not None for r in records)])
    unsplit = len(by_split.get(UNSPLIT, []))
    if unsplit and unsplit < total:
        report.warnings.append(f"{unsplit} scan(s) have no split: run `parcelscan data split`")
    scenarios = sorted({r.scenario for r in records if r.label == "suspect"})
    for scenario in scenarios:
        row = [scenario] + [sum(r.label == "suspect" and r.scenario == scenario for r in by_split[s])
                            for s in present]
        report.scenarios.append(row)
        counts = dict(zip(present, row[1:], strict=True))
        if counts.get("train") and any(s in counts and counts[s] == 0 for s in ("val", "test")):
            missing = [s for s in ("val", "test") if s in counts and counts[s] == 0]
            report.warnings.append(f"scenario {scenario} is in train but not in {'/'.join(missing)}")
