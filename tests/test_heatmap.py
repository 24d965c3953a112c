"""The station's heatmap picture: the object stays readable under the heat, and a legend says what the colours mean.

Issue 11 item 8: the overlay was a magenta fill at up to 65 % opacity: where the model was sure, the
inspector saw a magenta blob and not the object the model pointed at, and nothing on the picture said
what magenta or cyan meant. These tests draw on synthetic operator images whose every pixel is known,
then on a real example scan with the shipped profile.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from parcelscan.datasets.scans.readers import load_scan
from parcelscan.inference.heatmap import (
    FLAG_LEVEL,
    HEAT_COLOUR,
    LEGEND_HEAT_TEXT,
    LEGEND_OPAQUE_TEXT,
    MAX_ALPHA,
    base_image,
    overlay_heatmap,
    write_heatmap,
)
from parcelscan.inference.review.images import overlay_to_probability

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scans" / "sim31-000077_low.png"
ROWS, COLS = 240, 400
GREEN, BLUE = np.array([60, 160, 60]), np.array([40, 60, 150])  # inorganic and metal hues of the palette


def _textured_parcel() -> tuple[np.ndarray, np.ndarray]:
    """White air, a 100 x 140 object of alternating green and blue 4-px stripes; heat 1 over the object."""
    base = np.full((ROWS, COLS, 3), 255, np.uint8)
    stripes = (np.arange(140) // 4) % 2 == 0
    base[70:170, 130:270] = np.where(stripes[None, :, None], GREEN, BLUE)
    heat = np.zeros((ROWS, COLS), np.float32)
    heat[70:170, 130:270] = 1.0
    return base, heat


def _changed(out: np.ndarray, base: np.ndarray) -> np.ndarray:
    return np.abs(out.astype(int) - base.astype(int)).max(axis=2) > 0


def test_the_object_stays_readable_where_the_model_is_sure():
    """Under probability 1 the stripes keep most of their contrast and their own hue."""
    base, heat = _textured_parcel()
    out = overlay_heatmap(base, heat).astype(float)
    interior = (slice(80, 160), slice(140, 260))  # away from the flag line
    stripes = ((np.arange(140) // 4) % 2 == 0)[10:130]
    green = out[interior][:, stripes].reshape(-1, 3).mean(axis=0)
    blue = out[interior][:, ~stripes].reshape(-1, 3).mean(axis=0)
    kept = np.linalg.norm(green - blue) / np.linalg.norm(GREEN - BLUE)
    assert kept >= 0.6, f"only {kept:.0%} of the object's contrast is left under the heat"
    # each stripe is still nearer its own colour than the heat colour: the hue is readable
    assert np.linalg.norm(green - GREEN) < np.linalg.norm(green - HEAT_COLOUR)
    assert np.linalg.norm(blue - BLUE) < np.linalg.norm(blue - HEAT_COLOUR)


def test_the_flag_line_lies_inside_the_flagged_region():
    base, heat = _textured_parcel()
    heat[70:170, 130:270] = np.linspace(0.0, 1.0, 140, dtype=np.float32)[None, :]  # a gradient: a vertical edge
    out = overlay_heatmap(base, heat, legend=False)
    line = (out == HEAT_COLOUR.astype(np.uint8)).all(axis=2)
    assert line.sum() > 100
    assert (heat[line] >= FLAG_LEVEL).all()
    flagged = heat >= FLAG_LEVEL
    # the line runs along the edge where the probability crosses the level, on the object's rows
    edge_col = int(np.argmax(flagged[120]))
    assert line[120, edge_col:edge_col + 2].all()


def test_the_legend_names_the_colours_in_a_corner_and_keeps_the_size():
    base = np.full((ROWS, COLS, 3), 255, np.uint8)
    heat = np.zeros((ROWS, COLS), np.float32)
    out = overlay_heatmap(base, heat)
    assert out.shape == base.shape
    changed = _changed(out, base)
    rows, cols = np.nonzero(changed)
    assert rows.size > 50  # there is text
    assert rows.max() - rows.min() < ROWS // 4 and cols.max() - cols.min() < COLS * 0.9
    assert np.abs(out.astype(int) - LEGEND_HEAT_TEXT).max(axis=2).min() < 40  # magenta text is there
    assert np.abs(out.astype(int) - LEGEND_OPAQUE_TEXT).max(axis=2).min() > 40  # no opaque line: no cyan entry
    mask = np.zeros((ROWS, COLS), bool)
    mask[100:140, 150:200] = True
    with_opaque = overlay_heatmap(base, heat, mask)
    assert np.abs(with_opaque.astype(int) - LEGEND_OPAQUE_TEXT).max(axis=2).min() < 40
    # the legend is two lines now: taller
    legend = _changed(with_opaque, base) & ~np.pad(mask, 3)[3:-3, 3:-3]
    legend_rows = np.nonzero(legend.any(axis=1))[0]
    assert legend_rows.max() - legend_rows.min() > rows.max() - rows.min()


@pytest.mark.parametrize("corner", ["top_left", "bottom_right"])
def test_the_legend_never_covers_the_heat(corner):
    base = np.full((ROWS, COLS, 3), 255, np.uint8)
    heat = np.zeros((ROWS, COLS), np.float32)
    top_left = (slice(0, 60), slice(0, 200))
    region = top_left if corner == "top_left" else (slice(ROWS - 60, ROWS), slice(COLS - 200, COLS))
    heat[region] = 0.9
    alone = overlay_heatmap(base, heat, legend=False)
    out = overlay_heatmap(base, heat)
    assert (out[region] == alone[region]).all()  # nothing of the legend on the heat


def test_the_review_app_reads_the_heat_back_and_never_the_legend():
    """The review app recovers the probability from the station picture: the legend adds no heat."""
    base, heat = _textured_parcel()
    mask = np.zeros((ROWS, COLS), bool)
    mask[20:40, 320:380] = True
    empty = overlay_to_probability(overlay_heatmap(base, np.zeros_like(heat), mask), base)
    assert (empty == 0).all()
    heat[70:170, 130:270] = np.linspace(0.0, 1.0, 140, dtype=np.float32)[None, :]
    recovered = overlay_to_probability(overlay_heatmap(base, heat, mask), base)
    assert ((recovered >= FLAG_LEVEL) == (heat >= FLAG_LEVEL)).all()
    assert (recovered[heat < 0.2] == 0).all()


def test_a_real_scan_keeps_its_size_and_its_colours(tmp_path):
    """On a real example scan (its own profile's operator image) the tint moves each pixel at most
    ``MAX_ALPHA`` of the way to magenta: the object's colours stay the inspector's first reading."""
    scan = load_scan(EXAMPLE)
    base = base_image(scan)
    heat = np.zeros(base.shape[:2], np.float32)
    heat[base.shape[0] // 3: 2 * base.shape[0] // 3, base.shape[1] // 3: base.shape[1] // 2] = 1.0
    path = write_heatmap(tmp_path / "h.png", scan, heat)
    out = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
    assert out.shape == base.shape
    line = (out == HEAT_COLOUR.astype(np.uint8)).all(axis=2)
    inside = (heat > 0) & ~line
    towards = np.linalg.norm(HEAT_COLOUR - base[inside], axis=1)
    moved = np.linalg.norm(out[inside].astype(float) - base[inside], axis=1)
    share = moved[towards > 50] / towards[towards > 50]
    assert np.allclose(share, MAX_ALPHA, atol=0.02), (share.min(), share.max())
    assert (out[heat == 0] == base[heat == 0]).mean() > 0.9  # the rest is the operator image (but the legend)
