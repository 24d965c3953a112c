"""How much of a simulated set no image score can see: concealments and look-alikes behind stopped beams.

Where the high-energy transmission is at the opaque level (A_high >= ``pseudocolor.OPAQUE_A_HIGH``, about 22
grey levels of 65,535), neither channel carries a material signature: a cavity of lead shot in a cast-iron
housing and a cavity of Nd2O3 in the same housing give the same pixels. The station sends such parcels to the
opaque lane (shield alarm); the detection bar reads the CNN score alone. This prints, for a simulated set:

* per scenario, the suspects whose powder mask lies (almost) entirely under opaque pixels — the concealments
  no image score can find, however good the model;
* per scenario and per band of *visible* powder (mask area where the beam gets through, in cm² at the scan's
  pitch), how many suspects there are and, given a verdicts file, what share the score finds at Pfa 1 % over the
  non-twin clear parcels: where the visible powder is large and the score still misses, the gap is the model's;
  where there is none, it is physics;
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

from parcelscan.datasets.manifest import ManifestRecord, read_manifest
from parcelscan.datasets.physics.pseudocolor import OPAQUE_A_HIGH
from parcelscan.model.operating_point import threshold_at_pfa
from parcelscan.training.evaluate import opaque_fill_mask, read_verdicts, twin_mask

OPAQUE_GREY_LEVEL = 65535.0 * math.exp(-OPAQUE_A_HIGH)
SHARES = (0.9, 0.99, 1.0)  # share of the powder mask under opaque pixels
VISIBLE_CM2 = (0.0, 0.01, 0.5, 2.0, 10.0, 50.0)  # lower edges of the visible-powder bands (0 = none visible)


def opaque_share_of_mask(root: Path, record: ManifestRecord) -> tuple[float, float]:
    """(share of a suspect's powder mask pixels whose high-channel grey level is at or below the opaque level,
    area of the rest in cm² at the scan's pitch)."""
    mask = np.asarray(Image.open(root / record.mask)) > 0
    high = np.asarray(Image.open(root / record.files["high"]))
    if mask.shape != high.shape or not mask.any():
        return float("nan"), float("nan")
    opaque = high[mask] <= OPAQUE_GREY_LEVEL
    sidecar = json.loads((root / record.files["sidecar"]).read_text()) if "sidecar" in record.files else {}
    col_mm = float(sidecar.get("pixel_pitch_mm", 1.0))
    row_mm = float(sidecar.get("row_pitch_mm", col_mm))
    return float(opaque.mean()), float((~opaque).sum() * row_mm * col_mm / 100.0)


def visible_band(cm2: float) -> str:
    lower = max(edge for edge in VISIBLE_CM2 if cm2 >= edge) if cm2 > 0 else 0.0
    index = VISIBLE_CM2.index(lower)
    if lower == 0.0:
        return "none"
    upper = VISIBLE_CM2[index + 1] if index + 1 < len(VISIBLE_CM2) else None
    return f">= {lower:g}" if upper is None else f"{lower:g}-{upper:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--verdicts", type=Path, help="inspect output: scores of the opaque look-alikes")
    args = parser.parse_args()
    records = read_manifest(args.data / "manifest.jsonl")
    shares = collections.defaultdict(list)
    visible: dict[str, float] = {}
    for record in records:
        if record.label == "suspect" and record.mask:
            share, visible[record.scan_id] = opaque_share_of_mask(args.data, record)
            shares[record.scenario].append(share)
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
    scores: dict[str, float] = {}
    threshold = None
    if args.verdicts:
        _, scores, _, _ = read_verdicts(args.verdicts)
        threshold = threshold_at_pfa(np.array([scores[records[i].scan_id] for i in np.nonzero(non_twin)[0]]),
                                             0.01)
    bands = ["none", *(visible_band(edge) for edge in VISIBLE_CM2[1:])]
    print("\nvisible powder (mask area where the beam gets through, cm²): suspects"
          + (f" / found at Pfa 1 % over the non-twin clear parcels (score >= {threshold:.4f})" if threshold else ""))
    print(f"{'scenario':18s} " + " ".join(f"{band:>14s}" for band in bands))
    by_scenario = collections.defaultdict(list)
    for record in records:
        if record.scan_id in visible:
            by_scenario[record.scenario].append(record.scan_id)
    by_scenario["all"] = [sid for ids in list(by_scenario.values()) for sid in ids]
    for scenario, ids in sorted(by_scenario.items(), key=lambda item: (item[0] == "all", item[0])):
        cells = []
        for band in bands:
            members = [sid for sid in ids if visible_band(visible[sid]) == band]
            if threshold is None or not members:
                cells.append(f"{len(members):14d}")
            else:
                found = sum(scores.get(sid, 1.0) >= threshold for sid in members)
                cells.append(f"{len(members):5d} {100 * found / len(members):6.1f} %")
        print(f"{scenario:18s} " + " ".join(cells))
    if args.verdicts:
        ranked = sorted(((scores.get(records[i].scan_id, 0.0), bool(opaque[i])) for i in np.nonzero(non_twin)[0]),
                        reverse=True)
        top = ranked[:max(1, round(0.01 * len(ranked)))]
        print(f"the {len(top)} highest-scoring non-twin clear parcels (Pfa 1 %): {sum(o for _, o in top)} are opaque "
              f"look-alikes; their scores: {[round(s, 3) for s, o in top]}")


if __name__ == "__main__":
    main()
