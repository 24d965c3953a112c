"""Where runs go and what they run on: numbered run folders and the torch device.

Shared by ``train``, ``evaluate`` and ``retrain`` (Ultralytics-style ``runs/<task>/<name>`` folders a user
can find), so none of them has to import another for a helper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parcelscan.errors import ParcelscanError


def increment_dir(project: str | Path, name: str) -> Path:
    """``project/name``, or ``name2``, ``name3`` … if taken (Ultralytics-style); created empty."""
    project = Path(project)
    project.mkdir(parents=True, exist_ok=True)
    candidate = project / name
    number = 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate = project / f"{name}{number}"
            number += 1


def resolve_device(name: str, local_rank: int = 0) -> Any:
    """The torch.device for ``auto``/``cpu``/``cuda`` (torch imported here: evaluating an ONNX model needs none)."""
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ParcelscanError("--device cuda: no CUDA device is available (use --device cpu or auto)")
        return torch.device("cuda", local_rank)
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    raise ParcelscanError(f"--device must be auto, cpu or cuda, got {name!r}")
