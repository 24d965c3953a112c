"""DDP plumbing for ``torchrun --nproc-per-node=K -m parcelscan train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them training is a single process and
every helper here degrades to a no-op. Backend: NCCL when training on CUDA, gloo on CPU. Only rank 0
writes files; every rank computes the validation metrics from the same gathered predictions, so the
early-stopping decision is identical everywhere without an extra broadcast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from parcelscan.errors import ParcelscanError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_dist_info() -> DistInfo:
    """What torchrun told this process (single-process defaults otherwise)."""
    try:
        return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                        int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as error:
        raise ParcelscanError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {error}") from error


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; NCCL for CUDA, gloo for CPU."""
    import torch.distributed as dist

    info = env_dist_info()
    if not info.enabled or dist.is_initialized():
        return info
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise ParcelscanError("distributed CUDA training needs NCCL, which this PyTorch build lacks")
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=60))
    return info


def cleanup() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s value on every rank (e.g. the run directory chosen by rank 0)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's value, in rank order (validation predictions of each shard)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def mean_over_ranks(values: list[float]) -> list[float]:
    """Mean over ranks of a few floats (per-epoch training losses); works on gloo and NCCL alike."""
    gathered = all_gather_objects([float(v) for v in values])
    return [sum(column) / len(gathered) for column in zip(*gathered, strict=True)]
