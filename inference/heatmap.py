"""The picture an inspector sees for a suspect parcel: the operator image with the model's heatmap on it.

The base is the screening pseudo-colour the inspector already reads (computed from the dual-energy
pair with the scan's scanner profile, or the pseudo-colour image itself for RGB scans). The heatmap
(powder probability per scan pixel, from ``heatmap_to_scan``) is blended in magenta where it exceeds
``HEAT_FLOOR``, with opacity growing with probability, so the parcel stays readable underneath; opaque
(shield-alarm) regions are outlined in cyan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEAT_FLOOR = 0.2
HEAT_COLOUR = np.array([255.0, 0.0, 200.0])  # magenta: no material hue in the screening palette uses it
OPAQUE_COLOUR = (0, 230, 255)
MAX_ALPHA = 0.65


def base_image(scan) -> np.ndarray:
    """(H, W, 3) uint8 operator image of a decoded scan."""
    rgb = getattr(scan, "rgb", None)
    if getattr(scan, "low", None) is None or getattr(scan, "high", None) is None:
        if rgb is None:
            raise ValueError("scan has neither a dual-energy pair nor a pseudo-colour image")
        return np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    from parcelscan.datasets.scans.colour import pseudocolor_of

    return pseudocolor_of(scan)


def overlay_heatmap(rgb: np.ndarray, heat: np.ndarray, opaque_mask: np.ndarray | None = None) -> np.ndarray:
    """Blend a [0, 1] heatmap (same H, W as ``rgb``) over the operator image; outline opaque regions."""
    import cv2

    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap {heat.shape} does not match the image {rgb.shape[:2]}")
    heat = np.nan_to_num(np.clip(heat.astype(np.float32), 0.0, 1.0))
    alpha = np.where(heat >= HEAT_FLOOR, MAX_ALPHA * (heat - HEAT_FLOOR) / (1.0 - HEAT_FLOOR), 0.0)[..., None]
    out = rgb.astype(np.float32) * (1.0 - alpha) + HEAT_COLOUR * alpha
    out = np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    strong = (heat >= 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(strong, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (255, 0, 200), 1)
    if opaque_mask is not None and opaque_mask.any():
        contours, _ = cv2.findContours(opaque_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, OPAQUE_COLOUR, 2)
    return out


def write_heatmap(path: Path, scan, heat: np.ndarray, opaque_mask: np.ndarray | None = None) -> Path:
    """Render and write the overlay as PNG (atomically: a reader never sees a torn image)."""
    from parcelscan.datasets.scans.scanfile import write_png

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, overlay_heatmap(base_image(scan), heat, opaque_mask), compression=3)
    return path
