"""What the inspector looks at, rendered from the files recorded at ingest (never from a client's path).

* ``pseudo``: the screening pseudo-colour image, computed from the 16-bit pair with the scan's profile;
* ``heatmap``: the model's heatmap at the scan's size, layered over ``pseudo`` in the browser so that
  toggling it is instant: the station's own overlay picture (what ``parcelscan inspect --heatmaps``
  writes) as it is, or, for a single-channel probability map, a transparent overlay with its 0.5 contour;
* ``low`` / ``high``: each channel as 8-bit grey, on one shared log-attenuation scale, so the low
  image is visibly darker where the material is of high Z;
* ``material``: a 2-D histogram of the scan's pixels in the (A_high, R = A_low/A_high) plane with the
  calibration curves of reference materials from the forward model. Rare-earth oxides sit *below*
  iron there (their K-edges, 39–54 keV, fall inside the low channel's band), where no common metal
  is; pixels the heatmap flags are drawn in yellow.

Every recorded file is checked against its SHA-256 from ingest before it is used: a scan changed on
disk since is refused, not shown as if it were what the model saw.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from parcelscan.datasets.physics.forward import forward_model
from parcelscan.datasets.physics.materials import get_material
from parcelscan.datasets.physics.pseudocolor import transmission_to_log_attenuation
from parcelscan.datasets.scans.colour import profile_for, pseudocolor_of
from parcelscan.errors import ScanReadError
from parcelscan.inference.heatmap import HEAT_COLOUR, HEAT_FLOOR, MAX_ALPHA
from parcelscan.inference.review.ingest import load_scan_any, sha256_file

IMAGE_KINDS = ("pseudo", "heatmap", "low", "high", "material")
REFERENCE_MATERIALS = (  # name, RGB colour of its curve
    ("Fe", (120, 160, 255)),
    ("Nd2O3", (255, 70, 200)),
    ("Dy2O3", (255, 120, 60)),
    ("water", (70, 215, 255)),
    ("CaCO3", (110, 220, 110)),
)
A_HIGH_RANGE = (0.05, 8.0)  # material view x axis (log); below: air, above: nearly opaque
R_RANGE = (0.9, 2.5)
RAW_A_MAX = 8.0
FLAG_LEVEL = 0.5


class ImageUnavailable(Exception):
    """The item has no such image (no heatmap, unreadable scan): a 404 with the reason."""


def png_bytes(image: np.ndarray) -> bytes:
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[..., ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., [2, 1, 0, 3]]
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def _verify(path: str, sha256: str | None) -> None:
    try:
        actual = sha256_file(Path(path))
    except OSError as error:
        raise ScanReadError(f"{path}: cannot read: {error.strerror or error}") from error
    if sha256 and actual != sha256:
        raise ScanReadError(f"{path}: the file changed since it was ingested (SHA-256 differs)")


def load_item_scan(item: Any):
    """The item's scan, read from its recorded files after checking they are unchanged."""
    if item["scan_error"]:
        raise ImageUnavailable(f"scan files unreadable at ingest: {item['scan_error']}")
    files = json.loads(item["scan_files"])
    for entry in files.values():
        _verify(entry["path"], entry["sha256"])
    inputs = json.loads(item["inputs"])
    scan = load_scan_any(Path(inputs[0]))
    if tuple(scan.shape) != (item["scan_rows"], item["scan_cols"]):
        raise ScanReadError(f"{inputs[0]}: scan size changed since ingest")
    return scan


@dataclass
class Heatmap:
    """The model's heatmap of one scan: probabilities at the scan's size, and the station's own overlay
    picture when the file is one (``parcelscan inspect --heatmaps`` writes the operator image with the
    heatmap blended in; a single-channel file is a plain probability map)."""

    probability: np.ndarray  # float32 [0, 1], (H, W) of the scan
    station_overlay: np.ndarray | None  # (H, W, 3) uint8, or None for a probability map


def _read_heatmap_file(item: Any) -> np.ndarray:
    if not item["heatmap_path"]:
        raise ImageUnavailable(item["heatmap_error"] or "this verdict has no heatmap")
    _verify(item["heatmap_path"], item["heatmap_sha256"])
    image = cv2.imread(item["heatmap_path"], cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ScanReadError(f"{item['heatmap_path']}: unreadable heatmap")
    if image.ndim == 3:
        image = image[..., 2::-1] if image.shape[2] >= 3 else image[..., 0]
    return image


def overlay_to_probability(overlay: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Invert ``inference.heatmap.overlay_heatmap``: out = base·(1−α) + magenta·α, α from the probability.

    α is the per-pixel least-squares blend factor between the operator image (recomputed exactly as the
    station did) and the heat colour; pixels the colour does not explain (outlines) count as no heat.
    """
    out = overlay.astype(np.float32)
    base = base.astype(np.float32)
    towards = HEAT_COLOUR.astype(np.float32) - base
    norm = np.maximum((towards * towards).sum(axis=2), 1.0)
    alpha = ((out - base) * towards).sum(axis=2) / norm
    residual = np.abs(out - (base + towards * alpha[..., None])).max(axis=2)
    alpha = np.where(residual <= 6.0, np.clip(alpha, 0.0, MAX_ALPHA), 0.0)
    heat = HEAT_FLOOR + alpha / MAX_ALPHA * (1.0 - HEAT_FLOOR)
    return np.where(alpha > 0.01, heat, 0.0).astype(np.float32)


def load_item_heatmap(item: Any, scan) -> Heatmap:
    """The item's heatmap at the scan's size (either file format)."""
    image = _read_heatmap_file(item)
    shape = tuple(scan.shape)
    if image.ndim == 3:
        if image.shape[:2] != shape:
            image = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        overlay = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
        return Heatmap(overlay_to_probability(overlay, render_pseudo(scan)), overlay)
    scale = 65535.0 if image.dtype == np.uint16 else 255.0 if image.dtype == np.uint8 else 1.0
    heat = np.clip(image.astype(np.float32) / scale, 0.0, 1.0)
    if heat.shape != shape:
        heat = cv2.resize(heat, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return Heatmap(heat, None)


# --- renderers ------------------------------------------------------------------------------------------
def is_dual_energy(scan) -> bool:
    return getattr(scan, "kind", "dual_energy") == "dual_energy"


def render_pseudo(scan) -> np.ndarray:
    """The operator image: computed from the pair, or the scanner's own for a pseudo-colour-only scan."""
    if not is_dual_energy(scan):
        return scan.rgb
    return pseudocolor_of(scan)


def render_raw(image_u16: np.ndarray) -> np.ndarray:
    """16-bit transmission → 8-bit grey, 255·(1 − √(A/A_max)): thin and thick objects both visible."""
    a = np.clip(transmission_to_log_attenuation(image_u16), 0.0, RAW_A_MAX)
    return np.rint(255.0 * (1.0 - np.sqrt(a / RAW_A_MAX))).astype(np.uint8)


def render_heatmap_overlay(heat: np.ndarray) -> np.ndarray:
    """RGBA: yellow → red with opacity rising with the probability (at most 45 %, so the object stays
    visible underneath), plus the 0.5 contour in magenta."""
    rgba = np.zeros((*heat.shape, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.rint(230.0 * (1.0 - heat)).astype(np.uint8)
    rgba[..., 3] = np.rint(115.0 * np.clip((heat - 0.15) / 0.85, 0.0, 1.0)).astype(np.uint8)
    contours, _ = cv2.findContours((heat >= FLAG_LEVEL).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgba, contours, -1, (255, 0, 200, 255), 2)
    return rgba


@functools.lru_cache(maxsize=8)
def _reference_curves(physics_key: tuple, profile) -> tuple[tuple[str, tuple, np.ndarray, np.ndarray], ...]:
    """(name, colour, A_high, R) per reference material over a wide range of areal densities."""
    model = forward_model(profile)
    areal = np.geomspace(1e-3, 400.0, 500)
    curves = []
    for name, colour in REFERENCE_MATERIALS:
        a_low, a_high = model.log_attenuation_direct([get_material(name)], areal[None, :])
        ok = np.isfinite(a_low) & np.isfinite(a_high) & (a_high > 0)
        curves.append((name, colour, a_high[ok], a_low[ok] / a_high[ok]))
    return tuple(curves)


class _Axes:
    """Plot area geometry: log A_high on x, R on y."""

    def __init__(self, width: int, height: int):
        self.left, self.right, self.top, self.bottom = 70, width - 150, 40, height - 56
        self.lx0, self.lx1 = np.log10(A_HIGH_RANGE[0]), np.log10(A_HIGH_RANGE[1])

    @property
    def size(self) -> tuple[int, int]:
        return self.right - self.left, self.bottom - self.top

    def x(self, a_high: np.ndarray) -> np.ndarray:
        return self.left + (np.log10(a_high) - self.lx0) / (self.lx1 - self.lx0) * (self.right - self.left)

    def y(self, ratio: np.ndarray) -> np.ndarray:
        return self.bottom - (ratio - R_RANGE[0]) / (R_RANGE[1] - R_RANGE[0]) * (self.bottom - self.top)


def render_material_view(scan, heat: np.ndarray | None, width: int = 820, height: int = 540) -> np.ndarray:
    profile = profile_for(scan)
    a_low, a_high = scan.log_attenuation()
    a_low = cv2.GaussianBlur(a_low, (0, 0), 1.0)  # R is noisy where little is attenuated
    a_high = cv2.GaussianBlur(a_high, (0, 0), 1.0)
    keep = (a_high > A_HIGH_RANGE[0]) & (a_high < A_HIGH_RANGE[1])
    ratio = np.where(keep, a_low / np.maximum(a_high, 1e-6), 0.0)
    keep &= (ratio > R_RANGE[0]) & (ratio < R_RANGE[1])
    axes = _Axes(width, height)
    pw, ph = axes.size
    canvas = np.full((height, width, 3), (20, 23, 27), dtype=np.uint8)
    canvas[axes.top:axes.bottom, axes.left:axes.right] = (10, 12, 14)

    def histogram(mask: np.ndarray) -> np.ndarray:
        bins = (ph // 2, pw // 2)
        counts, _, _ = np.histogram2d(ratio[mask], np.log10(a_high[mask]), bins=bins,
                                      range=[list(R_RANGE), [axes.lx0, axes.lx1]])
        counts = cv2.resize(counts[::-1].astype(np.float32), (pw, ph), interpolation=cv2.INTER_NEAREST)
        return counts

    counts = histogram(keep)
    if counts.max() > 0:
        level = np.log1p(counts) / np.log1p(counts.max())
        grey = np.where(counts > 0, 70 + 185 * level, 0)[..., None]
        area = canvas[axes.top:axes.bottom, axes.left:axes.right]
        canvas[axes.top:axes.bottom, axes.left:axes.right] = np.where(counts[..., None] > 0, grey, area)
    n_flagged = 0
    if heat is not None:
        flagged = keep & (heat >= FLAG_LEVEL)
        n_flagged = int(flagged.sum())
        if n_flagged:
            fcounts = histogram(flagged)
            level = np.log1p(fcounts) / np.log1p(fcounts.max())
            colour = np.stack([255 * np.ones_like(level), 150 + 80 * level, 20 * np.ones_like(level)], axis=-1)
            area = canvas[axes.top:axes.bottom, axes.left:axes.right]
            canvas[axes.top:axes.bottom, axes.left:axes.right] = np.where(fcounts[..., None] > 0, colour, area)
    # grid
    for tick in (0.1, 0.2, 0.5, 1, 2, 5):
        x = round(float(axes.x(np.array(tick))))
        cv2.line(canvas, (x, axes.top), (x, axes.bottom), (48, 54, 60), 1)
    for tick in np.arange(1.0, 2.41, 0.2):
        y = round(float(axes.y(np.array(tick))))
        cv2.line(canvas, (axes.left, y), (axes.right, y), (48, 54, 60), 1)
    # reference curves
    curves = _reference_curves(profile.physics_key(), profile)
    for _, colour, curve_a_high, curve_ratio in curves:
        inside = (curve_a_high >= A_HIGH_RANGE[0]) & (curve_a_high <= A_HIGH_RANGE[1])
        inside &= (curve_ratio >= R_RANGE[0]) & (curve_ratio <= R_RANGE[1])
        if inside.sum() < 2:
            continue
        points = np.stack([axes.x(curve_a_high[inside]), axes.y(curve_ratio[inside])], axis=1)
        cv2.polylines(canvas, [np.rint(points * 4).astype(np.int32)], False, colour, 2, cv2.LINE_AA, shift=2)
    cv2.rectangle(canvas, (axes.left, axes.top), (axes.right, axes.bottom), (150, 156, 162), 1)
    # text
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    text = (235, 238, 240)
    for tick in (0.1, 0.2, 0.5, 1, 2, 5):
        x = float(axes.x(np.array(tick)))
        draw.text((x, axes.bottom + 6), f"{tick:g}", fill=text, font=small, anchor="mt")
    for tick in np.arange(1.0, 2.41, 0.2):
        y = float(axes.y(np.array(tick)))
        draw.text((axes.left - 8, y), f"{tick:.1f}", fill=text, font=small, anchor="rm")
    draw.text(((axes.left + axes.right) / 2, height - 22), "A_high = -ln(I/I0), high-energy channel (log scale)",
              fill=text, font=font, anchor="mm")
    label = Image.new("RGBA", (200, 20), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((100, 10), "R = A_low / A_high", fill=text, font=font, anchor="mm")
    image.paste(label.rotate(90, expand=True), (4, int((axes.top + axes.bottom) / 2 - 100)),
                label.rotate(90, expand=True))
    draw.text((axes.left, 12), f"material view: {int(keep.sum())} pixels"
              + (f", {n_flagged} flagged by the heatmap (yellow)" if heat is not None else ""),
              fill=text, font=font)
    legend_x, legend_y = axes.right + 16, axes.top + 4
    for k, (name, colour) in enumerate(REFERENCE_MATERIALS):
        y = legend_y + 22 * k
        draw.line((legend_x, y + 8, legend_x + 24, y + 8), fill=colour, width=3)
        draw.text((legend_x + 32, y), name, fill=text, font=font)
    y = legend_y + 22 * len(REFERENCE_MATERIALS) + 10
    draw.rectangle((legend_x, y + 3, legend_x + 24, y + 13), fill=(200, 200, 200))
    draw.text((legend_x + 32, y), "scan pixels", fill=text, font=font)
    if heat is not None:
        draw.rectangle((legend_x, y + 25, legend_x + 24, y + 35), fill=(255, 210, 20))
        draw.text((legend_x + 32, y + 22), "flagged", fill=text, font=font)
    note_y = y + 56
    for line in ("rare-earth oxides", "lie below iron:", "K-edges 39-54 keV", "in the low channel"):
        draw.text((legend_x, note_y), line, fill=(170, 176, 182), font=small)
        note_y += 16
    return np.asarray(image)


# --- cache -------------------------------------------------------------------------------------------------
class ImageCache:
    """Rendered PNGs per (item, kind), least recently used out; renders happen outside the lock."""

    def __init__(self, max_entries: int = 160):
        self._entries: OrderedDict[tuple[int, str], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, item: Any, kind: str) -> bytes:
        key = (int(item["id"]), kind)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        data = render(item, kind)
        with self._lock:
            self._entries[key] = data
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return data


def render(item: Any, kind: str) -> bytes:
    """PNG bytes of one image kind of one ingested item."""
    if kind not in IMAGE_KINDS:
        raise ImageUnavailable(f"unknown image kind {kind!r}")
    if kind == "heatmap" and not item["heatmap_path"]:
        raise ImageUnavailable(item["heatmap_error"] or "this verdict has no heatmap")
    scan = load_item_scan(item)
    if kind == "pseudo":
        return png_bytes(render_pseudo(scan))
    if kind != "heatmap" and not is_dual_energy(scan):
        raise ImageUnavailable("a pseudo-colour-only scan has no low/high channels, so no raw or material view")
    if kind in ("low", "high"):
        return png_bytes(render_raw(scan.low if kind == "low" else scan.high))
    if kind == "heatmap":
        heatmap = load_item_heatmap(item, scan)
        if heatmap.station_overlay is not None:  # the station's picture, exactly as it was written
            return png_bytes(heatmap.station_overlay)
        return png_bytes(render_heatmap_overlay(heatmap.probability))
    heat = None
    if item["heatmap_path"]:
        try:
            heat = load_item_heatmap(item, scan).probability
        except (ScanReadError, ImageUnavailable):
            heat = None
    return png_bytes(render_material_view(scan, heat))
