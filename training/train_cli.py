"""``parcelscan train``: train the CNN on a split dataset (also under ``torchrun`` for DDP)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from parcelscan.errors import ParcelscanError
from parcelscan.training.config import TrainConfig, load_config

# flag → TrainConfig field, for the flags that override the config file
FLAG_FIELDS = {"data": "data", "name": "name", "project": "project", "device": "device", "epochs": "epochs",
               "batch_size": "batch_size", "arch": "arch", "workers": "workers", "input_kind": "input_kind",
               "lr": "lr", "seed": "seed", "patience": "patience", "target_pfa": "target_pfa",
               "init_from": "init_from"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="dataset directory with manifest.jsonl split into train/val "
                                       "(`parcelscan data split`)")
    parser.add_argument("--config", help="YAML file of TrainConfig settings (e.g. a run's args.yaml)")
    parser.add_argument("--name", help="run name under runs/train/ (default exp; auto-incremented: exp2, exp3 …)")
    parser.add_argument("--project", help="parent directory of runs (default runs/train)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="LAST_PT",
                        help="continue a run from its weights/last.pt (default: --name's run, else the latest run)")
    parser.add_argument("--init-from", metavar="CHECKPOINT",
                        help="start from this checkpoint's weights and preprocessing (fine-tuning; the config may "
                             "set only the preprocessing's attenuation_ceiling)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: CUDA when available")
    parser.add_argument("--epochs", type=int, help="number of epochs (default 40)")
    parser.add_argument("--batch-size", type=int, help="tiles per batch and process (default 32)")
    parser.add_argument("--arch", choices=("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "resnet18"),
                        help="backbone (default mobilenet_v3_small)")
    parser.add_argument("--workers", type=int, help="data-loading worker processes per process (default 2)")
    parser.add_argument("--input-kind", choices=("dual_energy", "pseudo_color"),
                        help="model input (default dual_energy)")
    parser.add_argument("--lr", type=float, help="peak AdamW learning rate (default 2e-3)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs, 0 = off (default 10)")
    parser.add_argument("--target-pfa", type=float, help="false-alarm rate of the stored threshold (default 0.01)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _explicit(args: argparse.Namespace) -> dict:
    values = {field: getattr(args, flag) for flag, field in FLAG_FIELDS.items() if getattr(args, flag) is not None}
    if args.no_progress:
        values["progress"] = False
    return values


def find_resume_checkpoint(resume: str, project: str, name: str | None) -> Path:
    if resume != "auto":
        path = Path(resume)
        if path.is_dir():
            path = path / "weights" / "last.pt"
        if not path.is_file():
            raise ParcelscanError(f"--resume: no checkpoint at {path}")
        return path
    if name:
        path = Path(project) / name / "weights" / "last.pt"
        if not path.is_file():
            raise ParcelscanError(f"--resume: run {name!r} has no {path}")
        return path
    candidates = sorted(Path(project).glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ParcelscanError(f"--resume: no run with weights/last.pt under {project}")
    return candidates[-1]


def passive_omp_wait(loader_workers: int = 1) -> None:
    """OpenMP threads sleep instead of spinning when they wait, if DataLoader processes run beside them
    (unless the user chose otherwise).

    With loader processes beside the network's threads, spinning waits starve the oversubscribed cores: on
    this 2-core machine under load a batch of four 64×64 tiles took 217 ms with the default policy and 18 ms
    with PASSIVE. Without them (``workers: 0``, the shipped recipes) nothing competes, and sleeping costs a
    wake-up at every one of MobileNet's many small parallel regions: a cached epoch of the dual recipe ran at
    41–49 img/s with PASSIVE and ~75 img/s with the default policy (session 12, 2-core AMD EPYC). Must run
    before PyTorch is imported (OpenMP reads it once)."""
    if loader_workers > 0:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _resumed_workers(checkpoint: Path, explicit: dict) -> int:
    """The loader processes a resumed run will use: an explicit ``--workers``, else its ``args.yaml``'s."""
    if "workers" in explicit:
        return int(explicit["workers"])
    try:
        return load_config(checkpoint.parent.parent / "args.yaml").workers
    except ParcelscanError:
        return 1


def run(args: argparse.Namespace) -> int:
    explicit = _explicit(args)
    if args.resume:
        project = explicit.get("project") or TrainConfig().project
        checkpoint = find_resume_checkpoint(args.resume, project, explicit.get("name"))
        passive_omp_wait(_resumed_workers(checkpoint, explicit))
        from parcelscan.training.train import train  # loads torch (after passive_omp_wait)

        explicit.pop("name", None)
        explicit.pop("project", None)
        run_dir = train(resume=checkpoint, overrides=explicit)
    else:
        config = load_config(args.config) if args.config else TrainConfig()
        for key, value in explicit.items():
            setattr(config, key, value)
        if not config.data:
            raise ParcelscanError("--data DIR is required (a dataset split with `parcelscan data split`)")
        if not Path(config.data).is_dir():
            raise ParcelscanError(f"--data: {config.data} is not a directory")
        config.validate()
        passive_omp_wait(config.workers)
        from parcelscan.training.train import train  # loads torch (after passive_omp_wait)

        run_dir = train(config)
    if os.environ.get("RANK", "0") == "0":
        print(f"results in {run_dir}")
    return 0
