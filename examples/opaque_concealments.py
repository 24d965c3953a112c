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
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from parcelscan.datasets.physics.pseudocolor import OPAQUE_A_HIGH

OPAQUE_GREY_LEVEL = 65535.0 * math.exp(-OPAQUE_A_HIGH)
SHARES = (0.9, 0.99, 1.0)  # share of the powder mask under opaque pixels


def opaque_share_of_mask(root: Path, record: dict) -> float:
    """Share of a suspect's powder mask pixels whose high-channel grey level is at or below the opaque level."""
    mask = np.asarray(Image.open(root / record["mask"])) > 0
    high = np.asarray(Image.open(root / record["files"]["high"]))
    if mask.shape != high.shape or not mask.any():
        return float("nan")
    return float((high[mask] <= OPAQUE_GREY_LEVEL).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--verdicts", type=Path, help="inspect output: scores of the opaque look-alikes")
    args = parser.parse_args()
    records = [json.loads(line) for line in (args.data / "manifest.jsonl").read_text().splitlines() if line.strip()]
    suspects = [r for r in records if r["label"] == "suspect" and r.get("mask")]
    shares = collections.defaultdict(list)
    for record in suspects:
        shares[record["scenario"]].append(opaque_share_of_mask(args.data, record))
    print(f"{len(suspects)} suspects; powder mask under opaque pixels (A_high >= {OPAQUE_A_HIGH:g}):")
    print(f"{'scenario':18s} {'n':>5s} " + " ".join(f"{'>=' + format(s, 'g'):>7s}" for s in SHARES))
    every = []
    for scenario in sorted(shares):
        values = np.array(shares[scenario])
        every.extend(values)
        print(f"{scenario:18s} {len(values):5d} " + " ".join(f"{int((values >= s).sum()):7d}" for s in SHARES))
    every = np.array(every)
    print(f"{'all':18s} {len(every):5d} " + " ".join(f"{int((every >= s).sum()):7d}" for s in SHARES))

    clears = [r for r in records if r["label"] == "clear"]
    non_twin = [r for r in clears if not r.get("twin_of")]
    opaque = [r for r in non_twin if ((r.get("provenance") or {}).get("fill_signature") or {}).get("opaque")]
    print(f"\n{len(clears)} clear parcels, {len(non_twin)} not twins, of which {len(opaque)} hold an opaque look-alike "
          f"fill ({100 * len(opaque) / max(len(non_twin), 1):.1f} %):",
          dict(collections.Counter(r["provenance"].get("fill") for r in opaque)))
    if args.verdicts:
        scores = {}
        for line in args.verdicts.read_text().splitlines():
            if line.strip():
                verdict = json.loads(line)
                scores[verdict["scan_id"]] = verdict.get("score")
        ids = {r["scan_id"] for r in opaque}
        ranked = sorted(((scores.get(r["scan_id"]) or 0.0, r["scan_id"] in ids) for r in non_twin), reverse=True)
        top = ranked[:max(1, round(0.01 * len(ranked)))]
        print(f"the {len(top)} highest-scoring non-twin clear parcels (Pfa 1 %): {sum(o for _, o in top)} are opaque "
              f"look-alikes; their scores: {[round(s, 3) for s, o in top]}")


if __name__ == "__main__":
    main()
