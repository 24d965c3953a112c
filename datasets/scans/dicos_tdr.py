"""DICOS (NEMA IIC 1) Threat Detection Report: what the station concluded about one scan, as a DICOS object.

A TDR (SOP class **1.2.840.10008.5.1.4.1.1.501.3**, modality ``TDR``) carries no pixels: it states the
alarm decision of one algorithm (TDR Type ``MACHINE``) about one object of inspection, lists the
potential threat objects (PTOs) it found with their region of interest in the referenced images, and
says when the algorithm could not decide (Abort Flag / Abort Reason). Images are referenced by SOP
Instance UID: a TDR always comes with the DX objects it talks about (``dicos.write_dicos`` writes them
for scans that did not arrive as DICOS).

This module is the file format only: it knows nothing about models, heatmaps or verdicts. ``inference.tdr``
maps a verdict and the inspector's outputs to a :class:`TdrReport`; ``write_tdr`` turns that into a file;
``dx_reference`` reads what a TDR needs to know about a DX object.

Attributes written, module by module (DICOS V03 section / table numbers as cited by Stratovan's SDICOS
toolkit headers, the TSA reference implementation; the NEMA text itself was not at hand). Every keyword,
tag and VR below is pydicom 3.0.2's data dictionary entry (DICOM PS3.6 carries the DICOS attributes);
the defined terms are the SDICOS enumerations:

================================== =========== ==== ======================================================
Attribute                          Tag         VR   Value
================================== =========== ==== ======================================================
*SOP Common*
SOP Class UID                      (0008,0016) UI   1.2.840.10008.5.1.4.1.1.501.3
SOP Instance UID                   (0008,0018) UI   derived from scan UID, model sha256 and decision time
Specific Character Set             (0008,0005) CS   ISO_IR 192
*Object of Inspection*
OOI ID (Patient ID)                (0010,0020) LO   the referenced DX objects' OOI ID, else the scan id
OOI Type / OOI Type Descriptor     (4010,1042) CS   CARGO / "postal parcel" (as the DX objects)
*General Scan (Study)*
Scan Instance UID (Study Inst.)    (0020,000D) UI   the referenced DX objects' Scan Instance UID
Scan (Study) Date / Time           (0008,0020) DA   the DX objects', else the alarm decision time
*TDR Series (12.1, Table 66)*
Modality                           (0008,0060) CS   TDR
Series Instance UID / Number       (0020,000E) UI   new per report / 3 (DX low 1, high 2)
*General Equipment*
Manufacturer / Software Versions   (0008,0070) LO   "parcelscan" / package version; Station Name if known
*General Report (12.3, Table 68)*
Instance Number                    (0020,0013) IS   1
Content Date / Time                (0008,0023) DA   time of writing
*Threat Detection Report (12.4, Table 69)*
TDR Type                           (4010,1027) CS   MACHINE
Alarm Decision                     (4010,1031) CS   ALARM | CLEAR | UNKNOWN (aborted: never CLEAR)
Alarm Decision Time                (4010,102B) DT   the verdict's ``scanned_at`` (UTC)
Abort Flag                         (4010,1024) CS   SUCCESS | ABORT
Abort Reason                       (4010,1021) CS   when ABORT: INCOMPLETE_SCAN | UNKNOWN_DATATYPE | FAILED_RECON
Threat Detection Algorithm and     (4010,1029) LO   "parcelscan", "<model name> <version>", then pairs:
Version                                             "model_sha256", <hex>, ["policy_sha256", <hex>],
                                                    "threshold", <T> or "none" (LO holds 64 characters, so a
                                                    sha256 is a value of its own; the threshold comes last so
                                                    that the element's even-length padding never lands on a
                                                    64-character digest)
Number of Total / Alarm Objects    (4010,1033) US   number of PTOs / of those that raised the alarm
Total Processing Time              (4010,1069) FL   ms, the verdict's latency
*Threat Sequence (12.5, Table 70)*
Threat Sequence                    (4010,1011) SQ   one item per PTO (present when there is a PTO)
 Potential Threat Object ID        (4010,1010) US   1, 2, ...
 ATD Assessment Sequence           (4010,1038) SQ   one item:
  Threat Category                  (4010,1012) CS   CONTRABAND (powder) | ANOMALY (shield)
  Threat Category Description      (4010,1013) LT   what the region is, in words
  ATD Ability Assessment           (4010,1014) CS   NO_INTERFERENCE | SHIELD
  ATD Assessment Flag              (4010,1015) CS   THREAT | UNKNOWN (a shield: what is behind is unknown)
  ATD Assessment Probability       (4010,1016) FL   0-1, when the algorithm has one
 TIP Type                          (4010,1039) CS   when the report states one (TIP composites)
*Baggage-Specific TDR Details (12.5.1, Table 71)*
 PTO Representation Sequence       (4010,1037) SQ   one item:
  Referenced Instance Sequence     (0008,114A) SQ   every image object of the scan (class + instance UID)
  Threat ROI Voxel Sequence        (4010,1001) SQ   one item:
   Threat ROI Base                 (4010,1004) FL   (column, row, 0) of the box's first pixel
   Threat ROI Extents              (4010,1005) FL   (columns, rows, 0) of the box (2-D image: depth 0)
   Threat ROI Bitmap               (4010,1006) OB   the region's pixels in the box, 1 bit each, row-major,
                                                    least significant bit first (as SDICOS packs it)
  Bounding Polygon                 (4010,101D) FL   the box's two opposite corners (x, y, 0) x 2
  Center of PTO                    (4010,101C) FL   the region's centroid (column, row, 0)
  Mass                             (4010,1017) FL   g, when the report has a mass for the PTO
  Z Effective                      (4010,1019) FL   when the report has one for the PTO
*Private "PARCELSCAN 1"*           (0011,1001) UT   the verdict as JSON (reasons, error text, scores)
================================== =========== ==== ======================================================
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

import parcelscan
from parcelscan.datasets.scans.dicos import PRIVATE_CREATOR, PRIVATE_GROUP
from parcelscan.errors import ScanReadError

DICOS_TDR = "1.2.840.10008.5.1.4.1.1.501.3"
TDR_EXTENSION = ".dcs"
TDR_SERIES_NUMBER = 3
PRIVATE_VERDICT_JSON = 0x01  # element offset in the private block: tag (0011,1001)
LO_MAX = 64

# Defined terms (SDICOS enumerations of the V03 tables)
ALARM, CLEAR, UNKNOWN = "ALARM", "CLEAR", "UNKNOWN"
ALARM_DECISIONS = (ALARM, CLEAR, UNKNOWN)
SUCCESS, ABORT = "SUCCESS", "ABORT"
ABORT_REASONS = ("OVERSIZE_BAG", "CLIPPED_BAG", "INCOMPLETE_SCAN", "FAILED_RECON", "TIMEOUT", "NOT_REVIEWED",
                 "UNKNOWN_DATATYPE", "USER_INTERRUPT", "OUT_OF_BOUNDS")
THREAT_CATEGORIES = ("EXPLOSIVE", "PI", "CONTRABAND", "ANOMALY", "LAPTOP", "OTHER", "PHARMACEUTICAL")
ABILITY_ASSESSMENTS = ("NO_INTERFERENCE", "SHIELD")
ASSESSMENT_FLAGS = ("HIGH_THREAT", "THREAT", "NO_THREAT", "UNKNOWN")


@dataclass
class ImageReference:
    """A DX object a TDR points at: what the Referenced Instance Sequence needs, and where it lies."""

    sop_class_uid: str
    sop_instance_uid: str
    scan_uid: str  # Scan Instance UID (DICOM Study Instance UID)
    ooi_id: str
    path: str
    scan_date: str = ""  # the scan's (study's) date and time: a report in the scan repeats them
    scan_time: str = ""


@dataclass
class Algorithm:
    """The threat detection algorithm: the model file, its operating threshold and any policy file."""

    name: str
    version: str
    sha256: str
    threshold: float | None = None
    policy_sha256: str | None = None

    def values(self) -> list[str]:
        """Threat Detection Algorithm and Version (LO, VM 1-n): manufacturer, version, then key/value pairs."""
        values = ["parcelscan", f"{self.name} {self.version}"[:LO_MAX], "model_sha256", self.sha256]
        if self.policy_sha256:
            values += ["policy_sha256", self.policy_sha256]
        # last, and short: an odd-length element is padded with one space, which a reader counts into its last value
        # (a digest would read as 65 characters, over LO's 64)
        values += ["threshold", "none" if self.threshold is None else f"{self.threshold:.6g}"]
        too_long = [v for v in values if len(v) > LO_MAX]
        if too_long:
            raise ValueError(f"algorithm values longer than {LO_MAX} characters (LO): {too_long}")
        return values


@dataclass
class ThreatObject:
    """One potential threat object: a region of the (2-D) scan, in scan pixels, and its assessment.

    ``mask`` is the region inside its box (bool, ``rows`` x ``cols``); ``alarm`` says whether it raised the
    alarm (counted in Number of Alarm Objects)."""

    row0: int
    col0: int
    mask: np.ndarray
    category: str
    description: str
    flag: str
    ability: str
    alarm: bool = True
    probability: float | None = None
    mass_g: float | None = None
    z_effective: float | None = None

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.ndim != 2 or not self.mask.any() or self.row0 < 0 or self.col0 < 0:
            raise ValueError("a PTO needs a non-empty 2-D region at a non-negative position")
        for value, allowed, what in ((self.category, THREAT_CATEGORIES, "threat category"),
                                     (self.flag, ASSESSMENT_FLAGS, "assessment flag"),
                                     (self.ability, ABILITY_ASSESSMENTS, "ability assessment")):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"assessment probability must be in [0, 1], got {self.probability!r}")

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def cols(self) -> int:
        return int(self.mask.shape[1])

    def centroid_xy(self) -> tuple[float, float]:
        """(column, row) of the region's centre of area, in scan pixels."""
        rows, cols = np.nonzero(self.mask)
        return float(self.col0 + cols.mean()), float(self.row0 + rows.mean())


@dataclass
class TdrReport:
    """Everything one TDR states. Invariants: CLEAR has no PTO and no abort; ALARM has at least one alarm
    PTO; ABORT has a defined reason and is never CLEAR."""

    scan_id: str
    alarm_decision: str
    algorithm: Algorithm
    decision_time: datetime
    images: list[ImageReference] = field(default_factory=list)
    objects: list[ThreatObject] = field(default_factory=list)
    abort_reason: str | None = None
    processing_time_ms: float | None = None
    station: str | None = None
    tip_type: str | None = None
    private: dict[str, Any] | None = None  # stored as JSON in the private block

    def __post_init__(self) -> None:
        if self.alarm_decision not in ALARM_DECISIONS:
            raise ValueError(f"alarm decision must be one of {ALARM_DECISIONS}, got {self.alarm_decision!r}")
        if self.abort_reason is not None and self.abort_reason not in ABORT_REASONS:
            raise ValueError(f"abort reason must be one of {ABORT_REASONS}, got {self.abort_reason!r}")
        if self.alarm_decision == CLEAR and (self.objects or self.abort_reason):
            raise ValueError("a CLEAR report has no potential threat objects and no abort")
        if self.alarm_decision == ALARM and not any(o.alarm for o in self.objects):
            raise ValueError("an ALARM report needs at least one potential threat object that raised it")
        if self.objects and not self.images:
            raise ValueError("potential threat objects need image objects to reference")
        if len(self.objects) > 65535:
            raise ValueError("more potential threat objects than US can count")
        if self.decision_time.tzinfo is None:
            raise ValueError("the decision time must be timezone-aware")

    @property
    def abort_flag(self) -> str:
        return ABORT if self.abort_reason else SUCCESS


def tdr_path(directory: Path, scan_id: str) -> Path:
    """Where ``write_tdr`` puts the report of a scan: ``<scan_id>_tdr.dcs``."""
    return Path(directory) / f"{scan_id}_tdr{TDR_EXTENSION}"


def dicom_datetime(moment: datetime) -> str:
    """A timezone-aware datetime as DICOM DT in UTC: ``YYYYMMDDHHMMSS.FFFFFF+0000``."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S.%f") + "+0000"


def dx_reference(path: Path) -> ImageReference:
    """The UIDs a TDR needs from one DX object (header only, pixels not read)."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as error:
        raise ScanReadError(f"{path}: cannot reference it in a TDR: {error}") from error
    uids = {name: str(ds.get(name, "") or "") for name in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID")}
    missing = [name for name, value in uids.items() if not value]
    if missing:
        raise ScanReadError(f"{path}: cannot reference it in a TDR: no {', '.join(missing)}")
    return ImageReference(uids["SOPClassUID"], uids["SOPInstanceUID"], uids["StudyInstanceUID"],
                          str(ds.get("PatientID", "") or ""), str(path), str(ds.get("StudyDate", "") or ""),
                          str(ds.get("StudyTime", "") or ""))


def _fl3(x: float, y: float, z: float) -> list[float]:
    return [float(x), float(y), float(z)]


def _pto_item(index: int, obj: ThreatObject, images: list[ImageReference], tip_type: str | None) -> Dataset:
    assessment = Dataset()
    assessment.ThreatCategory = obj.category
    assessment.ThreatCategoryDescription = obj.description
    assessment.ATDAbilityAssessment = obj.ability
    assessment.ATDAssessmentFlag = obj.flag
    if obj.probability is not None:
        assessment.ATDAssessmentProbability = float(obj.probability)

    roi = Dataset()
    roi.ThreatROIBase = _fl3(obj.col0, obj.row0, 0)
    roi.ThreatROIExtents = _fl3(obj.cols, obj.rows, 0)
    roi.ThreatROIBitmap = np.packbits(obj.mask.ravel(), bitorder="little").tobytes()

    representation = Dataset()
    references = []
    for image in images:
        reference = Dataset()
        reference.ReferencedSOPClassUID = image.sop_class_uid
        reference.ReferencedSOPInstanceUID = image.sop_instance_uid
        references.append(reference)
    representation.ReferencedInstanceSequence = Sequence(references)
    representation.ThreatROIVoxelSequence = Sequence([roi])
    representation.BoundingPolygon = [*_fl3(obj.col0, obj.row0, 0), *_fl3(obj.col0 + obj.cols, obj.row0 + obj.rows, 0)]
    representation.CenterOfPTO = _fl3(*obj.centroid_xy(), 0)
    if obj.mass_g is not None:
        representation.Mass = float(obj.mass_g)
    if obj.z_effective is not None:
        representation.ZEffective = float(obj.z_effective)

    item = Dataset()
    item.PotentialThreatObjectID = index
    item.ATDAssessmentSequence = Sequence([assessment])
    item.PTORepresentationSequence = Sequence([representation])
    if tip_type:
        item.TIPType = tip_type
    return item


def tdr_dataset(report: TdrReport, now: datetime | None = None) -> FileDataset:
    """The TDR as a pydicom dataset (see the module table)."""
    now = now or datetime.now(UTC)
    decided = dicom_datetime(report.decision_time)
    scan_uid = report.images[0].scan_uid if report.images else \
        generate_uid(entropy_srcs=[report.scan_id, "scan", report.algorithm.sha256, decided])
    entropy = [scan_uid, report.algorithm.sha256, decided]
    sop_uid = generate_uid(entropy_srcs=[*entropy, "tdr"])

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = DICOS_TDR
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    file_meta.ImplementationVersionName = f"PARCELSCAN_{parcelscan.__version__}"[:16]
    ds = FileDataset("", {}, file_meta=file_meta, preamble=b"\0" * 128)

    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = DICOS_TDR
    ds.SOPInstanceUID = sop_uid
    # Object of Inspection
    ooi_id = next((image.ooi_id for image in report.images if image.ooi_id), "") or report.scan_id
    ds.PatientID = ooi_id[:LO_MAX]
    ds.OOIType = "CARGO"
    ds.OOITypeDescriptor = "postal parcel"
    # General Scan (Study)
    ds.StudyInstanceUID = scan_uid
    dated = next((image for image in report.images if image.scan_date), None)
    ds.StudyDate = dated.scan_date if dated else report.decision_time.astimezone(UTC).strftime("%Y%m%d")
    ds.StudyTime = dated.scan_time if dated else report.decision_time.astimezone(UTC).strftime("%H%M%S.%f")
    ds.StudyDescription = report.scan_id[:LO_MAX]
    # TDR Series
    ds.Modality = "TDR"
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*entropy, "tdr-series"])
    ds.SeriesNumber = TDR_SERIES_NUMBER
    ds.SeriesDescription = "parcelscan threat detection report"
    # General Equipment
    ds.Manufacturer = "parcelscan"
    ds.SoftwareVersions = parcelscan.__version__
    if report.station:
        ds.StationName = report.station[:16]
    # General Report
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S.%f")
    # Threat Detection Report
    ds.TDRType = "MACHINE"
    ds.AlarmDecision = report.alarm_decision
    ds.AlarmDecisionTime = dicom_datetime(report.decision_time)
    ds.AbortFlag = report.abort_flag
    if report.abort_reason:
        ds.AbortReason = report.abort_reason
    ds.ThreatDetectionAlgorithmAndVersion = report.algorithm.values()
    ds.NumberOfTotalObjects = len(report.objects)
    ds.NumberOfAlarmObjects = sum(1 for o in report.objects if o.alarm)
    if report.processing_time_ms is not None and report.processing_time_ms > 0:
        ds.TotalProcessingTime = float(report.processing_time_ms)
    # Threat Sequence
    if report.objects:
        ds.ThreatSequence = Sequence([_pto_item(i, obj, report.images, report.tip_type)
                                      for i, obj in enumerate(report.objects, start=1)])
    if report.private is not None:
        text = json.dumps(report.private, sort_keys=False, ensure_ascii=False, allow_nan=False)
        ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True).add_new(PRIVATE_VERDICT_JSON, "UT", text)
    return ds


def write_tdr(report: TdrReport, path: Path) -> Path:
    """Write the report atomically (temporary file, then rename): a reader never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = tdr_dataset(report)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
