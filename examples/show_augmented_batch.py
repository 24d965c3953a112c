"""Draw one augmented training batch as the model sees it: docs/images/augmented_batch.png.

    python examples/show_augmented_batch.py                 # simulates 24 parcels into a temp dir first
    python examples/show_augmented_batch.py --data data/sim  # or use an existing data set

For each of 8 scans (4 suspect, 4 clear) three panels of the chosen 320×320 model tile (2 mm pixels):
the tile without augmentation, the augmented tile (belt stretch, flips / 90° turns, shift and scale,
calibration gain/offset and lower-dose quantum noise, all applied in transmission space), both shown
as the operator's pseudo-colour rebuilt from the tile's a_low/a_high channels, with the transformed
powder mask outlined in magenta; and the augmented tile's a_excess channel (excess low-energy
attenuation over water), where a rare-earth powder stands out and organics vanish.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def tile_to_rgb(tile: np.ndarray, spec, profile) -> np.ndarray:
    """Normalised (C, h, w) tile → operator pseudo-colour, from its a_low / a_high channels."""
    from parcelscan.datasets.physics.pseudocolor import pseudocolor

    scale = dict(zip(spec.channels, spec.normalisation["scale"], strict=True))
    offset = dict(zip(spec.channels, spec.normalisation["offset"], strict=True))
    a_low = tile[spec.channels.index("a_low")] * scale["a_low"] + offset["a_low"]
    a_high = tile[spec.channels.index("a_high")] * scale["a_high"] + offset["a_high"]
    return pseudocolor(a_low, a_high, profile, smooth_px=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="data set directory (default: simulate a small one)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs/images/augmented_batch.png"))
    parser.add_argument("--seed", type=int, default=3, help="seed of simulation and augmentation")
    parser.add_argument("--epoch", type=int, default=1, help="augmentation epoch to show")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from parcelscan.cli import main as cli
    from parcelscan.datasets.physics.profile import default_profile
    from parcelscan.datasets.physics.pseudocolor import overlay_mask
    from parcelscan.datasets.preprocess import PreprocessSpec
    from parcelscan.datasets.torch_dataset import ScanDataset

    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="parcelscan-batch-"))
    if not args.data:
        code = cli(["simulate", "--out", str(data), "--count", "24", "--seed", str(args.seed), "--no-progress"])
        if code:
            return code
    spec = PreprocessSpec.dual_energy()
    profile = default_profile()
    plain = ScanDataset(data, spec, augment=False)
    augmented = ScanDataset(data, spec, augment=True, seed=args.seed)
    augmented.set_epoch(args.epoch)
    labels = plain.labels
    chosen = list(np.flatnonzero(labels == 1)[:4]) + list(np.flatnonzero(labels == 0)[:4])

    fig, axes = plt.subplots(4, 6, figsize=(13.2, 9.4), dpi=72)
    for k, index in enumerate(chosen):
        before, _, mask_before, meta = plain[int(index)]
        after, tile_label, mask_after, _ = augmented[int(index)]
        row, col = k % 4, 3 * (k // 4)
        panels = [
            overlay_mask(tile_to_rgb(before.numpy(), spec, profile), mask_before[0].numpy() > 0.5),
            overlay_mask(tile_to_rgb(after.numpy(), spec, profile), mask_after[0].numpy() > 0.5),
            after[spec.channels.index("a_excess")].numpy(),
        ]
        titles = [f"{meta['scan_id']} ({'suspect' if meta['scan_label'] else 'clear'})",
                  f"augmented, tile label {tile_label}", "augmented a_excess"]
        for j, (panel, title) in enumerate(zip(panels, titles, strict=True)):
            ax = axes[row, col + j]
            if panel.ndim == 2:
                ax.imshow(panel, cmap="magma_r", vmin=0.0, vmax=2.0)
            else:
                ax.imshow(panel)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("One augmented batch (320×320 tiles at 2 mm; magenta: powder mask after the same transform)",
                 fontsize=10)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    plt.close(fig)
    _shrink_png(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) from {data}")
    return 0


def _shrink_png(path: Path) -> None:
    """Re-save as an adaptive 256-colour palette PNG (the README asks for images under 1 MB)."""
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
