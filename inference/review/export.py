"""``parcelscan review export``: inspectors' decisions → a dataset (station files + manifest.jsonl).

Label from the decision: seizure confirmed → ``suspect``, false alarm → ``clear``. Threat image projections
(``review.tip``) are never exported: they are test images, not parcels. Left out, and
counted in the report: unsure, conflicting (two inspectors, or two items of one scan, disagree),
undecided, and scans whose files are unreadable or changed since ingest. The scan files are copied
byte for byte (a TIFF or other format is written as a station PNG pair), then read back and compared
with what was reviewed before the manifest is written. Provenance says who decided, when, at which
station the parcel was scanned and which model flagged it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.datasets.manifest import MANIFEST_NAME, ManifestRecord, record_from_dict, write_manifest
from parcelscan.datasets.physics.materials import LIBRARY
from parcelscan.datasets.scans.colour import pseudocolor_of
from parcelscan.datasets.scans.scanfile import Scan, write_png, write_sidecar, write_station_scan
from parcelscan.errors import ParcelscanError, ScanReadError
from parcelscan.inference.review import store
from parcelscan.inference.review.db import transaction
from parcelscan.inference.review.images import ImageUnavailable, is_dual_energy, load_item_scan
from parcelscan.inference.review.ingest import load_scan_any
from parcelscan.inference.verdict import utc_now

LABEL_OF = {"seizure": "suspect", "false_alarm": "clear"}


@dataclass
class ExportReport:
    out_dir: Path
    suspect: int = 0
    clear: int = 0
    left_out: dict[str, int] = field(default_factory=lambda: {"unsure": 0, "conflict": 0, "undecided": 0,
                                                             "unreadable": 0})
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"exported {self.suspect + self.clear} scan(s) to {self.out_dir}: {self.suspect} suspect "
                 f"(seizure confirmed), {self.clear} clear (false alarm); manifest {self.out_dir / MANIFEST_NAME}",
                 "left out: " + ", ".join(f"{n} {k}" for k, n in self.left_out.items())]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def _prepare_out(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ParcelscanError(f"output directory {out_dir} exists and is not empty; export into a new directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ParcelscanError(f"cannot create {out_dir}: {error.strerror or error}") from error


def _library_name(material: str | None) -> str | None:
    if not material:
        return None
    by_lower = {name.lower(): name for name in LIBRARY}
    return by_lower.get(material.strip().lower())


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _write_scan(item: sqlite3.Row, scan, scan_id: str, out_dir: Path) -> dict[str, str]:
    """Station files for one scan in out_dir; returns the manifest's ``files``."""
    files = {role: Path(entry["path"]) for role, entry in json.loads(item["scan_files"]).items()}
    renamed = scan_id != item["scan_id"]
    if not is_dual_energy(scan):  # a pseudo-colour-only scan: its RGB image and a sidecar
        out = {"rgb": f"{scan_id}_rgb.png", "sidecar": f"{scan_id}.json"}
        source = files.get("rgb") or Path(json.loads(item["inputs"])[0])
        if source.suffix.lower() == ".png":
            _copy(source, out_dir / out["rgb"])
        else:
            write_png(out_dir / out["rgb"], scan.rgb)
        rgb_scan = Scan(scan_id=scan_id, low=None, high=None, meta=dict(scan.meta), kind="pseudo_color", rgb=scan.rgb)
        write_sidecar(out_dir / out["sidecar"], rgb_scan)
        return out
    if "low" in files and "high" in files:
        out = {"low": f"{scan_id}_low.png", "high": f"{scan_id}_high.png", "sidecar": f"{scan_id}.json",
               "rgb": f"{scan_id}_rgb.png"}
        _copy(files["low"], out_dir / out["low"])
        _copy(files["high"], out_dir / out["high"])
        if "sidecar" in files and not renamed:
            _copy(files["sidecar"], out_dir / out["sidecar"])
        else:  # no sidecar, or a renamed scan: the sidecar must name the exported id
            write_sidecar(out_dir / out["sidecar"], Scan(scan_id=scan_id, low=scan.low, high=scan.high,
                                                         meta=dict(scan.meta)))
        if "rgb" in files:
            _copy(files["rgb"], out_dir / out["rgb"])
        else:
            write_png(out_dir / out["rgb"], pseudocolor_of(scan))
        return out
    written = write_station_scan(Scan(scan_id=scan_id, low=scan.low, high=scan.high, meta=dict(scan.meta)), out_dir,
                                 rgb=pseudocolor_of(scan))
    return dict(written)


def _verify_copy(out_dir: Path, files: dict[str, str], scan) -> None:
    """Read the exported scan back; it must hold exactly the pixels that were reviewed."""
    if is_dual_energy(scan):
        path = out_dir / files["low"]
        copy = load_scan_any(path)
        same = np.array_equal(copy.low, scan.low) and np.array_equal(copy.high, scan.high)
    else:
        path = out_dir / files["rgb"]
        copy = load_scan_any(path)
        same = copy.rgb is not None and np.array_equal(copy.rgb, scan.rgb)
    if not same:
        raise ScanReadError(f"{path}: the exported copy differs from the reviewed scan")


def _groups(conn: sqlite3.Connection, report: ExportReport) -> dict[str, list[tuple[sqlite3.Row, list[dict]]]]:
    """Decided items grouped by physical scan (same input files); each item with its current decisions."""
    groups: dict[str, list[tuple[sqlite3.Row, list[dict]]]] = {}
    # test images (review.tip) are no parcels: never a label, never training data, never counted
    for item in conn.execute("SELECT * FROM items WHERE id NOT IN (SELECT item_id FROM tip_projections "
                             "WHERE item_id IS NOT NULL) ORDER BY id"):
        decisions = store.item_decisions(conn, int(item["id"]))
        state = store.state_of(decisions)
        if state in ("undecided", "unsure", "conflict"):
            report.left_out[state] += 1
            continue
        groups.setdefault(item["inputs_sha256"], []).append((item, decisions))
    return groups


def export(conn: sqlite3.Connection, out_dir: Path, actor: str = "cli") -> ExportReport:
    out_dir = Path(out_dir)
    _prepare_out(out_dir)
    report = ExportReport(out_dir.resolve())
    records: list[ManifestRecord] = []
    used_ids: set[str] = set()
    exported_at = utc_now()
    for group in _groups(conn, report).values():
        labels = {store.state_of(decisions) for _, decisions in group}
        if len(labels) > 1:  # two models flagged one scan and its two items were decided differently
            report.left_out["conflict"] += len(group)
            continue
        item, _ = group[0]
        decision = labels.pop()
        try:
            scan = load_item_scan(item)
        except (ImageUnavailable, ScanReadError) as error:
            report.left_out["unreadable"] += len(group)
            report.problems.append(f"{item['scan_id']} (item {item['id']}): {error}")
            continue
        scan_id = item["scan_id"]
        if scan_id in used_ids:  # two different scans with one id (two stations): keep both, apart
            scan_id = f"{scan_id}-r{item['id']}"
        used_ids.add(scan_id)
        files = _write_scan(item, scan, scan_id, out_dir)
        _verify_copy(out_dir, files, scan)
        all_decisions = sorted((d for _, ds in group for d in ds), key=lambda d: d["created_at"])
        latest = all_decisions[-1]
        reported = next((d["material"] for d in reversed(all_decisions) if d["material"]), None)
        material = _library_name(reported) if decision == "seizure" else None
        scenario = next((d["scenario"] for d in reversed(all_decisions) if d["scenario"]), None)
        provenance: dict[str, Any] = {
            "inspector": ", ".join(dict.fromkeys(d["user"] for d in all_decisions)),
            "decided_at": latest["created_at"], "decision": decision,
            "decisions": [{"user": d["user"], "decision": d["decision"], "decided_at": d["created_at"],
                           "material": d["material"], "scenario": d["scenario"], "notes": d["notes"]}
                          for d in all_decisions],
            "station": item["station"], "scanned_at": item["scanned_at"],
            "flagged_by": [{"model": {"name": i["model_name"], "version": i["model_version"],
                                      "sha256": i["model_sha256"]},
                            "verdict": i["verdict"], "score": i["score"], "threshold": i["threshold"],
                            "review_item": i["id"]} for i, _ in group],
            "original_files": json.loads(item["inputs"]), "original_scan_id": item["scan_id"],
            "exported_at": exported_at, "exported_by": actor,
        }
        if reported and material is None and decision == "seizure":
            provenance["material_reported"] = reported
        record = ManifestRecord(
            scan_id=scan_id, files=files, label=LABEL_OF[decision],
            scenario=(scenario or "unknown") if decision == "seizure" else "none", material=material,
            parcel_id=str(scan.meta.get("parcel_id") or scan_id), source="review", provenance=provenance,
            kind="dual_energy" if is_dual_energy(scan) else "pseudo_color")
        records.append(record_from_dict(asdict(record), f"export of {scan_id}"))
        report.suspect += decision == "seizure"
        report.clear += decision == "false_alarm"
    write_manifest(out_dir / MANIFEST_NAME, records)
    with transaction(conn):
        store.audit(conn, None, actor, "export", detail={"out": str(report.out_dir), "suspect": report.suspect,
                                                         "clear": report.clear, "left_out": report.left_out})
    return report
