"""The picture an inspector sees for a suspect parcel: the operator image with the model's heatmap on it.

The base is the screening pseudo-colour the inspector already reads (computed from the dual-energy
pair with the scan's scanner profile, or the pseudo-colour image itself for RGB scans). The heatmap
(powder probability per scan pixel, from ``heatmap_to_scan``) is a light magenta tint where it exceeds
``HEAT_FLOOR`` (at most ``MAX_ALPHA``, so the object's colour and edges stay readable underneath: the
inspector judges the object, the tint only says where to look) and a magenta line just inside the
region where it reaches ``FLAG_LEVEL``; opaque (shield-alarm) regions are outlined in cyan. A small
legend says what the colours mean; it sits in the corner with the least heat and the most air, inside
the picture, so the file keeps the scan's size (the review app reads the probability back from it,
``inference.review.images.overlay_to_probability``, and its colours are ones that inversion rejects).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from parcelscan.datasets.scans.colour import pseudocolor_of
from parcelscan.datasets.scans.scanfile import write_png

HEAT_FLOOR = 0.2
FLAG_LEVEL = 0.5
HEAT_COLOUR = np.array([255.0, 0.0, 200.0])  # magenta: no material hue in the screening palette uses it
OPAQUE_COLOUR = (0, 230, 255)
MAX_ALPHA = 0.35  # at probability 1 the base keeps 65 % of its contrast (it kept 35 % at 0.65: "hidden")
FLAG_LINE_PX = 2
# legend text: darker than the overlay colours, for contrast on the white legend box (and so the review
# app's inversion never mistakes a legend pixel for heat)
LEGEND_HEAT_TEXT = (170, 0, 135)
LEGEND_OPAQUE_TEXT = (0, 120, 160)
LEGEND_BOX_ALPHA = 0.8
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def base_image(scan) -> np.ndarray:
    """(H, W, 3) uint8 operator image of a decoded scan."""
    rgb = getattr(scan, "rgb", None)
    if getattr(scan, "low", None) is None or getattr(scan, "high", None) is None:
        if rgb is None:
            raise ValueError("scan has neither a dual-energy pair nor a pseudo-colour image")
        return np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    return pseudocolor_of(scan)


def heat_alpha(heat: np.ndarray) -> np.ndarray:
    """Tint opacity per pixel: 0 below ``HEAT_FLOOR``, rising linearly to ``MAX_ALPHA`` at probability 1."""
    return np.where(heat >= HEAT_FLOOR, MAX_ALPHA * (heat - HEAT_FLOOR) / (1.0 - HEAT_FLOOR), 0.0)


def legend_lines(opaque: bool) -> list[tuple[str, tuple[int, int, int]]]:
    """The legend's lines (ASCII: the Hershey fonts have no '≥') and their colours."""
    lines = [(f"magenta: powder probability (tint from {HEAT_FLOOR:g}, line at {FLAG_LEVEL:g})", LEGEND_HEAT_TEXT)]
    if opaque:
        lines.append(("cyan: opaque, beam blocked (shield alarm)", LEGEND_OPAQUE_TEXT))
    return lines


def _legend_layout(lines: list[str], rows: int, cols: int) -> tuple[float, int, int, int]:
    """(font scale, line height, box width, box height) that fit the image (text shrinks on small scans)."""
    scale = 0.45
    while True:
        widths = [cv2.getTextSize(text, _FONT, scale, 1)[0][0] for text in lines]
        height = cv2.getTextSize("Ag", _FONT, scale, 1)[0][1]
        if max(widths) + 8 <= cols or scale <= 0.25:
            break
        scale -= 0.02
    line_height = height + 6
    return scale, line_height, min(cols, max(widths) + 8), min(rows, line_height * len(lines) + 4)


def _legend_corner(heat: np.ndarray, rgb: np.ndarray, box_rows: int, box_cols: int) -> tuple[int, int]:
    """Top-left (row, col) of the corner box that covers the least heat, then the least object (most air)."""
    rows, cols = heat.shape
    corners = [(0, 0), (0, cols - box_cols), (rows - box_rows, 0), (rows - box_rows, cols - box_cols)]

    def cost(corner: tuple[int, int]) -> tuple[float, float]:
        r, c = corner
        window = (slice(r, r + box_rows), slice(c, c + box_cols))
        return float((heat[window] >= HEAT_FLOOR).sum()), float(255.0 - rgb[window].mean())

    return min(corners, key=cost)


def draw_legend(out: np.ndarray, heat: np.ndarray, base: np.ndarray, opaque: bool) -> None:
    """Write the legend into ``out`` in place: a translucent white box with coloured text."""
    lines = legend_lines(opaque)
    rows, cols = heat.shape
    scale, line_height, box_cols, box_rows = _legend_layout([text for text, _ in lines], rows, cols)
    r, c = _legend_corner(heat, base, box_rows, box_cols)
    box = out[r:r + box_rows, c:c + box_cols].astype(np.float32)
    out[r:r + box_rows, c:c + box_cols] = np.rint(box * (1.0 - LEGEND_BOX_ALPHA) + 255.0 * LEGEND_BOX_ALPHA)
    for i, (text, colour) in enumerate(lines):
        baseline = r + 2 + line_height * (i + 1) - 4
        # drawn as a coverage mask and thresholded: OpenCV anti-aliases text, and a half-blended edge pixel
        # (white towards magenta) would read back as faint heat in the review app
        coverage = np.zeros(heat.shape, np.uint8)
        cv2.putText(coverage, text, (c + 4, baseline), _FONT, scale, 255, 1, cv2.LINE_8)
        out[coverage >= 64] = colour


def overlay_heatmap(rgb: np.ndarray, heat: np.ndarray, opaque_mask: np.ndarray | None = None,
                    legend: bool = True) -> np.ndarray:
    """Tint a [0, 1] heatmap (same H, W as ``rgb``) over the operator image, mark where it reaches
    ``FLAG_LEVEL``, outline opaque regions, add the legend. Same size as ``rgb``."""
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap {heat.shape} does not match the image {rgb.shape[:2]}")
    heat = np.nan_to_num(np.clip(heat.astype(np.float32), 0.0, 1.0))
    alpha = heat_alpha(heat)[..., None]
    out = rgb.astype(np.float32) * (1.0 - alpha) + HEAT_COLOUR * alpha
    out = np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    # the flag line lies inside the flagged region (never on a pixel below FLAG_LEVEL), in the exact heat
    # colour: a reader of the file can tell the flagged region from it
    strong = (heat >= FLAG_LEVEL).astype(np.uint8)
    contours, _ = cv2.findContours(strong, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    line = np.zeros_like(strong)
    cv2.drawContours(line, contours, -1, 1, 2 * FLAG_LINE_PX - 1)
    out[(line > 0) & (strong > 0)] = HEAT_COLOUR.astype(np.uint8)
    opaque = opaque_mask is not None and bool(opaque_mask.any())
    if opaque:
        contours, _ = cv2.findContours(opaque_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, OPAQUE_COLOUR, 2)
    if legend:
        draw_legend(out, heat, rgb, opaque)
    return out


def write_heatmap(path: Path, scan, heat: np.ndarray, opaque_mask: np.ndarray | None = None) -> Path:
    """Render and write the overlay as PNG (atomically: a reader never sees a torn image)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, overlay_heatmap(base_image(scan), heat, opaque_mask), compression=3)
    return path
