"""``inspect --tdr DIR``: one DICOS Threat Detection Report per scan, from its verdict and what it was made of.

The mapping (file format: ``datasets.scans.dicos_tdr``):

* ``clear`` → Alarm Decision CLEAR, no PTO. ``suspect`` → ALARM with one PTO per flagged region.
  ``manual_inspection`` → Abort Flag ABORT with a reason (never CLEAR: the Alarm Decision is UNKNOWN, and
  the verdict's own words — error, reasons — are in the private verdict JSON):
  INCOMPLETE_SCAN (half a pair, files missing), UNKNOWN_DATATYPE (the input could not be read or is not
  what the model takes), FAILED_RECON (the scan was read but the model gave no usable output — the
  nearest defined term: our processing of the image failed).
* **Powder regions** (when the score reached the threshold): connected components (8-connected) of the
  model's heatmap mapped back to scan pixels where it is ≥ ``HEAT_ALARM_LEVEL`` (``heatmap.FLAG_LEVEL``,
  0.5: where the heatmap picture draws its flag line). Threat Category CONTRABAND, flag THREAT, ability
  NO_INTERFERENCE, probability = the region's peak heatmap value. If no pixel reaches the level (the
  scan score is the calibrated max over tiles, the heatmap is a separate per-pixel output), the PTO is
  the tile that scored highest, with that tile's score as probability — the alarm always has a place.
* **Shield regions** (shield alarm, ``opaque``): each qualifying opaque region is a PTO with Threat
  Category ANOMALY, ATD Ability Assessment SHIELD and flag UNKNOWN: the beam did not get through, so
  what lies behind is unknown; no probability.
* **Mass**: a verdict that carries ``powder_mass_g`` (the declaration issue adds it) puts it on the
  powder PTO when there is exactly one (a scan-level mass cannot be split between regions) and it is a
  measurement: a body the beam does not cross everywhere has only a lower bound (``powder_mass_lower_bound``),
  and DICOS's Mass has no way to say "at least", so none is written. Effective Z:
  nothing in the project estimates it yet, so it is not written.
* **Images**: a scan read from DICOS is referenced by its source objects' UIDs; any other dual-energy
  scan is first written as a DX pair (``<scan_id>_low.dcs``/``_high.dcs``, For Processing) next to
  its report. A pseudo-colour scan has no DX form: its clear and aborted reports reference no image, and
  a suspect one gets no report (its regions would have no image to point at; the verdict says why).

A report that cannot be written never changes the verdict; the verdict gets the reason "DICOS TDR not
written: …" (as a heatmap that could not be written does) and a line goes to ``log``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from parcelscan.datasets.preprocess import heatmap_to_scan
from parcelscan.datasets.scans.dicos import DICOS_EXTENSIONS, write_dicos
from parcelscan.datasets.scans.dicos_tdr import (
    ALARM,
    CLEAR,
    UNKNOWN,
    Algorithm,
    ImageReference,
    TdrReport,
    ThreatObject,
    dx_reference,
    tdr_path,
    write_tdr,
)
from parcelscan.errors import ParcelscanError
from parcelscan.inference.heatmap import FLAG_LEVEL
from parcelscan.inference.inspector import Inspector, ScanOutputs
from parcelscan.inference.verdict import CLEAR as VERDICT_CLEAR
from parcelscan.inference.verdict import MANUAL, SUSPECT, Verdict

HEAT_ALARM_LEVEL = FLAG_LEVEL  # 0.5: where the heatmap picture draws its flag line
POWDER_DESCRIPTION = "concealed critical-mineral powder (model heatmap region)"
TILE_DESCRIPTION = "concealed critical-mineral powder (highest-scoring model tile; no heatmap region)"
SHIELD_DESCRIPTION = "opaque region: the beam did not get through, what lies behind cannot be seen"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_INCOMPLETE = re.compile(r"is missing|without images|incomplete", re.IGNORECASE)


@dataclass
class Region:
    """A connected region of a scan-sized boolean map: its box and its pixels inside the box."""

    row0: int
    col0: int
    mask: np.ndarray
    peak: float | None = None


def connected_regions(mask: np.ndarray, values: np.ndarray | None = None) -> list[Region]:
    """8-connected components of ``mask``, largest first; ``peak`` = max of ``values`` inside each."""
    mask_u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    if not mask_u8.any():
        return []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask_u8, connectivity=8)
    regions = []
    for label in range(1, count):
        x, y, w, h = (int(v) for v in stats[label, :4])
        inside = labels[y:y + h, x:x + w] == label
        peak = float(values[y:y + h, x:x + w][inside].max()) if values is not None else None
        regions.append(Region(y, x, inside, peak))
    regions.sort(key=lambda r: int(r.mask.sum()), reverse=True)
    return regions


def _top_tile_region(probabilities: np.ndarray, prepared: Any) -> Region:
    """The box (in scan pixels) of the tile that scored highest: where the scan's score came from."""
    best = int(np.argmax(probabilities))
    r, c = prepared.tile_origins[best]
    tile_rows, tile_cols = prepared.tiles.shape[2:]
    scale_r, scale_c = prepared.scale
    height, width = prepared.scan_shape
    row0, col0 = int(r * scale_r), int(c * scale_c)
    row1 = min(height, int(np.ceil(min(r + tile_rows, prepared.content_shape[0]) * scale_r)))
    col1 = min(width, int(np.ceil(min(c + tile_cols, prepared.content_shape[1]) * scale_c)))
    return Region(row0, col0, np.ones((max(1, row1 - row0), max(1, col1 - col0)), dtype=bool),
                  float(probabilities[best]))


def _abort_reason(verdict: Verdict, outputs: ScanOutputs | None) -> str:
    text = verdict.error or " ".join(verdict.reasons)
    if outputs is None or outputs.scan is None:
        return "INCOMPLETE_SCAN" if _INCOMPLETE.search(text) else "UNKNOWN_DATATYPE"
    if outputs.prepared is None:
        return "UNKNOWN_DATATYPE"
    return "FAILED_RECON"


def threat_objects(verdict: Verdict, outputs: ScanOutputs) -> list[ThreatObject]:
    """The PTOs of a suspect verdict: powder regions when the score reached the threshold, shield regions
    when the shield alarm fired."""
    objects: list[ThreatObject] = []
    score_alarm = (verdict.score is not None and verdict.threshold is not None
                   and verdict.score >= verdict.threshold)
    if score_alarm and outputs.tile_heatmaps is not None and outputs.prepared is not None:
        heat = heatmap_to_scan(outputs.tile_heatmaps, outputs.prepared)
        regions = connected_regions(heat >= HEAT_ALARM_LEVEL, heat)
        description = POWDER_DESCRIPTION
        if not regions and outputs.tile_probabilities is not None:
            regions = [_top_tile_region(np.asarray(outputs.tile_probabilities).reshape(-1), outputs.prepared)]
            description = TILE_DESCRIPTION
        mass_g = getattr(verdict, "powder_mass_g", None)
        lower_bound = getattr(verdict, "powder_mass_lower_bound", None) or []
        if isinstance(mass_g, (list, tuple)):  # per body (inference.declaration): a mass only for one body, and
            mass_g = mass_g[0] if len(mass_g) == 1 and not any(lower_bound) else None  # only a measured one
        for region in regions:
            objects.append(ThreatObject(
                region.row0, region.col0, region.mask, category="CONTRABAND", description=description,
                flag="THREAT", ability="NO_INTERFERENCE",
                probability=None if region.peak is None else float(np.clip(region.peak, 0.0, 1.0)),
                mass_g=float(mass_g) if mass_g is not None and len(regions) == 1 else None))
    opaque = outputs.opaque
    if opaque is not None and opaque.alarm:
        for region in connected_regions(opaque.mask):
            objects.append(ThreatObject(region.row0, region.col0, region.mask, category="ANOMALY",
                                        description=SHIELD_DESCRIPTION, flag="UNKNOWN", ability="SHIELD"))
    return objects


def _decision_time(verdict: Verdict) -> datetime:
    try:
        return datetime.fromisoformat(verdict.scanned_at.replace("Z", "+00:00")).astimezone(UTC)
    except (AttributeError, ValueError):
        return datetime.now(UTC)


def build_report(verdict: Verdict, outputs: ScanOutputs | None, images: list[ImageReference]) -> TdrReport:
    """Verdict + inspector outputs + the image objects of the scan → the TDR's content."""
    model = verdict.model or {}
    algorithm = Algorithm(name=str(model.get("name", "unknown")), version=str(model.get("version", "")),
                          sha256=str(model.get("sha256", "")), threshold=verdict.threshold,
                          policy_sha256=verdict.policy_sha256 or model.get("policy_sha256") or None)
    private = verdict.to_dict()
    objects: list[ThreatObject] = []
    abort_reason = None
    if verdict.verdict == MANUAL:
        decision = UNKNOWN
        abort_reason = _abort_reason(verdict, outputs)
    elif verdict.verdict == VERDICT_CLEAR:
        decision = CLEAR
    elif verdict.verdict == SUSPECT:
        decision = ALARM
        objects = threat_objects(verdict, outputs) if outputs is not None else []
        if not objects:
            raise ParcelscanError("a suspect verdict without a region to report (neither a heatmap region, "
                                  "a model tile nor a shield region)")
        if not images:
            raise ParcelscanError(f"no DICOS DX image to reference the {len(objects)} region(s) of this scan in "
                                  "(a pseudo-colour scan has no DX form)")
    else:  # Verdict refuses anything else; kept so that a new verdict kind cannot become CLEAR here
        raise ParcelscanError(f"unknown verdict {verdict.verdict!r}")
    return TdrReport(scan_id=verdict.scan_id, alarm_decision=decision, algorithm=algorithm,
                     decision_time=_decision_time(verdict), images=images, objects=objects,
                     abort_reason=abort_reason, processing_time_ms=verdict.latency_ms, station=verdict.station,
                     private=private)


def _dicos_sources(scan: Any) -> list[Path]:
    files = [Path(p) for p in (getattr(scan, "source_files", None) or [])]
    return [p for p in files if p.suffix.lower() in DICOS_EXTENSIONS]


class TdrWriter:
    """The ``Inspector.on_outputs`` hook that writes ``DIR/<scan_id>_tdr.dcs`` (and the DX pair of a scan
    that did not arrive as DICOS). Never raises for one scan: a failure becomes a reason on its verdict."""

    def __init__(self, directory: str | Path, log: Callable[[str], None] | None = None):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ParcelscanError(f"--tdr {self.directory}: cannot create it: {error.strerror or error}") from error
        if not os.access(self.directory, os.W_OK):
            raise ParcelscanError(f"--tdr {self.directory}: not writable")
        self.log = log or (lambda line: print(line, file=sys.stderr))
        self.written: list[Path] = []
        self.failed: list[str] = []

    def images_for(self, scan: Any) -> list[ImageReference]:
        """The DX objects the report references: the DICOS source files, or a DX pair written here."""
        if scan is None:
            return []
        sources = _dicos_sources(scan)
        if sources:
            return [dx_reference(p) for p in sources]
        if getattr(scan, "kind", "dual_energy") != "dual_energy" or getattr(scan, "low", None) is None:
            return []
        return [dx_reference(p) for p in write_dicos(scan, self.directory)]

    def __call__(self, verdict: Verdict, outputs: ScanOutputs) -> None:
        try:
            images = self.images_for(outputs.scan)
            name = _SAFE_NAME.sub("_", verdict.scan_id) or "scan"
            path = write_tdr(build_report(verdict, outputs, images), tdr_path(self.directory, name))
            self.written.append(path)
        except Exception as error:  # one scan's report must not stop the station
            message = f"DICOS TDR not written: {type(error).__name__}: {error}"
            verdict.reasons.append(message)
            self.failed.append(verdict.scan_id)
            self.log(f"parcelscan inspect: warning: {verdict.scan_id}: {message}")


def attach_tdr_writer(inspector: Inspector, directory: str | Path,
                      log: Callable[[str], None] | None = None) -> TdrWriter:
    """Make ``inspector`` write a TDR for every scan it judges from now on."""
    writer = TdrWriter(directory, log)
    inspector.on_outputs = writer
    return writer
