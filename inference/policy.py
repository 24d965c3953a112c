"""The station policy: one TOML file that says what a station alarms on and why (``inspect --policy FILE``).

A station's behaviour is set by its policy, not by flags scattered over its start script: the threat model the
shield alarm is derived from, which reason classes alarm, the model threshold (or the station's own
calibration, ``parcelscan calibrate``), the memory cap, the trusted model keys, the drift monitor. The shipped
default is ``inference/policies/default.toml`` (package data); every verdict carries the sha256 of the policy
file in force (``policy_sha256``), so any verdict can be traced to the exact rules that produced it, and
``inspect`` prints the policy on stderr when it starts.

**Reason classes** (``verdict.REASON_CLASSES``, one list; every verdict carries ``reason_classes``): ``powder`` (the
model's score reached the threshold), ``twin`` (a powder alarm whose region's dual-energy signature is also
that of a benign look-alike: confirm by XRF or opening), ``opaque`` (the shield alarm), ``implausible`` (a
station gate refused the scan as no scanner could have taken it: geometry, size, physics, a grey image),
``unreadable`` (the scan could not be read or analysed: missing, corrupt, not a regular file, over the memory
cap, another input kind, an internal error), ``declaration`` (the declared contents disagree with the scan;
reserved for the declaration check). A *flag* is any non-clear verdict, whatever its classes: a station may
route by class (opaque parcels to a density lane, twins to XRF), never clear by it.

**Fail closed**: ``powder``, ``opaque``, ``implausible`` and ``unreadable`` always alarm; a policy whose
``alarm.reasons`` leaves one out is refused. A policy naming trusted model keys (``[models]
trusted_public_keys``, Ed25519 public keys in hex) makes the station refuse, at start and before any verdict, a
model that is unsigned, signed by another key or changed since it was signed (``model.signing``); an entry that is
not such a key is refused with the policy.

**Memory** (``[memory]``): ``max_scan_mb`` caps one scan (the memory gate, ``inference.gates``, from the headers
before decoding); ``max_batch_mb`` caps what ``inspect`` holds decoded at once — the scans read ahead by its
workers and the batch going through the model — by the same header estimate, so a batch of individually
admissible scans cannot add up past it (``inference.inspector``). It must be at least ``max_scan_mb``.

**Gates** (``[gates]``): ``air_gain_tolerance``, how far below full scale a scan's air may read (a fraction; default
0.01, at most 0.05) before the physics gate refuses it as a scanner off calibration (``inference.gates``).
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parcelscan.errors import ParcelscanError
from parcelscan.inference.gates import AIR_GAIN_TOLERANCE, MAX_AIR_GAIN_TOLERANCE
from parcelscan.inference.opaque import DEFAULT_DETECTOR_BLUR_PX, ShieldRule
from parcelscan.inference.verdict import REASON_CLASSES
from parcelscan.model.signing import check_public_key_hex

ALWAYS_ALARM = ("powder", "opaque", "implausible", "unreadable")
DEFAULT_POLICY_PATH = Path(__file__).parent / "policies" / "default.toml"

_SECTIONS: dict[str, set[str]] = {
    "": {"name", "threat", "alarm", "memory", "gates", "models", "drift", "calibration", "declaration"},
    "threat": {"min_concealed_mass_g", "densest_powder", "densest_powder_bulk_density_g_cm3", "thickest_pouch_mm",
               "pouch_max_aspect"},
    "alarm": {"reasons", "threshold", "opaque_grey_levels", "opaque_rgb_level", "detector_blur_px"},
    "memory": {"max_scan_mb", "max_batch_mb"},
    "gates": {"air_gain_tolerance"},
    "models": {"trusted_public_keys"},
    "drift": {"window", "sigma"},
    "declaration": {"powder_score_threshold", "model_sha256"},
    "calibration": {"threshold", "target_pfa", "n_clear", "false_alarms", "pfa", "pfa_low", "pfa_high",
                    "flag_rate", "flag_rate_n", "model_sha256", "source", "created"},
}


@dataclass(frozen=True)
class ThreatModel:
    """The smallest concealment the station must not miss, and from it the smallest opaque region that could
    hide it: ``min_concealed_mass_g`` of the densest target powder in the thickest pouch, lying flat."""

    min_concealed_mass_g: float = 10.0
    densest_powder: str = "W powder"
    densest_powder_bulk_density_g_cm3: float = 9.0
    thickest_pouch_mm: float = 10.0
    pouch_max_aspect: float = 1.7

    @property
    def min_pouch_area_cm2(self) -> float:
        """mass / (density × thickness): the footprint of the smallest, densest, thickest pouch."""
        return self.min_concealed_mass_g / (self.densest_powder_bulk_density_g_cm3 * self.thickest_pouch_mm / 10.0)


@dataclass(frozen=True)
class Calibration:
    """A station's own operating point, written by ``parcelscan calibrate`` (``inference.calibrate``)."""

    threshold: float
    target_pfa: float
    n_clear: int
    false_alarms: int
    pfa: float
    pfa_low: float
    pfa_high: float
    flag_rate: float | None = None  # the share of all parcels flagged at this threshold, on the calibration data
    flag_rate_n: int = 0
    model_sha256: str | None = None
    source: str = ""
    created: str = ""


@dataclass(frozen=True)
class DeclarationPolicy:
    """The declaration check's own operating point of the image model (``[declaration]``): a scan scoring at
    least ``powder_score_threshold`` shows a powder its declaration has to name (``inference.declaration``). A
    mismatch only raises priority, never flags, so this point sits far below the alarm threshold; it is set for
    a small false-mismatch rate on cleared parcels with a declaration, for the model ``model_sha256`` (with
    another model the scores mean other things: the image rule is off, the physics alone checks). None: off."""

    powder_score_threshold: float | None = None
    model_sha256: str | None = None

    def threshold_for(self, model_sha256: str | None) -> float | None:
        """The operating point for the running model (None: the image rule is off for it)."""
        if self.powder_score_threshold is None:
            return None
        if self.model_sha256 is not None and model_sha256 != self.model_sha256:
            return None
        return self.powder_score_threshold


@dataclass(frozen=True)
class DriftConfig:
    window: int = 500
    sigma: float = 3.0


@dataclass(frozen=True)
class StationPolicy:
    """A loaded, checked policy file (module docstring)."""

    name: str = "default"
    path: str = str(DEFAULT_POLICY_PATH)
    sha256: str = ""
    threat: ThreatModel = ThreatModel()
    alarm_reasons: tuple[str, ...] = tuple(REASON_CLASSES)
    threshold: float | None = None  # None: the model's (or the calibration's)
    opaque_grey_levels: int = 22
    opaque_rgb_level: int = 2
    detector_blur_px: float = DEFAULT_DETECTOR_BLUR_PX  # the station detector's blur (shield rim)
    max_scan_mb: float = 1024.0
    max_batch_mb: float = 4096.0
    air_gain_tolerance: float = AIR_GAIN_TOLERANCE  # the physics gate's air-at-full-scale rule (inference.gates)
    trusted_public_keys: tuple[str, ...] = ()
    drift: DriftConfig = DriftConfig()
    calibration: Calibration | None = None
    declaration: DeclarationPolicy = DeclarationPolicy()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def shield_rule(self) -> ShieldRule:
        return ShieldRule(self.threat.min_pouch_area_cm2, self.threat.pouch_max_aspect, self.opaque_grey_levels,
                          self.opaque_rgb_level, self.detector_blur_px)

    @property
    def max_scan_bytes(self) -> int:
        return int(self.max_scan_mb * 2**20)

    @property
    def max_batch_bytes(self) -> int:
        return int(self.max_batch_mb * 2**20)

    def alarms_on(self, reason_class: str) -> bool:
        return reason_class in self.alarm_reasons

    def station_threshold(self, model_threshold: float, model_sha256: str | None = None) -> tuple[float, str]:
        """(threshold, where it comes from): the policy's number, else a calibration made for this model,
        else the model's own. A calibration made for another model is refused (its scores mean other things)."""
        if self.threshold is not None:
            return self.threshold, f"policy {self.name}"
        if self.calibration is not None:
            cal = self.calibration
            if cal.model_sha256 and model_sha256 and cal.model_sha256 != model_sha256:
                raise ParcelscanError(f"policy {self.path}: its [calibration] was made for model "
                                      f"{cal.model_sha256[:12]}, not {model_sha256[:12]}: run parcelscan calibrate "
                                      "again for this model")
            return cal.threshold, f"station calibration (target Pfa {cal.target_pfa:g})"
        return model_threshold, "model"

    def describe(self) -> list[str]:
        """The policy in force, for stderr at start."""
        t = self.threat
        short, long = self.shield_rule.pouch_axes_mm
        lines = [
            f"policy {self.name} ({self.path}, sha256 {self.sha256[:16]}…)",
            f"  threat: {t.min_concealed_mass_g:g} g of {t.densest_powder} ({t.densest_powder_bulk_density_g_cm3:g} "
            f"g/cm³) in a {t.thickest_pouch_mm:g} mm pouch → shield alarm on opaque regions that could hide "
            f"{t.min_pouch_area_cm2:.2f} cm² ({short:.0f} × {long:.0f} mm); opaque: high ≤ "
            f"{self.opaque_grey_levels}/65535, operator image ≤ {self.opaque_rgb_level}/255",
            f"  alarms: {', '.join(self.alarm_reasons)}; memory cap {self.max_scan_mb:g} MiB per scan, "
            f"{self.max_batch_mb:g} MiB per batch; air within {self.air_gain_tolerance:.1%} of full scale; "
            "trusted model keys: "
            + (f"{len(self.trusted_public_keys)} ({', '.join(k[:16] + '…' for k in self.trusted_public_keys)}): "
               "unsigned or otherwise signed models are refused" if self.trusted_public_keys
               else "none (sha256 integrity only)"),
        ]
        d = self.declaration
        if d.powder_score_threshold is not None:
            lines.append(f"  declaration check: the image shows powder at score ≥ {d.powder_score_threshold:g}"
                         + (f" (model {d.model_sha256[:16]}…)" if d.model_sha256 else ""))
        if self.calibration is not None:
            c = self.calibration
            lines.append(f"  calibration: threshold {c.threshold:.4g} for Pfa {c.target_pfa:g} on {c.n_clear} cleared "
                         f"parcels (measured {c.pfa:.4f}, 95 % {c.pfa_low:.4f}–{c.pfa_high:.4f})"
                         + (f"; flag rate {c.flag_rate:.4f} → drift alert beyond {self.drift.sigma:g}σ over "
                            f"{self.drift.window} parcels" if c.flag_rate is not None else ""))
        return lines


def _number(data: dict[str, Any], key: str, where: str, default: float, *, positive: bool = True,
            integer: bool = False) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParcelscanError(f"{where}.{key} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ParcelscanError(f"{where}.{key} must be positive, got {value!r}")
    if integer and int(value) != value:
        raise ParcelscanError(f"{where}.{key} must be a whole number, got {value!r}")
    return int(value) if integer else float(value)


def _check_keys(data: dict[str, Any], section: str, where: str) -> None:
    unknown = set(data) - _SECTIONS[section]
    if unknown:
        raise ParcelscanError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(_SECTIONS[section]))})")


def _table(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ParcelscanError(f"{where}: [{name}] must be a table")
    _check_keys(table, name, f"{where} [{name}]")
    return table


def parse_policy(data: dict[str, Any], path: str, sha256: str) -> StationPolicy:
    """A policy from its TOML data; every mistake is one ParcelscanError naming the file and the key."""
    where = path
    _check_keys(data, "", where)
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str) or not name:
        raise ParcelscanError(f"{where}: name must be a non-empty string")
    th = _table(data, "threat", where)
    threat = ThreatModel(
        _number(th, "min_concealed_mass_g", "threat", 10.0),
        str(th.get("densest_powder", "W powder")),
        _number(th, "densest_powder_bulk_density_g_cm3", "threat", 9.0),
        _number(th, "thickest_pouch_mm", "threat", 10.0),
        _number(th, "pouch_max_aspect", "threat", 1.7),
    )
    if threat.pouch_max_aspect < 1:
        raise ParcelscanError(f"{where}: threat.pouch_max_aspect is long/short side, ≥ 1")
    al = _table(data, "alarm", where)
    reasons = al.get("reasons", list(REASON_CLASSES))
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise ParcelscanError(f"{where}: alarm.reasons must be a list of reason classes")
    unknown = [r for r in reasons if r not in REASON_CLASSES]
    if unknown:
        raise ParcelscanError(f"{where}: alarm.reasons: unknown class(es) {', '.join(unknown)} "
                              f"(the classes: {', '.join(REASON_CLASSES)})")
    missing = [r for r in ALWAYS_ALARM if r not in reasons]
    if missing:
        raise ParcelscanError(f"{where}: alarm.reasons leaves out {', '.join(missing)}: those always alarm "
                              "(fail closed: what was not seen or not read is never clear)")
    threshold_value = al.get("threshold", "model")
    threshold = None
    if threshold_value != "model":
        threshold = _number(al, "threshold", "alarm", 0.5, positive=False)
        if not 0.0 <= threshold <= 1.0:
            raise ParcelscanError(f"{where}: alarm.threshold must be \"model\" or a probability in [0, 1]")
    grey = _number(al, "opaque_grey_levels", "alarm", 22, positive=False, integer=True)
    rgb = _number(al, "opaque_rgb_level", "alarm", 2, positive=False, integer=True)
    if not (0 <= grey < 65535 and 0 <= rgb < 255):
        raise ParcelscanError(f"{where}: alarm.opaque_grey_levels is 0–65534, alarm.opaque_rgb_level 0–254")
    blur_px = _number(al, "detector_blur_px", "alarm", DEFAULT_DETECTOR_BLUR_PX, positive=False)
    if not 0.0 <= blur_px <= 5.0:
        raise ParcelscanError(f"{where}: alarm.detector_blur_px is 0–5 (detector pixels, Gaussian sigma)")
    mem = _table(data, "memory", where)
    max_scan_mb = _number(mem, "max_scan_mb", "memory", 1024.0)
    max_batch_mb = _number(mem, "max_batch_mb", "memory", max(4096.0, max_scan_mb))
    if max_batch_mb < max_scan_mb:
        raise ParcelscanError(f"{where}: memory.max_batch_mb ({max_batch_mb:g}) is below memory.max_scan_mb "
                              f"({max_scan_mb:g}): a scan the per-scan cap admits could never be analysed")
    gates = _table(data, "gates", where)
    air_gain_tolerance = _number(gates, "air_gain_tolerance", "gates", AIR_GAIN_TOLERANCE)
    if air_gain_tolerance > MAX_AIR_GAIN_TOLERANCE:
        raise ParcelscanError(f"{where}: gates.air_gain_tolerance ({air_gain_tolerance:g}) is over "
                              f"{MAX_AIR_GAIN_TOLERANCE:g}: a scanner that far off calibration turns suspects clear")
    models = _table(data, "models", where)
    keys = models.get("trusted_public_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ParcelscanError(f"{where}: models.trusted_public_keys must be a list of hex strings")
    keys = list(dict.fromkeys(check_public_key_hex(key, f"{where}: models.trusted_public_keys[{number}]")
                              for number, key in enumerate(keys, start=1)))
    dr = _table(data, "drift", where)
    drift = DriftConfig(int(_number(dr, "window", "drift", 500, integer=True)), _number(dr, "sigma", "drift", 3.0))
    calibration = None
    if "calibration" in data:
        cal = _table(data, "calibration", where)
        try:
            calibration = Calibration(
                threshold=_number(cal, "threshold", "calibration", 0.5, positive=False),
                target_pfa=_number(cal, "target_pfa", "calibration", 0.01),
                n_clear=int(_number(cal, "n_clear", "calibration", 1, integer=True)),
                false_alarms=int(_number(cal, "false_alarms", "calibration", 0, positive=False, integer=True)),
                pfa=_number(cal, "pfa", "calibration", 0.0, positive=False),
                pfa_low=_number(cal, "pfa_low", "calibration", 0.0, positive=False),
                pfa_high=_number(cal, "pfa_high", "calibration", 1.0, positive=False),
                flag_rate=(_number(cal, "flag_rate", "calibration", 0.0, positive=False)
                           if "flag_rate" in cal else None),
                flag_rate_n=int(_number(cal, "flag_rate_n", "calibration", 0, positive=False, integer=True)),
                model_sha256=str(cal["model_sha256"]) if cal.get("model_sha256") else None,
                source=str(cal.get("source", "")),
                created=str(cal.get("created", "")),
            )
        except KeyError as error:
            raise ParcelscanError(f"{where}: [calibration] needs {error}") from error
        if not 0.0 <= calibration.threshold <= 1.0 or not 0.0 < calibration.target_pfa < 1.0:
            raise ParcelscanError(f"{where}: [calibration] threshold must be in [0, 1] and target_pfa in (0, 1)")
        if calibration.flag_rate is not None and not 0.0 <= calibration.flag_rate <= 1.0:
            raise ParcelscanError(f"{where}: [calibration] flag_rate must be in [0, 1]")
    return StationPolicy(name=name, path=path, sha256=sha256, threat=threat, alarm_reasons=tuple(reasons),
                         threshold=threshold, opaque_grey_levels=int(grey), opaque_rgb_level=int(rgb),
                         detector_blur_px=blur_px, max_scan_mb=max_scan_mb, max_batch_mb=max_batch_mb,
                         air_gain_tolerance=air_gain_tolerance,
                         trusted_public_keys=tuple(keys), drift=drift, calibration=calibration,
                         declaration=_declaration(data, where), raw=data)


def _declaration(data: dict[str, Any], where: str) -> DeclarationPolicy:
    """``[declaration]``: ``powder_score_threshold`` a probability in [0, 1] or "off"; ``model_sha256`` 64 hex
    digits or absent."""
    dc = _table(data, "declaration", where)
    value = dc.get("powder_score_threshold", "off")
    threshold = None
    if value != "off":
        threshold = _number(dc, "powder_score_threshold", "declaration", 0.5, positive=False)
        if not 0.0 <= threshold <= 1.0:
            raise ParcelscanError(f"{where}: declaration.powder_score_threshold must be \"off\" or a probability "
                                  "in [0, 1]")
    sha = dc.get("model_sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64
                            or any(c not in "0123456789abcdef" for c in sha)):
        raise ParcelscanError(f"{where}: declaration.model_sha256 must be 64 lower-case hex digits")
    return DeclarationPolicy(threshold, sha)


def load_policy(path: str | Path | None = None) -> StationPolicy:
    """The policy file at ``path`` (default: the shipped ``policies/default.toml``), checked."""
    path = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise ParcelscanError(f"--policy {path}: cannot read it: {error.strerror or error}") from error
    try:
        data = tomllib.loads(blob.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ParcelscanError(f"--policy {path}: not a TOML file: {error}") from error
    return parse_policy(data, str(path), hashlib.sha256(blob).hexdigest())


# --- writing (calibrate) -------------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} to TOML")
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write a {type(value).__name__} to a policy file")


def dump_policy(data: dict[str, Any], header: str = "") -> str:
    """Policy data (top-level scalars, then one level of tables) as TOML text that ``load_policy`` reads."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None]
    return "\n".join(lines) + "\n"
