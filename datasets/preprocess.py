"""The one preprocessing: a decoded scan → fixed-shape model tiles, and model heatmaps → scan pixels.

Training, evaluation, export (ONNX metadata key ``preprocessing``) and the station all call this code,
so it imports numpy and OpenCV only (the station install has no PyTorch).

Steps, in order:

1. **Planes** in acquisition space. Dual-energy: the air-normalised transmissions ``T = I/I0`` of the
   low and high channel (uint16 / 65535, floored at one grey level). Pseudo-colour: R, G, B (0–255).
2. **Resampling** to the model pitch (default 2.0 mm) from the scan's own pitch (sidecar
   ``pixel_pitch_mm``, optional ``row_pitch_mm`` along the belt; default ``assumed_scan_pitch_mm``).
   Downsampling is area averaging (``cv2.INTER_AREA``) *of transmission*, which is exactly what a
   detector with twice the pixel pitch would integrate; the logarithm comes after.
3. **Channels.** ``a_low``, ``a_high``: log-attenuations −ln T. ``a_excess``: the excess low-energy
   attenuation over water of the same high-energy attenuation,

       a_excess = A_low − R_water(A_high) · A_high,

   where ``R_water(A_high) = A_low/A_high`` of water, computed once from the scanner's spectra and
   stored in the spec as a table (so inference needs no physics). Why this channel: R = A_low/A_high
   orders materials by effective Z but drifts with thickness (beam hardening: R of water falls from
   1.29 at A_high = 0.3 to 1.18 at 4 on postal-dual-140), and parcels are mostly organic clutter. The
   excess is ≈ 0 on water-like material of *any* thickness, positive where photoelectric / K-edge
   absorption adds low-energy attenuation (rare-earth oxides: their K-edge, 39–54 keV, sits in the low
   channel's band), and — unlike R — it is nearly additive, so a thin powder layer under thick
   clutter keeps its signal instead of being diluted into the clutter's ratio. Measured with the
   forward model (tests/test_preprocess.py): 5 % Nd2O3 slurry layer (1 g/cm²) under 1–25 g/cm²
   water-equivalent clutter against water of the same A_high range, single-channel ROC AUC
   a_low 0.58, a_high 0.53, R 0.94, a_excess 0.97. At a fixed A_high the excess carries exactly the
   A_low difference; what it adds is one thickness-independent threshold, zero for organics.
   With ``attenuation_ceiling`` set (A ≤ 8 in the dual recipe, the opaque level of the operator image),
   both attenuations stop there before the excess is formed: beyond it the beam is stopped and a reading
   is electronic noise plus dark-calibration residual. A model that reads meaning into that region lost
   all its Pd at Pfa 1 % under a ±20-grey dark offset; clamped, it kept most of it
   (``examples/dark_end.py``). Pseudo-colour: ``r``, ``g``, ``b``.
4. **Normalisation**: fixed per channel, ``(x − offset) / scale`` from physics (air → 0), never
   per-image statistics, so a pixel means the same in every scan.
5. **Size policy**: never squash, never drop content. A resampled scan that fits is padded with air to
   ``tile_rows × tile_cols``; a larger one is cut into overlapping tiles of exactly that size (stride
   ``(1 − tile_overlap) × tile``), the last tile aligned to the end, so every row and column is in at
   least one tile. Scan score = max over tiles; heatmaps map back with a max over overlaps.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.physics.profile import load_profile
from parcelscan.datasets.physics.pseudocolor import pseudocolor_from_pair
from parcelscan.errors import ParcelscanError, ScanReadError

SPEC_VERSION = 1
INPUT_KINDS = ("dual_energy", "pseudo_color")
DUAL_CHANNELS = ("a_low", "a_high", "a_excess")
RGB_CHANNELS = ("r", "g", "b")
# raw value of air per channel (before normalisation) and the default fixed normalisation
AIR_VALUE = {"a_low": 0.0, "a_high": 0.0, "a_excess": 0.0, "r": 255.0, "g": 255.0, "b": 255.0}
DEFAULT_NORMALISATION = {
    # offset, scale: (x - offset) / scale. A_low of parcels spans ~0-6, A_high ~0-4 (7 and more is
    # nearly opaque); the excess of a few g/cm² of rare-earth oxide is ~0.5-2. Scales put typical
    # content in ~[0, 2] and keep air at exactly 0.
    "a_low": (0.0, 2.5),
    "a_high": (0.0, 2.0),
    "a_excess": (0.0, 0.5),
    # pseudo-colour: white (air) → 0, black (opaque) → 1, i.e. "more attenuation = larger"
    "r": (255.0, -255.0),
    "g": (255.0, -255.0),
    "b": (255.0, -255.0),
}
TRANSMISSION_FLOOR = 1.0 / 65535.0  # one grey level of the 16-bit station format
EXCESS_CLIP = (-2.0, 4.0)  # beyond this the low channel is photon-starved (A_low > ~7): no information
EXCESS_REFERENCE_MATERIAL = "water"
MAX_ATTENUATION = -math.log(TRANSMISSION_FLOOR)  # 11.09: the darkest reading the 16-bit format holds
MIN_ATTENUATION_CEILING = 4.0  # below this a ceiling would cut into what the beam still reads (about 1.8 % of it)
MIN_PITCH_MM, MAX_PITCH_MM = 0.05, 20.0


@functools.lru_cache(maxsize=8)
def excess_reference_table(profile_name: str | None = None, material: str = EXCESS_REFERENCE_MATERIAL,
                           knots: int = 64) -> dict[str, Any]:
    """R(A_high) = A_low/A_high of ``material`` under a scanner profile, as a small JSON-able table.

    Uses the exact (full-spectrum) forward model; called when a spec is *made* (training), never at
    inference, where the table travels inside the spec.
    """
    profile = load_profile(profile_name)
    model = forward_model(profile)
    areal = np.geomspace(1e-3, 400.0, 800)
    a_low, a_high = model.log_attenuation_direct([get_material(material)], areal[None, :])
    ok = np.isfinite(a_low) & np.isfinite(a_high) & (a_high > 0) & (a_high < 40)
    grid = np.geomspace(0.005, 12.0, knots)
    ratio = np.interp(grid, a_high[ok], a_low[ok] / a_high[ok])
    return {"material": material, "profile": profile.name,
            "a_high": [round(float(x), 6) for x in grid], "ratio": [round(float(x), 6) for x in ratio]}


def _default_reference() -> dict[str, Any]:
    return copy.deepcopy(excess_reference_table())


@dataclass
class PreprocessSpec:
    """Everything that turns a scan into model input; JSON round-trips and travels with the model.

    ``pad_value`` is the per-channel value of air *before* normalisation. ``normalisation`` holds
    per-channel ``offset`` and ``scale`` lists. ``excess_reference`` is the R(A_high) table of the
    ``a_excess`` channel (empty for pseudo-colour). ``assumed_scan_pitch_mm`` is used for scans whose
    sidecar does not state a pitch. ``attenuation_ceiling`` (optional) limits both attenuations, A = −ln T,
    before the channels are formed: beyond it the beam is stopped and a reading is the detector's electronic
    noise and dark-calibration residual, which differ from scanner to scanner; a model should not read meaning
    into them (README, model cards, "the dark end"). ``None`` (the default) leaves the channels as measured and
    is left out of the JSON, so specs written before the field existed keep their fingerprint.
    """

    input_kind: str = "dual_energy"
    channels: list[str] = field(default_factory=lambda: list(DUAL_CHANNELS))
    pixel_pitch_mm: float = 2.0
    tile_rows: int = 320
    tile_cols: int = 320
    tile_overlap: float = 0.5
    pad_value: list[float] = field(default_factory=lambda: [AIR_VALUE[c] for c in DUAL_CHANNELS])
    normalisation: dict[str, list[float]] = field(default_factory=lambda: {
        "offset": [DEFAULT_NORMALISATION[c][0] for c in DUAL_CHANNELS],
        "scale": [DEFAULT_NORMALISATION[c][1] for c in DUAL_CHANNELS]})
    assumed_scan_pitch_mm: float = 1.0
    excess_reference: dict[str, Any] = field(default_factory=_default_reference)
    attenuation_ceiling: float | None = None
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        self.validate()

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def dual_energy(cls, profile_name: str | None = None, channels: list[str] | None = None,
                    **overrides: Any) -> PreprocessSpec:
        """The dual-energy spec; ``profile_name`` selects the scanner whose spectra define a_excess."""
        channels = list(channels or DUAL_CHANNELS)
        if "a_excess" in channels and "excess_reference" not in overrides:
            overrides["excess_reference"] = copy.deepcopy(excess_reference_table(profile_name))
        return cls(input_kind="dual_energy", channels=channels,
                   **{"excess_reference": {}, **_channel_defaults(channels), **overrides})

    @classmethod
    def pseudo_color(cls, **overrides: Any) -> PreprocessSpec:
        overrides.pop("profile_name", None)  # no physics in a pseudo-colour spec
        channels = list(overrides.pop("channels", RGB_CHANNELS))
        return cls(input_kind="pseudo_color", channels=channels,
                   **{"excess_reference": {}, **_channel_defaults(channels), **overrides})

    @classmethod
    def for_kind(cls, input_kind: str, **overrides: Any) -> PreprocessSpec:
        if input_kind == "dual_energy":
            return cls.dual_energy(**overrides)
        if input_kind == "pseudo_color":
            return cls.pseudo_color(**overrides)
        raise ParcelscanError(f"unknown input kind {input_kind!r}: use one of {INPUT_KINDS}")

    # --- validation and serialisation -----------------------------------------------------------
    def validate(self) -> None:
        problems = []
        if self.version != SPEC_VERSION:
            problems.append(f"version {self.version} is not supported (this code reads version {SPEC_VERSION})")
        allowed = {"dual_energy": DUAL_CHANNELS, "pseudo_color": RGB_CHANNELS}.get(self.input_kind)
        if allowed is None:
            problems.append(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        elif not self.channels or any(c not in allowed for c in self.channels) or \
                len(set(self.channels)) != len(self.channels):
            problems.append(f"channels for {self.input_kind} must be distinct names from {allowed}, "
                            f"got {self.channels}")
        n = len(self.channels)
        offsets, scales = self.normalisation.get("offset", []), self.normalisation.get("scale", [])
        if len(self.pad_value) != n or len(offsets) != n or len(scales) != n:
            problems.append("pad_value, normalisation.offset and normalisation.scale need one value per channel")
        elif any(s == 0 or not math.isfinite(s) for s in scales):
            problems.append("normalisation scales must be finite and non-zero")
        if not MIN_PITCH_MM <= self.pixel_pitch_mm <= MAX_PITCH_MM:
            problems.append(f"pixel_pitch_mm must be within {MIN_PITCH_MM}-{MAX_PITCH_MM}")
        if not MIN_PITCH_MM <= self.assumed_scan_pitch_mm <= MAX_PITCH_MM:
            problems.append(f"assumed_scan_pitch_mm must be within {MIN_PITCH_MM}-{MAX_PITCH_MM}")
        for name in ("tile_rows", "tile_cols"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 32 or value % 32:
                problems.append(f"{name} must be a multiple of 32 (the network's largest stride), got {value}")
        if not 0.0 <= self.tile_overlap <= 0.9:
            problems.append(f"tile_overlap must be within 0-0.9, got {self.tile_overlap}")
        if "a_excess" in self.channels:
            ref = self.excess_reference
            knots, ratio = ref.get("a_high", []), ref.get("ratio", [])
            if len(knots) < 2 or len(knots) != len(ratio) or any(b <= a for a, b in itertools.pairwise(knots)):
                problems.append("a_excess needs excess_reference with increasing 'a_high' knots and one 'ratio' each")
        ceiling = self.attenuation_ceiling
        if ceiling is not None and (self.input_kind != "dual_energy" or isinstance(ceiling, bool)
                                    or not isinstance(ceiling, int | float)
                                    or not MIN_ATTENUATION_CEILING <= ceiling <= MAX_ATTENUATION):
            problems.append("attenuation_ceiling is a dual-energy attenuation within "
                            f"{MIN_ATTENUATION_CEILING:g}-{MAX_ATTENUATION:.2f} (or absent), got {ceiling!r}")
        if problems:
            raise ParcelscanError("invalid preprocessing spec: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["attenuation_ceiling"] is None:  # absent, as in every spec written before the field existed
            del data["attenuation_ceiling"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        if not isinstance(data, dict):
            raise ParcelscanError("preprocessing spec must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ParcelscanError(f"preprocessing spec has unknown field(s): {', '.join(sorted(unknown))}")
        if "version" not in data:
            raise ParcelscanError("preprocessing spec has no version")
        data = dict(data)
        if data.get("input_kind") == "pseudo_color":
            data.setdefault("excess_reference", {})
        try:
            return cls(**data)
        except TypeError as error:
            raise ParcelscanError(f"bad preprocessing spec: {error}") from error

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PreprocessSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ParcelscanError(f"preprocessing spec is not valid JSON: {error.msg}") from error
        return cls.from_dict(data)

    def fingerprint(self) -> str:
        """Short content hash: two specs with the same fingerprint produce identical tensors."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def in_channels(self) -> int:
        return len(self.channels)

    @property
    def tile_shape(self) -> tuple[int, int]:
        return self.tile_rows, self.tile_cols


def _channel_defaults(channels: list[str]) -> dict[str, Any]:
    return {"pad_value": [AIR_VALUE[c] for c in channels],
            "normalisation": {"offset": [DEFAULT_NORMALISATION[c][0] for c in channels],
                              "scale": [DEFAULT_NORMALISATION[c][1] for c in channels]}}


@dataclass
class PreparedScan:
    """A scan as model input. ``tiles`` (T, C, tile_rows, tile_cols) float32; ``tile_origins`` the
    (row0, col0) of each tile in model pixels; ``scale`` scan pixels per model pixel (rows, cols);
    ``content_shape`` the resampled scan in model pixels; ``padded_shape`` at least one tile."""

    scan_id: str
    tiles: np.ndarray
    tile_origins: list[tuple[int, int]]
    scale: tuple[float, float]
    scan_shape: tuple[int, int]
    content_shape: tuple[int, int]
    padded_shape: tuple[int, int]
    input_kind: str

    @property
    def n_tiles(self) -> int:
        return len(self.tile_origins)


# --- acquisition planes ------------------------------------------------------------------------------
def scan_kind(scan: Any) -> str:
    """The input kind of a Scan (readers set ``kind``; a bare station Scan is dual-energy)."""
    return getattr(scan, "kind", None) or "dual_energy"


def scan_hw(scan: Any) -> tuple[int, int]:
    """(rows, cols) of a Scan of either kind, in scan pixels."""
    image = getattr(scan, "low", None)
    if image is None:
        image = getattr(scan, "rgb", None)
    if image is None:
        raise ScanReadError(f"{scan.scan_id}: scan has no image")
    return tuple(np.asarray(image).shape[:2])  # type: ignore[return-value]


def scan_pitch_mm(scan: Any, spec: PreprocessSpec | None = None) -> tuple[float, float]:
    """(row pitch, column pitch) in mm of a scan: THE rule, for preprocessing and the shield check alike.

    Columns (detector channels): sidecar ``pixel_pitch_mm``, else the spec's ``assumed_scan_pitch_mm``
    (``PreprocessSpec`` default 1.0 mm without a spec). Rows run along the belt: ``row_pitch_mm``, else the
    column pitch (square pixels). A value that is not a finite number within ``MIN_PITCH_MM``–``MAX_PITCH_MM``
    is a ScanReadError, never replaced by a default: a wrong pitch misjudges every size in the scan."""
    assumed = spec.assumed_scan_pitch_mm if spec is not None else PreprocessSpec.assumed_scan_pitch_mm
    meta = getattr(scan, "meta", {}) or {}
    meta = meta if isinstance(meta, dict) else {}
    pitch = meta.get("pixel_pitch_mm", assumed)
    row_pitch = meta.get("row_pitch_mm", pitch)
    for name, value in (("pixel_pitch_mm", pitch), ("row_pitch_mm", row_pitch)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not MIN_PITCH_MM <= float(value) <= MAX_PITCH_MM:
            raise ScanReadError(f"{scan.scan_id}: sidecar {name} must be a number within "
                                f"{MIN_PITCH_MM}-{MAX_PITCH_MM} mm, got {value!r}")
    return float(row_pitch), float(pitch)


def transmission(image_u16: np.ndarray) -> np.ndarray:
    """16-bit air-normalised image → transmission I/I0 as float32, floored at one grey level."""
    return np.maximum(np.asarray(image_u16, dtype=np.float32) / 65535.0, TRANSMISSION_FLOOR)


def scan_planes(scan: Any, spec: PreprocessSpec) -> np.ndarray:
    """(H, W, K) float32 acquisition planes of the kind the spec needs; the wrong kind is a ScanReadError.

    Dual-energy: K=2 transmissions (low, high). Pseudo-colour: K=3, R, G, B in 0–255; a dual-energy
    scan given to a pseudo-colour model is shown as its operator image (its ``rgb`` or the screening
    pseudo-colour of the pair), exactly what the station displays.
    """
    kind = scan_kind(scan)
    if spec.input_kind == "dual_energy":
        if kind != "dual_energy" or getattr(scan, "low", None) is None or getattr(scan, "high", None) is None:
            what = "pseudo-colour" if kind == "pseudo_color" else kind.replace("_", "-")
            raise ScanReadError(f"{scan.scan_id}: {what} image given to a dual-energy model "
                                "(it needs the low/high transmission pair; a pseudo-colour image goes to the "
                                "pseudo-colour model: `parcelscan inspect --rgb`)")
        low, high = np.asarray(scan.low), np.asarray(scan.high)
        if low.dtype != np.uint16 or high.dtype != np.uint16 or low.shape != high.shape or low.ndim != 2:
            raise ScanReadError(f"{scan.scan_id}: a dual-energy scan needs two 16-bit images of equal shape")
        return np.stack([transmission(low), transmission(high)], axis=-1)
    rgb = getattr(scan, "rgb", None)
    if rgb is None:
        if kind != "dual_energy":
            raise ScanReadError(f"{scan.scan_id}: {kind} image has no colour image for a pseudo-colour model")
        rgb = _operator_image(scan)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ScanReadError(f"{scan.scan_id}: a pseudo-colour image must be 8-bit RGB, got {rgb.dtype} {rgb.shape}")
    return rgb.astype(np.float32)


def _operator_image(scan: Any) -> np.ndarray:
    profile_name = (scan.meta or {}).get("profile")
    try:
        profile = load_profile(profile_name if isinstance(profile_name, str) else None)
    except ParcelscanError:
        profile = load_profile(None)
    return pseudocolor_from_pair(scan.low, scan.high, profile)


# --- resampling, channels, tiling -----------------------------------------------------------------
def model_shape(shape: tuple[int, int], pitch_mm: tuple[float, float], spec: PreprocessSpec) -> tuple[int, int]:
    """Size in model pixels of an image of ``shape`` scan pixels at ``pitch_mm`` (rows, cols)."""
    return (max(1, round(shape[0] * pitch_mm[0] / spec.pixel_pitch_mm)),
            max(1, round(shape[1] * pitch_mm[1] / spec.pixel_pitch_mm)))


def resample(image: np.ndarray, size_rc: tuple[int, int]) -> np.ndarray:
    """Area averaging when shrinking (what a coarser detector integrates); linear when enlarging."""
    import cv2

    rows, cols = size_rc
    if image.shape[:2] == (rows, cols):
        return np.ascontiguousarray(image, dtype=np.float32)
    shrink = rows <= image.shape[0] and cols <= image.shape[1]
    out = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (cols, rows),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if image.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return out


def channels_from_planes(planes: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(H, W, K) acquisition planes → (C, H, W) raw (un-normalised) channels named by the spec."""
    if spec.input_kind == "dual_energy":
        t = np.maximum(planes, TRANSMISSION_FLOOR)
        a_low, a_high = -np.log(t[..., 0]), -np.log(t[..., 1])
        if spec.attenuation_ceiling is not None:  # the dark end carries no information: both channels stop there
            a_low = np.minimum(a_low, np.float32(spec.attenuation_ceiling))
            a_high = np.minimum(a_high, np.float32(spec.attenuation_ceiling))
        out = []
        for name in spec.channels:
            if name == "a_low":
                out.append(a_low)
            elif name == "a_high":
                out.append(a_high)
            else:  # a_excess
                out.append(excess_attenuation(a_low, a_high, spec.excess_reference))
        return np.stack(out).astype(np.float32)
    index = {"r": 0, "g": 1, "b": 2}
    return np.stack([planes[..., index[name]] for name in spec.channels]).astype(np.float32)


def excess_attenuation(a_low: np.ndarray, a_high: np.ndarray, reference: dict[str, Any]) -> np.ndarray:
    """A_low − R_ref(A_high)·A_high, clipped where the low channel is starved of photons."""
    ratio = np.interp(a_high, np.asarray(reference["a_high"]), np.asarray(reference["ratio"]))
    return np.clip(a_low - ratio * a_high, *EXCESS_CLIP).astype(np.float32)


def normalise(channels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    offset = np.asarray(spec.normalisation["offset"], dtype=np.float32)[:, None, None]
    scale = np.asarray(spec.normalisation["scale"], dtype=np.float32)[:, None, None]
    return ((channels - offset) / scale).astype(np.float32)


def normalised_air(spec: PreprocessSpec) -> np.ndarray:
    """(C,) value of air after normalisation (0 with the default normalisation)."""
    return ((np.asarray(spec.pad_value) - np.asarray(spec.normalisation["offset"]))
            / np.asarray(spec.normalisation["scale"])).astype(np.float32)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile origins along one axis: [0] if it fits; else stride (1-overlap)·tile, last aligned to the end."""
    if length <= tile:
        return [0]
    stride = max(1, round(tile * (1.0 - overlap)))
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_layout(content_shape: tuple[int, int], spec: PreprocessSpec) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """(tile origins, padded shape) for a resampled scan of ``content_shape`` model pixels."""
    rows = tile_starts(content_shape[0], spec.tile_rows, spec.tile_overlap)
    cols = tile_starts(content_shape[1], spec.tile_cols, spec.tile_overlap)
    padded = (max(content_shape[0], spec.tile_rows), max(content_shape[1], spec.tile_cols))
    return [(r, c) for r in rows for c in cols], padded


def cut_tiles(image: np.ndarray, origins: list[tuple[int, int]], padded: tuple[int, int], tile: tuple[int, int],
              fill: np.ndarray | float) -> np.ndarray:
    """(C, H, W) → (T, C, tile_rows, tile_cols), padding bottom/right with ``fill`` (per channel)."""
    c, h, w = image.shape
    canvas = np.empty((c, *padded), dtype=np.float32)
    canvas[:] = np.asarray(fill, dtype=np.float32).reshape(-1, 1, 1) if np.ndim(fill) else fill
    canvas[:, :h, :w] = image
    return np.stack([canvas[:, r:r + tile[0], q:q + tile[1]] for r, q in origins]).astype(np.float32)


def prepare_planes(planes: np.ndarray, pitch_mm: tuple[float, float], spec: PreprocessSpec,
                   scan_id: str = "", scan_shape: tuple[int, int] | None = None) -> PreparedScan:
    """Acquisition planes (H, W, K) at ``pitch_mm`` → PreparedScan (the augmented training path)."""
    planes = np.asarray(planes, dtype=np.float32)
    if not np.isfinite(planes).all():
        raise ScanReadError(f"{scan_id}: image contains NaN or infinite values")
    size = model_shape(planes.shape[:2], pitch_mm, spec)
    resampled = resample(planes, size)
    channels = normalise(channels_from_planes(resampled, spec), spec)
    origins, padded = tile_layout(size, spec)
    tiles = cut_tiles(channels, origins, padded, spec.tile_shape, normalised_air(spec))
    shape = scan_shape or planes.shape[:2]
    return PreparedScan(scan_id, tiles, origins, (shape[0] / size[0], shape[1] / size[1]), tuple(shape), size,
                        padded, spec.input_kind)


def prepare_scan(scan: Any, spec: PreprocessSpec) -> PreparedScan:
    """A decoded Scan → model tiles (T, C, tile_rows, tile_cols) float32. Wrong kind → ScanReadError."""
    planes = scan_planes(scan, spec)
    return prepare_planes(planes, scan_pitch_mm(scan, spec), spec, scan.scan_id, planes.shape[:2])


def prepare_mask_array(mask: np.ndarray, content_shape: tuple[int, int], spec: PreprocessSpec) -> np.ndarray:
    """A scan-resolution mask → (T, tile_rows, tile_cols) float32 coverage in [0, 1] (area fraction)."""
    coverage = resample((np.asarray(mask) > 0).astype(np.float32), content_shape)
    origins, padded = tile_layout(content_shape, spec)
    return cut_tiles(coverage[None], origins, padded, spec.tile_shape, 0.0)[:, 0]


def prepare_mask(mask_u8: np.ndarray, scan: Any, spec: PreprocessSpec) -> np.ndarray:
    """The powder mask of ``scan`` (same H×W, non-zero = powder) aligned with ``prepare_scan``'s tiles.

    Values are the fraction of each model pixel covered by powder (area averaging, like the image)."""
    mask = np.asarray(mask_u8)
    shape = scan_hw(scan)
    if mask.ndim != 2 or mask.shape != shape:
        raise ScanReadError(f"{scan.scan_id}: mask shape {mask.shape} does not match the scan {shape}")
    size = model_shape(mask.shape, scan_pitch_mm(scan, spec), spec)
    return prepare_mask_array(mask, size, spec)


def heatmap_to_scan(tile_heatmaps: np.ndarray, prepared: PreparedScan) -> np.ndarray:
    """Per-tile heatmaps (T, h, w) or (T, 1, h, w), at any stride → (H_scan, W_scan) float32.

    Each heatmap is resized to its tile, tiles are placed at their origins with a max over overlaps,
    the air padding is cut off and the result is resized to the scan's pixels."""
    import cv2

    maps = np.asarray(tile_heatmaps, dtype=np.float32)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3 or maps.shape[0] != prepared.n_tiles:
        raise ValueError(f"expected ({prepared.n_tiles}, h, w) heatmaps, got {maps.shape}")
    tile_rows, tile_cols = prepared.tiles.shape[2:]
    canvas = np.full(prepared.padded_shape, -np.inf, dtype=np.float32)
    for heat, (r, c) in zip(maps, prepared.tile_origins, strict=True):
        up = heat if heat.shape == (tile_rows, tile_cols) else \
            cv2.resize(heat, (tile_cols, tile_rows), interpolation=cv2.INTER_LINEAR)
        np.maximum(canvas[r:r + tile_rows, c:c + tile_cols], up, out=canvas[r:r + tile_rows, c:c + tile_cols])
    content = canvas[:prepared.content_shape[0], :prepared.content_shape[1]]
    height, width = prepared.scan_shape
    if content.shape == (height, width):
        return np.ascontiguousarray(content)
    return cv2.resize(np.ascontiguousarray(content), (width, height), interpolation=cv2.INTER_LINEAR)
