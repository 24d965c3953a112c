"""DICOS (NEMA IIC 1, DICOM for security): a dual-energy scan as two Digital X-Ray "for processing" objects.

Representation. DICOS keeps one image per DX object and tells the energies of a multi-energy scan
apart per *series*: every energy is its own series (Series Energy, Series Energy Description), all
series of one scan share the Scan Instance UID (the DICOM Study Instance UID tag). So a scan
``<scan_id>`` is written as two files, ``<scan_id>_low.dcs`` and ``<scan_id>_high.dcs``; each is a
single-frame, 16-bit, uncompressed (Explicit VR Little Endian) DX object of SOP class
**DICOS Digital X-Ray Image Storage - For Processing, 1.2.840.10008.5.1.4.1.1.501.2.2**
(For Presentation is ...501.2.1 and is refused on reading: it holds display-processed pixels, not
transmission). UIDs checked against pydicom 3.0.2's UID dictionary. Reading pairs the two objects by
Scan Instance UID (and Series View, when present), so foreign files need not follow our names.

Attributes written (W) and read (R); tags follow DICOM PS3.6, DICOS-only tags (group 6100 and the
DICOS energy attributes) follow the DICOS headers of Stratovan's SDICOS toolkit (the TSA reference
implementation), as the NEMA text itself was not at hand:

=================================== =========== ===== ========================================================
Attribute                           Tag         W/R   Value / use
=================================== =========== ===== ========================================================
SOP Class UID                       (0008,0016) W R   1.2.840.10008.5.1.4.1.1.501.2.2 (also accepted on read:
                                                      DICOM DX For Processing 1.2.840.10008.5.1.4.1.1.1.1.1)
SOP Instance UID                    (0008,0018) W     derived from scan id, energy and a pixel hash
                                                      (deterministic: the same scan converts to the same UIDs)
Modality                            (0008,0060) W R   "DX" (required on read)
Presentation Intent Type            (0008,0068) W R   "FOR PROCESSING" (anything else refused)
Image Type                          (0008,0008) W     ORIGINAL \\ PRIMARY
Specific Character Set              (0008,0005) W     ISO_IR 192 (UTF-8)
Scan (Study) Date / Time            (0008,0020) W     time of writing; also Series and Content Date / Time
Scan Description                    (0008,1030) W     the scan id
Manufacturer / Model / Software     (0008,0070) W     "parcelscan" / scanner profile name / package version
Scan Instance UID (Study Inst. UID) (0020,000D) W R   shared by both energies; pairs the objects on read
Series Instance UID                 (0020,000E) W     one per energy
Series Number / Instance Number     (0020,0011) W     1 low, 2 high / 1
Series Description                  (0008,103E) W     "low energy" / "high energy"
Series View                         (6100,0024)   R   optional; objects pair within one view
Series Energy                       (6100,0030) W R   US: 1 low, 2 high (fallback when no description)
Series Energy Description           (6100,0031) W R   LO: "LOW" / "HIGH" (checked first on read)
Number of Energies in Scan          (6100,0032) W     US: 2
Frame of Reference UID              (0020,0052) W     shared by both energies (same geometry)
OOI ID (Patient ID)                 (0010,0020) W R   meta ``parcel_id`` if set, else the scan id (max 64
                                                      chars); read as meta ``ooi_id``, and as the scan id
                                                      of a foreign object
OOI Type / OOI Type Descriptor      (4010,1042) W     "CARGO" (DICOS has no parcel type; mail is screened as
                                                      cargo) / "postal parcel"
Rows / Columns                      (0028,0010) W R   image size; size limits checked before pixels are read
Number of Frames                    (0028,0008)   R   absent or 1 (multi-frame DX is refused)
Samples per Pixel                   (0028,0002) W R   1
Photometric Interpretation          (0028,0004) W R   MONOCHROME2 (65535 = unattenuated = white)
Bits Allocated / Stored / High Bit  (0028,0100) W R   16 / 16 / 15 (other depths refused)
Pixel Representation                (0028,0103) W R   0 (unsigned; signed refused)
Pixel Intensity Relationship / Sign (0028,1040) W R   LIN / +1: linear air-normalised transmission (LOG or -1
                                                      refused)
Rescale Intercept / Slope / Type    (0028,1052) W R   0 / 1 / "US" (any other rescale refused)
Presentation LUT Shape              (2050,0020) W     IDENTITY
Lossy Image Compression             (0028,2110) W     "00"
Burned In Annotation                (0028,0301) W     "NO"
Imager Pixel Spacing                (0018,1164) W R   [row, column] = [pitch, pitch] mm from meta
                                                      ``pixel_pitch_mm``; read into ``pixel_pitch_mm``
                                                      (column) and ``row_pitch_mm`` (if different)
Image Orientation / Position        (0020,0037) W     [1,0,0, 0,1,0] (columns = detector channels, rows =
                                                      belt travel) / [0,0,0]
KVP                                 (0018,0060) W R   tube kV from meta ``tube_kv`` or the scan's profile;
                                                      read into ``tube_kv`` (foreign objects)
Detector Type / Configuration       (0018,7004) W     SCINTILLATOR / SANDWICH (dual-layer), when the profile
                                                      is known
Low / High Energy Detectors         (4010,0001) W     INTEGRATING / INTEGRATING, when the profile is known
Private "PARCELSCAN 1" scan JSON    (0011,1000) W R   UT: {"format", "scan_id", **meta}: every metadata key
                                                      survives a round trip; absent in foreign files
Pixel Data                          (7FE0,0010) W R   OW, uncompressed little-endian uint16; compressed
                                                      transfer syntaxes need a pydicom decoder plugin
=================================== =========== ===== ========================================================
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import parcelscan
from parcelscan.datasets.physics.profile import PROFILES_DIR, load_profile
from parcelscan.datasets.scans.scanfile import (
    SCAN_FORMAT,
    BitDepthError,
    IncompleteScanError,
    Scan,
    UnsupportedScanError,
    check_file,
    check_scan_id,
    check_size,
    decoding,
    scan_meta,
    validate_pair,
)
from parcelscan.errors import ScanReadError

DICOS_DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.501.2.2"
DICOS_DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.501.2.1"
DICOM_DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
ACCEPTED_SOP_CLASSES = (DICOS_DX_FOR_PROCESSING, DICOM_DX_FOR_PROCESSING)
DICOS_EXTENSIONS = (".dcs", ".dcm", ".dicom")
WRITE_EXTENSION = ".dcs"

TAG_SERIES_VIEW = 0x61000024
TAG_SERIES_ENERGY = 0x61000030
TAG_SERIES_ENERGY_DESCRIPTION = 0x61000031
TAG_NUMBER_OF_ENERGIES = 0x61000032
PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "PARCELSCAN 1"
PRIVATE_SCAN_JSON = 0x00  # element offset in the private block: tag (0011,1000)
ENERGY_NUMBER = {"low": 1, "high": 2}


@dataclass
class DicosHeader:
    """What a DX object says about itself, validated, without its pixels."""

    path: Path
    scan_uid: str
    energy: str | None  # "low" | "high" | None (no energy label)
    view: int | None
    rows: int
    columns: int
    ooi_id: str
    scan_json: dict[str, Any] | None
    meta: dict[str, Any] = field(default_factory=dict)  # from standard attributes (foreign objects)

    @property
    def scan_id(self) -> str:
        if self.scan_json and isinstance(self.scan_json.get("scan_id"), str):
            return self.scan_json["scan_id"]
        base = self.ooi_id or self.scan_uid or _strip_energy(self.path.stem)
        return base if self.view is None else f"{base}_view{self.view}"


def dicos_paths(directory: Path, scan_id: str) -> tuple[Path, Path]:
    """(low, high) file paths of a scan written by ``write_dicos``."""
    return (directory / f"{scan_id}_low{WRITE_EXTENSION}", directory / f"{scan_id}_high{WRITE_EXTENSION}")


def _strip_energy(stem: str) -> str:
    for energy in ENERGY_NUMBER:
        if stem.endswith(f"_{energy}"):
            return stem[: -len(energy) - 1]
    return stem


# --- writing -------------------------------------------------------------------------------------------
def _profile_facts(meta: dict[str, Any]) -> dict[str, Any]:
    """Tube kV and whether the detector is known, from meta or the scan's shipped profile."""
    facts: dict[str, Any] = {}
    name = meta.get("profile")
    if isinstance(name, str) and (PROFILES_DIR / f"{name}.toml").exists():
        profile = load_profile(name)
        facts = {"tube_kv": profile.tube_kv, "model": profile.name, "detector_known": True}
    if isinstance(meta.get("tube_kv"), (int, float)) and not isinstance(meta.get("tube_kv"), bool):
        facts["tube_kv"] = float(meta["tube_kv"])
    return facts


def _ds_number(value: float):
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


def _dx_dataset(scan: Scan, energy: str, image: np.ndarray, uids: dict[str, str], now: datetime):
    """One DX "for processing" object (see the module table)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = DICOS_DX_FOR_PROCESSING
    file_meta.MediaStorageSOPInstanceUID = uids[energy]
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    file_meta.ImplementationVersionName = f"PARCELSCAN_{parcelscan.__version__}"[:16]
    ds = FileDataset("", {}, file_meta=file_meta, preamble=b"\0" * 128)
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    facts = _profile_facts(scan.meta)

    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = DICOS_DX_FOR_PROCESSING
    ds.SOPInstanceUID = uids[energy]
    for prefix in ("Study", "Series", "Content"):
        setattr(ds, f"{prefix}Date", date)
        setattr(ds, f"{prefix}Time", time)
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PROCESSING"
    ds.Manufacturer = "parcelscan"
    if facts.get("model"):
        ds.ManufacturerModelName = str(facts["model"])[:64]
    ds.SoftwareVersions = parcelscan.__version__
    ds.StudyDescription = scan.scan_id[:64]
    ds.SeriesDescription = f"{energy} energy"
    # object of inspection
    parcel_id = scan.meta.get("parcel_id")
    ds.PatientID = str(parcel_id if isinstance(parcel_id, str) and parcel_id else scan.scan_id)[:64]
    ds.OOIType = "CARGO"
    ds.OOITypeDescriptor = "postal parcel"
    # scan, series, frame of reference
    ds.StudyInstanceUID = uids["scan"]
    ds.SeriesInstanceUID = uids[f"series-{energy}"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.SeriesNumber = ENERGY_NUMBER[energy]
    ds.InstanceNumber = 1
    ds.add_new(TAG_SERIES_ENERGY, "US", ENERGY_NUMBER[energy])
    ds.add_new(TAG_SERIES_ENERGY_DESCRIPTION, "LO", energy.upper())
    ds.add_new(TAG_NUMBER_OF_ENERGIES, "US", 2)
    # acquisition and detector
    if "tube_kv" in facts:
        ds.KVP = _ds_number(facts["tube_kv"])
    pitch = scan.meta.get("pixel_pitch_mm")
    if isinstance(pitch, (int, float)) and not isinstance(pitch, bool) and pitch > 0:
        ds.ImagerPixelSpacing = [_ds_number(pitch), _ds_number(pitch)]
    if facts.get("detector_known"):
        ds.DetectorType = "SCINTILLATOR"
        ds.DetectorConfiguration = "SANDWICH"
        ds.LowEnergyDetectors = "INTEGRATING"
        ds.HighEnergyDetectors = "INTEGRATING"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    # pixels
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    scan_json = json.dumps({"format": SCAN_FORMAT, "scan_id": scan.scan_id, **scan_meta(scan.meta)},
                           sort_keys=True, ensure_ascii=False)
    ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True).add_new(PRIVATE_SCAN_JSON, "UT", scan_json)
    ds.PixelData = np.ascontiguousarray(image, dtype="<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def write_dicos(scan: Scan, directory: Path) -> list[Path]:
    """Write ``<scan_id>_low.dcs`` and ``<scan_id>_high.dcs`` (atomically). Returns [low, high]."""
    from pydicom.uid import generate_uid

    check_scan_id(scan.scan_id)
    if scan.kind != "dual_energy":
        raise ValueError(f"scan {scan.scan_id}: a pseudo-colour scan has no energies to write as DICOS DX")
    validate_pair(scan.low, scan.high, scan.scan_id)
    digest = hashlib.sha256(scan.low.tobytes() + scan.high.tobytes() + repr(scan.shape).encode()).hexdigest()
    uids = {part: generate_uid(entropy_srcs=[scan.scan_id, digest, part])
            for part in ("scan", "frame", "low", "high", "series-low", "series-high")}
    now = datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for energy, image, path in zip(("low", "high"), (scan.low, scan.high), dicos_paths(directory, scan.scan_id),
                                   strict=True):
        ds = _dx_dataset(scan, energy, image, uids, now)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        paths.append(path)
    return paths


# --- reading -------------------------------------------------------------------------------------------
def _raw_value(ds, tag: int) -> Any:
    """An element's value; DICOS-only tags read from an implicit-VR file arrive as raw bytes ('UN')."""
    if tag not in ds:
        return None
    return ds[tag].value


def _as_int(value: Any) -> int | None:
    if value is None or value == b"" or value == "":
        return None
    if isinstance(value, bytes):
        return int.from_bytes(value[:2], "little") if len(value) >= 2 else None
    return int(value)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip("\0 ")
    return str(value).strip()


def _energy_of(ds) -> str | None:
    description = _as_text(_raw_value(ds, TAG_SERIES_ENERGY_DESCRIPTION)).upper()
    if "LOW" in description and "HIGH" not in description:
        return "low"
    if "HIGH" in description and "LOW" not in description:
        return "high"
    number = _as_int(_raw_value(ds, TAG_SERIES_ENERGY))
    return {1: "low", 2: "high"}.get(number) if number is not None else None


def _scan_json(ds) -> dict[str, Any] | None:
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        value = _as_text(block[PRIVATE_SCAN_JSON].value)
    except KeyError:
        return None
    try:
        data = json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SCAN_FORMAT else None


def _standard_meta(ds) -> dict[str, Any]:
    """Metadata of a foreign object from standard attributes."""
    meta: dict[str, Any] = {}
    spacing = ds.get("ImagerPixelSpacing")
    if spacing is not None and len(spacing) == 2 and all(float(s) > 0 for s in spacing):
        row, column = float(spacing[0]), float(spacing[1])
        meta["pixel_pitch_mm"] = column
        if row != column:
            meta["row_pitch_mm"] = row
    if ds.get("KVP") not in (None, ""):
        meta["tube_kv"] = float(ds.KVP)
    if ds.get("PatientID"):
        meta["ooi_id"] = str(ds.PatientID)
    return meta


def _require(condition: bool, error: type[ScanReadError], message: str) -> None:
    if not condition:
        raise error(message)


def _validate_header(path: Path, ds) -> DicosHeader:
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if not sop_class and "MediaStorageSOPClassUID" in getattr(ds, "file_meta", {}):
        sop_class = str(ds.file_meta.MediaStorageSOPClassUID)
    _require(bool(sop_class), ScanReadError, f"{path}: not a DICOS object (no SOP Class UID)")
    _require(sop_class != DICOS_DX_FOR_PRESENTATION, UnsupportedScanError,
             f"{path}: DICOS DX For Presentation holds display-processed pixels; a DX For Processing object "
             f"({DICOS_DX_FOR_PROCESSING}) is needed")
    _require(sop_class in ACCEPTED_SOP_CLASSES, UnsupportedScanError,
             f"{path}: SOP class {sop_class} is not DICOS Digital X-Ray For Processing ({DICOS_DX_FOR_PROCESSING})")
    _require(str(ds.get("Modality", "")) == "DX", UnsupportedScanError,
             f"{path}: modality {ds.get('Modality', '')!r} is not DX")
    intent = str(ds.get("PresentationIntentType", "") or "")
    _require(intent in ("", "FOR PROCESSING"), UnsupportedScanError,
             f"{path}: presentation intent {intent!r}; a FOR PROCESSING object is needed")
    _require("Rows" in ds and "Columns" in ds, ScanReadError, f"{path}: no Rows/Columns: not an image object")
    rows, columns = int(ds.Rows), int(ds.Columns)
    check_size(path, columns, rows)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _require(frames == 1, UnsupportedScanError,
             f"{path}: multi-frame DX ({frames} frames) is not supported: one object per energy is expected")
    _require(int(ds.get("SamplesPerPixel", 1)) == 1, UnsupportedScanError, f"{path}: colour DX object")
    _require("FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds, BitDepthError,
             f"{path}: float pixel data; 16-bit unsigned transmission is needed")
    bits = (ds.get("BitsAllocated"), ds.get("BitsStored"), ds.get("PixelRepresentation", 0))
    _require(bits[0] == 16 and bits[1] == 16, BitDepthError,
             f"{path}: {bits[1]}-bit pixels stored in {bits[0]} bits; 16-bit transmission is needed")
    _require(bits[2] == 0, BitDepthError, f"{path}: signed pixels; unsigned 16-bit transmission is needed")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    _require(photometric == "MONOCHROME2", UnsupportedScanError,
             f"{path}: photometric interpretation {photometric}; MONOCHROME2 transmission is needed")
    relationship = str(ds.get("PixelIntensityRelationship", "") or "")
    sign = ds.get("PixelIntensityRelationshipSign")
    _require(relationship in ("", "LIN") and sign in (None, "", 1), UnsupportedScanError,
             f"{path}: pixel intensity relationship {relationship or '?'} sign {sign}; linear transmission "
             "(LIN, +1) is needed")
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    _require(slope in (None, "") or float(slope) == 1.0, UnsupportedScanError,
             f"{path}: rescale slope {slope}; raw transmission (slope 1, intercept 0) is needed")
    _require(intercept in (None, "") or float(intercept) == 0.0, UnsupportedScanError,
             f"{path}: rescale intercept {intercept}; raw transmission (slope 1, intercept 0) is needed")
    view = _as_int(_raw_value(ds, TAG_SERIES_VIEW))
    return DicosHeader(path=path, scan_uid=str(ds.get("StudyInstanceUID", "") or ""), energy=_energy_of(ds),
                       view=view, rows=rows, columns=columns, ooi_id=str(ds.get("PatientID", "") or ""),
                       scan_json=_scan_json(ds), meta=_standard_meta(ds))


def read_dicos_header(path: Path) -> DicosHeader:
    """Open a DICOS/DICOM file without its pixel data and validate what it claims to be."""
    import pydicom

    path = check_file(Path(path))
    with decoding(path, "DICOS/DICOM file"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError as error:
            raise ScanReadError(f"{path}: not a DICOM/DICOS file (no DICM header)") from error
        return _validate_header(path, ds)


def read_dicos_pixels(path: Path) -> tuple[DicosHeader, np.ndarray]:
    """Header (validated first: size limits before pixels) and the uint16 image of one DX object."""
    import pydicom

    header = read_dicos_header(path)
    with decoding(path, "DICOS/DICOM file"):
        ds = pydicom.dcmread(path)
        _require("PixelData" in ds, ScanReadError, f"{path}: no pixel data")
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        try:
            pixels = ds.pixel_array
        except Exception as error:
            if syntax is not None and syntax.is_compressed:
                raise UnsupportedScanError(f"{path}: compressed transfer syntax {syntax.name} needs a pydicom "
                                           "decoder plugin that is not installed (or the data are corrupt)") from error
            raise
        expected = header.rows * header.columns * 2
        if syntax is not None and not syntax.is_compressed and len(ds.PixelData) not in (expected, expected + 1):
            raise ScanReadError(f"{path}: pixel data of {len(ds.PixelData)} bytes do not match Rows x Columns "
                                f"({header.rows}x{header.columns}: {expected} bytes)")
    if pixels.shape != (header.rows, header.columns) or pixels.dtype != np.uint16:
        raise ScanReadError(f"{path}: pixel data do not match the header ({pixels.shape}, {pixels.dtype})")
    return header, np.ascontiguousarray(pixels)


def read_dicos_pair(path_a: Path, path_b: Path) -> Scan:
    """Two DX objects of one scan (any order) → a dual-energy Scan; energies, scan and view must match."""
    header_a, image_a = read_dicos_pixels(path_a)
    header_b, image_b = read_dicos_pixels(path_b)
    for header in (header_a, header_b):
        if header.energy is None:
            raise UnsupportedScanError(f"{header.path}: no energy label (Series Energy 6100,0030/0031): "
                                       "single-energy image: a dual-energy pair is needed")
    if {header_a.energy, header_b.energy} != {"low", "high"}:
        raise ScanReadError(f"{path_a}: {path_b.name} is not its partner: both are {header_a.energy}-energy objects")
    if header_a.scan_uid != header_b.scan_uid or header_a.view != header_b.view:
        raise ScanReadError(f"{path_a}: {path_b.name} belongs to another scan or view "
                            f"(Scan Instance UID {header_a.scan_uid} vs {header_b.scan_uid})")
    (low_header, low), (high_header, high) = sorted(
        [(header_a, image_a), (header_b, image_b)], key=lambda item: item[0].energy != "low")
    validate_pair(low, high, str(low_header.path))
    if low_header.scan_json is not None:
        meta = scan_meta(low_header.scan_json)
    else:
        meta = dict(low_header.meta)
        meta["scan_instance_uid"] = low_header.scan_uid
    return Scan(low_header.scan_id, low, high, meta,
                source_files=[str(low_header.path), str(high_header.path)])


def find_partner(header: DicosHeader) -> Path:
    """The other energy's object: by our file naming first, else by Scan Instance UID in the same directory."""
    if header.energy is None:
        raise UnsupportedScanError(f"{header.path}: no energy label (Series Energy 6100,0030/0031): "
                                   "single-energy image: a dual-energy pair is needed")
    want = "high" if header.energy == "low" else "low"
    path = header.path
    stem = path.stem
    if stem.endswith(f"_{header.energy}"):
        candidate = path.with_name(f"{stem[: -len(header.energy)]}{want}{path.suffix}")
        if candidate.is_file():
            return candidate
    for other in sorted(path.parent.iterdir()):
        if other == path or other.suffix.lower() not in DICOS_EXTENSIONS or other.name.startswith("."):
            continue
        try:
            candidate_header = read_dicos_header(other)
        except ScanReadError:
            continue
        if (candidate_header.scan_uid == header.scan_uid and candidate_header.view == header.view
                and candidate_header.energy == want):
            return other
    raise IncompleteScanError(f"{path}: the {want}-energy DX object of this scan (Scan Instance UID "
                              f"{header.scan_uid or '?'}) is missing from {path.parent}")


def read_dicos(path: Path) -> Scan:
    """One DX object of a scan → the whole scan (its partner found by ``find_partner``)."""
    header = read_dicos_header(path)
    return read_dicos_pair(header.path, find_partner(header))
