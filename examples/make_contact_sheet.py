"""A contact sheet of 16 simulated scans for the README: docs/images/contact_sheet.png.

    python examples/make_contact_sheet.py [--seed 2026] [--out docs/images/contact_sheet.png]

Two positives of every concealment scenario and six clear parcels (three carrying a scenario's benign
look-alike), each as the operator's pseudo-colour image with the concealed powder's mask outlined in
magenta, captioned with what the simulator put there. The scans are chosen by their plans (label,
scenario), never by how they look.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TILE_WIDTH = 320
CAPTION_PX = 34


def pick_indices(config, suspects_per_scenario: int = 2, lookalikes: int = 3, plain: int = 3) -> list[int]:
    """The first indices of the run whose plans fill each slot."""
    from parcelscan.datasets.simulator.concealments import SCENARIOS
    from parcelscan.datasets.simulator.parcel import plan_for

    wanted = {("suspect", s): suspects_per_scenario for s in SCENARIOS}
    wanted[("lookalike", None)] = lookalikes
    wanted[("clear", None)] = plain
    picked: list[int] = []
    index = 0
    while any(wanted.values()):
        plan = plan_for(config, index)
        if plan.label == "suspect":
            key = ("suspect", plan.scenario)
        else:
            key = ("lookalike", None) if plan.lookalike else ("clear", None)
        if wanted.get(key, 0) > 0:
            wanted[key] -= 1
            picked.append(index)
        index += 1
    return picked


def caption(scan) -> list[str]:
    labels, provenance = scan.labels, scan.provenance
    if labels["label"] == "suspect":
        first = f"SUSPECT {labels['scenario']}"
        second = f"{labels['material']} {labels['mass_g']:.0f} g"
        if labels["mass_fraction"] < 1:
            second += f" ({labels['mass_fraction']:.0%} mix)"
    elif labels["lookalike"]:
        first = f"clear: {labels['lookalike']} look-alike"
        second = f"filled with {provenance.get('fill')}"
    else:
        first = "clear"
        second = f"{provenance['container'].replace('_', ' ')}, {provenance['objects']} objects"
    return [first, second]


def tile(scan) -> np.ndarray:
    import cv2

    from parcelscan.datasets.physics.pseudocolor import overlay_mask

    rgb = scan.rgb if scan.mask is None else overlay_mask(scan.rgb, scan.mask, colour=(255, 0, 200))
    height = round(rgb.shape[0] * TILE_WIDTH / rgb.shape[1])
    small = cv2.resize(rgb, (TILE_WIDTH, height), interpolation=cv2.INTER_AREA)
    out = np.full((height + CAPTION_PX, TILE_WIDTH, 3), 255, np.uint8)
    out[CAPTION_PX:] = small
    for k, text in enumerate(caption(scan)):
        cv2.putText(out, text, (6, 14 + 15 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (20, 20, 20), 1, cv2.LINE_AA)
    return out


def sheet(tiles: list[np.ndarray], columns: int = 4, gap: int = 6) -> np.ndarray:
    rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
    row_images = []
    for row in rows:
        height = max(t.shape[0] for t in row)
        padded = [np.pad(t, ((0, height - t.shape[0]), (0, gap), (0, 0)), constant_values=235) for t in row]
        row_images.append(np.concatenate(padded, axis=1))
    width = max(r.shape[1] for r in row_images)
    row_images = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=235) for r in row_images]
    return np.concatenate(row_images, axis=0)


def main(argv: list[str] | None = None) -> int:
    from parcelscan.datasets.physics.profile import default_profile
    from parcelscan.datasets.scans.scanfile import write_png
    from parcelscan.datasets.simulator.parcel import SimConfig, simulate_scan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs/images/contact_sheet.png"))
    args = parser.parse_args(argv)
    config = SimConfig(default_profile(), seed=args.seed)
    indices = pick_indices(config)
    scans = [simulate_scan(config, i) for i in indices]
    order = sorted(range(len(scans)), key=lambda k: (scans[k].labels["label"] != "suspect", indices[k]))
    image = sheet([tile(scans[k]) for k in order])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, image, compression=9)
    print(f"{out}: {image.shape[1]}x{image.shape[0]}, {out.stat().st_size / 1e6:.2f} MB, scans "
          + ", ".join(scans[k].scan_id for k in order))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
