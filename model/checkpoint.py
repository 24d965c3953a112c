"""Training checkpoints (``.pt``): everything needed to resume, evaluate and export a model.

The dict (contract "Model"): ``arch``, ``in_channels``, ``model`` (state_dict), ``ema`` (state_dict or
None), ``optimizer``, ``scheduler``, ``epoch``, ``config``, ``preprocessing`` (spec dict), ``classes``,
``threshold``, ``target_pfa``, ``temperature``, ``metrics``, ``data_fingerprint``, ``git_commit``,
``created``, ``name``, ``version``; plus ``format`` so a future layout change is detectable.

Checkpoints are loaded with ``torch.load(weights_only=True)``: a ``.pt`` file from elsewhere cannot run
code on the training machine, and everything we store is tensors and plain Python values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from parcelscan.errors import ParcelscanError

CHECKPOINT_FORMAT = "parcelscan-checkpoint/1"
CLASSES = ["clear", "suspect"]
STATE_KEYS = ("model", "ema", "optimizer", "scheduler")
REQUIRED_KEYS = ("arch", "in_channels", "model", "preprocessing")


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a run killed mid-save keeps the previous ``last.pt``."""
    import torch

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
    import pickle

    import torch

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


def load_checkpoint(path: str | Path, use_ema: bool = True):
    """``(model.eval(), info)``: the EMA weights when present and ``use_ema`` (they are what was validated)."""
    from parcelscan.model.network import build_model

    data = read_checkpoint(path)
    model = build_model(data["arch"], int(data["in_channels"]), len(data.get("classes", CLASSES)))
    state = data["ema"] if use_ema and data.get("ema") is not None else data["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ParcelscanError(f"{path}: weights do not match arch {data['arch']}: {str(error).splitlines()[0]}") \
            from error
    info = checkpoint_info(data)
    info["weights"] = "ema" if state is data.get("ema") else "model"
    return model.eval(), info
