"""Choose a model's stored operating threshold on a clear-only calibration set (``python -m
parcelscan.training.calibrate``).

Why a separate set: the threshold a training run stores is picked on its validation split, which also
picked the best epoch, and holds ~100 clear scans — at Pfa 1 % that is the single highest clear score, so
the stored point moves by whole percents between seeds. A calibration set is simulated from its own seed
with ``--suspect-fraction 0`` (clear parcels only, never the test set), scored exactly as the station
scores (the model file through ``prepare_scan`` and max over tiles; an ONNX file runs in onnxruntime, no
torch), and the threshold is the conservative (1 − Pfa) quantile of the scores of its clear scans whose
``twin_of`` is empty — the same rule and the same way of counting Pfa as ``parcelscan evaluate`` (a twin
of a target cannot be told from it by physics; unknown twin_of counts as not a twin). The twins' alarm
rate at that threshold and both rates' Wilson 95 % intervals are printed beside it.

``--count-twins`` counts Pfa over every clear scan instead, twins included: what a station pays, since an
inspector opens a twin-filled parcel like any other, and what the postal stream's operating-point bar counts.
On the postal stream twins are ~1 % of clear parcels, so the two rules differ little there; on the stress
stream (a quarter of its clear parcels are twins) they differ a lot, which is why evaluation states both.

Then ``parcelscan export --checkpoint best.pt --threshold-from CALIB.json`` writes the model with that
threshold, its target Pfa and this result in the model's metrics (``operating_point``), so the model file says
where its operating point came from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from parcelscan.datasets.manifest import read_manifest
from parcelscan.errors import ParcelscanError
from parcelscan.model.operating_point import threshold_at_pfa
from parcelscan.training import metrics as M
from parcelscan.training.evaluate import load_model_for_eval, predict_records, scan_probabilities, twin_mask


def calibrate_threshold(model_path: str | Path, data_dir: str | Path, target_pfa: float = 0.01,
                        device: str = "cpu", workers: int = 2, batch_tiles: int = 32,
                        count_twins: bool = False) -> dict[str, Any]:
    """The threshold for ``target_pfa`` on the non-twin clear scans of ``data_dir`` (every split; with
    ``count_twins`` on all of them), and the rates at it. Suspect scans in the set are refused: a calibration
    set is clear-only by construction."""
    if not 0.0 < target_pfa < 1.0:
        raise ParcelscanError(f"target Pfa must be in (0, 1), got {target_pfa}")
    data_dir = Path(data_dir)
    records = read_manifest(data_dir)
    suspects = [r.scan_id for r in records if r.label != "clear"]
    if suspects:
        raise ParcelscanError(f"{data_dir}: a calibration set holds clear scans only ({len(suspects)} suspect, e.g. "
                              f"{suspects[0]}); simulate it with --suspect-fraction 0")
    model = load_model_for_eval(model_path, device)
    outputs = predict_records(records, data_dir, model.spec, model.runner, batch_tiles=batch_tiles, workers=workers,
                              fail_closed=True, progress=False, desc="calibrate")
    scores = scan_probabilities(outputs.margins, model.temperature)
    twins = twin_mask(records)
    ordinary = scores[~twins]
    if ordinary.size == 0:
        raise ParcelscanError(f"{data_dir}: no clear scan without a twin fill to calibrate on")
    threshold = threshold_at_pfa(scores if count_twins else ordinary, target_pfa)
    false_alarms, twin_alarms = int((ordinary >= threshold).sum()), int((scores[twins] >= threshold).sum())
    all_alarms = false_alarms + twin_alarms
    return {"model": str(model_path), "data": str(data_dir), "data_identity": _identity(records),
            "target_pfa": target_pfa, "threshold": float(threshold),
            "pfa_over": "all clear scans" if count_twins else "non-twin clear scans",
            "n_clear": int(scores.size), "pfa_all": all_alarms / scores.size,
            "pfa_all_ci": list(M.wilson_interval(all_alarms, int(scores.size))),
            "temperature": model.temperature, "stored_threshold_before": model.threshold,
            "n_clear_non_twin": int(ordinary.size), "n_twin": int(twins.sum()),
            "unreadable_scans": int(sum(e is not None for e in outputs.errors)),
            "pfa_non_twin": false_alarms / ordinary.size, "false_alarms": false_alarms,
            "pfa_non_twin_ci": list(M.wilson_interval(false_alarms, int(ordinary.size))),
            "twin_alarm_rate": twin_alarms / int(twins.sum()) if twins.any() else float("nan"),
            "twin_alarms": twin_alarms, "twin_alarm_ci": list(M.wilson_interval(twin_alarms, int(twins.sum()))),
            "allowed_false_alarms": M.allowed_false_alarms(int(ordinary.size), target_pfa),
            "score_quantiles": {f"{q:g}": float(np.quantile(ordinary, q)) for q in (0.5, 0.9, 0.99)}}


def _identity(records) -> dict[str, Any]:
    """What made the calibration set, from its manifest (a simulated set's seed, stream and generator), so a model
    file that keeps this result names its calibration data, not a path on somebody's disk."""
    keys = ("seed", "mix", "suspect_fraction", "generator_version", "postal_law", "profile", "profile_sha256")
    provenance = records[0].provenance if records else {}
    identity = {k: provenance[k] for k in keys if k in provenance}
    identity["scans"] = len(records)
    identity["sources"] = sorted({str(r.source) for r in records})
    return identity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parcelscan.training.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="ONNX file or checkpoint to calibrate")
    parser.add_argument("--data", required=True, help="clear-only calibration set (manifest.jsonl)")
    parser.add_argument("--target-pfa", type=float, default=0.01, help="default 0.01")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--workers", type=int, default=2, help="scan-decoding threads (default 2)")
    parser.add_argument("--count-twins", action="store_true",
                        help="count Pfa over every clear scan, twins included (default: non-twin clear scans)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    try:
        result = calibrate_threshold(args.model, args.data, args.target_pfa, args.device, args.workers,
                                     count_twins=args.count_twins)
    except ParcelscanError as error:
        print(f"calibrate: {error}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    low, high = result["pfa_non_twin_ci"]
    all_low, all_high = result["pfa_all_ci"]
    print(f"threshold {result['threshold']:.9g} for Pfa {100 * args.target_pfa:g} % over {result['pfa_over']}: "
          f"{result['false_alarms']} of {result['n_clear_non_twin']} non-twin clear scans = "
          f"{100 * result['pfa_non_twin']:.2f} % [{100 * low:.2f}, {100 * high:.2f}]; twin alarms "
          f"{result['twin_alarms']}/{result['n_twin']}; all clear scans {100 * result['pfa_all']:.2f} % "
          f"[{100 * all_low:.2f}, {100 * all_high:.2f}]; stored threshold was {result['stored_threshold_before']:.6g}")
    print(result["threshold"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
