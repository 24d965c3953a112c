"""The verdict: one JSON line per scan, the contract stations and the review app read.

Fields (see the README): ``scan_id``, ``inputs``, ``verdict`` (clear | suspect | manual_inspection),
``score`` (the model's scan-level suspect probability, or null when there is none), ``threshold``,
``model`` ({name, version, sha256}), ``heatmap`` (path or null), ``error`` (or null), ``latency_ms``,
``station``, ``scanned_at`` (ISO 8601 UTC), ``reasons`` (why this verdict, in words), ``provider``
(the onnxruntime execution provider that computed the score) and ``inputs_sha256`` (``inputs_digest``:
what the scan *was*, whatever its files are called or moved to — with ``scan_id`` the key consumers
deduplicate by, since a hot folder delivers at least once; null when an input is not a regular file),
``reason_classes`` (the verdict's reasons as classes from ``REASON_CLASSES``, the one list a station routes
by: opaque parcels to a density lane, twins to XRF; empty for clear) and ``policy_sha256`` (the sha256 of
the station policy file in force, ``inference.policy``); on a suspect scan ``powder_mass_g`` (grams per body the
model localised) and ``powder_mass_lower_bound`` (per body: the beam is stopped over part of it, so its grams are a
lower bound), and ``declaration_check`` (``inference.declaration``).

The dataclass enforces the fail-closed invariants, so no code path can produce a "clear" that was not
earned: clear needs a finite score below the threshold, no error and no reason to doubt it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from parcelscan.datasets.datatools import file_sha256
from parcelscan.datasets.physics.mass import mass_words
from parcelscan.datasets.physics.materials import TARGET_MATERIALS

CLEAR, SUSPECT, MANUAL = "clear", "suspect", "manual_inspection"
VERDICTS = (CLEAR, SUSPECT, MANUAL)
FIELDS = ("scan_id", "inputs", "verdict", "score", "threshold", "model", "heatmap", "error", "latency_ms",
          "station", "scanned_at", "reasons", "reason_classes", "provider", "inputs_sha256", "policy_sha256",
          "powder_mass_g", "powder_mass_lower_bound", "declaration_check")
# The reason classes, one documented list (README "Reason classes"); which verdict each may appear on.
REASON_CLASSES: dict[str, str] = {
    "powder": "the model's score reached the threshold: concealed powder",
    "twin": "a powder alarm whose region is also consistent with a benign look-alike: confirm by XRF or opening",
    "opaque": "shield alarm: an opaque region that could hide the smallest concealment of interest",
    "implausible": "refused by a station gate: not a picture a scanner could take (geometry, size, physics, grey)",
    "unreadable": "not read or not analysed: missing, corrupt, not a regular file, over the memory cap, an error",
    "declaration": "the declared contents disagree with the scan (the declaration check)",
}
SUSPECT_CLASSES = ("powder", "twin", "opaque", "declaration")
MANUAL_CLASSES = ("implausible", "unreadable")
MAX_NAMED = 3  # materials named per side of a signature reason


def signature_reason(bodies: list[dict[str, Any]]) -> tuple[str | None, bool]:
    """(the reason naming what a powder alarm's region looks like, whether that is class ``twin``).

    ``bodies``: the regions the model localised, largest first, as ``physics.mass.BodyMass.to_dict`` (``nearest``,
    ``d_prime``, ``twins`` — every reference within d′ < 4.2, nearest first — and ``targets``, the targets among
    them). The largest body with a signature is named. ``twin`` when a benign family is among its twins: the
    scanner cannot tell it from that look-alike, so the station routes it to XRF or opening (it stays suspect)."""
    measured = [b for b in bodies if b.get("nearest")]
    if not bodies:
        return "powder signature not named: the model localised no region to weigh", False
    if not measured:
        return _unnamed_reason(bodies), False
    body = measured[0]
    twins = list(body.get("twins") or [])
    targets = [t for t in twins if t in set(body.get("targets") or [])]
    benign = [t for t in twins if t not in targets]
    where = f"region {body.get('area_cm2', 0):g} cm², {_grams_as(body)}"
    if len(measured) > 1:
        where += f", the largest of {len(measured)}"
    if targets and benign:
        twin_words = "its benign twin" if len(benign) == 1 else "its benign twins"
        return (f"powder signature consistent with {' or '.join(targets[:MAX_NAMED])} — or {twin_words} "
                f"{' or '.join(benign[:MAX_NAMED])}: confirm by XRF or opening ({where}{_benign_grams(body)})", True)
    if benign:
        return (f"powder signature consistent with benign {' or '.join(benign[:MAX_NAMED])}, no target within "
                f"d′ 4.2 — a look-alike or a target the scanner cannot read: confirm by XRF or opening "
                f"({where}{_benign_grams(body)})", True)
    if targets:
        return (f"powder signature consistent with {' or '.join(targets[:MAX_NAMED])}, no benign look-alike within "
                f"d′ 4.2 ({where})", False)
    # Nothing within d′ 4.2: "nearest lead" alone read as "lead" to an inspector, though the reading may lie far
    # from every reference (clutter over the region mixes into it, or the material is not in the table).
    d_prime = body.get("d_prime")
    at = f" at d′ {d_prime:.1f}" if isinstance(d_prime, (int, float)) else ""
    return (f"powder signature matches no listed material: nearest {body['nearest']}{at}, a match needs d′ < 4.2 — "
            f"clutter over the region or a material outside the table ({where})", False)


def _grams_as(body: dict[str, Any]) -> str:
    """A body's grams with the material they assume. The same attenuation is ten times the mass as salt as it is as
    a rare-earth oxide, so a number alone misleads: ``mass_g`` is the body weighed as the target its reading matches
    best (``mass_material``), or the median over the targets equally near (``mass_range_g`` then spans them)."""
    grams = mass_words(float(body.get("mass_g") or 0.0), bool(body.get("mass_lower_bound")))
    material = body.get("mass_material")
    span = body.get("mass_range_g")
    if not material:
        return grams
    if isinstance(span, (list, tuple)) and len(span) == 2 and span[1] > 1.05 * span[0]:
        return f"{grams} as a target powder ({span[0]:g}–{span[1]:g} g over the targets it reads as)"
    return f"{grams} as {material}"


def _benign_grams(body: dict[str, Any]) -> str:
    """For a twin alarm, the same body weighed as the benign materials its reading could also be (``mass_as_g`` of
    the benign references in ``could_be``): what an inspector opening it should expect to find either way."""
    benign = {name: grams for name, grams in (body.get("mass_as_g") or {}).items()
              if name not in TARGET_MATERIALS and isinstance(grams, (int, float))}
    if not benign:
        return ""
    names = sorted(benign, key=benign.get)[:MAX_NAMED]
    low, high = min(benign[n] for n in names), max(benign[n] for n in names)
    amount = f"{low:.0f} g" if high <= 1.05 * low else f"{low:.0f}–{high:.0f} g"
    return f"; ≈ {amount} as {' or '.join(names)}"


def _unnamed_reason(bodies: list[dict[str, Any]]) -> str:
    """Why no localised region has a signature. Two different things leave ``nearest`` empty (``physics.mass``):
    a region with no material over its surroundings (no grams), and a region full of matter that the beam does not
    cross readably — stopped over part of it, or the low channel at its floor — whose grams are counted (a lower
    bound where the beam is stopped) but whose material cannot be named. Saying "no material" of the second, a
    parcel with a kilogram behind a casting, would be false."""
    weighed = [b for b in bodies if float(b.get("mass_g") or 0.0) > 0.0]
    if not weighed:
        return "powder signature not named: the localised region shows no material over its surroundings"
    body = weighed[0]
    where = f"region {body.get('area_cm2', 0):g} cm², {_grams_as(body)} as a target powder"  # no mass_material here
    stopped = float(body.get("opaque_share") or 0.0)
    if stopped > 0.0:
        return (f"powder signature not readable: the beam is stopped over {stopped:.0%} of the localised region, so "
                f"what it holds cannot be named ({where})")
    return ("powder signature not readable: too few of the localised region's pixels are read in both channels to "
            f"name what it holds ({where})")


def inputs_digest(paths: Iterable[str | Path], known: Mapping[str, str] | None = None) -> str | None:
    """sha256 of the inputs' contents: the sha256 of the lines ``<sha256 of file i>\\n`` in ``inputs`` order
    (so it can be recomputed from per-file digests). Independent of names and folders: a scan moved to
    ``done/`` keeps it. None when there is no input or one is not a regular file (never opens a FIFO).
    ``known``: digests a reader took of the bytes it decoded (``Scan.source_sha256``), used instead of reading
    those files again — the digest then names exactly what was analysed."""
    paths = list(paths)
    if not paths or not all(os.path.isfile(p) for p in paths):
        return None
    known = known or {}
    try:
        lines = "".join(f"{known.get(str(p)) or file_sha256(Path(p))}\n" for p in paths)
    except OSError:
        return None
    return hashlib.sha256(lines.encode()).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Verdict:
    """What the station does with one parcel, and why."""

    scan_id: str
    inputs: list[str]
    verdict: str
    score: float | None
    threshold: float | None
    model: dict[str, str] | None
    heatmap: str | None = None
    error: str | None = None
    latency_ms: float = 0.0
    station: str | None = None
    scanned_at: str = field(default_factory=utc_now)
    reasons: list[str] = field(default_factory=list)
    provider: str | None = None
    inputs_sha256: str | None = None
    reason_classes: list[str] = field(default_factory=list)
    policy_sha256: str | None = None
    powder_mass_g: list[float] | None = None  # per body the model localised on a suspect scan (inference.declaration)
    powder_mass_lower_bound: list[bool] | None = None  # per body of powder_mass_g: the beam is stopped over part of
    # it, so its grams are a lower bound (physics.mass.BodyMass.mass_lower_bound)
    declaration_check: dict[str, Any] | None = None  # status, priority, reasons, observed (inference.declaration)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        self.reason_classes = list(self.reason_classes or [])
        unknown = [c for c in self.reason_classes if c not in REASON_CLASSES]
        if unknown:
            raise ValueError(f"unknown reason class(es) {unknown}; the classes: {', '.join(REASON_CLASSES)}")
        if self.verdict == CLEAR and self.reason_classes:
            raise ValueError("a clear verdict has no reason class (a reason class is a reason not to clear)")
        if self.verdict == MANUAL and any(c not in MANUAL_CLASSES for c in self.reason_classes):
            raise ValueError(f"manual_inspection's classes are {MANUAL_CLASSES}")
        if self.score is not None:
            self.score = float(self.score)
        if self.verdict == CLEAR:
            # Fail closed: these are programming errors, never a path to a quiet "clear".
            if self.score is None or not math.isfinite(self.score):
                raise ValueError("a clear verdict needs a finite score from the model")
            if self.error is not None:
                raise ValueError("a scan with an error cannot be clear")
            if self.threshold is None or self.score >= self.threshold:
                raise ValueError("a clear verdict needs a score below the threshold")
        if self.verdict == MANUAL and not (self.error or self.reasons):
            raise ValueError("manual_inspection needs an error or a reason")

    @property
    def flagged(self) -> bool:
        """A flag is any non-clear verdict, whatever its reason classes (README "Reason classes")."""
        return self.verdict != CLEAR

    @property
    def exit_code(self) -> int:
        """clamscan-style code for this scan alone: 0 clear, 1 suspect, 2 not analysed."""
        return {CLEAR: 0, SUSPECT: 1, MANUAL: 2}[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: data[key] for key in FIELDS}

    def to_json(self) -> str:
        """One line, keys in contract order; NaN can never appear (scores are checked finite)."""
        data = self.to_dict()
        if data["score"] is not None and not math.isfinite(data["score"]):
            data["score"] = None
        data["latency_ms"] = round(float(data["latency_ms"]), 2)
        return json.dumps(data, allow_nan=False)  # ASCII: safe on any station console encoding

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        unknown = set(data) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown verdict field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def from_json(cls, line: str) -> Verdict:
        return cls.from_dict(json.loads(line))


def combine_exit_codes(verdicts: list[Verdict] | list[int]) -> int:
    """Exit code of a run: 2 if any scan could not be analysed, else 1 if any suspect, else 0.

    2 wins over 1 (as in clamscan, where an error makes the run's status 2): a run in which something
    was not analysed is not a complete run, and the pipeline must notice. Every scan's own verdict is
    on its JSON line, so no suspect is hidden by the combined code.
    """
    codes = [v.exit_code if isinstance(v, Verdict) else int(v) for v in verdicts]
    if 2 in codes:
        return 2
    if 1 in codes:
        return 1
    return 0
