"""Station gates: what a scan must be before the model may score it. A scan that fails a gate is
``manual_inspection`` with the gate's reason — never "clear": the model scores anything it is given,
including pictures no scanner could take, and a score of such a picture means nothing.

Gates, in the order they run (``GateError.gate`` names the one that refused):

* ``memory`` — before decoding, from the file headers and the sidecar pitch: the bytes the decoded
  images and their resampling to the model pitch take (``estimate_scan_bytes``) must stay within
  ``max_scan_bytes`` (default ``MAX_SCAN_BYTES``, 1 GiB; ``inspect --max-scan-mb``). Checked again on
  an already decoded scan. A station never dies of one hostile scan (a 16384×8192 pair, a pitch-20
  sidecar on a 4096² pair). The same estimate (``scan_memory``) bounds a whole batch: ``inspect`` admits a scan
  to be read only while the estimates of the scans it holds stay within the policy's ``max_batch_mb``
  (``inference.inspector``).
* ``geometry`` — the pitch a sidecar claims (``pixel_pitch_mm``, ``row_pitch_mm``; read by the one
  rule ``preprocess.scan_pitch_mm``) must agree with the model's input spec (``assumed_scan_pitch_mm``,
  the pitch of the scanner profile it was trained for) within ``GEOMETRY_TOLERANCE`` (±25 %): a sidecar
  pitch of 0.05 mm made every suspect sample clear.
* ``size`` — both sides at least ``MIN_SCAN_SIDE_MM`` (64 mm; the smallest simulated parcel scan is
  279 × 640 px at 1 mm): an 8×8 or 16×16 "scan" is not a parcel.
* ``physics`` (dual-energy) — what every real transmission pair obeys:
  - *air at the belt margins*: one of the four 4-pixel edge strips is at least half air
    (A_low and A_high < ``AIR_A`` = 0.1), as the belt is wider than the tunnel's content or runs empty
    before and after a parcel;
  - *a noise floor*: the detector's quantum noise in that air (pixel-to-pixel, in grey levels; measured on
    every 4th row, at most 20,000 differences) is at least ``NOISE_FLOOR_GREY`` (5) in both channels — a
    synthetic constant image has none;
  - *air at full scale*: the station format is air-normalised (65535 = unattenuated), so in that strip each
    channel's air reads a median of at least 65535 × (1 − ``air_gain_tolerance``) — the station policy's
    ``[gates] air_gain_tolerance``, default ``AIR_GAIN_TOLERANCE`` (1 %), at most ``MAX_AIR_GAIN_TOLERANCE`` — and
    at most ``MAX_AIR_CLIPPED_SHARE`` (80 %) of its air pixels read exactly 65535 (a normalised reading puts about
    half its noise above full scale, where it is clipped; more means the gain is set high or a dark offset lifts
    it). A flat-field (gain) error moves every attenuation by the same amount, which the model reads as matter:
    measured on 1,200 development scans (stress 9351 + postal 9352) with the shipped default, air at 60,000
    (8.4 %) cost 9 points of Pd at Pfa 1 %, 2 % on the high channel alone 16 points at the stored threshold, 1 % on
    the low channel alone raised the clear parcels' false alarms from 2.4 % to 12.4 %. Up to 1 % on both channels
    the ranking holds (Pd at Pfa 1 % 54.4 against 55.3 %) and a station's own calibration (``parcelscan
    calibrate``) takes up the shifted scores (4-7 points of Pd at the stored threshold); a station that wants
    the tighter rule sets it (0.3 % still leaves honest scans a margin of three). Honest scans (1,707: those two
    sets, the second scanner's 9353, shielded 9354, the samples): median air ≥ 65477.5 (0.09 % below), clipped
    share 0.40–0.59;
  - *two readings*: the low and the high image come from two detector layers, each with its own noise, so
    among pixels with content at most ``MAX_IDENTICAL_SHARE`` (25 %) may read exactly the same in both (honest
    scans: ≤ 1.2 %); one image written twice (a station exporting one layer as both) read as R = 1 everywhere,
    and two of the five suspect samples scored clear. The same limit holds in the air of the noise rows (pixels not
    at full scale in both), so that a parcel with (nearly) no content is held to it too: one layer written twice
    under 17 of 400 postal scans (9358; letters, an empty belt) passed before (session 24);
  - *in register*: the two layers see the same pixel, so their fine detail lines up at no shift
    (``register_offset_px``: the vertex of the correlation's parabola over shifts of −1, 0, +1 px along and across
    the belt); an offset above ``MAX_REGISTER_OFFSET_PX`` (0.25 px) by more than ``REGISTER_SIGMAS`` (3) sigmas of
    its own reading is refused (the sigma term since session 25: a light parcel with little fine detail reads its
    vertex to ±0.1 px, and one honest scan of 5,807 read 0.27 ± 0.10 px and was refused). One layer read one pixel late
    cost 9 points of Pd at Pfa 1 % on the 1,200 development scans (two pixels 21), and the low/high relation
    below caught only ~78 % of such scans; honest scans (the 1,707): ≤ 0.065 px, all 1- and 2-pixel shifts of
    them refused;
  - *the low/high relation*: a real material attenuates the low-energy beam at least as much as the high
    one, so among pixels with content (0.05 < A_high < 7) at most ``MAX_INVERTED_SHARE`` (2 %) may have
    A_low < A_high − ``INVERTED_MARGIN_A`` (0.05; noise); the same relation holds in the mean: over the
    content's pixels (on every k-th row, k = the content's pixels // 4,000) the mean of A_low − A_high may not
    lie more than ``RELATION_SIGMAS`` (3) noise sigmas below zero (the sigma: the pixels' spread over √(n / 10),
    the blur correlating ~2.5 neighbours along a row). Every material on the default profile has R ≥ 1.12 at
    every thickness, so a light parcel's mean is small (~0.01) but positive, inside each pixel's noise and the
    0.05 margin: the two images swapped under 25 of 400 postal scans (9358), some with 30,000 pixels of content,
    passed the per-pixel rule (session 24); the mean refuses all but one swapped scan with ≥ 20 content pixels
    (4,200 scans: postal 9358, 717171, 9401, the second scanner's 9357, shielded 616161: honest z ≥ +2.2, swapped
    ≤ −2.2, the one passing sim9401-000977 with 86 content pixels; 0 honest scans refused; of 5,807 honest scans
    the gate refuses one, for its registration, as before). And no material has A_low/A_high above
    ``RATIO_MAX`` (4): at most ``MAX_RATIO_SHARE`` (5 %) of pixels with A_low > 0.5 may exceed it
    (a blank high image under a real low one) — and, for parcels with no dense pixel at all (letters,
    garments, a box of paper), at most 5 % of the pixels with A_low > ``LIGHT_LOW_A`` (0.1) on every 4th row
    (session 22: a blank high image under such a parcel's low one passed every rule before — 11 of 100 postal
    scans — and was scored clear; at A_low 0.1 an organic's A_high is ~0.07, 30 noise sigmas from A_low / 4.
    Honest scans, 3,560: postal 9358, bar 717171, dev 9401, 400 of stress 424242, 200 of the second scanner's
    postal 9360, the samples: largest share 0.01 %; blank high images under them: ≥ 95 %).
  Measured on the 7 sample scans and 300 fresh simulated scans (``simulate --count 300 --seed 4242``),
  the worst values are air share 1.0, noise 53 grey levels,
  inverted share 0.23 %, ratio share 0.19 % — each an order of magnitude inside its limit.
* ``pseudo-colour`` (``--rgb``) — a grey image (R = G = B) is a single-energy picture, not a pseudo-colour
  one: among content pixels (neither white air nor black) at least ``MIN_COLOURFUL_SHARE`` (2 %) must
  have a chroma (max − min channel) above ``GREY_CHROMA`` (24). Honest operator images: ≥ 27 %.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any, NamedTuple

import cv2
import numpy as np

from parcelscan.datasets.preprocess import PreprocessSpec, scan_pitch_mm
from parcelscan.datasets.scans.dicos import read_dicos_header
from parcelscan.datasets.scans.readers import JPEG_EXTENSIONS, TIFF_EXTENSIONS, ScanRef, jpeg_header
from parcelscan.datasets.scans.scanfile import png_header, read_sidecar, scan_meta
from parcelscan.errors import ParcelscanError, ScanReadError

MAX_SCAN_BYTES = 1 << 30
GEOMETRY_TOLERANCE = 0.25
MIN_SCAN_SIDE_MM = 64.0
EDGE_STRIP_PX = 4
AIR_A = 0.1
MIN_EDGE_AIR_SHARE = 0.5
NOISE_FLOOR_GREY = 5.0
AIR_GAIN_TOLERANCE = 0.01  # the default; a station policy's [gates] air_gain_tolerance overrides it
MAX_AIR_GAIN_TOLERANCE = 0.05  # the loosest a policy may set: air at 60,000 (8.4 %) turned suspects clear
MAX_AIR_CLIPPED_SHARE = 0.8
MAX_IDENTICAL_SHARE = 0.25
MAX_REGISTER_OFFSET_PX = 0.25
REGISTER_SIGMAS = 3.0  # an offset is refused beyond the limit by this many sigmas of its own reading (session 25)
REGISTER_MAX_SIDE_PX = 1024
REGISTER_MIN_SIGMA = 10.0
CONTENT_A_HIGH = (0.05, 7.0)
INVERTED_MARGIN_A = 0.05
MAX_INVERTED_SHARE = 0.02
MIN_RELATION_PIXELS = 20  # the relation in the mean (module docstring): content pixels it needs
RELATION_SAMPLE_PIXELS = 4000  # read on every k-th row of the content, k = its pixels // this (at least 1)
RELATION_CORRELATED_PX = 10.0  # pixels along a row whose noise the detector blur correlates (σ 0.7 px: ~2.5)
RELATION_SIGMAS = 3.0
DENSE_LOW_A = 0.5
LIGHT_LOW_A = 0.1  # the ratio rule on light parcels (module docstring)
RATIO_MAX = 4.0
MAX_RATIO_SHARE = 0.05
GREY_CHROMA = 24
MIN_COLOURFUL_SHARE = 0.02
MIN_CONTENT_PIXELS = 100
NOISE_ROW_STEP = 4
NOISE_MAX_STEPS = 20000


class GateError(ParcelscanError):
    """A scan refused by a station gate; ``gate`` names which (see the module docstring)."""

    def __init__(self, gate: str, message: str):
        super().__init__(message)
        self.gate = gate


# --- memory --------------------------------------------------------------------------------------------
def estimate_scan_bytes(shape: tuple[int, int], pitch_mm: tuple[float, float], spec: PreprocessSpec,
                        kind: str = "dual_energy") -> int:
    """About the peak bytes of one scan: the decoded images and their float planes, plus the resampled
    planes, channels and tiles at the model pitch (tile overlap counted)."""
    rows, cols = shape
    planes = 2 if kind == "dual_energy" else 3
    decoded = rows * cols * (planes * (2 if kind == "dual_energy" else 1) + planes * 4)
    model_rows = math.ceil(rows * pitch_mm[0] / spec.pixel_pitch_mm)
    model_cols = math.ceil(cols * pitch_mm[1] / spec.pixel_pitch_mm)
    overlap = 1.0 / max(1e-3, (1.0 - spec.tile_overlap)) ** 2
    model = model_rows * model_cols * 4 * (planes + spec.in_channels * (2 + overlap))
    return int(decoded + model)


def _header_shape(ref: ScanRef) -> tuple[tuple[int, int], dict[str, Any]] | None:
    """(rows, cols) and the metadata that holds the pitch, from headers only; None when unknown."""
    main = ref.paths[0]
    sidecars = [p for p in ref.paths if p.suffix.lower() == ".json"]
    meta = scan_meta(read_sidecar(sidecars[0])) if sidecars else {}
    suffix = main.suffix.lower()
    if ref.format in ("pair", "rgb") and suffix == ".png":
        width, height, _, _ = png_header(main)
    elif ref.format == "rgb" and suffix in JPEG_EXTENSIONS:
        width, height, _, _ = jpeg_header(main)
    elif ref.format == "dicos":
        header = read_dicos_header(main)
        width, height = header.columns, header.rows
        meta = {**header.meta, **scan_meta(header.scan_json or {}), **meta}
    elif ref.format == "tiff" and suffix in TIFF_EXTENSIONS:
        import tifffile  # the TIFF reader's own dependency, loaded only for TIFF scans

        with tifffile.TiffFile(main) as tiff:
            shape = tiff.pages[0].shape if len(tiff.pages) else ()
            description = tiff.pages[0].description if len(tiff.pages) else ""
        if len(shape) < 2:
            return None
        height, width = shape[0], shape[1]
        try:
            embedded = json.loads(description) if description.startswith("{") else {}
        except (json.JSONDecodeError, RecursionError):
            embedded = {}
        meta = {**scan_meta(embedded if isinstance(embedded, dict) else {}), **meta}
    else:
        return None
    return (height, width), meta


class MemoryNeed(NamedTuple):
    """What a scan will take, estimated before decoding (``scan_memory``)."""

    need_bytes: int
    shape: tuple[int, int]
    pitch_mm: tuple[float, float]
    scan_id: str


def scan_memory(item: Any, spec: PreprocessSpec) -> MemoryNeed | None:
    """The memory a scan's decoding and resampling will take (``estimate_scan_bytes``), from the file headers
    and the sidecar pitch of a ScanRef (nothing is decoded) or from a decoded Scan; None when it cannot be known
    (no readable header, a reference the reader will refuse anyway, an object of another kind)."""
    if isinstance(item, ScanRef):
        if not item.ok:
            return None
        try:
            found = _header_shape(item)
        except (ScanReadError, OSError, ValueError):
            return None
        if found is None:
            return None
        shape, meta = found
        kind = item.kind if item.kind in ("dual_energy", "pseudo_color") else "dual_energy"
        scan_id = item.scan_id
    elif getattr(item, "meta", None) is not None and hasattr(item, "shape"):
        shape, meta, kind, scan_id = tuple(item.shape), item.meta, item.kind, item.scan_id
    else:
        return None
    try:
        pitch = scan_pitch_mm(SimpleNamespace(meta=meta, scan_id=scan_id), spec)
    except ScanReadError:
        pitch = (spec.assumed_scan_pitch_mm, spec.assumed_scan_pitch_mm)  # the geometry gate reports it
    pitch = (max(pitch[0], spec.assumed_scan_pitch_mm * (1 - GEOMETRY_TOLERANCE)),
             max(pitch[1], spec.assumed_scan_pitch_mm * (1 - GEOMETRY_TOLERANCE)))
    return MemoryNeed(estimate_scan_bytes(shape, pitch, spec, kind), (int(shape[0]), int(shape[1])), pitch,
                      str(scan_id))


def check_memory(item: Any, spec: PreprocessSpec, max_scan_bytes: int = MAX_SCAN_BYTES) -> None:
    """Refuse, before decoding, a scan whose decoding and resampling would take over ``max_scan_bytes``.
    ``item``: a ScanRef (headers are read) or a decoded Scan. Unknown shapes pass (the readers' own size
    limits still apply); a header that cannot be read is left to the reader to report."""
    found = scan_memory(item, spec)
    if found is not None:
        check_need(found, max_scan_bytes)


def check_need(found: MemoryNeed, max_scan_bytes: int = MAX_SCAN_BYTES) -> None:
    """``check_memory`` of an estimate already made (``inspect`` makes it once, to admit the scan to its batch)."""
    need, shape, pitch, scan_id = found
    if need > max_scan_bytes:
        raise GateError("memory", f"{scan_id}: a {shape[1]}x{shape[0]} scan at {pitch[0]:g} x {pitch[1]:g} mm needs "
                                  f"about {need / 2**20:.0f} MiB to decode and resample, over the station's cap of "
                                  f"{max_scan_bytes / 2**20:.0f} MiB per scan: not analysed")


# --- geometry and size -----------------------------------------------------------------------------------
def check_geometry(scan: Any, spec: PreprocessSpec) -> tuple[float, float]:
    """The scan's (row, column) pitch if it agrees with the model's input spec within the tolerance."""
    row_mm, col_mm = scan_pitch_mm(scan, spec)
    expected = spec.assumed_scan_pitch_mm
    low, high = expected * (1 - GEOMETRY_TOLERANCE), expected * (1 + GEOMETRY_TOLERANCE)
    for name, value in (("pixel_pitch_mm", col_mm), ("row_pitch_mm", row_mm)):
        if not low <= value <= high:
            raise GateError("geometry", f"{scan.scan_id}: sidecar {name} {value:g} mm disagrees with the "
                                        f"{expected:g} mm this station's model expects (tolerance ±"
                                        f"{GEOMETRY_TOLERANCE:.0%}: {low:g}-{high:g} mm): sizes in this scan "
                                        "cannot be trusted")
    rows, cols = scan.shape
    if rows * row_mm < MIN_SCAN_SIDE_MM or cols * col_mm < MIN_SCAN_SIDE_MM:
        raise GateError("size", f"{scan.scan_id}: {cols}x{rows} pixels ({cols * col_mm:.0f} x {rows * row_mm:.0f} "
                                f"mm) is smaller than any parcel scan (both sides ≥ {MIN_SCAN_SIDE_MM:g} mm)")
    return row_mm, col_mm


# --- physics -----------------------------------------------------------------------------------------------
def _transmission_below(a: float) -> float:
    """The grey level T (of 65535) with −ln(T / 65535) = ``a``: A > a ⇔ T < this, A < a ⇔ T > this."""
    return 65535.0 * math.exp(-a)


def _grey_above(a: float) -> int:
    """A < ``a`` for an integer reading T: T > ⌊``_transmission_below(a)``⌋, the same pixels as T > the float. An
    integer bound keeps the comparison in uint16; a float one converts every pixel to float64 first."""
    return math.floor(_transmission_below(a))


def _grey_below(a: float) -> int:
    """A > ``a`` for an integer reading T: T < ⌈``_transmission_below(a)``⌉, the same pixels as T < the float."""
    return math.ceil(_transmission_below(a))


_ATTENUATION_LUT = -np.log(np.maximum(np.arange(65536, dtype=np.float64), 1.0) / 65535.0).astype(np.float32)


def _ratio_bound() -> np.ndarray:
    """For each low reading, the highest high reading that keeps A_low ≤ ``RATIO_MAX`` · A_high, with both attenuations
    the float32 values of ``_ATTENUATION_LUT`` and the product in float32, as the rule states it: A_low/A_high above
    ``RATIO_MAX`` ⇔ T_high > this[T_low]. A is non-increasing in T, so the high readings that break the ratio for one
    low reading are the run above a bound; one lookup of the low reading replaces a lookup of each, a product and a
    comparison in float32 (tests/test_station_gates.py checks every bound against the rule)."""
    scaled = RATIO_MAX * _ATTENUATION_LUT  # float32, non-increasing: the T_high with scaled ≥ A_low come first
    kept = scaled.size - np.searchsorted(scaled[::-1], _ATTENUATION_LUT, side="left")  # how many of them
    return (kept - 1).astype(np.uint16)


_RATIO_HIGH_BOUND = _ratio_bound()
_RATIO_HIGH_BOUND.setflags(write=False)


def _matter(high: np.ndarray) -> np.ndarray:
    """The pixels with matter in the high image: A_high above ``CONTENT_A_HIGH``'s lower end (0.05)."""
    return high < _grey_below(CONTENT_A_HIGH[0])


def _content_lines(high: np.ndarray, matter: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rows and the columns of ``high`` that hold matter (``_matter(high)``, when the caller has it)."""
    matter = _matter(high) if matter is None else matter
    return np.flatnonzero(matter.any(axis=1)), np.flatnonzero(matter.any(axis=0))


def _window(first: int, last: int, extent: int) -> slice:
    """The content's span [first, last] grown by 3 pixels, at most ``REGISTER_MAX_SIDE_PX`` long about its middle (the
    measurement's memory stays bounded on a huge scan: two float32 planes of one window, not of the scan)."""
    start, stop = max(first - 3, 0), min(last + 4, extent)
    if stop - start > REGISTER_MAX_SIDE_PX:
        start = (start + stop - REGISTER_MAX_SIDE_PX) // 2
        stop = start + REGISTER_MAX_SIDE_PX
    return slice(start, stop)


def _high_pass(image: np.ndarray) -> np.ndarray:
    """9 × (``image`` minus its 3×3 mean), in whole numbers: 9·T minus the 3×3 sum, borders reflected as ``cv2.blur``
    reflects them. float32 holds every value exactly (|9·T − sum| ≤ 8 · 65535 < 2^24); the factor moves neither the
    correlation's vertex nor its ratio to the noise spread."""
    summed = cv2.boxFilter(image, cv2.CV_32F, (3, 3), normalize=False)
    return cv2.addWeighted(image, 9.0, summed, -1.0, 0.0, dst=summed, dtype=cv2.CV_32F)


def _power(image: np.ndarray) -> float:
    """Σ ``image``² in float64, in one single-threaded pass of ``cv2.norm``. Not a BLAS dot: it splits a long vector
    over threads that stall each other while other work holds the cores (float64 np.dot on a 2-core host beside one
    busy process: registration a median 4.3 ms, 90th percentile 56 ms, where it had taken 0.9 ms)."""
    return cv2.norm(image, cv2.NORM_L2SQR)


class Registration(NamedTuple):
    """The two images' offset (pixels; along the belt, across it) and the noise sigma of each reading."""

    offset_px: tuple[float, float]
    sigma_px: tuple[float, float]


def out_of_register(found: Registration) -> bool:
    """Is either offset beyond ``MAX_REGISTER_OFFSET_PX`` by more than ``REGISTER_SIGMAS`` of its own sigmas?"""
    return any(abs(offset) > MAX_REGISTER_OFFSET_PX + REGISTER_SIGMAS * sigma
               for offset, sigma in zip(found.offset_px, found.sigma_px, strict=True))


def register_offset_px(low: np.ndarray, high: np.ndarray,
                       lines: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float] | None:
    """``registration``'s offsets alone (pixels; along the belt, across it), or None."""
    found = registration(low, high, lines)
    return None if found is None else found.offset_px


def registration(low: np.ndarray, high: np.ndarray,
                 lines: tuple[np.ndarray, np.ndarray] | None = None) -> Registration | None:
    """How far (pixels; along the belt, across it) the high image's fine detail lies from the low image's: the
    correlation of the two readings high-passed (each minus its 3×3 mean), over the bounding box of the content
    (A_high above ``CONTENT_A_HIGH``'s lower end), at shifts of −1, 0 and +1 pixel along each axis, and the vertex
    of the parabola through the three (inf where the correlation does not peak at 0: two pixels or more out).
    Independent noise in the two layers does not correlate, so the peak is where the same edges lie. A box longer
    than ``REGISTER_MAX_SIDE_PX`` on a side is measured in its middle window of that size. None when the pair shows
    too little common detail to tell (no correlation beyond ``REGISTER_MIN_SIGMA`` standard deviations of what
    independent noise gives). ``lines``: the rows and the columns that hold content (``_content_lines(high)``), when
    the caller has them (``check_physics`` does).

    Each correlation is Σ c·h = (Σ c² + Σ h² − Σ (c − h)²) / 2 (c: the low image's centre, 2 pixels in from every
    side; h: the high image there, shifted), every sum a float64 pass of ``cv2.norm`` over whole numbers; a shifted
    window's Σ h² is the unshifted one's with one row or column traded at its edges.

    Each offset comes with its sigma: a correlation's noise (``spread``, what independent noise of the two powers
    gives over the window) carried through the vertex, spread · √2 / (2 · curvature) — the two side correlations'
    noises, the curvature taken as read. A parcel with little fine detail has a shallow peak: its vertex is read to
    ±0.1 px or worse (session 22's sim9401-001432: curvature 7 spreads, offset 0.27 ± 0.10 px)."""
    rows, cols = _content_lines(high) if lines is None else lines
    if rows.size < 8 or cols.size < 8:
        return None
    box = tuple(_window(first, last, extent) for first, last, extent in
                ((rows[0], rows[-1], low.shape[0]), (cols[0], cols[-1], low.shape[1])))
    d_low, d_high = _high_pass(low[box]), _high_pass(high[box])
    height, width = d_high.shape
    centre = d_low[2:-2, 2:-2]

    def shifted(dy: int, dx: int) -> np.ndarray:
        return d_high[2 + dy:height - 2 + dy, 2 + dx:width - 2 + dx]

    low_power, high_power = _power(centre), _power(shifted(0, 0))
    rows_across, columns_along = d_high[:, 2:width - 2], d_high[2:height - 2]  # a shifted window's rows, columns
    traded = {(1, 0): (rows_across[2], rows_across[height - 2]), (-1, 0): (rows_across[height - 3], rows_across[1]),
              (0, 1): (columns_along[:, 2], columns_along[:, width - 2]),
              (0, -1): (columns_along[:, width - 3], columns_along[:, 1])}

    def correlation(dy: int, dx: int) -> float:
        power = high_power
        if (dy, dx) in traded:
            left, entered = traded[dy, dx]
            power += _power(entered) - _power(left)
        return (low_power + power - cv2.norm(centre, shifted(dy, dx), cv2.NORM_L2SQR)) / 2.0

    at_zero = correlation(0, 0)
    pairs = [(correlation(1, 0), correlation(-1, 0)), (correlation(0, 1), correlation(0, -1))]
    spread = math.sqrt(low_power * high_power / centre.size)
    if max(abs(at_zero), *(abs(v) for pair in pairs for v in pair)) <= REGISTER_MIN_SIGMA * spread:
        return None
    offsets, sigmas = [], []
    for plus, minus in pairs:
        curvature = 2.0 * at_zero - plus - minus
        peaks = at_zero > 0 and curvature > 0
        offsets.append((plus - minus) / (2.0 * curvature) if peaks else math.inf)
        sigmas.append(spread * math.sqrt(2.0) / (2.0 * curvature) if peaks else 0.0)
    return Registration((offsets[0], offsets[1]), (sigmas[0], sigmas[1]))


def _share(mask: np.ndarray) -> float:
    """The share of True in ``mask`` (``np.mean`` of it to the bit: an exact count over the size)."""
    return int(np.count_nonzero(mask)) / mask.size if mask.size else math.nan


def _median(readings: np.ndarray) -> float:
    """``np.median`` of integer readings to the bit (the middle one, or the mean of the middle two, exact in float64),
    from one partition: np.median's own bookkeeping costs more than the partition of a strip of air."""
    half = readings.size // 2
    if readings.size % 2:
        return float(np.partition(readings, half)[half])
    below, above = np.partition(readings, (half - 1, half))[half - 1:half + 1]
    return (int(below) + int(above)) / 2


def relation_in_the_mean(low: np.ndarray, high: np.ndarray, content: np.ndarray,
                         count: int) -> tuple[float, float, int]:
    """The content's mean A_low − A_high, its noise sigma and the pixels read: the low/high relation where a pixel's
    margin cannot tell. On a light parcel (paper, garments) A_low − A_high is ~0.01, inside any pixel's noise, but its
    mean over the content lies many noise sigmas above zero — and below zero when the two images are swapped.

    ``low``/``high`` are 16-bit readings, ``content`` their mask of ``count`` pixels. Read on every k-th row, k =
    count // ``RELATION_SAMPLE_PIXELS`` (at least 1): 4,000-8,000 pixels, hundreds of sigmas on a whole light parcel,
    at a few per cent of the gate's time; where those rows miss the content (it lies on the rows between), on every
    row. The sigma is the pixels' spread over √(n / ``RELATION_CORRELATED_PX``): the detector blur correlates the
    noise of neighbouring pixels along a row."""
    step = max(1, count // RELATION_SAMPLE_PIXELS)
    sampled = content[::step]
    if step > 1 and np.count_nonzero(sampled) < MIN_RELATION_PIXELS:
        step, sampled = 1, content
    excess = _ATTENUATION_LUT.take(low[::step][sampled]) - _ATTENUATION_LUT.take(high[::step][sampled])
    mean = float(excess.mean(dtype=np.float64))
    noise = float(excess.std(dtype=np.float64)) * math.sqrt(RELATION_CORRELATED_PX / excess.size)
    return mean, noise, int(excess.size)


def check_physics(scan: Any, air_gain_tolerance: float = AIR_GAIN_TOLERANCE) -> None:
    """The dual-energy plausibility rules of the module docstring; the first broken one is raised.

    Every rule is a comparison of attenuations A = −ln(max(T, 1) / 65535), done on the 16-bit transmissions
    themselves (A < a ⇔ T > ⌊65535·e^−a⌋; A_low < A_high − m ⇔ T_low > T_high·e^m), and a table lookup where a
    ratio of attenuations is needed: no logarithm of the whole image (this gate runs on every scan). The shares are
    counts over the whole image or the content's bounding box, not copies of the pixels they count: a copy of a
    few hundred thousand pixels costs more than the comparison."""
    low, high = np.asarray(scan.low), np.asarray(scan.high)
    air_t = _grey_above(AIR_A)
    k = EDGE_STRIP_PX
    strips = [(np.s_[:k, :]), (np.s_[-k:, :]), (np.s_[:, :k]), (np.s_[:, -k:])]
    air_masks = [(low[s] > air_t) & (high[s] > air_t) for s in strips]
    shares = [_share(mask) for mask in air_masks]
    airiest = max(range(len(strips)), key=shares.__getitem__)
    air_share = shares[airiest]
    if air_share < MIN_EDGE_AIR_SHARE:
        raise GateError("physics", f"{scan.scan_id}: no air at the belt margins (the airiest edge strip is "
                                   f"{air_share:.0%} air, a real scan has ≥ {MIN_EDGE_AIR_SHARE:.0%}): not a "
                                   "transmission image of a parcel on a belt")
    # the noise in air, from every NOISE_ROW_STEP-th row and at most NOISE_MAX_STEPS steps evenly spread (an rms
    # from 20,000 differences is within 1 % of the whole image's; the gate's margin is an order of magnitude): where
    # the chosen steps are first (a step from the last pixel of a row never counts), then only their pixels
    rows_low = np.ascontiguousarray(low[::NOISE_ROW_STEP])
    rows_high = np.ascontiguousarray(high[::NOISE_ROW_STEP])
    air = rows_low > air_t
    air &= rows_high > air_t
    steps_from = np.zeros_like(air)
    np.logical_and(air[:, 1:], air[:, :-1], out=steps_from[:, :-1])
    chosen = np.flatnonzero(steps_from)
    chosen = np.ascontiguousarray(chosen[::max(1, chosen.size // NOISE_MAX_STEPS)])
    to = chosen + 1
    for name, image in (("low", rows_low.reshape(-1)), ("high", rows_high.reshape(-1))):
        steps = np.subtract(image.take(to), image.take(chosen), dtype=np.int32).astype(np.float32)
        noise = float(np.std(steps) / math.sqrt(2.0)) if steps.size else 0.0
        if noise < NOISE_FLOOR_GREY:
            raise GateError("physics", f"{scan.scan_id}: the {name}-energy image has no detector noise in air "
                                       f"({noise:.1f} grey levels rms < {NOISE_FLOOR_GREY:g}): a synthetic or "
                                       "processed image, not a detector reading")
    # two readings in air too: the two layers' noises are independent, so two readings tie only by chance (both at
    # full scale is the clipping's tie, not the layers'); a parcel with (nearly) no content leaves the content's rule
    # below nothing to read
    readable = np.minimum(rows_low, rows_high) < 65535
    readable &= air
    air_count = int(np.count_nonzero(readable))
    if air_count >= MIN_CONTENT_PIXELS:
        tied = np.equal(rows_low, rows_high)
        tied &= readable
        identical = int(np.count_nonzero(tied)) / air_count
        if identical > MAX_IDENTICAL_SHARE:
            raise GateError("physics", f"{scan.scan_id}: {identical:.0%} of the air reads exactly the same in the "
                                       "low- and the high-energy image (two detector layers, each with its own "
                                       f"noise: ≤ {MAX_IDENTICAL_SHARE:.0%}): one image was written as both")
    for name, image in (("low", low), ("high", high)):
        air_values = image[strips[airiest]][air_masks[airiest]]
        level = _median(air_values)
        if level < 65535.0 * (1.0 - air_gain_tolerance):
            raise GateError("physics", f"{scan.scan_id}: air reads {level:.0f} of 65535 in the {name}-energy image "
                                       f"({1.0 - level / 65535.0:.1%} below full scale; the station format is "
                                       f"air-normalised and this station allows {air_gain_tolerance:.1%}): the "
                                       "scanner's flat field (gain) or the export is off — every attenuation is "
                                       "shifted, which the model reads as matter; recalibrate")
        clipped = _share(air_values == 65535)
        if clipped > MAX_AIR_CLIPPED_SHARE:
            raise GateError("physics", f"{scan.scan_id}: {clipped:.0%} of the air reads exactly 65535 in the "
                                       f"{name}-energy image (an air-normalised reading puts about half its noise "
                                       f"above full scale; ≤ {MAX_AIR_CLIPPED_SHARE:.0%} allowed): the gain is set "
                                       "too high or the air was clipped; recalibrate the flat field")
    matter = _matter(high)  # the registration's content and the rules'
    lines = _content_lines(high, matter)
    found = registration(low, high, lines)
    if found is not None and out_of_register(found):
        along, across = (f"{v:+.2f} ± {sigma:.2f}" if math.isfinite(v) else "≥ 2"
                         for v, sigma in zip(found.offset_px, found.sigma_px, strict=True))
        raise GateError("physics", f"{scan.scan_id}: the low- and the high-energy image are out of register (the "
                                   f"same edges {along} px apart along the belt, {across} px across; allowed: "
                                   f"{MAX_REGISTER_OFFSET_PX:g} px and {REGISTER_SIGMAS:g} sigmas of the reading): "
                                   "each pixel pairs two different places, and their edges read as matter that is "
                                   "not there — check the layers' timing")
    rows, cols = lines  # every pixel with matter (A_high > 0.05) lies in the bounding box of these lines
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] if rows.size else np.s_[:0, :0]
    low_box, high_box, matter_box = low[box], high[box], matter[box]
    content = high_box > _grey_above(CONTENT_A_HIGH[1])
    content &= matter_box
    count = int(np.count_nonzero(content))
    if count >= MIN_CONTENT_PIXELS:
        # a pixel read the same in both images, or inverted (T_low > T_high·e^m > T_high), reads T_low ≥ T_high: both
        # rules run on those few pixels only, the inverted one in the float32 of its statement
        tied_or_above = np.greater_equal(low_box, high_box)
        tied_or_above &= content
        low_c, high_c = low_box[tied_or_above], high_box[tied_or_above]
        identical = int(np.count_nonzero(low_c == high_c)) / count
        if identical > MAX_IDENTICAL_SHARE:
            raise GateError("physics", f"{scan.scan_id}: {identical:.0%} of the content reads exactly the same in the "
                                       "low- and the high-energy image (two detector layers, each with its own "
                                       f"noise: ≤ {MAX_IDENTICAL_SHARE:.0%}): one image was written as both")
        low_c = np.maximum(low_c, 1).astype(np.float32)
        high_c = np.maximum(high_c, 1).astype(np.float32)
        inverted = int(np.count_nonzero(low_c > high_c * np.float32(math.exp(INVERTED_MARGIN_A)))) / count
        if inverted > MAX_INVERTED_SHARE:
            raise GateError("physics", f"{scan.scan_id}: {inverted:.0%} of the content attenuates the high-energy "
                                       f"beam more than the low-energy one (real materials: ≤ "
                                       f"{MAX_INVERTED_SHARE:.0%}, noise): the low/high relation is broken")
    if count >= MIN_RELATION_PIXELS:
        mean, noise, pixels = relation_in_the_mean(low_box, high_box, content, count)
        if mean < -RELATION_SIGMAS * noise:
            raise GateError("physics", f"{scan.scan_id}: the content attenuates the high-energy beam more than the "
                                       f"low-energy one on average (A_low − A_high {mean:+.4f} over {pixels} "
                                       f"pixels, {-mean / max(noise, 1e-12):.0f} noise sigmas below zero; every "
                                       "material attenuates the low-energy beam more): the two images are swapped")
    dense_t = _grey_below(DENSE_LOW_A)
    count = int(np.count_nonzero(low < dense_t))
    if count >= MIN_CONTENT_PIXELS:
        # A dense pixel without matter in the high image (A_low > 0.5, A_high ≤ 0.05) breaks the ratio whatever its
        # readings (``_RATIO_HIGH_BOUND`` of every dense reading is below matter; a test holds it to that), and the
        # dense pixels with matter lie in the box: the ratio is read there only.
        dense_box = low_box < dense_t
        dense_box &= matter_box
        with_matter = int(np.count_nonzero(dense_box))
        within = int(np.count_nonzero(high_box[dense_box] > _RATIO_HIGH_BOUND.take(low_box[dense_box])))
        ratio_share = (count - with_matter + within) / count
        if ratio_share > MAX_RATIO_SHARE:
            raise GateError("physics", f"{scan.scan_id}: {ratio_share:.0%} of the pixels that stop the low-energy "
                                       f"beam leave the high-energy one (nearly) untouched (A_low/A_high > "
                                       f"{RATIO_MAX:g}; no material does that): the high image is blank or "
                                       "belongs to another scan")
    # the same relation where the low image shows matter at all (A_low > 0.1), on the rows the noise was read from:
    # a parcel with no dense pixel is left to this one
    light = rows_low < _grey_below(LIGHT_LOW_A)
    count = int(np.count_nonzero(light))
    if count >= MIN_CONTENT_PIXELS:
        ratio_share = int(np.count_nonzero(rows_high[light] > _RATIO_HIGH_BOUND.take(rows_low[light]))) / count
        if ratio_share > MAX_RATIO_SHARE:
            raise GateError("physics", f"{scan.scan_id}: {ratio_share:.0%} of the pixels where the low-energy image "
                                       f"shows matter (A_low > {LIGHT_LOW_A:g}) leave the high-energy beam (nearly) "
                                       f"untouched (A_low/A_high > {RATIO_MAX:g}; no material does that): the high "
                                       "image is blank or belongs to another scan")


def check_pseudo_colour(scan: Any) -> None:
    """A grey image (R = G = B) given as a pseudo-colour one is refused (module docstring)."""
    rgb = np.asarray(scan.rgb)
    top, bottom = rgb.max(axis=-1), rgb.min(axis=-1)
    content = (bottom < 230) & (top > 16)
    if int(content.sum()) < MIN_CONTENT_PIXELS:
        return
    colourful = float(np.mean((top[content].astype(np.int16) - bottom[content]) > GREY_CHROMA))
    if colourful < MIN_COLOURFUL_SHARE:
        raise GateError("pseudo-colour", f"{scan.scan_id}: a grey image (R = G = B; {colourful:.1%} of its content "
                                         "coloured): a single-energy picture, not a pseudo-colour operator image")


def check_scan(scan: Any, spec: PreprocessSpec, max_scan_bytes: int = MAX_SCAN_BYTES,
               air_gain_tolerance: float = AIR_GAIN_TOLERANCE) -> None:
    """Every gate for a decoded scan of the kind ``spec`` takes (a scan of the other kind is left to
    preprocessing, which refuses it with its own message)."""
    check_memory(scan, spec, max_scan_bytes)
    check_geometry(scan, spec)
    kind = getattr(scan, "kind", "dual_energy")
    if kind == "dual_energy":
        check_physics(scan, air_gain_tolerance)
    elif kind == "pseudo_color" and spec.input_kind == "pseudo_color":
        check_pseudo_colour(scan)

