"""Training checkpoints (``.pt``): everything needed to resume, evaluate and export a model.

The dict (contract "Model"): ``arch``, ``in_channels``, ``model`` (state_dict), ``ema`` (state_dict or
None), ``optimizer``, ``scheduler``, ``epoch``, ``config``, ``preprocessing`` (spec dict), ``classes``,
``threshold``, ``target_pfa``, ``temperature``, ``metrics``, ``data_fingerprint``, ``git_commit``,
``created``, ``name``, ``version``, ``compute`` (torch version, intra-op threads and CPU instruction set of
the run: what besides recipe and data decides its bits; ``training.train.compute_record``), ``network``
(the :class:`~parcelscan.model.network.NetworkConfig` the weights were built with: the model is rebuilt
from it, never from the network module's current defaults; checkpoints written before it was stored are
read with the shape they had then); plus
``format`` so a future layout change is detectable.

This module loads torch (through the network): callers on a torch-free path import it where they need it.

Checkpoints are loaded with ``torch.load(weights_only=True)``: a ``.pt`` file from elsewhere cannot run
code on the training machine, and everything we store is tensors and plain Python values.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from parcelscan.datasets.manifest import LABELS as CLASSES
from parcelscan.errors import ParcelscanError
from parcelscan.model.network import NetworkConfig, ParcelNet, build_from_config

CHECKPOINT_FORMAT = "parcelscan-checkpoint/1"
STATE_KEYS = ("model", "ema", "optimizer", "scheduler")
REQUIRED_KEYS = ("arch", "in_channels", "model", "preprocessing")


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a run killed mid-save keeps the previous ``last.pt``."""
    path = Path(path)
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(missing)}")
    data = {"format": CHECKPOINT_FORMAT, "classes": list(CLASSES), **checkpoint}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, validated; user errors are ParcelscanError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ParcelscanError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise ParcelscanError(f"{path}: not a readable parcelscan checkpoint ({str(error).splitlines()[0]})") from error
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ParcelscanError(f"{path}: not a parcelscan checkpoint (format {CHECKPOINT_FORMAT} expected)")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ParcelscanError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return data


def checkpoint_info(data: dict[str, Any]) -> dict[str, Any]:
    """Everything except the (large) state dicts."""
    return {key: value for key, value in data.items() if key not in STATE_KEYS}


def network_config(data: dict[str, Any]) -> NetworkConfig:
    """The shape the checkpoint's weights were built with: its ``network``, else (a checkpoint written before
    it was stored) its ``arch``, ``in_channels`` and class count with the legacy widths."""
    stored = data.get("network")
    try:
        if isinstance(stored, dict):
            return NetworkConfig.from_dict(stored)
        return NetworkConfig.from_dict({"arch": data["arch"], "in_channels": int(data["in_channels"]),
                                        "num_classes": len(data.get("classes") or CLASSES)})
    except (KeyError, TypeError, ValueError) as error:
        raise ParcelscanError(f"checkpoint network configuration: {error}") from error


def network_entry(model: ParcelNet) -> dict[str, Any]:
    """What a checkpoint stores about the network (``network``), from the model itself."""
    return model.config.to_dict()


def load_checkpoint(path: str | Path, use_ema: bool = True):
    """``(model.eval(), info)``: the EMA weights when present and ``use_ema`` (they are what was validated)."""
    data = read_checkpoint(path)
    try:
        model = build_from_config(network_config(data))
    except (ParcelscanError, ValueError) as error:
        raise ParcelscanError(f"{path}: {error}") from error
    state = data["ema"] if use_ema and data.get("ema") is not None else data["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ParcelscanError(f"{path}: weights do not match arch {data['arch']}: {str(error).splitlines()[0]}") \
            from error
    info = checkpoint_info(data)
    info["weights"] = "ema" if state is data.get("ema") else "model"
    return model.eval(), info
