"""``parcelscan data split DIR --val 0.1 --test 0.1 [--seed]``: group-pure, stratified, deterministic.

* **Grouped** by ``parcel_id``: every scan of one physical parcel lands in one split (two views of the
  same parcel in train and test would flatter the test score).
* **Stratified** by (label, scenario): a parcel's stratum is ``("suspect", its suspects' most common
  scenario)`` if it holds any suspect scan, else ``("clear", "none")``; each stratum is split in the
  requested proportions (counted in scans), so every concealment scenario is represented in val and
  test as far as its size allows.
* **Deterministic**: within a stratum parcels are ordered by sha256(seed, parcel_id) — independent of
  file order — and each is given to the split whose share is furthest below target (in the stratum,
  plus the running global deficit so that many tiny strata still fill val and test).
* **Stable**: records that already have a split keep it (a new scan of a known parcel joins its
  parcel's split), so adding data never moves an old test scan into training; ``--reassign`` redoes
  everything.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path

from parcelscan.datasets.check import UNSPLIT
from parcelscan.datasets.manifest import SPLITS, ManifestRecord, manifest_path, read_manifest, write_manifest
from parcelscan.errors import ParcelscanError


def _stratum(records: list[ManifestRecord]) -> tuple[str, str]:
    suspects = [r.scenario for r in records if r.label == "suspect"]
    if suspects:
        counts = Counter(suspects)
        return "suspect", max(sorted(counts), key=lambda s: counts[s])
    return "clear", "none"


def _order_key(seed: int, parcel_id: str) -> str:
    return hashlib.sha256(f"{seed}:{parcel_id}".encode()).hexdigest()


def assign_splits(records: list[ManifestRecord], val: float, test: float, seed: int = 0,
                  reassign: bool = False) -> list[ManifestRecord]:
    """Set ``split`` on every record (in place; also returned). See the module docstring."""
    if val < 0 or test < 0 or val + test >= 1.0:
        raise ParcelscanError(f"--val and --test must be >= 0 and leave some training data (got {val}, {test})")
    target = {"train": 1.0 - val - test, "val": val, "test": test}
    groups: dict[str, list[ManifestRecord]] = defaultdict(list)
    for record in records:
        groups[record.parcel_id].append(record)
    fixed: dict[str, str] = {}
    if not reassign:
        for parcel, items in groups.items():
            known = sorted({r.split for r in items if r.split})
            if len(known) > 1:
                raise ParcelscanError(f"parcel {parcel} is already in splits {', '.join(known)}: fix it or use "
                                      "--reassign")
            if known:
                fixed[parcel] = known[0]

    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for parcel, items in groups.items():
        strata[_stratum(items)].append(parcel)
    global_count = dict.fromkeys(SPLITS, 0)
    stratum_counts: dict[tuple[str, str], dict[str, int]] = {}
    for key, parcels in strata.items():  # what the kept assignments already hold
        counts = dict.fromkeys(SPLITS, 0)
        for parcel in parcels:
            if parcel in fixed:
                counts[fixed[parcel]] += len(groups[parcel])
                global_count[fixed[parcel]] += len(groups[parcel])
        stratum_counts[key] = counts

    assignment = dict(fixed)
    for key in sorted(strata):
        counts = stratum_counts[key]
        for parcel in sorted((p for p in strata[key] if p not in fixed), key=lambda p: _order_key(seed, p)):
            size = len(groups[parcel])
            stratum_total = sum(counts.values()) + size
            global_total = sum(global_count.values()) + size

            deficit = {s: (target[s] * stratum_total - counts[s]) + (target[s] * global_total - global_count[s])
                       for s in SPLITS}
            choice = max((s for s in ("test", "val", "train") if target[s] > 0), key=deficit.__getitem__)
            assignment[parcel] = choice
            counts[choice] += size
            global_count[choice] += size
    for record in records:
        record.split = assignment[record.parcel_id]
    return records


def split_manifest(directory: Path, val: float, test: float, seed: int = 0, reassign: bool = False,
                   dry_run: bool = False) -> list[ManifestRecord]:
    """Read, split and atomically rewrite DIR/manifest.jsonl (unless ``dry_run``)."""
    path = manifest_path(Path(directory))
    records = read_manifest(path)
    if not records:
        raise ParcelscanError(f"{path}: the manifest is empty")
    assign_splits(records, val, test, seed, reassign)
    if not dry_run:
        write_manifest(path, records)
    return records


def split_table(records: list[ManifestRecord]) -> tuple[list[str], list[list[object]]]:
    """(header, rows): scans, parcels, clear, suspect per split, then suspects per scenario."""
    header = ["split", "scans", "share", "parcels", "clear", "suspect"]
    rows: list[list[object]] = []
    total = max(len(records), 1)
    for split in (*SPLITS, None):
        items = [r for r in records if r.split == split]
        if not items:
            continue
        suspects = sum(r.label == "suspect" for r in items)
        rows.append([split or UNSPLIT, len(items), f"{100.0 * len(items) / total:.1f}%",
                     len({r.parcel_id for r in items}), len(items) - suspects, suspects])
    return header, rows
