"""``parcelscan export``: a checkpoint → one ONNX file for stations (or ``--show`` what a model file says).

Examples::

    parcelscan export --checkpoint runs/train/exp/weights/best.pt --out model.onnx --data data/val
    parcelscan export --checkpoint best.pt --out model-int8.onnx --int8 --calibration data/val
    parcelscan export --checkpoint best.pt --out model.onnx --sign-key ~/.parcelscan-keys/release.key
    parcelscan export --checkpoint best.pt --out model.onnx --threshold-from calibration.json
    parcelscan export --checkpoint best.pt --out model-flips4.onnx --test-time-flips 4
    parcelscan export --recalibrate model.onnx --threshold-from calibration.json [--out other.onnx]
    parcelscan export --show model/default/parcelscan-dual.onnx

``--recalibrate MODEL.onnx`` moves an exported model's operating point only: the threshold, target Pfa and the
calibration result (``python -m parcelscan.training.calibrate --json``) go into its metadata, the graph and
weights stay byte for byte, a new ``.sha256`` is written (and a stale signature removed).

``--sign-key KEY`` writes ``MODEL.onnx.sig`` beside the model (``model.signing``): the key is read before the
export starts, so a wrong key costs no export; a station whose policy trusts its public key accepts the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from parcelscan.errors import ParcelscanError
from parcelscan.model.export import DEFAULT_TOLERANCE, export_checkpoint, recalibrate_onnx
from parcelscan.model.metadata import ModelMetadata
from parcelscan.model.session import inference_session, read_props, sha256_sidecar, verify_sha256
from parcelscan.model.signing import load_private_key, sign_model, signature_path, signature_status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="PT", help="training checkpoint (.pt) to export")
    parser.add_argument("--out", metavar="MODEL.onnx", help="output ONNX file (a MODEL.onnx.sha256 is written beside)")
    parser.add_argument("--data", metavar="DIR",
                        help="real scans for the torch-vs-onnxruntime parity check (default: --calibration, the "
                             "checkpoint's training data, or examples/)")
    parser.add_argument("--int8", action="store_true",
                        help="static INT8 (QDQ) quantisation; refused if it costs > 0.5 points of Pd or is not faster")
    parser.add_argument("--calibration", metavar="DIR", help="labelled scans to calibrate and check INT8 on")
    parser.add_argument("--threshold", type=float, help="override the checkpoint's operating threshold")
    parser.add_argument("--threshold-from", metavar="CALIB.json",
                        help="take the threshold and target Pfa from a `python -m parcelscan.training.calibrate "
                             "--json` result, and keep that result in the model's metrics (operating_point)")
    parser.add_argument("--test-time-flips", type=int, choices=(1, 2, 4), metavar="N",
                        help="score every tile in N views in the model file: 1, 2 (+ left-right) or 4 (+ up-down, "
                             "both), logits averaged (default: the checkpoint's network setting); re-calibrate after")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="parity tolerance on max |Δ| (default 1e-4)")
    parser.add_argument("--sign-key", metavar="KEY",
                        help="Ed25519 private key file (raw or PEM; `parcelscan models keygen`): sign the model, "
                             "writing MODEL.onnx.sig; keep the key out of the repository")
    parser.add_argument("--recalibrate", metavar="MODEL.onnx",
                        help="with --threshold-from: set an exported model's operating point (metadata only; in "
                             "place, or into --out)")
    parser.add_argument("--show", metavar="MODEL.onnx", help="print a model file's metadata and exit")
    parser.add_argument("--json", action="store_true", help="with --show: every metadata_props entry as JSON")


def show(path: str, as_json: bool = False) -> int:
    """Print the model's metadata, inputs and outputs; exit 1 if its sha256 file does not vouch for it."""
    if not Path(path).is_file():
        raise ParcelscanError(f"model not found: {path}")
    try:
        verified = f"{verify_sha256(path)} (matches {sha256_sidecar(path).name})"
    except ParcelscanError as error:
        verified = None
        print(f"sha256:           NOT VERIFIED — {error}")
    props = read_props(path)
    metadata = ModelMetadata.from_props(props, source=path)
    if as_json:
        print(json.dumps({"sha256_verified": verified is not None, "metadata_props": props}, indent=1))
        return 0 if verified is not None else 1
    for line in metadata.summary_lines():
        print(line)
    session = inference_session(path, optimize=False)
    for tensor in session.get_inputs():
        print(f"input:            {tensor.name} {tensor.type} {tensor.shape}")
    for tensor in session.get_outputs():
        print(f"output:           {tensor.name} {tensor.type} {tensor.shape}")
    print(f"size:             {Path(path).stat().st_size / 1e6:.2f} MB")
    if verified is None:
        return 1
    print(f"sha256:           {verified}")
    print(f"signature:        {signature_status(path)}")
    return 0


def _calibration_result(path: str) -> dict:
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ParcelscanError(f"--threshold-from {path}: {error}") from error
    if not isinstance(result, dict):
        raise ParcelscanError(f"--threshold-from {path}: not a calibration result")
    return result


def recalibrate(args: argparse.Namespace) -> int:
    if not args.threshold_from:
        raise ParcelscanError("--recalibrate needs --threshold-from CALIB.json")
    if not Path(args.recalibrate).is_file():
        raise ParcelscanError(f"model not found: {args.recalibrate}")
    verify_sha256(args.recalibrate)  # never re-vouch for a file that was changed since it was written
    out = Path(args.out or args.recalibrate)
    before = read_props(args.recalibrate)["threshold"]
    m = recalibrate_onnx(args.recalibrate, out, _calibration_result(args.threshold_from))
    print(f"{out}: threshold {float(before):.6g} → {m.threshold:.6g} (target Pfa {m.target_pfa:g} over "
          f"{m.metrics['operating_point'].get('pfa_over', 'clear scans')}); weights unchanged")
    print(f"sha256 {sha256_sidecar(out).read_text().split()[0]}  → {out.name}.sha256")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.show:
        return show(args.show, as_json=args.json)
    if args.recalibrate:
        return recalibrate(args)
    if not args.checkpoint or not args.out:
        raise ParcelscanError("give --checkpoint PT and --out MODEL.onnx (or --show / --recalibrate MODEL.onnx)")
    if args.int8 and not args.calibration:
        raise ParcelscanError("--int8 needs --calibration DIR")
    key = load_private_key(args.sign_key) if args.sign_key else None  # before the export: a bad key costs nothing
    operating_point = _calibration_result(args.threshold_from) if args.threshold_from else None
    result = export_checkpoint(args.checkpoint, args.out, data=args.data, int8=args.int8,
                               calibration=args.calibration, threshold=args.threshold,
                               tolerance=args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE,
                               log=lambda line: print(line, file=sys.stderr), operating_point=operating_point,
                               test_time_flips=args.test_time_flips)
    m = result.metadata
    print(f"exported {result.path} ({result.path.stat().st_size / 1e6:.2f} MB, opset {m.extra.get('opset')}, "
          f"{m.extra.get('quantization')}) in {result.seconds:.1f} s")
    print(f"model {m.name} {m.version}, {m.arch}, {m.input_kind}, threshold {m.threshold:.4g}"
          + (f" (target Pfa {m.target_pfa:g})" if m.target_pfa else ""))
    print(f"sha256 {result.sha256}  → {result.path.name}.sha256")
    if key is not None:
        sig = sign_model(result.path, key, m.name, m.version)
        print(f"signed by Ed25519 key {sig.key_id}  → {signature_path(result.path).name}")
    return 0
