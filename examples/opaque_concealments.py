"""How much of a simulated set no image score can see: concealments and look-alikes behind stopped beams.

Where the high-energy transmission is at the opaque level (A_high >= ``pseudocolor.OPAQUE_A_HIGH``, about 22
grey levels of 65,535), neither channel carries a material signature: a cavity of lead shot in a cast-iron
housing and a cavity of Nd2O3 in the same housing give the same pixels. The station sends such parcels to the
opaque lane (shield alarm); the detection bar reads the CNN score alone. This prints, for a simulated set:

* per scenario, the suspects whose powder mask lies (almost) entirely under opaque pixels — the concealments
  no image score can find, however good the model;
* the clear parcels whose look-alike fill is opaque (simulator provenance ``fill_signature.opaque``): not
  twins by the ground-truth definition, so they count in the bar's Pfa, yet indistinguishable from the
  concealments above; and, given a verdicts file, their scores against the set's other clear parcels.

    python examples/opaque_concealments.py DATA_DIR [--verdicts VERDICTS.jsonl]
"""

from __future__ import annotations

import argparse
import collections
import math
from pathlib import Path

import numpy as np
from PIL import Image

from parcelscan.datasets.manifest import ManifestRecord, read_manifest
from parcelscan.datasets.physics.pseudocolor import OPAQUE_A_HIGH
from parcelscan.training.evaluate import opaque_fill_mask, read_verdicts, twin_mask

OPAQUE_GREY_LEVEL = 65535.0 * math.exp(-OPAQUE_A_HIGH)
SHARES = (0.9, 0.99, 1.0)  # share of the powder mask under opaque pixels


def opaque_share_of_mask(root: Path, record: ManifestRecord) -> float:
    """Share of a suspect's powder mask pixels whose high-channel grey level is at or below the opaque level."""
    mask = np.asarray(Image.open(root / record.mask)) > 0
    high = np.asarray(Image.open(root / record.files["high"]))
    if mask.shape != high.shape or not mask.any():
        return float("nan")
    return float((high[mask] <= OPAQUE_GREY_LEVEL).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--verdicts", type=Path, help="inspect output: scores of the opaque look-alikes")
    args = parser.parse_args()
    records = read_manifest(args.data / "manifest.jsonl")
    shares = collections.defaultdict(list)
    for record in records:
        if record.label == "suspect" and record.mask:
            shares[record.scenario].append(opaque_share_of_mask(args.data, record))
    every = np.array([share for values in shares.values() for share in values])
    print(f"{every.size} suspects; powder mask under opaque pixels (A_high >= {OPAQUE_A_HIGH:g}):")
    print(f"{'scenario':18s} {'n':>5s} " + " ".join(f"{'>=' + format(s, 'g'):>7s}" for s in SHARES))
    for scenario, values in [*sorted(shares.items()), ("all", every)]:
        values = np.asarray(values)
        print(f"{scenario:18s} {len(values):5d} " + " ".join(f"{int((values >= s).sum()):7d}" for s in SHARES))

    clear = np.array([r.label == "clear" for r in records])
    non_twin = clear & ~twin_mask(records)
    opaque = opaque_fill_mask(records)
    fills = collections.Counter(records[i].provenance.get("fill") for i in np.nonzero(opaque)[0])
    print(f"\n{int(clear.sum())} clear parcels, {int(non_twin.sum())} not twins, of which {int(opaque.sum())} hold an "
          f"opaque look-alike fill ({100 * opaque.sum() / max(non_twin.sum(), 1):.1f} %):", dict(fills))
    if args.verdicts:
        _, scores, _, _ = read_verdicts(args.verdicts)
        ranked = sorted(((scores.get(records[i].scan_id, 0.0), bool(opaque[i])) for i in np.nonzero(non_twin)[0]),
                        reverse=True)
        top = ranked[:max(1, round(0.01 * len(ranked)))]
        print(f"the {len(top)} highest-scoring non-twin clear parcels (Pfa 1 %): {sum(o for _, o in top)} are opaque "
              f"look-alikes; their scores: {[round(s, 3) for s, o in top]}")


if __name__ == "__main__":
    main()
