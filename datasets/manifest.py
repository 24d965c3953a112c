"""The manifest: one JSON line per scan, the contract between simulator, data tools, training and review.

Fields (see README "Data formats"):

``scan_id``, ``files`` (name → file name relative to the manifest's directory: ``low``, ``high``,
``rgb``, ``sidecar``, optionally ``tiff``), ``label`` (``clear`` | ``suspect``), ``scenario`` (a
concealment scenario or ``none``), ``material`` (target material or null), ``mass_g``,
``mass_fraction``, ``mask`` (8-bit PNG of the concealed powder's pixels, relative path, or null),
``lookalike`` (the benign look-alike kind in a clear scan, or null), ``parcel_id`` (scans of one
physical parcel share it; splits group by it), ``split`` (``train`` | ``val`` | ``test`` | null),
``source`` (``simulated`` | ``station`` | ``review``), ``provenance`` (free-form object: generator
version, seed, profile, inspector, station; imports add ``original_path``, ``sha256``, ``imported_at``),
``kind`` (``dual_energy``: a low/high pair, or ``pseudo_color``: only an 8-bit RGB image, ``files.rgb``),
``twin_of`` (the targets whose dual-energy twin the scan's look-alike fill is, from the simulator's ground truth
and ``physics.signature``: a list of target names, ``[]`` for non-twins and every suspect; ``null`` = unknown, as
for real and imported scans), ``declaration_honest`` (the scan's customs declaration says what the parcel holds;
null without a declaration or when unknown) and ``declaration_names_twin`` (a suspect declared as a benign twin
of its powder, e.g. barium sulphate; null for clear parcels and without a declaration) — see
``simulator.declarations``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parcelscan.errors import ParcelscanError

MANIFEST_NAME = "manifest.jsonl"
LABELS = ("clear", "suspect")
SOURCES = ("simulated", "station", "review")
SPLITS = ("train", "val", "test")
KINDS = ("dual_energy", "pseudo_color")


@dataclass
class ManifestRecord:
    scan_id: str
    files: dict[str, str]
    label: str
    scenario: str = "none"
    material: str | None = None
    mass_g: float | None = None
    mass_fraction: float | None = None
    mask: str | None = None
    lookalike: str | None = None
    parcel_id: str = ""
    split: str | None = None
    source: str = "simulated"
    provenance: dict[str, Any] = field(default_factory=dict)
    kind: str = "dual_energy"
    twin_of: list[str] | None = None  # None: unknown (real or imported scans)
    declaration_honest: bool | None = None  # None: no declaration, or unknown
    declaration_names_twin: bool | None = None  # suspects declared as a benign twin; None for clear parcels

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def record_files(record: ManifestRecord) -> list[str]:
    """The file names (relative to the manifest's directory) a manifest line names: its files and its mask."""
    return list(dict.fromkeys([*record.files.values(), *([record.mask] if record.mask else [])]))


def append_records(path: Path, records: list[ManifestRecord]) -> None:
    """Append whole lines with one write + fsync: a kill leaves at most a missing line, never a torn one
    that validates (readers skip a final line without its newline)."""
    if not records:
        return
    data = "".join(r.to_json() + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(path: Path, records: list[ManifestRecord]) -> None:
    """Rewrite a whole manifest atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.to_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def record_from_dict(data: dict[str, Any], where: str = "manifest") -> ManifestRecord:
    """Validate one parsed line; every problem is a ParcelscanError naming the line."""
    if not isinstance(data, dict):
        raise ParcelscanError(f"{where}: a manifest line must be a JSON object")
    known = set(ManifestRecord.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ParcelscanError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for required in ("scan_id", "files", "label"):
        if required not in data:
            raise ParcelscanError(f"{where}: missing field {required!r}")
    if not isinstance(data["scan_id"], str) or not data["scan_id"]:
        raise ParcelscanError(f"{where}: scan_id must be a non-empty string")
    if not isinstance(data["files"], dict) or not all(isinstance(v, str) for v in data["files"].values()):
        raise ParcelscanError(f"{where}: files must map names to file names")
    if data["label"] not in LABELS:
        raise ParcelscanError(f"{where}: label must be one of {LABELS}, got {data['label']!r}")
    if data.get("split") not in (None, *SPLITS):
        raise ParcelscanError(f"{where}: split must be one of {SPLITS} or null, got {data.get('split')!r}")
    if data.get("source", "simulated") not in SOURCES:
        raise ParcelscanError(f"{where}: source must be one of {SOURCES}, got {data.get('source')!r}")
    if data.get("kind", "dual_energy") not in KINDS:
        raise ParcelscanError(f"{where}: kind must be one of {KINDS}, got {data.get('kind')!r}")
    kind = data.get("kind", "dual_energy")
    needed = ("low", "high") if kind == "dual_energy" else ("rgb",)
    if kind == "dual_energy" and "tiff" in data["files"]:
        needed = ("tiff",)
    missing = [name for name in needed if not data["files"].get(name)]
    if missing:
        raise ParcelscanError(f"{where}: files needs {' and '.join(repr(m) for m in missing)} for a {kind} scan")
    for name in ("mask", "parcel_id", "scenario"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ParcelscanError(f"{where}: {name} must be a string")
    if not isinstance(data.get("provenance", {}), dict):
        raise ParcelscanError(f"{where}: provenance must be a JSON object")
    for number in ("mass_g", "mass_fraction"):
        value = data.get(number)
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise ParcelscanError(f"{where}: {number} must be a number >= 0 or null")
    twin_of = data.get("twin_of")
    if twin_of is not None and (not isinstance(twin_of, list) or not all(isinstance(t, str) and t for t in twin_of)):
        raise ParcelscanError(f"{where}: twin_of must be a list of target names or null")
    if twin_of and data["label"] == "suspect":
        raise ParcelscanError(f"{where}: a suspect is nobody's twin (twin_of must be [] or null)")
    if data["label"] == "suspect" and data.get("scenario", "none") == "none" and data.get("source") == "simulated":
        raise ParcelscanError(f"{where}: a simulated suspect needs its scenario")
    for flag in ("declaration_honest", "declaration_names_twin"):
        if data.get(flag) is not None and not isinstance(data[flag], bool):
            raise ParcelscanError(f"{where}: {flag} must be true, false or null")
    record = ManifestRecord(**data)
    if record.scenario is None:
        record.scenario = "none"
    if not record.parcel_id:
        record.parcel_id = record.scan_id
    return record


def manifest_path(path: Path) -> Path:
    """A manifest file, or ``manifest.jsonl`` inside a directory."""
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() else path


def read_manifest_lenient(path: Path) -> tuple[list[ManifestRecord], list[str]]:
    """Like ``read_manifest`` but collects every bad line instead of stopping at the first: (records,
    problems). ``data check`` uses it to report all of them."""
    path = manifest_path(path)
    records, problems = [], []
    for number, line in _manifest_lines(path):
        try:
            records.append(_parse_line(line, f"{path}:{number}"))
        except ParcelscanError as error:
            problems.append(str(error))
    return records, problems


def _manifest_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ParcelscanError(f"manifest not found: {path}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ParcelscanError(f"unreadable manifest {path}: {error}") from error
    lines = text.split("\n")
    if lines and lines[-1] != "":
        lines = lines[:-1]  # torn last line from an interrupted writer
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _parse_line(line: str, where: str) -> ManifestRecord:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise ParcelscanError(f"{where}: not valid JSON ({error.msg})") from error
    return record_from_dict(data, where)


def read_manifest(path: Path) -> list[ManifestRecord]:
    """Read and validate a manifest; a final line without newline (a torn append) is ignored."""
    path = manifest_path(path)
    return [_parse_line(line, f"{path}:{number}") for number, line in _manifest_lines(path)]
