"""``parcelscan models``: the model registry — list, show, register, promote, rollback — and ``keygen``, the
Ed25519 key pair that signs model releases (``model.signing``; ``promote --sign-key KEY`` signs as it promotes)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from parcelscan.model.registry import Registry, default_model_path
from parcelscan.model.session import read_metadata
from parcelscan.model.signing import keygen, load_private_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", help="model store directory (default $PARCELSCAN_MODEL_DIR or "
                                           "~/.local/share/parcelscan/models)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="registered models, the current one marked with *")
    show = sub.add_parser("show", help="one model's record as JSON")
    show.add_argument("model_id")
    register = sub.add_parser("register", help="add an exported ONNX model to the store")
    register.add_argument("onnx")
    register.add_argument("--checkpoint", help="the .pt it was exported from (needed to retrain from it)")
    register.add_argument("--parent", help="model id it was fine-tuned from")
    promote = sub.add_parser("promote", help="make a model the default for `parcelscan inspect` (gated)")
    promote.add_argument("model_id")
    promote.add_argument("--force", action="store_true", help="override the promotion gate (needs --reason)")
    promote.add_argument("--reason", default="", help="why (recorded in the history)")
    promote.add_argument("--sign-key", metavar="KEY",
                         help="Ed25519 private key file (raw or PEM): sign the model (MODEL.onnx.sig) as it is "
                              "promoted, for stations whose policy trusts the key")
    rollback = sub.add_parser("rollback", help="return to the model current before the last promotion")
    rollback.add_argument("--reason", default="")
    generate = sub.add_parser("keygen", help="make an Ed25519 key pair to sign model releases with")
    generate.add_argument("--out", required=True, metavar="DIR",
                          help="where to write NAME.key (private, mode 0600) and NAME.pub (hex); never inside a "
                               "git working tree")
    generate.add_argument("--name", default="parcelscan-release", help="file name stem (default parcelscan-release)")


def run(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        private, public, key_id = keygen(args.out, args.name)
        print(f"private key {private} (mode 600): keep it with the release manager, never in a repository")
        print(f"public key  {public}: {key_id}")
        print(f"a station trusts it with, in its policy:  [models] trusted_public_keys = [\"{key_id}\"]")
        return 0
    registry = Registry(Path(args.registry) if args.registry else None)
    if args.action == "list":
        data = registry.load()
        current = data.get("current")
        if not data["models"]:
            print(f"no models registered in {registry.directory}; inspect uses {default_model_path()}")
            return 0
        print(f"{'':1s} {'model':28s} {'kind':12s} {'parent':28s} {'Pd@op':>7s} {'registered':20s}")
        for entry in registry.entries():
            pd = entry.metrics.get("pd_at_operating_point")
            pd_text = f"{pd:7.3f}" if isinstance(pd, (int, float)) else "      -"
            mark = "*" if entry.model_id == current else " "
            print(f"{mark} {entry.model_id:28s} {entry.input_kind:12s} {entry.parent or '-':28s} {pd_text} "
                  f"{entry.registered:20s}")
        if current is None:
            print(f"(no promoted model: inspect uses the shipped default {default_model_path()})")
        return 0
    if args.action == "show":
        print(json.dumps(asdict(registry.get(args.model_id)), indent=1))
        return 0
    if args.action == "register":
        onnx = Path(args.onnx)
        meta = read_metadata(onnx)  # a ModelMetadata (validated), not a dict: its fields are attributes
        entry = registry.register(onnx, name=meta.name or onnx.stem, input_kind=meta.input_kind,
                                  checkpoint=Path(args.checkpoint) if args.checkpoint else None, parent=args.parent,
                                  created=meta.created, data_fingerprint=meta.data_fingerprint,
                                  metrics=dict(meta.metrics))
        print(f"registered {entry.model_id} ({entry.sha256[:12]}) in {registry.directory}")
        return 0
    if args.action == "promote":
        key = load_private_key(args.sign_key) if args.sign_key else None
        entry = registry.promote(args.model_id, force=args.force, reason=args.reason, sign_key=key)
        print(f"promoted {entry.model_id}: `parcelscan inspect` now uses {registry.resolve_path(entry)}")
        if key is not None:
            print(f"signed by Ed25519 key {registry.load()['history'][-1]['signed_by']}")
        return 0
    if args.action == "rollback":
        current = registry.rollback(reason=args.reason)
        print(f"rolled back: current model is now {current or 'the shipped default'}")
        return 0
    return 2
