"""``parcelscan review ingest``: verdict lines → review queue.

Only flagged scans (``suspect`` or ``manual_inspection``) are queued; a line already ingested (same
scan id, model sha256 and inputs) is ignored. "Same inputs" is the station's ``inputs_sha256`` (the
sha256 of the files' *contents*, see README "The verdict"): the key the station promises its consumers
deduplicate by with the scan id, so a verdict delivered again after a restart, or with its files moved to
``--done``, is the same item, and a new scan that reuses a file name is a new one. A line without it (an
older station, an input that was not a regular file) falls back to the sha256 of the sorted input paths.
When the files on disk no longer have the contents the station hashed, the item is queued with that
as its scan error (the inspector must not be shown other pixels than the model saw).

The scan files are read now, to validate them and to record their absolute paths and SHA-256: the web app
later serves images *only* from these recorded files, and refuses them if they changed since. A flagged
scan whose files cannot be read is still queued (fail closed: the parcel must still be looked at), with
the error shown to the inspector.

A whole file is ingested in one transaction. A malformed line aborts it, naming the line, except a
final line without its newline, which is a verdict still being written and is left for next time.

Never a non-scan in the queue (the rule ``datasets.scans.readers`` applies to a station's inputs): a
verdict line whose inputs are only files that are not scans — dataset companions (``manifest.jsonl``,
``stats.json``), label masks (``*_mask.png``), files not named like a scan part, a JSON file that belongs
to no scan — is counted and named in the report, not queued; such files named beside a scan's parts are
dropped from its inputs. A file named like a scan part is a scan part, readable or not. A score or
threshold of NaN or Infinity is stored as none (an unscored item comes first) with the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from parcelscan.datasets.datatools import file_sha256 as sha256_file
from parcelscan.datasets.scans.dicos import DICOS_EXTENSIONS
from parcelscan.datasets.scans.readers import COMPANION_NAMES, SCAN_PART_SUFFIXES, load_scan
from parcelscan.datasets.scans.scanfile import SCAN_FORMAT, png_header
from parcelscan.errors import ParcelscanError, ScanReadError
from parcelscan.inference.review import FLAGGED_VERDICTS
from parcelscan.inference.review.db import transaction
from parcelscan.inference.review.store import audit
from parcelscan.inference.verdict import inputs_digest, utc_now

VERDICTS = ("clear", "suspect", "manual_inspection")


@dataclass
class IngestReport:
    added: int = 0
    duplicates: int = 0
    not_flagged: int = 0
    scan_errors: int = 0
    heatmap_errors: int = 0
    not_scans: int = 0
    tip_queued: int = 0  # threat image projections (review.tip) queued among the batch
    tip_model_misses: int = 0  # projections the model cleared: recorded, never shown
    tip_other_judge: int = 0  # test images not made: the batch was judged by another model or threshold
    tip_no_advance_data: int = 0  # nor: the batch was checked against advance data the TIP inspector lacks
    incomplete_last_line: bool = False
    messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.added} added, {self.duplicates} duplicate(s) ignored, {self.not_flagged} clear "
                f"(not queued), {self.scan_errors} with unreadable scan files")
        if self.heatmap_errors:
            text += f", {self.heatmap_errors} with an unreadable heatmap"
        if self.not_scans:
            text += f", {self.not_scans} not a scan (not queued)"
        if self.tip_queued or self.tip_model_misses:
            text += f"; TIP: {self.tip_queued} test image(s) queued, {self.tip_model_misses} missed by the model"
        if self.tip_other_judge:
            text += (f"; TIP: {self.tip_other_judge} test image(s) not made: the batch was judged by another model "
                     "or threshold than the TIP inspector's (give `review ingest` the station's --model and --policy)")
        if self.tip_no_advance_data:
            text += (f"; TIP: {self.tip_no_advance_data} test image(s) not made: the station checked the batch's "
                     "declarations against advance data the TIP inspector was not given (give `review ingest` the "
                     "station's --declarations)")
        if self.incomplete_last_line:
            text += "; the last line is incomplete (still being written?) and was left for a later ingest"
        return text


def load_scan_any(path: Path):
    """Any scan format, through the shared reader (``datasets.scans.readers.load_scan``)."""
    return load_scan(Path(path))




# images a scan of this id may have beside its sidecar (<id>.json belongs to the scan <id>)
_SIDECAR_OWNERS = ("_low.png", "_high.png", "_rgb.png", ".tif", ".tiff", ".png", ".jpg", ".jpeg", *DICOS_EXTENSIONS)


def non_scan_reason(path: Path) -> str | None:
    """Why the file a verdict names cannot be (part of) a scan, or None when it may be one.

    By name, as the station's discovery decides: a file named like a scan part is one, even when it is
    missing or unreadable (its verdict is queued: fail closed). A ``.json`` is a scan part when it is a
    sidecar: it declares the scan format, images of its scan id lie beside it, or it cannot be read.
    """
    name = path.name
    lower = name.lower()
    if lower in COMPANION_NAMES:
        return f"{name} is a dataset companion file, not a scan"
    if lower.endswith("_mask.png"):
        return f"{name} is a label mask, not a scan"
    if not lower.endswith(SCAN_PART_SUFFIXES):
        return f"{name} is not named like a scan file"
    if lower.endswith(".json") and path.is_file():
        if any(path.with_name(path.stem + suffix).exists() for suffix in _SIDECAR_OWNERS):
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return None  # unreadable: as a sidecar of a scan, the scan's verdict is queued
        if not (isinstance(data, dict) and data.get("format") == SCAN_FORMAT):
            return f"{name} is a JSON file of no scan (no images of {path.stem!r} beside it)"
    return None


def scan_files(first_input: Path, scan, inputs: list[Path]) -> dict[str, str]:
    """Role → absolute path of every file the scan was read from (what the app may serve from)."""
    files: dict[str, str] = {}
    source_files = getattr(scan, "source_files", None)
    directory = first_input.parent
    scan_id = scan.scan_id
    candidates = {"low": directory / f"{scan_id}_low.png", "high": directory / f"{scan_id}_high.png",
                  "tiff": directory / f"{scan_id}.tiff", "sidecar": directory / f"{scan_id}.json",
                  "rgb": directory / f"{scan_id}_rgb.png"}
    named = {first_input.name.removesuffix(s) for s in ("_low.png", "_high.png", "_rgb.png", ".json", ".tiff", ".tif")}
    if scan_id in named:
        for role, candidate in candidates.items():
            if candidate.is_file():
                files[role] = str(candidate.resolve())
        if "low" in files:
            files.pop("tiff", None)  # the pair was read, not the TIFF
    for k, path in enumerate(list(source_files or []) + inputs):
        resolved = str(Path(path).resolve())
        if resolved not in files.values():
            files[f"input{k}"] = resolved
    return files


def _resolve(path_text: str, bases: list[Path]) -> Path:
    path = Path(path_text).expanduser()
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).exists():
            return (base / path).resolve()
    return (bases[0] / path).resolve()


def _check_line(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ParcelscanError(f"{where}: a verdict line must be a JSON object")
    if not isinstance(data.get("scan_id"), str) or not data["scan_id"]:
        raise ParcelscanError(f"{where}: missing scan_id")
    if data.get("verdict") not in VERDICTS:
        raise ParcelscanError(f"{where}: verdict must be one of {VERDICTS}, got {data.get('verdict')!r}")
    inputs = data.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(p, str) for p in inputs):
        raise ParcelscanError(f"{where}: inputs must be a list of file paths")
    for key in ("score", "threshold"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ParcelscanError(f"{where}: {key} must be a number or null, got {value!r}")
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise ParcelscanError(f"{where}: model must be an object {{name, version, sha256}}")
    return data


def read_verdict_lines(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ParcelscanError(f"results file not found: {path}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ParcelscanError(f"cannot read results file {path}: {error}") from error
    lines = text.split("\n")
    incomplete = False
    if lines and lines[-1] != "":
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            incomplete = True
            lines = lines[:-1]
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise ParcelscanError(f"{where}: not valid JSON ({error.msg})") from error
        out.append((number, _check_line(data, where)))
    return out, incomplete


def _read_heatmap(path: Path) -> None:
    png_header(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise ScanReadError(f"{path}: unreadable heatmap image")


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def identity_key(data: dict[str, Any], inputs: list[Path]) -> str:
    """The inputs part of an item's identity: the station's content digest, else the sorted paths' digest."""
    if is_sha256(data.get("inputs_sha256")):
        return str(data["inputs_sha256"])
    return hashlib.sha256(json.dumps(sorted(str(p) for p in inputs)).encode()).hexdigest()


def _finite_or_none(data: dict[str, Any], key: str, problems: list[str]) -> float | None:
    value = data.get(key)
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{key} {'NaN' if math.isnan(value) else 'Infinity' if value > 0 else '-Infinity'} "
                        "in the verdict line (not a finite number)")
        return None
    return value


def _prepare(data: dict[str, Any], inputs: list[Path], bases: list[Path], report: IngestReport,
             named: list[Path] | None = None) -> dict[str, Any]:
    """One item's row. ``inputs``: the scan files among ``named`` (every file the line names, in order)."""
    model = data.get("model") or {}
    problems: list[str] = []
    score, threshold = _finite_or_none(data, "score", problems), _finite_or_none(data, "threshold", problems)
    verdict_error = "; ".join([data["error"]] * bool(data.get("error")) + problems) or None
    row: dict[str, Any] = {
        "scan_id": data["scan_id"], "model_sha256": str(model.get("sha256") or ""),
        "inputs": json.dumps([str(p) for p in inputs]),
        "inputs_sha256": identity_key(data, inputs),
        "verdict": data["verdict"], "score": score, "threshold": threshold,
        "model_name": model.get("name"), "model_version": model.get("version"),
        "station": data.get("station"), "scanned_at": data.get("scanned_at"),
        "reasons": json.dumps(data.get("reasons") or []), "verdict_error": verdict_error,
        "verdict_line": json.dumps(data, sort_keys=True), "scan_files": "{}", "scan_error": None,
        "scan_kind": None, "scan_rows": None, "scan_cols": None, "scan_meta": "{}", "heatmap_path": None,
        "heatmap_sha256": None, "heatmap_error": None,
    }
    try:
        if not inputs:
            raise ScanReadError("the verdict names no input files")
        station_digest = data.get("inputs_sha256")
        if is_sha256(station_digest):
            now_digest = inputs_digest(named if named is not None else inputs)
            if now_digest is not None and now_digest != station_digest:
                raise ScanReadError("the input files changed since the station inspected them (their contents "
                                    "no longer match the verdict's inputs_sha256)")
        scan = load_scan_any(inputs[0])
        files = scan_files(inputs[0], scan, inputs)
        row["scan_files"] = json.dumps({role: {"path": p, "sha256": sha256_file(Path(p))} for role, p in files.items()},
                                       sort_keys=True)
        row["scan_rows"], row["scan_cols"] = (int(v) for v in scan.shape)
        row["scan_kind"] = getattr(scan, "kind", "dual_energy")
        row["scan_meta"] = json.dumps(scan.meta, sort_keys=True, default=str)
    except (ScanReadError, OSError) as error:
        row["scan_error"] = str(error)
        report.scan_errors += 1
    if data.get("heatmap"):
        heatmap = _resolve(str(data["heatmap"]), bases)
        try:
            _read_heatmap(heatmap)
            row["heatmap_path"], row["heatmap_sha256"] = str(heatmap), sha256_file(heatmap)
        except (ScanReadError, OSError) as error:
            row["heatmap_error"] = str(error)
            report.heatmap_errors += 1
    return row


def ingest(conn: sqlite3.Connection, results_path: Path, actor: str = "cli", tip=None) -> IngestReport:
    """Queue a verdict file. ``tip``: a ``review.tip.TipContext`` to add threat image projections."""
    results_path = Path(results_path)
    report = IngestReport()
    lines, report.incomplete_last_line = read_verdict_lines(results_path)
    bases = [Path.cwd(), results_path.resolve().parent]
    prepared = []
    for number, data in lines:
        if data["verdict"] not in FLAGGED_VERDICTS:
            report.not_flagged += 1
            continue
        inputs = [_resolve(p, bases) for p in data.get("inputs", [])]
        reasons = {path: non_scan_reason(path) for path in inputs}
        if inputs and all(reasons.values()):
            report.not_scans += 1
            report.messages.append(f"{results_path}:{number}: not queued: " + "; ".join(reasons.values()))
            continue
        prepared.append(_prepare(data, [p for p in inputs if reasons[p] is None], bases, report, inputs))
    # test images (review.tip.TipContext: it calls back into _prepare, so ingest never imports it)
    other_judge = tip.other_judge if tip is not None else 0
    no_advance_data = tip.no_advance_data if tip is not None else 0
    made = tip.projections(conn, prepared, lambda line, inputs: _prepare(line, inputs, bases, IngestReport(), inputs),
                           {str(data.get("scan_id")) for _, data in lines}) if tip is not None else []
    report.tip_other_judge = tip.other_judge - other_judge if tip is not None else 0
    report.tip_no_advance_data = tip.no_advance_data - no_advance_data if tip is not None else 0
    rows: list[tuple[dict[str, Any], Any]] = [(row, None) for row in prepared]
    for projection, row in made:  # a test image goes anywhere among the batch: its item id tells nothing
        if row is not None:
            rows.insert(int(tip.rng.integers(len(rows) + 1)), (row, projection))
    now = utc_now()
    with transaction(conn):
        for row, projection in rows:
            row = {**row, "ingested_at": now, "ingested_from": str(results_path.resolve())}
            columns = ", ".join(row)
            cursor = conn.execute(f"INSERT OR IGNORE INTO items ({columns}) VALUES ({', '.join('?' * len(row))})",
                                  list(row.values()))
            if projection is not None:
                if cursor.rowcount == 1:
                    tip.record(conn, projection, int(cursor.lastrowid))
                    report.tip_queued += 1
                continue
            if cursor.rowcount == 1:
                report.added += 1
            else:
                report.duplicates += 1
                report.scan_errors -= row["scan_error"] is not None
                report.heatmap_errors -= row["heatmap_error"] is not None
        for projection, row in made:
            if row is None:
                tip.record(conn, projection, None)
                report.tip_model_misses += 1
        audit(conn, None, actor, "ingest", detail={"file": str(results_path.resolve()), "added": report.added,
                                                   "duplicates": report.duplicates})
    return report
