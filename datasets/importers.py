"""``parcelscan data import SRC --out DIR``: bring outside scans into a data set, with provenance.

Layouts (``--from``, detected by default):

* **imagefolder**: ``SRC/clear/…`` and ``SRC/suspect/…`` (any depth); the folder is the label. Any other
  top-level folder is refused (no silent guess).
* **csv**: a CSV file with columns ``path,label[,scenario,parcel_id]``; ``path`` relative to the CSV
  (any one file of a scan selects the scan: ``x_low.png``, ``x.tiff``, ``x_low.dcs``, ``photo.jpg``).
* **station**: a folder of station-format scans (PNG pairs, TIFFs, DICOS; sidecars beside them); labels
  come from the sidecar (``labels.label`` …, as the simulator writes them) or ``--label``.

Every scan is decoded through ``readers`` (so a bad file is found now, not in training) and written to
DIR in the station format: PNG pairs are copied byte for byte, TIFF and DICOS are converted to PNG
pairs (pixel-exact), pseudo-colour PNG/JPEG images stay RGB as ``<id>_rgb.png`` with ``kind =
pseudo_color`` in the manifest and sidecar. A ``<id>_mask.png`` beside a scan comes along. Manifest
records get ``source`` (default ``station``), ``split = null`` (run ``data split``) and ``provenance``:
``original_path``, ``original_files``, ``sha256`` (of each original file), ``imported_at`` (UTC),
``importer`` and ``original_scan_id``. Importing the same files again skips them (by sha256).
"""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from parcelscan.datasets.datatools import file_sha256
from parcelscan.datasets.manifest import LABELS, MANIFEST_NAME, ManifestRecord, append_records, read_manifest
from parcelscan.datasets.scans.readers import discover_scans
from parcelscan.datasets.scans.scanfile import Scan, write_png, write_sidecar, write_station_scan
from parcelscan.errors import ParcelscanError, ScanReadError

LAYOUTS = ("imagefolder", "csv", "station")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
BATCH = 32


@dataclass
class Candidate:
    """A scan to import: where it is and what the source layout says about it."""

    ref: Any  # readers.ScanRef
    label: str | None
    scenario: str | None = None
    parcel_id: str | None = None
    where: str = ""  # for messages: CSV line or folder


@dataclass
class ImportResult:
    out: Path
    layout: str
    imported: list[ManifestRecord] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def render(self) -> str:
        from collections import Counter

        counts = Counter((r.label, r.kind) for r in self.imported)
        lines = [f"imported {len(self.imported)} scan(s) into {self.out} (source layout: {self.layout})"]
        for (label, kind), n in sorted(counts.items()):
            lines.append(f"  {label:8s} {kind:13s} {n}")
        if self.already:
            lines.append(f"{len(self.already)} already imported (same files by sha256), skipped")
        if self.skipped:
            lines.append(f"{len(self.skipped)} skipped:")
            lines.extend(f"  {problem}" for problem in self.skipped)
        lines.append(f"manifest: {self.out / MANIFEST_NAME} (no split yet: run `parcelscan data split {self.out}`)")
        return "\n".join(lines)


def detect_layout(src: Path) -> str:
    if src.is_file():
        if src.suffix.lower() == ".csv":
            return "csv"
        raise ParcelscanError(f"{src}: a file source must be a CSV of labels (path,label[,scenario,parcel_id])")
    if not src.is_dir():
        raise ParcelscanError(f"{src}: no such file or directory")
    if (src / "clear").is_dir() or (src / "suspect").is_dir():
        return "imagefolder"
    return "station"


# --- gathering candidates ----------------------------------------------------------------------------
def _imagefolder(src: Path) -> list[Candidate]:
    others = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in LABELS)
    if others:
        raise ParcelscanError(f"{src}: unknown class folder(s) {', '.join(others)}: an ImageFolder source has only "
                              "clear/ and suspect/")
    candidates = []
    for label in LABELS:
        folder = src / label
        if folder.is_dir():
            candidates.extend(Candidate(ref, label, where=f"{label}/") for ref in discover_scans([folder]))
    return candidates


def _csv(src: Path) -> list[Candidate]:
    try:
        with open(src, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ParcelscanError(f"{src}: unreadable CSV: {error}") from error
    if "path" not in columns or "label" not in columns:
        raise ParcelscanError(f"{src}: the CSV needs the columns path,label[,scenario,parcel_id]; found {columns}")
    candidates = []
    for number, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        where = f"{src.name}:{number}"
        if not row.get("path"):
            raise ParcelscanError(f"{where}: empty path")
        if row.get("label") not in LABELS:
            raise ParcelscanError(f"{where}: label must be one of {LABELS}, got {row.get('label')!r}")
        path = Path(row["path"])
        path = path if path.is_absolute() else src.parent / path
        refs = discover_scans([path])
        if len(refs) != 1:
            raise ParcelscanError(f"{where}: {path} does not name one scan ({len(refs)} found)")
        candidates.append(Candidate(refs[0], row["label"], row.get("scenario") or None,
                                    row.get("parcel_id") or None, where))
    return candidates


def _station(src: Path) -> list[Candidate]:
    return [Candidate(ref, None, where=str(src)) for ref in discover_scans([src])]


# --- writing -----------------------------------------------------------------------------------------
def _sidecar_labels(meta: dict[str, Any]) -> dict[str, Any]:
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    return {**{k: meta[k] for k in ("label", "scenario", "parcel_id") if k in meta}, **labels}


def _unique_id(wanted: str, taken: set[str], out: Path) -> str:
    base = _UNSAFE.sub("-", wanted).strip("-._") or "scan"
    base = base[:100]
    if not base[0].isalnum():
        base = f"s{base}"
    candidate, n = base, 1
    while candidate in taken or any(out.glob(f"{candidate}_low.png")) or (out / f"{candidate}_rgb.png").exists():
        n += 1
        candidate = f"{base}-{n}"
    taken.add(candidate)
    return candidate


def _write_scan(scan: Any, ref: Any, scan_id: str, out: Path) -> tuple[dict[str, str], str | None]:
    """Write one scan into ``out`` in the station format; returns (files, mask name or None)."""
    meta = {k: v for k, v in scan.meta.items() if k != "labels"}
    if scan.kind == "pseudo_color":
        files = {"rgb": f"{scan_id}_rgb.png", "sidecar": f"{scan_id}.json"}
        write_png(out / files["rgb"], scan.rgb)
        write_sidecar(out / files["sidecar"], Scan(scan_id, None, None, {**meta, "kind": "pseudo_color"},
                                                   kind="pseudo_color", rgb=scan.rgb))
    else:
        paths = {p.name: p for p in ref.paths}
        if ref.format == "pair":
            files = {"low": f"{scan_id}_low.png", "high": f"{scan_id}_high.png", "sidecar": f"{scan_id}.json"}
            shutil.copyfile(ref.paths[0], out / files["low"])  # byte-exact copies of the pair
            shutil.copyfile(ref.paths[1], out / files["high"])
            write_sidecar(out / files["sidecar"], Scan(scan_id, scan.low, scan.high, meta))
        else:  # TIFF, DICOS: converted, pixel-exact
            files = write_station_scan(Scan(scan_id, scan.low, scan.high, meta), out)
        rgb = paths.get(f"{ref.scan_id}_rgb.png")
        if rgb is not None:
            files["rgb"] = f"{scan_id}_rgb.png"
            shutil.copyfile(rgb, out / files["rgb"])
    mask_src = ref.paths[0].with_name(f"{ref.scan_id}_mask.png")
    mask = None
    if mask_src.is_file():
        mask = f"{scan_id}_mask.png"
        shutil.copyfile(mask_src, out / mask)
    return files, mask


def import_scans(src: Path, out: Path, layout: str = "auto", default_label: str | None = None,
                 source: str = "station", skip_bad: bool = False) -> ImportResult:
    """Import every scan of ``src`` into the data set ``out`` (see the module docstring)."""
    src, out = Path(src), Path(out)
    layout = detect_layout(src) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise ParcelscanError(f"unknown layout {layout!r}: use one of {LAYOUTS}")
    if layout == "csv" and not src.is_file():
        raise ParcelscanError(f"{src}: --from csv needs a CSV file")
    if layout != "csv" and not src.is_dir():
        raise ParcelscanError(f"{src}: --from {layout} needs a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ParcelscanError(f"cannot create {out}: {error.strerror or error}") from error
    if out.resolve() == (src if src.is_dir() else src.parent).resolve():
        raise ParcelscanError("--out must differ from the source directory")
    candidates = {"imagefolder": _imagefolder, "csv": _csv, "station": _station}[layout](src)
    if not candidates:
        raise ParcelscanError(f"{src}: no scans found")

    manifest = out / MANIFEST_NAME
    existing = read_manifest(manifest) if manifest.exists() else []
    taken = {r.scan_id for r in existing}
    known_hashes = {r.provenance.get("sha256", {}).get("main") for r in existing if isinstance(
        r.provenance.get("sha256"), dict)}
    result = ImportResult(out, layout)
    pending: list[ManifestRecord] = []
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for candidate in candidates:
        ref = candidate.ref
        try:
            scan = ref.load()
        except ScanReadError as error:
            if not skip_bad:
                raise ScanReadError(f"{candidate.where}: {error} (use --skip-bad to import the rest)") from error
            result.skipped.append(str(error))
            continue
        hashes = {"main": file_sha256(ref.paths[0])}
        hashes.update({p.name: file_sha256(p) for p in ref.paths})
        if hashes["main"] in known_hashes:
            result.already.append(str(ref.paths[0]))
            continue
        labels = _sidecar_labels(scan.meta)
        label = candidate.label or labels.get("label") or default_label
        if label not in LABELS:
            problem = f"{ref.paths[0]}: no label (sidecar has none; use --label or an ImageFolder/CSV source)"
            if not skip_bad:
                raise ParcelscanError(problem)
            result.skipped.append(problem)
            continue
        if labels.get("label") not in (None, label):  # the folder/CSV overrides the sidecar: drop its details
            labels = {"parcel_id": labels["parcel_id"]} if "parcel_id" in labels else {}
        scan_id = _unique_id(ref.scan_id, taken, out)
        files, mask = _write_scan(scan, ref, scan_id, out)
        scenario = candidate.scenario or labels.get("scenario") or ("unknown" if label == "suspect" else "none")
        record = ManifestRecord(
            scan_id=scan_id, files=files, label=label, scenario=str(scenario),
            material=labels.get("material") if label == "suspect" else None,
            mass_g=_number(labels.get("mass_g")), mass_fraction=_number(labels.get("mass_fraction")),
            mask=mask, lookalike=labels.get("lookalike"),
            parcel_id=str(candidate.parcel_id or labels.get("parcel_id") or scan_id), split=None, source=source,
            provenance={"original_path": str(ref.paths[0].resolve()),
                        "original_files": [str(p.resolve()) for p in ref.paths],
                        "sha256": hashes, "imported_at": now, "importer": layout,
                        "original_scan_id": ref.scan_id},
            kind=scan.kind)
        known_hashes.add(hashes["main"])
        pending.append(record)
        result.imported.append(record)
        if len(pending) >= BATCH:
            append_records(manifest, pending)
            pending = []
    append_records(manifest, pending)
    return result


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None
