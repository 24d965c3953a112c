"""The weights-only checkpoint shipped beside an exported model (``python -m parcelscan.training.ship``).

Retraining (``parcelscan retrain --base MODEL.onnx``) needs the PyTorch weights a model file was exported
from; it finds ``<model>.pt`` beside the ONNX file, verifies ``<model>.pt.sha256`` and that the checkpoint
records the ONNX file's sha256 (``training.retrain.checkpoint_beside``). A training run's ``best.pt`` holds
the optimizer, the scheduler and two copies of the weights (~3× the model); this writes the EMA weights
(what was validated and exported) as ``model``, without optimizer state, with the threshold the ONNX file
stores (a calibrated one may differ from the run's), the run's config (the recipe retraining inherits) and
``source`` naming the ONNX file. The old shipped checkpoints were rebuilt from their ONNX files
(``training.from_onnx``) because their training runs were gone; a trained checkpoint needs no rebuilding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from parcelscan.errors import ParcelscanError
from parcelscan.model.checkpoint import read_checkpoint, save_checkpoint
from parcelscan.model.session import read_metadata, sha256_file, write_sha256
from parcelscan.training.config import TrainConfig

# Where and how a run ran, not what it learnt: written as the config's defaults, so that the shipped config is the
# recipe (a fine-tune's starting checkpoint is kept in ``source``: the path the run was given). ``workers`` is how
# many processes load batches: every item's randomness is seeded by its index, so the batches are the same.
RUN_FIELDS = ("data", "name", "project", "progress", "init_from", "workers")
KEPT_KEYS = ("arch", "in_channels", "network", "config", "preprocessing", "classes", "target_pfa", "temperature",
             "metrics", "data_fingerprint", "git_commit", "compute", "created", "name", "version", "epoch")
METHOD = "EMA weights of the training run's best.pt (weights only, no optimizer state)"


def weights_only(checkpoint: str | Path, onnx_path: str | Path, out: str | Path | None = None) -> Path:
    """Write ``out`` (default ``<onnx>.pt``) and its ``.sha256``; the threshold is the ONNX file's."""
    onnx_path = Path(onnx_path)
    out = Path(out) if out else onnx_path.with_suffix(".pt")
    data = read_checkpoint(checkpoint)
    metadata = read_metadata(onnx_path)
    if data.get("preprocessing") != metadata.preprocessing:
        raise ParcelscanError(f"{checkpoint} and {onnx_path} have different preprocessing: not its export")
    if abs(float(data.get("temperature") or 1.0) - metadata.temperature) > 1e-6:
        raise ParcelscanError(f"{checkpoint} and {onnx_path} have different temperatures: not its export")
    weights = data["ema"] if data.get("ema") is not None else data["model"]
    shipped: dict[str, Any] = {key: data[key] for key in KEPT_KEYS if key in data}
    run_config = dict(data.get("config") or {})
    defaults = TrainConfig().to_dict()
    shipped["config"] = run_config | {field: defaults[field] for field in RUN_FIELDS if field in run_config}
    shipped.update({"model": {k: v.detach().clone().contiguous() for k, v in weights.items()}, "ema": None,
                    "threshold": metadata.threshold,
                    "source": {"onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path), "method": METHOD,
                               "run_threshold": data.get("threshold"), "checkpoint": str(checkpoint),
                               "init_from": run_config.get("init_from") or None}})
    save_checkpoint(out, shipped)
    write_sha256(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parcelscan.training.ship", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the run's best.pt the ONNX file was exported from")
    parser.add_argument("--onnx", required=True, help="the exported model file")
    parser.add_argument("--out", help="default: the ONNX file's name with .pt")
    args = parser.parse_args(argv)
    try:
        out = weights_only(args.checkpoint, args.onnx, args.out)
    except ParcelscanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.name}.sha256")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
